"""The model report: one self-contained HTML file, every section, no network, no personal data."""

from __future__ import annotations

import base64
import re
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from duanka.data.config import Settings
from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.synthetic import generate_bank
from duanka.training import plots
from duanka.training.bands import BAND_WINDOW_DAYS
from duanka.training.bundle import MODEL_NAME, load_registered
from duanka.training.promote import RECALL_TOLERANCE
from duanka.training.report import SECTIONS, build_report
from duanka.training.report_context import REPORT_NAME, SHAP_SAMPLE
from duanka.training.report_sections_performance import (
    EXAMPLE_ALERTS,
    estimate_branches,
    rule_and_model_decisions,
)
from duanka.training.run import TrainConfig, train
from duanka.training.tracking import configure

AS_OF = pd.Timestamp("2025-03-01T00:00:00+08:00").tz_convert("UTC")
IDENTIFIER_COLUMNS = ("id_number", "phone", "address", "device_id", "escort_id", "company_id")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
SHAP_FIGURES = (
    "shap-beeswarm",
    "shap-dependence",
    *(f"shap-waterfall-{k}" for k in range(1, EXAMPLE_ALERTS + 1)),
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small bank trained once; a second registration of the same run plays the challenger.

    Every text drawn on a figure is recorded as the figure is rendered: PNG pixels cannot be searched.
    """
    root = tmp_path_factory.mktemp("report")
    bank = generate_bank(root / "bank", months=14, applications=30_000, seed=5, start=date(2024, 1, 1))
    store = EventStore(root / "store")
    keys = Pseudonymiser.from_secret(b"x" * 40)
    ingest_file(bank.applications, APPLICATIONS, store, keys)
    ingest_file(bank.labels, LABELS, store, keys)
    ingest_file(bank.watchlist, WATCHLIST, store, keys)
    previous = mlflow.get_tracking_uri()
    figure_texts: list[str] = []
    render = plots.to_data_uri

    def recording(fig, **kwargs) -> str:
        figure_texts.extend(t.get_text() for t in fig.findobj(Text) if t.get_text())
        return render(fig, **kwargs)

    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setattr(plots, "to_data_uri", recording)
        settings = Settings(models_dir=root / "models")
        client = configure(settings)
        result = train(store, TrainConfig(as_of=AS_OF, n_boot=20, truth=bank.truth), settings, progress=False)
        first = client.get_model_version(MODEL_NAME, result.model_version)
        second = client.create_model_version(MODEL_NAME, first.source, first.run_id, tags=first.tags)
        client.set_registered_model_alias(MODEL_NAME, "champion", first.version)
        client.set_registered_model_alias(MODEL_NAME, "challenger", second.version)
        out = build_report(
            f"models:/{MODEL_NAME}@champion", root / "out" / "model.html", client, progress=False
        )
        logged = [a.path for a in client.list_artifacts(result.run_id)]
        logged_report = Path(
            client.download_artifacts(result.run_id, REPORT_NAME, str(root / "downloaded"))
        ).read_text(encoding="utf-8")
        frame = pd.read_parquet(
            client.download_artifacts(result.run_id, "evaluation_frame.parquet", str(root))
        )
        bundle = load_registered(f"models:/{MODEL_NAME}@champion", client).bundle
    mlflow.set_tracking_uri(previous)
    return {
        "html": out.read_text(encoding="utf-8"),
        "bank": bank,
        "logged": logged,
        "logged_report": logged_report,
        "out": out,
        "frame": frame,
        "summary": result.summary,
        "evaluations": result.evaluations,
        "figure_texts": figure_texts,
        "bundle": bundle,
    }


def test_every_section_is_there(built: dict) -> None:
    html = built["html"]
    for key, title in SECTIONS:
        assert f'id="{key}"' in html, key
        assert title in html
    assert 'id="fairness-out-of-province"' in html


def test_dates_a_person_reads_are_beijing_dates(built: dict) -> None:
    html = built["html"]
    # trained as of 2025-03-01 00:00 in Beijing, stored as 2025-02-28T16:00:00+00:00
    assert "<b>Trained as of</b>2025-03-01 00:00 Beijing time" in html
    assert "2025-02-28T16:00" not in html
    assert re.search(r"<b>Built</b>\d{4}-\d{2}-\d{2} \d{2}:\d{2} Beijing time</div>", html)


def test_a_group_over_the_fpr_line_is_explained_and_given_a_status(built: dict) -> None:
    html = built["html"]
    ratios = [
        float(r)
        for r in re.findall(r"<td>(\d+\.\d\d)</td>", html.split('id="fairness"')[1].split("</section>")[0])
    ]
    section = html.split('id="fairness"')[1].split("</section>")[0]
    assert any(r > 1.25 for r in ratios)  # the test bank has groups over the line (age, channel ...)
    assert "No group's FPR ratio is above" not in section
    assert "Groups above the line: what drives their false positives" in section
    rows = re.findall(r"<td class=\"mono\">([^<]*)</td><td><b>(open|mitigated|accepted)</b></td>", section)
    assert rows, "every group over the line gets drivers and a status"
    assert all(re.search(r"[a-z_0-9]+ \(\+\d+\.\d\d\)", drivers) or drivers == "—" for drivers, _ in rows)


def test_every_figure_is_an_embedded_png(built: dict) -> None:
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', built["html"])
    # monthly volumes, curves, calibration, distributions, beeswarm, dependence, 3 waterfalls,
    # stability, fairness
    assert len(sources) >= 11
    for source in sources:
        match = DATA_URI.fullmatch(source)
        assert match, source[:40]
        assert base64.b64decode(match.group(1)).startswith(PNG_MAGIC)


def test_nothing_is_fetched_from_the_network(built: dict) -> None:
    assert re.search(r"https?://", built["html"]) is None
    assert "<script" not in built["html"] and "<link" not in built["html"]


def test_no_raw_identifier_or_row_id_is_printed(built: dict) -> None:
    # figures are binary noise where short values could match by chance: search the text only
    text = DATA_URI.sub("", built["html"])
    raw = pd.read_csv(built["bank"].applications, dtype=str, keep_default_na=False)
    for column in IDENTIFIER_COLUMNS:
        values = {v for v in raw[column] if v}
        assert values, column
        leaked = [v for v in values if v in text]
        assert leaked == [], column
    assert not any(v in text for v in raw["application_id"])


def test_no_identifier_is_drawn_on_any_figure(built: dict) -> None:
    """The example waterfalls show single applications: by rank, score and band, never by id."""
    drawn = "\n".join(built["figure_texts"])
    assert "Highest-scored test application no. 1" in drawn  # the waterfalls' texts were recorded
    raw = pd.read_csv(built["bank"].applications, dtype=str, keep_default_na=False)
    for column in (*IDENTIFIER_COLUMNS, "application_id"):
        leaked = [v for v in raw[column] if v and v in drawn]
        assert leaked == [], column
    assert not any(v in drawn for v in built["frame"]["application_id"])


def test_the_explanations_are_shaps_beeswarm_waterfalls_and_dependence(built: dict) -> None:
    section = built["html"].split('id="explanations"', 1)[1].split("<section", 1)[0]
    for figure in SHAP_FIGURES:
        match = re.search(rf'<figure[^>]*id="{figure}"><img src="([^"]*)" alt="([^"]*)"', section)
        assert match, figure
        assert base64.b64decode(DATA_URI.fullmatch(match.group(1)).group(1)).startswith(PNG_MAGIC)
        assert "SHAP" in match.group(2)
    # the caption says the beeswarm is a seeded sample, and of how many
    test = built["frame"].loc[(built["frame"]["part"] == "test") & (built["frame"]["rule"] == "")]
    caption = " ".join(section.split('id="shap-beeswarm"', 1)[1].split("</figure>", 1)[0].split())
    assert f"one of {min(SHAP_SAMPLE, len(test)):,} test applications drawn at random (seed 0)" in caption
    assert f"from the {len(test):,} the model decided" in caption
    assert "log-odds" in " ".join(built["figure_texts"])


# shap warns that its LightGBM output format changed in 0.45; nothing here reads the old format
@pytest.mark.filterwarnings("ignore:LightGBM binary classifier:UserWarning")
def test_shaps_treeshap_agrees_with_the_registered_models_pred_contrib(built: dict) -> None:
    """The report and the service draw pred_contrib; shap's own TreeSHAP on the same trees agrees."""
    import shap

    bundle = built["bundle"]
    test = built["frame"].loc[built["frame"]["part"] == "test"]
    X = test.loc[:, bundle.feature_names].to_numpy(dtype=float)[:1_000]
    contrib = bundle.contributions(X)
    own = shap.TreeExplainer({"trees": bundle.booster.dump_model()["tree_info"]})
    np.testing.assert_allclose(own.shap_values(X), contrib[:, :-1], rtol=0, atol=1e-6)
    explanation = plots.shap_explanation(contrib, X, bundle.feature_names)
    np.testing.assert_allclose(
        explanation.values.sum(axis=1) + explanation.base_values, bundle.margin(X), rtol=0, atol=1e-9
    )


def test_the_report_is_logged_to_the_models_run(built: dict) -> None:
    assert REPORT_NAME in built["logged"]
    assert built["logged_report"] == built["html"]  # the file written is the one logged, byte for byte


def test_the_promotion_rule_is_printed_as_plain_text(built: dict) -> None:
    rule = built["html"].split('<pre class="rule">', 1)[1].split("</pre>", 1)[0]
    assert "PR-AUC" in rule and f"more than {RECALL_TOLERANCE}" in rule
    # reStructuredText roles and literals would show raw in the HTML
    assert "``" not in rule and ":mod:" not in rule and ":data:" not in rule


def test_the_bands_are_said_to_come_from_the_latest_openings(built: dict) -> None:
    section = built["html"].split('id="purpose"', 1)[1].split("<section", 1)[0]
    words = " ".join(section.split())
    assert f"openings of the {BAND_WINDOW_DAYS} days before the as-of date" in words
    assert "validation months" not in words


def test_champion_and_challenger_stand_side_by_side_when_they_differ(built: dict) -> None:
    section = built["html"].split('id="comparison"', 1)[1].split("<section", 1)[0]
    assert "champion (v1)" in section and "challenger (v2)" in section
    assert "pr_auc" in section


def test_the_baselines_and_ring_catch_rates_are_reported(built: dict) -> None:
    section = built["html"].split('id="performance"', 1)[1].split("<section", 1)[0]
    for name in ("lightgbm_no_links", "woe_scorecard", "branch_rules", "caught_any", "alerts_per_branch_day"):
        assert name in section


def test_rule_refusals_are_reported_but_never_trained_on(built: dict) -> None:
    """Left out of the training set and counted; the report's frame carries only out-of-time ones."""
    frame = built["frame"]
    refused = frame.loc[frame["rule"] == "watchlist"]
    assert len(refused) > 0
    assert set(refused["part"]) <= {"valid", "test"}
    assert built["summary"].rule_refused >= len(refused)
    # everything the model was fitted on was decided by the model
    assert (frame.loc[frame["part"] == "train", "rule"] == "").all()


def test_rule_refusals_are_counted_apart_from_model_alerts(built: dict) -> None:
    frame = built["frame"]
    test = frame.loc[frame["part"] == "test"]
    refused = int((test["rule"] == "watchlist").sum())
    assert refused > 0  # re-applications of listed people fall in the test months
    section = built["html"].split('id="performance-rules"', 1)[1].split("<h3", 1)[0]
    assert f"{refused:,} test applications were refused by a hard rule" in section
    assert "rule: watchlist" in section and "model: alert (high or critical)" in section


def test_the_reports_figures_measure_the_rows_the_logged_metrics_measure(built: dict) -> None:
    """Rule-refused applications are counted in the decision table, and nowhere else."""
    from sklearn.metrics import average_precision_score

    test = built["frame"].loc[built["frame"]["part"] == "test"]
    decided = test.loc[test["rule"] == ""]
    refused = len(test) - len(decided)
    assert refused > 0
    section = built["html"].split('id="performance"', 1)[1].split("<h3", 1)[0]
    counted = f"{len(decided):,} applications decided by the model ({refused:,} more refused by a hard rule)"
    assert counted in section
    assert f"with {int(decided['label'].sum())} confirmed mules" in section
    logged = built["evaluations"]["lightgbm"].point["pr_auc"]
    assert logged == pytest.approx(average_precision_score(decided["label"], decided["score"]), abs=1e-9)


def test_the_decision_table_puts_each_application_on_one_row() -> None:
    rule = np.array(["watchlist", "", "", "", "watchlist", ""], dtype=object)
    band = np.array(["critical", "critical", "high", "medium", "low", "low"])
    y = np.array([1, 1, 0, 0, 0, 1])
    table = rule_and_model_decisions(rule, band, y).set_index("decided by")
    assert table["applications"].sum() == len(rule)
    assert table.loc["rule: watchlist"].tolist() == ["refuse", 2, 1, 1]
    assert table.loc["model: alert (high or critical)", ["applications", "confirmed mules"]].tolist() == [
        2,
        1,
    ]
    assert table.loc["model: low", ["applications", "confirmed mules"]].tolist() == [1, 1]


def test_branch_count_is_estimated_from_branch_volumes() -> None:
    # 40 branches, branch b opening (b + 1) applications a day for 60 days
    per_day = np.repeat(np.arange(1, 41), np.arange(1, 41) * 60)
    frame = pd.DataFrame({"branch_applications_7d": 7.0 * per_day})
    assert estimate_branches(frame, days=60) == pytest.approx(40)


def test_fairness_by_gender_is_measured_from_the_evaluation_frame(built: dict) -> None:
    """Gender is kept out of the model but logged for fairness: the report measures it, group by group."""
    assert "applicant_gender" in built["frame"].columns
    section = built["html"].split('id="fairness"', 1)[1].split('id="fairness-out-of-province"', 1)[0]
    words = " ".join(section.split())
    for group in ("F", "M"):
        assert f"<td>gender</td> <td>{group}</td>" in words, group
    assert "FPR by gender cannot be computed" not in words
