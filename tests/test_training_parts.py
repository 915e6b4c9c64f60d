"""Split boundaries, calibration, bands and the classifier, as specifications."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from duanka.training.bands import ACTIONS, Bands
from duanka.training.calibration import IsotonicCalibrator, PlattCalibrator, calibrator_from_dict
from duanka.training.model import MuleClassifier
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit

AS_OF = pd.Timestamp("2025-07-01T00:00:00+08:00").tz_convert("UTC")


def test_split_ends_at_the_maturity_cutoff_and_orders_the_parts():
    split = TimeSplit.before_maturity(AS_OF, outcome_window_days=180, valid_months=2, test_months=3)
    assert split.test_end == AS_OF - pd.Timedelta(days=180)
    assert split.test_start == split.test_end - pd.DateOffset(months=3)
    assert split.valid_start == split.test_start - pd.DateOffset(months=2)
    assert split.train_start < split.valid_start < split.test_start < split.test_end


def test_split_assigns_half_open_intervals_and_leaves_immature_rows_out():
    split = TimeSplit.before_maturity(AS_OF, outcome_window_days=180, train_months=6)
    at = pd.Series(
        [
            split.valid_start - pd.Timedelta(microseconds=1),
            split.valid_start,
            split.test_start,
            split.test_end - pd.Timedelta(microseconds=1),
            split.test_end,  # label not mature at as_of
            split.train_start - pd.Timedelta(days=1),  # before the training period
        ]
    )
    assert split.assign(at).tolist() == [TRAIN, VALID, TEST, TEST, None, None]


def test_split_refuses_naive_as_of_and_empty_periods():
    with pytest.raises(ValueError, match="timezone"):
        TimeSplit.before_maturity(pd.Timestamp("2025-01-01"), outcome_window_days=180)
    with pytest.raises(ValueError, match="at least one month"):
        TimeSplit.before_maturity(AS_OF, outcome_window_days=180, test_months=0)


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    margin = rng.normal(size=n)
    p_true = 1 / (1 + np.exp(-(0.7 * margin - 4.0)))  # rare positives; margin over-confident
    return margin, (rng.random(n) < p_true).astype(int)


@pytest.mark.parametrize("calibrator", [PlattCalibrator(), IsotonicCalibrator()])
def test_calibration_improves_brier_on_held_out_data(calibrator):
    margin_fit, y_fit = _miscalibrated(40_000, seed=1)
    margin_test, y_test = _miscalibrated(40_000, seed=2)
    naive = 1 / (1 + np.exp(-margin_test))
    calibrator.fit(margin_fit, y_fit)
    assert brier_score_loss(y_test, calibrator.predict(margin_test)) < brier_score_loss(y_test, naive)


@pytest.mark.parametrize("calibrator", [PlattCalibrator(), IsotonicCalibrator()])
def test_calibrator_round_trips_through_json_dict(calibrator):
    margin, y = _miscalibrated(5_000, seed=3)
    calibrator.fit(margin, y)
    restored = calibrator_from_dict(calibrator.to_dict())
    np.testing.assert_array_equal(restored.predict(margin), calibrator.predict(margin))


def test_calibration_refuses_a_single_class():
    with pytest.raises(ValueError, match="both classes"):
        PlattCalibrator().fit(np.arange(10.0), np.zeros(10))


def test_bands_follow_the_alert_budget():
    scores = np.random.default_rng(0).random(100_000)
    bands = Bands.from_budget(scores)
    assigned = bands.assign(scores)
    shares = {band: np.mean(assigned == band) for band in ("critical", "high", "medium", "low")}
    assert shares["critical"] == pytest.approx(0.005, abs=1e-3)
    assert shares["high"] == pytest.approx(0.015, abs=1e-3)
    assert shares["medium"] == pytest.approx(0.03, abs=1e-3)
    assert set(ACTIONS) == set(shares)


def test_classifier_is_reproducible_and_learns_a_signal():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(6_000, 4))
    y = (rng.random(6_000) < 1 / (1 + np.exp(-(3 * X[:, 0] - 5)))).astype(int)
    names = ["a", "b", "c", "d"]
    fits = [
        MuleClassifier(n_estimators=80, random_state=3).fit(
            X[:4000], y[:4000], eval_set=(X[4000:], y[4000:]), feature_names=names
        )
        for _ in range(2)
    ]
    margins = [f.decision_function(X[4000:]) for f in fits]
    np.testing.assert_array_equal(margins[0], margins[1])
    importance = fits[0].booster_.feature_importance("gain")
    assert importance.argmax() == 0


def test_configuring_mlflow_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    from duanka.data.config import Settings
    from duanka.training.tracking import configure

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    configure(Settings(models_dir=tmp_path / "a"))
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ
    assert Settings(models_dir=tmp_path / "b").tracking_uri().endswith("b/mlflow.db")


def test_tuning_is_bounded_and_reproducible():
    from duanka.training.tuning import tune

    rng = np.random.default_rng(9)
    X = rng.normal(size=(3_000, 3))
    y = (rng.random(3_000) < 1 / (1 + np.exp(-(2.5 * X[:, 0] - 4)))).astype(int)
    runs = [
        tune(X[:2000], y[:2000], X[2000:], y[2000:], ["a", "b", "c"], n_trials=3, negative_rate=0.5, seed=4)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert 4 <= runs[0]["max_depth"] <= 8 and 15 <= runs[0]["num_leaves"] <= 63


def test_the_shipped_code_is_python_sources_only(tmp_path):
    from duanka.training.bundle import copy_inference_code

    root = tmp_path / "project"
    (root / "data" / "quickstart" / "bank").mkdir(parents=True)
    (root / "data" / "__init__.py").write_text("")
    (root / "data" / "contract.py").write_text("X = 1\n")
    (root / "data" / "quickstart" / "bank" / "applications.csv").write_text("id_number\n11010519491231002X\n")
    (root / "data" / "synthetic").mkdir()
    (root / "data" / "synthetic" / "__init__.py").write_text("")
    for room in ("features", "training"):
        (root / room).mkdir()
        (root / room / "__init__.py").write_text("")
    (root / "training" / "reasons.toml").write_text("")
    copied = copy_inference_code(root, tmp_path / "code")
    files = sorted(
        p.relative_to(tmp_path / "code").as_posix() for p in (tmp_path / "code").rglob("*") if p.is_file()
    )
    assert copied == [str(tmp_path / "code" / "duanka")]
    assert files == [
        "duanka/data/__init__.py",
        "duanka/data/contract.py",
        "duanka/data/synthetic/__init__.py",
        "duanka/features/__init__.py",
        "duanka/training/__init__.py",
    ]
