"""The WoE scorecard baseline: binning, evidence, points, and behaviour on awkward input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone, is_classifier
from sklearn.metrics import roc_auc_score

from duanka.training.monitoring import information_value
from duanka.training.scorecard import MISSING, WoEScorecard


def _applications(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Risk rises steeply with ``signal``, slightly with ``weak``; ``noise`` is unrelated."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "signal": rng.normal(size=n),
            "weak": rng.normal(size=n),
            "noise": rng.normal(size=n),
        }
    )
    logit = -3.5 + 1.5 * X["signal"] + 0.3 * X["weak"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).to_numpy().astype(int)
    return X, y


@pytest.fixture(scope="module")
def fitted() -> tuple[WoEScorecard, pd.DataFrame, np.ndarray]:
    X, y = _applications(20_000, seed=0)
    return WoEScorecard().fit(X, y), X, y


def _bins(model: WoEScorecard, feature: str) -> pd.DataFrame:
    table = model.points()
    return table[(table["feature"] == feature) & (table["bin"] != MISSING)]


def test_woe_sign_and_order_follow_the_bad_rate(fitted):
    model, _, y = fitted
    bins = _bins(model, "signal")
    assert ((bins["woe"] > 0) == (bins["bad_rate"] > y.mean())).all()
    assert bins["woe"].rank().tolist() == bins["bad_rate"].rank().tolist()
    # The signal is monotone, so are its bins.
    assert bins["woe"].is_monotonic_increasing


def test_a_monotone_signal_is_learned_out_of_sample(fitted):
    model, _, _ = fitted
    X_new, y_new = _applications(10_000, seed=1)
    assert roc_auc_score(y_new, model.predict_proba(X_new)[:, 1]) > 0.8


def test_information_value_ranks_signal_above_noise(fitted):
    model, _, _ = fitted
    iv = model.information_value()
    assert iv.index.tolist() == ["signal", "weak", "noise"]
    assert iv["signal"] > 0.5
    # Below 0.02 is "not predictive" by the usual rule of thumb.
    assert iv["noise"] < 0.02


def test_information_value_is_the_reports_on_the_same_bins():
    """One definition of IV: on a 0/1 flag both bin the same way, so both must agree."""
    rng = np.random.default_rng(8)
    y = (rng.random(4_000) < 0.05).astype(int)
    flag = np.where(y == 1, rng.random(4_000) < 0.6, rng.random(4_000) < 0.1).astype(float)
    model = WoEScorecard().fit(pd.DataFrame({"flag": flag}), y)
    assert _bins(model, "flag")["bin"].tolist() == ["(-inf, 0]", "(0, inf)"]
    assert model.information_value()["flag"] == pytest.approx(information_value(flag, y), rel=1e-12)


def test_probabilities_are_rows_summing_to_one(fitted):
    model, X, _ = fitted
    proba = model.predict_proba(X.head(500))
    assert proba.shape == (500, 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert model.classes_.tolist() == [0, 1]


def test_small_bins_are_merged(fitted):
    model, _, _ = fitted
    for feature in ("signal", "weak", "noise"):
        assert (_bins(model, feature)["share"] >= model.min_bin_share).all()
    X, y = _applications(5_000, seed=2)
    # A value held by 2% of rows cannot keep a bin of its own at a 5% minimum share.
    X["rare"] = np.where(np.arange(5_000) < 100, 1.0, 0.0)
    model = WoEScorecard().fit(X, y)
    assert _bins(model, "rare")["bin"].tolist() == ["(-inf, inf)"]


def test_missing_values_get_their_own_evidence():
    X, y = _applications(20_000, seed=3)
    # Mules leave the field empty far more often than others.
    empty = np.random.default_rng(3).random(len(y)) < np.where(y == 1, 0.5, 0.05)
    X.loc[empty, "noise"] = np.nan
    model = WoEScorecard().fit(X, y)
    missing = model.points().query("feature == 'noise' and bin == @MISSING")
    assert missing["woe"].item() > 1.0
    assert model.information_value().index[0] in {"signal", "noise"}
    row = X.iloc[[0]].assign(noise=0.0)
    assert model.predict_proba(row.assign(noise=np.nan))[0, 1] > model.predict_proba(row)[0, 1]


def test_missing_value_unseen_in_training_counts_as_average(fitted):
    _, X, y = fitted
    model = WoEScorecard().fit(X[["weak"]], y)
    assert model.points().query("bin == @MISSING")["woe"].item() == 0.0
    # WoE 0 leaves only the intercept: the average log-odds.
    proba = model.predict_proba(pd.DataFrame({"weak": [np.nan]}))[0, 1]
    assert proba == pytest.approx(1 / (1 + math.exp(-model.logistic_.intercept_[0])))


def test_values_beyond_the_training_range_fall_in_the_outer_bins(fitted):
    model, X, _ = fitted
    row = X.iloc[[0]]
    top = model.predict_proba(row.assign(signal=X["signal"].max()))
    bottom = model.predict_proba(row.assign(signal=X["signal"].min()))
    np.testing.assert_array_equal(model.predict_proba(row.assign(signal=1e9)), top)
    np.testing.assert_array_equal(model.predict_proba(row.assign(signal=np.inf)), top)
    np.testing.assert_array_equal(model.predict_proba(row.assign(signal=-np.inf)), bottom)


def test_a_bin_without_mules_gets_a_finite_woe():
    rng = np.random.default_rng(4)
    flag = rng.random(2_000) < 0.5
    y = (flag & (rng.random(2_000) < 0.2)).astype(int)  # no mule ever has flag == False
    model = WoEScorecard().fit(pd.DataFrame({"flag": flag}), y)
    woe = _bins(model, "flag").set_index("bin")["woe"]
    assert np.isfinite(woe).all()
    assert woe["(-inf, 0]"] < -2 < 0 < woe["(0, inf)"]


def test_points_follow_600_at_odds_50_with_20_points_to_double():
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"a": rng.integers(0, 3, 10_000), "b": rng.integers(0, 3, 10_000)})
    y = (rng.random(10_000) < 0.02 * (1 + X["a"] + 2 * X["b"])).to_numpy().astype(int)
    model = WoEScorecard().fit(X, y)
    table = model.points()
    labels = ["(-inf, 0]", "(0, 1]", "(1, inf)"]
    for feature in ("a", "b"):
        assert _bins(model, feature)["bin"].tolist() == labels
    points = {(f, b): p for f, b, p in table[["feature", "bin", "points"]].itertuples(index=False)}
    grid = pd.DataFrame([(a, b) for a in range(3) for b in range(3)], columns=["a", "b"])
    proba = model.predict_proba(grid)
    for (a, b), (p_good, p_bad) in zip(grid.itertuples(index=False), proba, strict=True):
        total = points[("a", labels[a])] + points[("b", labels[b])]
        assert total == pytest.approx(600 + 20 * math.log2(p_good / p_bad / 50))


def test_sample_weight_equals_repeating_rows():
    X, y = _applications(3_000, seed=6)
    w = np.random.default_rng(6).integers(1, 4, size=len(y))
    weighted = WoEScorecard().fit(X, y, sample_weight=w)
    repeated = WoEScorecard().fit(X.loc[X.index.repeat(w)], np.repeat(y, w))
    pd.testing.assert_series_equal(weighted.information_value(), repeated.information_value())
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-4)


def test_is_a_scikit_learn_classifier():
    model = WoEScorecard(n_bins=5, C=0.1)
    assert is_classifier(model)
    assert clone(model).get_params() == model.get_params()


@pytest.mark.parametrize(
    ("X", "y", "error", "message"),
    [
        (pd.DataFrame({"a": ["x", "y"] * 50}), np.r_[0, 1].repeat(50), TypeError, "not numeric"),
        (pd.DataFrame({"a": np.arange(100.0)}), np.zeros(100), ValueError, "two classes"),
        (np.zeros((100, 1)), np.r_[0, 1].repeat(50), TypeError, "DataFrame"),
    ],
)
def test_rejects_unusable_training_data(X, y, error, message):
    with pytest.raises(error, match=message):
        WoEScorecard().fit(X, y)


def test_rejects_prediction_without_the_fitted_features(fitted):
    model, X, _ = fitted
    with pytest.raises(ValueError, match="weak"):
        model.predict_proba(X.drop(columns="weak"))
