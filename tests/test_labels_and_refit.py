"""Label delay and the shipped refit: which rows a refit learns from, what their labels weigh,
and how the promotion rule keeps its comparison on rows neither model was fitted on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duanka.training.fit import FitOptions, fit_models
from duanka.training.labels import LabelPolicy, confirmed_us, delay_distribution, refit_rows
from duanka.training.model import downsample
from duanka.training.promote import comparison_rows
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit

AS_OF = pd.Timestamp("2025-01-01", tz="UTC")
WINDOW = 180
DAY = pd.Timedelta(days=1)


def _frame(ages_days: list[float]) -> pd.DataFrame:
    applied = AS_OF - pd.to_timedelta(ages_days, unit="D")
    frame = pd.DataFrame({"application_id": [f"A{i}" for i in range(len(ages_days))], "applied_at": applied})
    frame["label_mature"] = frame["applied_at"] + WINDOW * DAY <= AS_OF
    return frame


def test_confirmations_after_the_as_of_date_are_not_known():
    frame = _frame([10, 20])
    labels = pd.DataFrame(
        {
            "application_id": ["A0", "A1", "A1"],
            "confirmed_at": [AS_OF + DAY, AS_OF - 3 * DAY, AS_OF - 5 * DAY],
        }
    )
    confirmed = confirmed_us(frame, labels, AS_OF)
    assert confirmed[0] == -1
    assert confirmed[1] == (AS_OF - 5 * DAY).value // 1_000  # the earliest known


def test_the_delay_distribution_reads_only_rows_old_enough_to_have_every_confirmation():
    # 30 mature mules confirmed after 10..39 days; one young row confirmed after 1 day must not count.
    ages = [300] * 30 + [5]
    frame = _frame(ages)
    delays = [*range(10, 40), 1]
    labels = pd.DataFrame(
        {
            "application_id": frame["application_id"],
            "confirmed_at": frame["applied_at"] + pd.to_timedelta(delays, unit="D"),
        }
    )
    dist = delay_distribution(frame, confirmed_us(frame, labels, AS_OF), AS_OF, WINDOW)
    assert dist.delays.min() == 10 and len(dist.delays) == 30
    np.testing.assert_allclose(dist.cdf(np.array([5, 10, 24.5, 39, 500])), [0, 1 / 30, 15 / 30, 1, 1])


def test_delay_weighted_rows_count_an_unconfirmed_row_by_the_chance_its_label_has_arrived():
    mature_mules = [300] * 30
    frame = _frame([*mature_mules, 300, 24.5, 24.5, 1])
    n = len(mature_mules)
    delays = pd.to_timedelta([*range(10, 40), 2], unit="D")
    labels = pd.DataFrame(
        {
            "application_id": [*frame["application_id"][:n], "A32"],
            "confirmed_at": [*(frame["applied_at"][:n] + delays[:n]), frame["applied_at"][32] + delays[n]],
        }
    )
    confirmed = confirmed_us(frame, labels, AS_OF)
    rows = refit_rows(frame, confirmed, AS_OF, policy=LabelPolicy.DELAY_WEIGHTED, outcome_window_days=WINDOW)
    by_id = dict(
        zip(frame["application_id"].iloc[rows.rows], zip(rows.label, rows.weight, strict=True), strict=True)
    )
    assert by_id["A30"] == (0, 1.0)  # old and never confirmed: a full negative
    assert by_id["A31"] == (0, pytest.approx(0.5))  # half of the mules are confirmed by 24.5 days
    assert by_id["A32"] == (1, 1.0)  # young but already confirmed: a full positive
    assert "A33" not in by_id  # a day old: no mule would be confirmed yet, so it teaches nothing


def test_mature_and_horizon_policies_pick_rows_by_age_and_label_within_their_window():
    frame = _frame([400, 100, 70, 30])
    labels = pd.DataFrame(
        {
            "application_id": ["A0", "A1", "A2"],
            "confirmed_at": [
                frame["applied_at"][0] + 90 * DAY,
                frame["applied_at"][1] + 20 * DAY,
                frame["applied_at"][2] + 65 * DAY,
            ],
        }
    )
    confirmed = confirmed_us(frame, labels, AS_OF)
    mature = refit_rows(frame, confirmed, AS_OF, policy=LabelPolicy.MATURE, outcome_window_days=WINDOW)
    assert list(mature.rows) == [0] and list(mature.label) == [1]
    horizon = refit_rows(
        frame, confirmed, AS_OF, policy=LabelPolicy.HORIZON, outcome_window_days=WINDOW, horizon_days=60
    )
    assert list(horizon.rows) == [0, 1, 2]
    assert list(horizon.label) == [0, 1, 0]  # A0 after 90 and A2 after 65 days: beyond the horizon
    with pytest.raises(ValueError, match="horizon"):
        refit_rows(
            frame, confirmed, AS_OF, policy=LabelPolicy.HORIZON, outcome_window_days=WINDOW, horizon_days=400
        )


def test_downsampling_keeps_every_positive_and_scales_the_kept_negatives_weights():
    y = np.array([1] * 50 + [0] * 5000)
    weight = np.full(len(y), 0.5)
    kept, w = downsample(y, 0.2, seed=3, weight=weight)
    assert (y[kept] == 1).sum() == 50
    assert np.allclose(w[y[kept] == 1], 0.5) and np.allclose(w[y[kept] == 0], 2.5)
    assert 800 < (y[kept] == 0).sum() < 1200


def _synthetic_training_frame(seed: int = 0) -> pd.DataFrame:
    """Two years of daily applications with one informative feature and complete labels (named
    after two registered features the model leaves unconstrained, which training requires)."""
    rng = np.random.default_rng(seed)
    n = 24_000
    applied = pd.Timestamp("2023-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.uniform(0, 730, n)), unit="D"
    )
    signal = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(signal * 2.5 - 5)))).astype(np.int8)
    frame = pd.DataFrame(
        {
            "application_id": [f"A{i}" for i in range(n)],
            "applied_at": applied,
            "phone_tenure_days": signal,
            "applicant_age": rng.normal(size=n),
            "label": label,
            "applicant_out_of_province": (rng.random(n) < 0.4).astype(float),
        }
    )
    return frame


def test_the_shipped_model_is_refit_on_all_labelled_history_with_the_rounds_the_evidence_chose():
    frame = _synthetic_training_frame()
    as_of = frame["applied_at"].max() + DAY
    frame["label_mature"] = frame["applied_at"] + WINDOW * DAY <= as_of
    confirmed = np.where(
        frame["label"] == 1,
        (frame["applied_at"] + 3 * DAY).to_numpy(dtype="datetime64[us]").astype(np.int64),
        -1,
    )
    split = TimeSplit.before_maturity(as_of, outcome_window_days=WINDOW)
    part = split.assign(frame["applied_at"])
    parts = {name: frame.loc[part == name] for name in (TRAIN, VALID, TEST)}
    options = FitOptions(label_policy=LabelPolicy.DELAY_WEIGHTED)
    fitted = fit_models(
        frame, parts, split, confirmed, as_of, WINDOW, options, names=["phone_tenure_days", "applicant_age"]
    )

    assert fitted.shipped.booster_.current_iteration() == fitted.evidence.booster_.best_iteration
    # The refit saw the months after the split's test months; the evidence model did not.
    assert fitted.refit_window.rows > len(frame.loc[frame["label_mature"]])
    assert fitted.refit_window.end == as_of
    assert (fitted.calibration_window.start, fitted.calibration_window.end) == (
        split.valid_start,
        split.test_end,
    )
    # Band cuts are quantiles of the latest openings' scores: the budget holds there exactly.
    latest = frame.loc[frame["applied_at"] >= as_of - pd.Timedelta(days=options.band_days)]
    bands = fitted.bands.assign(
        fitted.score(latest.loc[:, ["phone_tenure_days", "applicant_age"]].to_numpy())
    )
    assert (bands == "critical").mean() == pytest.approx(0.005, abs=0.002)


def test_promotion_compares_only_test_rows_the_champions_evidence_model_never_saw():
    frame = pd.DataFrame({"applied_at": pd.date_range("2024-01-01", periods=365, freq="D", tz="UTC")})
    challenger = {
        "split_test_start": "2024-09-01T00:00:00+00:00",
        "split_test_end": "2024-11-01T00:00:00+00:00",
    }
    older = {"split_test_start": "2024-07-01T00:00:00+00:00"}
    newer = {"split_test_start": "2024-10-01T00:00:00+00:00"}
    rows = comparison_rows(challenger, older, frame)
    assert rows["applied_at"].min() == pd.Timestamp("2024-09-01", tz="UTC")
    assert rows["applied_at"].max() == pd.Timestamp("2024-10-31", tz="UTC")
    # A champion whose own test months began later was stopped and calibrated on earlier rows.
    assert comparison_rows(challenger, newer, frame)["applied_at"].min() == pd.Timestamp(
        "2024-10-01", tz="UTC"
    )
