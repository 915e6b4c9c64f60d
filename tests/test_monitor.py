"""``duanka monitor``: every row of the monitoring plan from a decision record, with its verdict.

The records are :mod:`tests.monitor_records`'s: a stable bank, and the same bank whose branch B07
turns one opening in five critical in the last week while one feature moves by three standard
deviations.
"""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.features.registry import MODEL_FEATURES
from duanka.serving.monitor.baselines import NO_REFERENCE
from duanka.serving.monitor.context import Context
from duanka.serving.monitor.engine import Monitoring
from duanka.serving.monitor.plan_drift import divergences
from duanka.serving.monitor.plan_row import Status
from duanka.serving.monitor.record import DecisionRecord
from duanka.serving.monitor.render import render_html
from duanka.serving.monitor.sidecar import Sidecar
from duanka.training.monitoring import population_stability
from duanka.training.monitoring_plan import MONITORING_PLAN
from tests import monitor_records as records


@pytest.fixture(scope="module")
def stable(tmp_path_factory: pytest.TempPathFactory) -> tuple[records.Built, Monitoring]:
    folder = tmp_path_factory.mktemp("stable")
    built = records.build(folder / "decisions.db")
    return built, records.monitored(built, folder)


@pytest.fixture(scope="module")
def drifting(tmp_path_factory: pytest.TempPathFactory) -> tuple[records.Built, Monitoring]:
    folder = tmp_path_factory.mktemp("drifting")
    built = records.build(folder / "decisions.db", drift=True)
    return built, records.monitored(built, folder)


PLAN = tuple(item.key for item in MONITORING_PLAN)  # tests/test_monitoring_plan.py says what it holds


def test_a_stable_record_is_ok_on_every_row_it_can_compute_and_exits_0(stable):
    _, monitoring = stable
    computed = {r.key: r.status for r in monitoring.rows if r.computed}
    assert set(computed) == set(PLAN) - {"overrides"}
    assert set(computed.values()) == {Status.OK}, [(r.key, r.finding) for r in monitoring.rows]
    assert monitoring.exit_code == 0


def test_overrides_are_said_not_recorded_never_counted(stable):
    row = stable[1].row("overrides")
    assert (row.computed, row.status, row.value) == (False, Status.WATCH, "not computed")
    assert "not recorded" in row.finding


def test_a_branch_whose_critical_share_jumps_in_the_last_week_says_act(drifting):
    _, monitoring = drifting
    row = monitoring.row("bands_branch")
    assert row.status == Status.ACT
    assert records.DRIFTING_BRANCH in row.finding
    others = [b for b in re.findall(r"B\d\d", str(row.details)) if b != records.DRIFTING_BRANCH]
    assert not others  # no other branch stands out


def test_a_feature_that_moves_in_the_last_week_says_act_and_is_named(drifting):
    row = drifting[1].row("feature_csi")
    assert row.status == Status.ACT
    assert records.DRIFTING_FEATURE in row.finding and records.DRIFTING_FEATURE in row.value
    assert "week of 2025-03-24" in row.period  # the last whole week is what is judged


def test_a_drifting_record_exits_2(drifting):
    assert drifting[1].exit_code == 2


def test_the_csi_reported_is_the_population_stability_of_the_arrays_recorded(drifting, tmp_path):
    built, monitoring = drifting
    reference_X, reference_scores = records.reference_rows()
    week = (built.frame["day"] >= (records.WEEKS - 1) * 7).to_numpy()
    column = MODEL_FEATURES.index(records.DRIFTING_FEATURE)
    with (
        DecisionRecord(built.path, MODEL_FEATURES) as record,
        Sidecar(built.path.with_name("monitor.db")) as side,
    ):
        ctx = Context(
            side,
            record,
            monitoring.refreshed.baselines,
            records.AS_OF,
            records.OUTCOME_WINDOW_DAYS,
            built.labels,
        )
        table = divergences(ctx).table.set_index(["period", "feature"])["value"]
    assert table[("w:2025-03-24", records.DRIFTING_FEATURE)] == pytest.approx(
        population_stability(reference_X[:, column], built.X[week, column]), rel=1e-12
    )
    assert table[("w:2025-03-24", "score")] == pytest.approx(
        population_stability(reference_scores, built.frame["score"].to_numpy()[week]), rel=1e-12
    )


