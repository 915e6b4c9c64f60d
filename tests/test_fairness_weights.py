"""Origin weights: a legitimate out-of-province application weighs more in a fit, so that the
features that find far-from-home recruits do not over-alert the migrants who resemble them;
origin itself never becomes an input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duanka.training.fairness import ORIGIN, origin_weights
from duanka.training.fit import FitOptions, fit_evidence, matrix
from duanka.training.model import MuleClassifier
from duanka.training.monitoring import false_positive_rate_ratio
from duanka.training.split import TEST, TRAIN, VALID

# Registered features the model leaves unconstrained (training reads each name's monotone
# declaration), standing for an address far from the branch, the full bundle and a velocity count.
FAR, BUNDLE, VELOCITY = "branch_out_of_province_share_7d", "full_bundle", "staff_openings_7d"
NAMES = [FAR, BUNDLE, VELOCITY]


def test_only_legitimate_out_of_province_rows_get_the_factor():
    out_of_province = np.array([1.0, 1.0, 0.0, 0.0, np.nan])
    label = np.array([0, 1, 0, 1, 0])
    np.testing.assert_array_equal(origin_weights(out_of_province, label, 8.0), [8, 1, 1, 1, 1])
    np.testing.assert_array_equal(origin_weights(out_of_province, label, 1.0), np.ones(5))
    with pytest.raises(ValueError, match="must be positive, not 0"):
        origin_weights(out_of_province, label, 0.0)


def _migrant_bank(seed: int, n: int = 60_000) -> pd.DataFrame:
    """Mules are mostly from other provinces and give a far-away address; so do a fifth of the
    legitimate migrants. The bundle and a velocity count tell mules apart from everyone."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.01).astype(np.int8)
    outsider = np.where(label == 1, rng.random(n) < 0.85, rng.random(n) < 0.38)
    far = np.where(label == 1, rng.random(n) < 0.6, outsider & (rng.random(n) < 0.2))
    bundle = np.where(label == 1, rng.random(n) < 0.85, rng.random(n) < 0.3)
    return pd.DataFrame(
        {
            FAR: far.astype(float),
            BUNDLE: bundle.astype(float),
            VELOCITY: rng.normal(size=n) + 1.5 * label,
            "label": label,
            ORIGIN: outsider.astype(float),
        }
    )


def _parts(seed: int) -> dict[str, pd.DataFrame]:
    return {TRAIN: _migrant_bank(seed), VALID: _migrant_bank(seed + 1), TEST: _migrant_bank(seed + 2)}


def _top_share_ratio(model: MuleClassifier, test: pd.DataFrame) -> float:
    score = model.decision_function(matrix(test, NAMES))
    alerted = score >= np.quantile(score, 0.98)
    outsider = test[ORIGIN].to_numpy() == 1
    return false_positive_rate_ratio(test["label"].to_numpy(), alerted, outsider, ~outsider)


def test_a_factor_of_one_fits_exactly_the_unweighted_model():
    parts = _parts(0)
    options = FitOptions(out_of_province_legit_weight=1.0, seed=3)
    weighted = fit_evidence(parts, NAMES, options)
    plain = MuleClassifier(negative_rate=options.negative_rate, random_state=3).fit(
        matrix(parts[TRAIN], NAMES),
        parts[TRAIN]["label"].to_numpy(),
        eval_set=(matrix(parts[VALID], NAMES), parts[VALID]["label"].to_numpy()),
        feature_names=NAMES,
    )
    X = matrix(parts[TEST], NAMES)
    np.testing.assert_array_equal(weighted.decision_function(X), plain.decision_function(X))


def test_weighting_legitimate_migrants_lowers_their_false_alerts_against_locals():
    parts = _parts(10)
    plain = fit_evidence(parts, NAMES, FitOptions(out_of_province_legit_weight=1.0))
    weighted = fit_evidence(parts, NAMES, FitOptions(out_of_province_legit_weight=8.0))
    before, after = _top_share_ratio(plain, parts[TEST]), _top_share_ratio(weighted, parts[TEST])
    assert before > 3.0  # the far-away address alone alerts migrants
    assert after < 0.5 * before
