"""The monitoring's maths, where the model report's is: binomial intervals, shares against the alert
budget, error rates from counts, and PSI over a stored reference's bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duanka.training.monitoring import (
    Z_95,
    age_band,
    bin_counts,
    error_counts,
    error_rates,
    error_rates_from_counts,
    population_stability,
    quantile_edges,
    shares_against_budget,
    simultaneous_z,
    wilson_interval,
)
from duanka.training.monitoring_reference import Binned, MonitoringReference, reference_of


def test_a_wilson_interval_is_honest_about_a_small_branch() -> None:
    low, high = wilson_interval(1, 40)  # one critical alert in forty openings: 2.5 % raw
    assert (float(low), float(high)) == pytest.approx((0.00443, 0.12881), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no opening: nothing known
    assert wilson_interval(0, 100)[0] == 0.0 and wilson_interval(100, 100)[1] == 1.0


def test_intervals_read_together_are_wider_the_more_there_are() -> None:
    assert simultaneous_z(1) == pytest.approx(Z_95)
    assert Z_95 < simultaneous_z(20) < simultaneous_z(1000)
    low_one, _ = wilson_interval(3, 70)
    low_many, _ = wilson_interval(3, 70, simultaneous_z(200))
    assert low_many < low_one


def test_shares_against_budget_count_every_band_in_the_total_and_high_or_critical_as_alerts() -> None:
    counts = pd.DataFrame(
        {"critical": [1, 10], "high": [3, 0], "medium": [6, 0], "low": [189, 90], "blocked": [1, 0]},
        index=pd.Index(["B01", "B02"], name="branch"),
    )
    shares = shares_against_budget(counts).set_index(["branch", "share"])
    assert shares.loc[("B01", "critical"), "n"] == 200  # the blocked opening is one of them
    assert shares.loc[("B01", "critical"), "rate"] == pytest.approx(0.005)
    assert shares.loc[("B01", "critical"), "ratio"] == pytest.approx(1.0)
    assert shares.loc[("B01", "alert"), "count"] == 4
    assert shares.loc[("B01", "alert"), "budget"] == pytest.approx(0.02)
    assert shares.loc[("B02", "critical"), "low"] > 2 * shares.loc[("B02", "critical"), "budget"]


def test_error_rates_from_counts_are_error_rates_of_the_rows() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.05).astype(int)
    alert = rng.random(3000) < np.where(y == 1, 0.6, 0.03)
    groups = pd.Series(rng.choice(["a", "b", "c", None], size=3000))
    from_rows = error_rates(y, alert, groups, "g")
    from_counts = error_rates_from_counts(error_counts(y, alert, groups), "g")
    pd.testing.assert_frame_equal(from_counts, from_rows)


def test_psi_over_a_stored_reference_is_the_psi_of_the_rows() -> None:
    rng = np.random.default_rng(1)
    before = np.r_[rng.normal(size=5000), np.full(200, np.nan)]
    after = np.r_[rng.normal(0.4, 1.2, size=3000), np.full(400, np.nan)]
    stored = Binned.of(before)
    counted = bin_counts(after, stored.edge_array)
    assert stored.edges == tuple(quantile_edges(before))
    assert stored.divergence(counted) == pytest.approx(population_stability(before, after), rel=1e-12)
    assert stored.missing_rate == pytest.approx(200 / 5200)


def test_a_reference_travels_as_text_and_comes_back_the_same() -> None:
    rng = np.random.default_rng(2)
    X = np.c_[rng.normal(size=1000), (rng.random(1000) < 0.3).astype(float)]
    reference = reference_of(X, rng.uniform(size=1000), ["a", "flag"], ("2025-01-01", "2025-03-01"))
    again = MonitoringReference.from_text(reference.text())
    assert again == reference and again.sha256() == reference.sha256()
    assert len(reference.features["flag"].counts) == len(reference.features["flag"].edges) + 2
    with pytest.raises(ValueError, match="layout"):
        MonitoringReference.from_text('{"layout": 0}')


def test_age_bands_keep_the_rows_they_were_given() -> None:
    ages = pd.Series([19.0, 30.0, np.nan, 61.0], index=[7, 8, 9, 10])
    banded = age_band(ages)
    assert list(banded.index) == [7, 8, 9, 10]
    assert banded.astype(object).where(banded.notna(), None).tolist() == ["under 25", "25-34", None, "60+"]