def test_a_model_without_a_reference_leaves_psi_and_csi_to_watch_and_sets_no_exit_status(stable, tmp_path):
    built, _ = stable
    monitoring = records.monitored(built, tmp_path, with_reference=False)
    for key in ("score_psi", "feature_csi"):
        row = monitoring.row(key)
        assert (row.computed, row.status) == (False, Status.WATCH)
        assert NO_REFERENCE in row.finding
    # the missing rates are read against the record's own earlier weeks instead
    assert "no reference stored with the model" in monitoring.row("missing").finding
    assert monitoring.exit_code == 0


def test_recall_and_fpr_ratios_are_read_on_matured_months_only(stable):
    _, monitoring = stable
    # a 30-day outcome window closed by 2025-03-30 on January and February, not on March
    assert "judged: 2025-02" in monitoring.row("performance").period
    assert "judged: 2025-01 to 2025-02" in monitoring.row("fpr_ratio").period
    assert monitoring.row("performance").value.startswith("2025-02: alert recall 50.0%")


def test_the_page_holds_no_identifier_and_fetches_nothing(drifting):
    built, monitoring = drifting
    page = render_html(monitoring)
    for application_id in built.frame["application_id"].iloc[::97]:
        assert application_id not in page
    escorts = {f"esc{w:04d}" for w in range(records.WEEKS)}
    assert not [e for e in escorts if e in page]  # the prepared applications' pseudonyms
    assert "reviewed the file" not in page  # a reviewer's note
    assert not re.search(r"https?://|<script|<link", page)
    assert page.count('src="data:image/png;base64,') == sum(r.figure is not None for r in monitoring.rows)


def test_the_command_exits_with_the_worst_status_and_writes_the_page(drifting, tmp_path, monkeypatch):
    from duanka.cli.app import app
    from duanka.data.config import get_settings

    built, _ = drifting
    store = tmp_path / "store"
    (store / "serving").mkdir(parents=True)
    shutil.copyfile(built.path, store / "serving" / "decisions.db")
    monkeypatch.setenv("DUANKA_MODELS_DIR", str(tmp_path / "no-registry"))
    monkeypatch.delenv("DUANKA_DATA_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    try:
        out = tmp_path / "monitor.html"
        args = ["monitor", "--data", str(store), "--out", str(out), "--as-of", records.AS_OF.isoformat()]
        result = CliRunner().invoke(app, args, terminal_width=200)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "status: act (exit 2)" in result.output
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    # no registry: the model's reference could not be read, and the page says so
    assert "no model registry" in " ".join(result.output.split())
    assert (store / "serving" / "monitor.db").exists()


def test_the_command_without_a_record_cannot_monitor(tmp_path, monkeypatch):
    from duanka.cli.app import app
    from duanka.cli.monitor import NOT_MONITORED

    (tmp_path / "store").mkdir()
    result = CliRunner().invoke(
        app, ["monitor", "--data", str(tmp_path / "store"), "--out", str(tmp_path / "m.html")]
    )
    assert result.exit_code == NOT_MONITORED
    assert "no decision record" in " ".join(result.output.split())


def test_dispositions_count_what_reviewers_did_by_the_as_of_day(stable):
    built, monitoring = stable
    row = monitoring.row("cases")
    referred = built.frame.loc[built.frame["band"].isin(["critical", "high"])]
    assert row.value.startswith(f"{len(referred)} referred: ")
    assert "0 escalated" in row.value
    confirmed = int(re.search(r"(\d+) confirmed", row.value).group(1))
    old = referred.loc[referred["applied_at"] < referred["applied_at"].max() - pd.Timedelta(days=20)]
    assert confirmed == int(old["mule"].sum())
