"""Rolling backtest: each period's model is the one `train --as-of` its start ships, trained on
nothing later, and the period is scored point in time; nothing is registered."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import Settings, get_settings
from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.synthetic import generate_bank
from duanka.features.registry import FEATURE_NAMES
from duanka.features.training_set import build_training_set, training_set_at
from duanka.training.backtest import (
    EVIDENCE_ROW,
    BacktestConfig,
    StoreTooYoung,
    backtest,
    run_period,
    scheme_recall,
)
from duanka.training.bundle import MODEL_NAME
from duanka.training.periods import Every, earliest_start, period_starts
from duanka.training.run import TrainConfig, train
from duanka.training.tracking import configure

WINDOW = 180
FIRST = pd.Timestamp("2025-01-01T00:00:00+08:00").tz_convert("UTC")
SECOND = pd.Timestamp("2025-02-01T00:00:00+08:00").tz_convert("UTC")
END = pd.Timestamp("2025-03-01T00:00:00+08:00").tz_convert("UTC")
SECRET = b"b" * 40


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    generated = generate_bank(root / "bank", months=14, applications=30_000, seed=11, start=date(2024, 1, 1))
    store = EventStore(root / "store")
    keys = Pseudonymiser.from_secret(SECRET)
    ingest_file(generated.applications, APPLICATIONS, store, keys)
    ingest_file(generated.labels, LABELS, store, keys)
    ingest_file(generated.watchlist, WATCHLIST, store, keys)
    settings = Settings(models_dir=root / "models")
    configure(settings)
    built = build_training_set(
        store.applications(),
        store.labels(),
        listings=store.watchlist(),
        as_of=END,
        outcome_window_days=WINDOW,
    )
    labels = store.labels(["application_id", "confirmed_at"]).to_pandas()
    cfg = BacktestConfig(FIRST, END, TrainConfig(as_of=FIRST, fast=True, n_boot=10), n_boot=10)
    return {
        "root": root,
        "bank": generated,
        "store": store,
        "settings": settings,
        "built": built,
        "labels": labels,
        "cfg": cfg,
    }


def test_a_training_set_cut_at_an_earlier_instant_equals_one_built_then(bank):
    store = bank["store"]
    direct = build_training_set(
        store.applications(),
        store.labels(),
        listings=store.watchlist(),
        as_of=FIRST,
        outcome_window_days=WINDOW,
    )
    cut = training_set_at(bank["built"], bank["labels"], FIRST)
    columns = ["application_id", "applied_at", *FEATURE_NAMES, "label", "label_mature"]
    pd.testing.assert_frame_equal(cut.frame.loc[:, columns], direct.frame.loc[:, columns])
    assert cut.summary == direct.summary
    assert list(cut.refused["application_id"]) == list(direct.refused["application_id"])


@pytest.fixture(scope="module")
def first_period(bank):
    return run_period(bank["built"], bank["labels"], FIRST, SECOND, bank["cfg"], WINDOW)


def test_a_period_ships_the_model_train_as_of_its_start_ships(bank, first_period):
    period = first_period
    trained = train(bank["store"], replace(bank["cfg"].train, as_of=FIRST), bank["settings"], progress=False)
    assert (
        period.fitted.shipped.booster_.model_to_string() == trained.fitted.shipped.booster_.model_to_string()
    )
    assert period.fitted.bands == trained.fitted.bands
    assert period.fitted.calibrator.to_dict() == trained.fitted.calibrator.to_dict()


def test_a_period_is_scored_only_on_its_own_applications_by_a_model_blind_to_them(bank, first_period):
    period = first_period
    applied = period.scored["applied_at"]
    assert len(period.scored) > 1000 and (applied > FIRST).all() and (applied <= SECOND).all()
    assert period.fitted.refit_window.end == FIRST

    # A leak trap: every application of the two months before the period, and of the period
    # itself, is confirmed a day after the period began. Known only after the period's start,
    # none of these may move its model or its scores (the period's labels do change).
    rows = bank["built"].frame
    trap = rows.loc[(rows["applied_at"] > FIRST - pd.Timedelta(days=61)) & (rows["applied_at"] <= SECOND)]
    planted = pd.DataFrame(
        {"application_id": trap["application_id"], "confirmed_at": FIRST + pd.Timedelta(days=1)}
    )
    trapped = run_period(
        bank["built"], pd.concat([bank["labels"], planted]), FIRST, SECOND, bank["cfg"], WINDOW
    )
    assert (
        trapped.fitted.shipped.booster_.model_to_string() == period.fitted.shipped.booster_.model_to_string()
    )
    np.testing.assert_array_equal(trapped.scored["score"], period.scored["score"])
    assert trapped.scored["label"].sum() > period.scored["label"].sum()  # the trap did reach the labels


def test_the_backtest_reports_periods_and_pooled_figures_and_registers_nothing(bank):
    client = mlflow.MlflowClient()
    before = len(client.search_model_versions(f"name='{MODEL_NAME}'"))
    result = backtest(bank["store"], bank["cfg"], WINDOW, truth_path=bank["bank"].truth)
    assert len(result.periods) == 2
    assert list(result.table.index) == ["2025-01-01", "2025-02-01", "pooled", EVIDENCE_ROW]
    pooled = result.table.loc["pooled"]
    assert pooled["applications"] == sum(len(p.scored) for p in result.periods)
    assert 0 < pooled["recall@1.0%"] <= 1 and pooled["recall@1.0%_ci_low"] <= pooled["recall@1.0%"]
    assert pooled["out_of_province_ratio"] > 0  # legitimate outsiders alerted, relative to locals
    assert "all" in result.by_scheme.index and len(result.by_scheme) >= 2
    assert result.by_scheme.loc["all", "mules"] == result.by_scheme.drop(index="all")["mules"].sum()
    assert result.by_scheme.loc["all", "unlinked"] == result.by_scheme.drop(index="all")["unlinked"].sum()
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == before


def test_a_store_too_young_names_the_earliest_start_that_works(bank):
    first_applied = bank["store"].applications(["applied_at"]).to_pandas()["applied_at"].min()
    earliest = earliest_start(first_applied, WINDOW, 2, 2)
    assert earliest.tz_convert("Asia/Shanghai").day == 1
    too_early = replace(bank["cfg"], start=earliest - pd.Timedelta(days=31))
    with pytest.raises(StoreTooYoung, match=f"--from {earliest.tz_convert('Asia/Shanghai').date()}"):
        backtest(bank["store"], too_early, WINDOW)


def test_periods_are_local_calendar_months_up_to_the_end():
    starts = period_starts(FIRST, END + pd.Timedelta(days=3), Every.MONTH)
    local = [s.tz_convert("Asia/Shanghai") for s in starts]
    assert [(d.month, d.day, d.hour) for d in local] == [(1, 1, 0), (2, 1, 0), (3, 1, 0)]
    with pytest.raises(ValueError, match="must come after"):
        period_starts(END, FIRST, Every.MONTH)


def test_the_command_prints_the_table_writes_the_page_and_logs_a_run(bank, monkeypatch):
    monkeypatch.setenv("DUANKA_MODELS_DIR", str(bank["root"] / "models"))
    get_settings.cache_clear()
    out = bank["root"] / "page" / "backtest.html"
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--data",
            str(bank["store"].root),
            "--from",
            "2025-02-01",
            "--to",
            "2025-03-01",
            "--fast",
            "--n-boot",
            "10",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pooled" in result.output and "recall@1.0%" in result.output
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 3  # recall, calibration, band shares
    experiment = mlflow.get_experiment_by_name("duanka-backtest")
    assert experiment is not None and mlflow.search_runs([experiment.experiment_id]).shape[0] >= 1
    # Its artifacts live under the models folder, never in the folder the command ran in.
    assert experiment.artifact_location.startswith((bank["root"] / "models").resolve().as_uri())
    get_settings.cache_clear()


def test_scheme_recall_splits_each_scheme_by_whether_its_mules_were_linked():
    # 200 applications, 1 % alerts = the 2 best scores: one linked ring mule, one unlinked shell
    scored = pd.DataFrame(
        {
            "application_id": [f"a{i}" for i in range(200)],
            "score": [0.9, 0.8, 0.7, 0.6] + [0.0] * 196,
            "linked": [True, False, False, True] + [False] * 196,
        }
    )
    truth = pd.DataFrame(
        {
            "application_id": [f"a{i}" for i in range(200)],
            "is_mule": [1, 1, 1, 1] + [0] * 196,
            "scheme": ["escort_ring", "shell_company", "escort_ring", "escort_ring"] + ["legit"] * 196,
        }
    )
    table = scheme_recall(scored, truth)
    ring = table.loc["escort_ring"]
    assert (ring["mules"], ring["caught"], ring["unlinked"]) == (3, 1, 1)
    assert ring["recall_linked"] == 0.5 and ring["recall_unlinked"] == 0.0
    shell = table.loc["shell_company"]
    assert shell["unlinked"] == 1 and shell["recall_unlinked"] == 1.0 and np.isnan(shell["recall_linked"])
    assert table.loc["all", "unlinked"] == 2 and table.loc["all", "recall_linked"] == 0.5
    # without the column (a reference model's scores) the table is as it was
    assert "unlinked" not in scheme_recall(scored.drop(columns="linked"), truth)
