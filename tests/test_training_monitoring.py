"""The monitoring figures the report, the scorecard and the backtest share: PSI, IV, FPR ratios."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from duanka.training.monitoring import (
    band_shares,
    bin_counts,
    binned_divergence,
    calibration_bins,
    error_rates,
    false_positive_rate_ratio,
    information_value,
    information_value_strength,
    population_stability,
    quantile_edges,
)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=20_000)
    assert population_stability(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert population_stability(reference, rng.normal(size=20_000)) < 0.01
    assert population_stability(reference, rng.normal(1.0, size=20_000)) > 0.25


def test_psi_sees_values_appearing_where_the_reference_had_none() -> None:
    reference = np.r_[np.zeros(900), np.ones(100)]
    assert population_stability(reference, np.r_[np.zeros(900), np.full(100, np.nan)]) > 0.25


def test_a_flag_splits_into_two_bins_and_missing_values_into_a_third() -> None:
    flag = np.r_[np.zeros(6), np.ones(3), np.nan]
    edges = quantile_edges(flag)
    assert bin_counts(flag, edges)[[0, -1]].tolist() == [6, 1]
    assert bin_counts(flag, edges).sum() == len(flag)
    assert bin_counts(flag, edges)[1:-1].sum() == 3


def test_the_divergence_is_symmetric_and_ignores_bins_empty_on_both_sides() -> None:
    expected, actual = np.array([50, 30, 20]), np.array([20, 30, 50])
    assert binned_divergence(expected, actual) == pytest.approx(binned_divergence(actual, expected))
    padded = binned_divergence(np.r_[expected, 0], np.r_[actual, 0])
    assert padded == pytest.approx(binned_divergence(expected, actual))
    # a bin empty on one side only stays finite
    assert math.isfinite(binned_divergence(np.array([10, 0]), np.array([5, 5])))


def test_information_value_separates_a_flag() -> None:
    y = np.r_[np.zeros(900), np.ones(100)].astype(int)
    flag = y.astype(float)  # a 0/1 flag equal to the label: its only edge is 0
    assert information_value(flag, y) > 1.0
    noise = np.random.default_rng(1).integers(0, 2, size=len(y)).astype(float)
    assert information_value(noise, y) < 0.05


@pytest.mark.parametrize(
    ("iv", "word"), [(0.01, "none"), (0.05, "weak"), (0.2, "medium"), (0.4, "strong"), (0.5, "very strong")]
)
def test_information_value_strength_follows_the_convention(iv: float, word: str) -> None:
    assert information_value_strength(iv) == word


def test_fpr_ratios_are_against_the_lowest_group() -> None:
    y = np.zeros(600, dtype=int)
    y[:10] = 1
    alert = np.zeros(600, dtype=bool)
    alert[:5] = True  # half the mules, all in group a
    alert[100:102] = True  # 2 of 190 legitimate in group a
    alert[300:306] = True  # 6 of 300 legitimate in group b
    groups = pd.Series(["a"] * 200 + ["b"] * 300 + ["tiny"] * 100)
    groups[550:] = "tiny-er"
    table = error_rates(y, alert, groups, "g").set_index("group")
    assert table.loc["a", "fpr"] == pytest.approx(2 / 190)
    assert table.loc["b", "fpr_ratio"] == pytest.approx((6 / 300) / (2 / 190))
    assert table.loc["a", "fpr_ratio"] == pytest.approx(1.0)
    assert table.loc["a", "recall"] == pytest.approx(0.5)
    assert np.isnan(table.loc["tiny", "fpr_ratio"])  # under 100 legitimate rows: no ratio


def test_the_fpr_ratio_of_two_sides_counts_legitimate_applicants_only() -> None:
    y = np.r_[np.ones(10), np.zeros(200)].astype(int)
    outsider = np.r_[np.ones(10), np.ones(100), np.zeros(100)].astype(bool)
    alert = np.zeros(210, dtype=bool)
    alert[:10] = True  # every mule alerted: no false positive
    alert[10:16] = True  # 6 of 100 legitimate outsiders
    alert[110:113] = True  # 3 of 100 legitimate locals
    assert false_positive_rate_ratio(y, alert, outsider, ~outsider) == pytest.approx(2.0)
    assert math.isnan(false_positive_rate_ratio(y, np.zeros(210, dtype=bool), outsider, ~outsider))
    assert math.isnan(false_positive_rate_ratio(y, alert, outsider, np.zeros(210, dtype=bool)))


def test_band_shares_count_high_and_critical_as_alerts() -> None:
    band = np.array(["critical", "high", "high", "medium", "low", "low", "low", "low", "low", "low"])
    assert band_shares(band) == {"critical_share": pytest.approx(0.1), "alert_share": pytest.approx(0.3)}
    assert band_shares(np.array([], dtype=str)) == {"critical_share": 0.0, "alert_share": 0.0}


def test_calibration_bins_average_scores_and_outcomes_per_bin() -> None:
    score = np.linspace(0.0, 1.0, 1_000)
    y = (score > 0.5).astype(int)
    table = calibration_bins(y, score)
    assert table["n"].sum() == len(score)
    assert table["observed"].iloc[0] == 0.0 and table["observed"].iloc[-1] == 1.0
    assert table["predicted"].is_monotonic_increasing
    # finer at the top: the last bin holds the top half-percent
    assert table["n"].iloc[-1] == 5
