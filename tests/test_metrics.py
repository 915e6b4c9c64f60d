"""Out-of-time metrics: hand-computed cases, agreement with scikit-learn, bootstrap behaviour."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from duanka.training.metrics import (
    Evaluation,
    _kernel,
    _Ranked,
    compare,
    evaluate,
    fpr_key,
    point_metrics,
    precision_key,
    recall_key,
    threshold_table,
)

# Ten applications, already in descending score order; mules at ranks 1, 3 and 10.
HAND_Y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
HAND_SCORE = np.linspace(0.95, 0.05, 10)


def _sample(n: int, seed: int, *, prevalence: float = 0.05, signal: float = 1.0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    # Rounded so that ties occur, as they do with binned or calibrated scores.
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + signal * y - 3)))
    return y, score.round(2)


def test_metric_names_follow_the_report_convention():
    assert recall_key(0.005) == "recall@0.5%"
    assert precision_key(0.02) == "precision@2.0%"
    assert fpr_key(0.05) == "recall@fpr5%"


def test_hand_computed_alert_rates():
    m = point_metrics(HAND_Y, HAND_SCORE, alert_rates=(0.1, 0.2, 0.3))
    # top 1 holds one of three mules; top 2 still one; top 3 two.
    assert m["recall@10.0%"] == pytest.approx(1 / 3)
    assert m["precision@10.0%"] == pytest.approx(1.0)
    assert m["recall@20.0%"] == pytest.approx(1 / 3)
    assert m["precision@20.0%"] == pytest.approx(1 / 2)
    assert m["recall@30.0%"] == pytest.approx(2 / 3)
    assert m["positives"] == 3
    assert m["n"] == 10


def test_hand_computed_ks_and_auc():
    m = point_metrics(HAND_Y, HAND_SCORE)
    # Best split after rank 3: TPR 2/3, FPR 1/7.
    assert m["ks"] == pytest.approx(2 / 3 - 1 / 7)
    # Negatives see 1, then six times 2, mules above them: (1 + 12) / (3 * 7).
    assert m["roc_auc"] == pytest.approx(13 / 21)


def test_hand_computed_recall_at_fpr_never_exceeds_the_fpr():
    # FPR 1/7 ≈ 14.3% is allowed at 15% (recall 2/3) but not at 10% (only rank 1: recall 1/3).
    assert point_metrics(HAND_Y, HAND_SCORE, fpr=0.15)["recall@fpr15%"] == pytest.approx(2 / 3)
    assert point_metrics(HAND_Y, HAND_SCORE, fpr=0.10)["recall@fpr10%"] == pytest.approx(1 / 3)
    # Exactly on the target counts as within it.
    assert point_metrics(HAND_Y, HAND_SCORE, fpr=1 / 7)[fpr_key(1 / 7)] == pytest.approx(2 / 3)


def test_alert_count_is_rounded_up_and_ties_break_by_row_order():
    tied = np.array([0.5, 0.5])
    assert point_metrics(np.array([0, 1]), tied, alert_rates=(0.5,))["recall@50.0%"] == 0.0
    assert point_metrics(np.array([1, 0]), tied, alert_rates=(0.5,))["recall@50.0%"] == 1.0
    # 5% of 10 rows is half a row: one row is flagged.
    y = np.r_[1, np.zeros(9, dtype=int)]
    assert point_metrics(y, np.linspace(1, 0, 10), alert_rates=(0.05,))["precision@5.0%"] == 1.0


def test_perfect_score():
    y = np.r_[np.ones(10, dtype=int), np.zeros(990, dtype=int)]
    score = np.linspace(1, 0, 1000)
    m = point_metrics(y, score)
    for name in ("roc_auc", "pr_auc", "ks", "recall@fpr5%", "recall@1.0%", "precision@1.0%"):
        assert m[name] == pytest.approx(1.0), name
    # 0.5% of 1000 flags 5 rows, half of the 10 mules.
    assert m["recall@0.5%"] == pytest.approx(0.5)


def test_random_score_ranks_at_chance():
    rng = np.random.default_rng(3)
    y = (rng.random(100_000) < 0.05).astype(int)
    m = point_metrics(y, rng.random(100_000))
    assert m["roc_auc"] == pytest.approx(0.5, abs=0.02)
    assert m["recall@5.0%"] == pytest.approx(0.05, abs=0.015)
    assert m["precision@5.0%"] == pytest.approx(0.05, abs=0.015)


def test_reversed_score_has_zero_ks():
    y = np.r_[np.ones(5, dtype=int), np.zeros(5, dtype=int)]
    assert point_metrics(y, np.linspace(0, 1, 10))["ks"] == 0.0


@pytest.mark.parametrize(("seed", "prevalence"), [(0, 0.05), (1, 0.05), (2, 0.01), (3, 0.3), (4, 0.9)])
def test_agrees_with_scikit_learn(seed, prevalence):
    y, score = _sample(3_000, seed, prevalence=prevalence)
    m = point_metrics(y, score)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, score), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, score), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, score)
    assert m["ks"] == pytest.approx((tpr - fpr).max(), abs=1e-12)
    assert m["recall@fpr5%"] == pytest.approx(tpr[fpr <= 0.05].max(), abs=1e-12)


def test_a_row_drawn_c_times_counts_c_times():
    # The bootstrap rests on this: weights in the kernel equal repeating the rows.
    y, score = _sample(500, seed=11, prevalence=0.1)
    counts = np.bincount(np.random.default_rng(0).integers(0, 500, size=500), minlength=500)
    order = np.argsort(-score, kind="stable")
    weighted = _kernel(_Ranked.of(y, score), counts[order][None, :].astype(float), (0.01, 0.05), 0.05)
    repeated = point_metrics(np.repeat(y, counts), np.repeat(score, counts), alert_rates=(0.01, 0.05))
    for name, value in repeated.items():
        assert weighted[name][0] == pytest.approx(value, abs=1e-12), name


def test_bootstrap_interval_contains_the_point_estimate():
    y, score = _sample(5_000, seed=1)
    ev = evaluate(y, score, n_boot=200, seed=0)
    assert ev.n_boot == 200
    assert ev.n_skipped == 0
    for name, value in ev.point.items():
        assert ev.ci_low[name] <= value <= ev.ci_high[name], name
    assert ev.ci_low["roc_auc"] < ev.ci_high["roc_auc"]
    # Rows are resampled as a whole, so the sample size is fixed but the mule count varies.
    assert ev.ci_low["n"] == ev.ci_high["n"] == 5_000
    assert ev.ci_low["positives"] < ev.ci_high["positives"]


def test_bootstrap_is_deterministic_by_seed():
    y, score = _sample(2_000, seed=2)
    first = evaluate(y, score, n_boot=50, seed=7)
    assert evaluate(y, score, n_boot=50, seed=7) == first
    assert evaluate(y, score, n_boot=50, seed=8).ci_low["roc_auc"] != first.ci_low["roc_auc"]


def test_resamples_without_mules_are_skipped_and_counted():
    # One mule in five rows: about a third of resamples miss it.
    y = np.array([1, 0, 0, 0, 0])
    ev = evaluate(y, np.linspace(1, 0, 5), n_boot=100, seed=0)
    assert 10 < ev.n_skipped < 60
    assert ev.ci_low["roc_auc"] == 1.0


def test_no_resamples_gives_nan_intervals():
    ev = evaluate(HAND_Y, HAND_SCORE, n_boot=0)
    assert math.isnan(ev.ci_low["roc_auc"])
    assert ev.point == point_metrics(HAND_Y, HAND_SCORE)


def test_to_frame_lists_every_metric():
    ev = evaluate(HAND_Y, HAND_SCORE, n_boot=20)
    frame = ev.to_frame()
    assert list(frame.columns) == ["value", "ci_low", "ci_high"]
    assert frame.index.name == "metric"
    assert frame.loc["roc_auc", "value"] == pytest.approx(13 / 21)
    assert set(frame.index) == set(ev.point)


def test_compare_formats_one_row_per_model():
    ev = Evaluation(
        point={"roc_auc": 0.91234, "positives": 1234.0},
        ci_low={"roc_auc": 0.9, "positives": 1200.0},
        ci_high={"roc_auc": 0.925, "positives": 1300.0},
        n_boot=200,
    )
    no_ci = Evaluation(
        point={"roc_auc": 0.8, "positives": 10.0},
        ci_low={"roc_auc": math.nan, "positives": math.nan},
        ci_high={"roc_auc": math.nan, "positives": math.nan},
        n_boot=0,
    )
    table = compare({"lightgbm": ev, "scorecard": no_ci}, ["roc_auc", "positives"])
    expected = pd.DataFrame(
        {"roc_auc": ["0.912 [0.900, 0.925]", "0.800"], "positives": ["1,234", "10"]},
        index=pd.Index(["lightgbm", "scorecard"], name="model"),
    )
    pd.testing.assert_frame_equal(table, expected)
    with pytest.raises(KeyError, match="ks"):
        compare({"lightgbm": ev}, ["ks"])


def test_threshold_table_translates_rates_into_branch_workload():
    table = threshold_table(HAND_Y, HAND_SCORE, alert_rates=(0.1, 0.3), days=2, branches=5)
    assert list(table.columns) == [
        "alert_rate",
        "threshold",
        "alerts",
        "alerts_per_branch_day",
        "precision",
        "recall",
    ]
    assert table["alerts"].tolist() == [1, 3]
    assert table["threshold"].tolist() == pytest.approx([0.95, 0.75])
    assert table["alerts_per_branch_day"].tolist() == pytest.approx([0.1, 0.3])
    assert table["precision"].tolist() == pytest.approx([1.0, 2 / 3])
    assert table["recall"].tolist() == pytest.approx([1 / 3, 2 / 3])


def test_threshold_table_does_not_add_an_alert_for_float_noise():
    y = np.r_[1, np.zeros(99, dtype=int)]
    table = threshold_table(y, np.linspace(1, 0, 100), alert_rates=(0.07,), days=1, branches=1)
    assert table["alerts"].item() == 7


@pytest.mark.parametrize(
    ("y", "score", "message"),
    [
        (np.zeros(4, dtype=int), np.ones(4), "both positives and negatives"),
        (np.array([0, 1]), np.array([0.1, np.nan]), "NaN"),
        (np.array([0, 1, 1]), np.array([0.1, 0.2]), "same length"),
        (np.array([0, 2]), np.array([0.1, 0.2]), "0/1"),
    ],
)
def test_rejects_unusable_input(y, score, message):
    with pytest.raises(ValueError, match=message):
        point_metrics(y, score)
