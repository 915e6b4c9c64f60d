"""Monotone risk: one more confirmed mule or listed applicant among an application's links never
lowers its score.

The direction is declared on the feature (``Feature.monotone``) and read by training as
LightGBM's ``monotone_constraints``; these tests pin which features carry it, that the
classifier honours it where the data alone would teach the opposite, and that a trained and
registered model keeps it end to end.
"""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from duanka.features import values
from duanka.features.declaration import Op
from duanka.features.registry import (
    BY_NAME,
    FEATURE_SET_VERSION,
    FEATURES,
    MODEL_FEATURES,
    feature_set_version,
    monotone_constraints,
)
from duanka.training.bundle import load_registered
from duanka.training.fit import FitOptions, classifier
from duanka.training.model import MuleClassifier

# Counts of confirmed mules or listed applicants among the applications an application is linked
# to: their direction is the domain's, not the data's.
INCREASING = {
    "escort_confirmed_mules_365d",
    "intermediary_confirmed_mules_365d",
    "address_confirmed_mules_365d",
    "staff_confirmed_mules_365d",
    "linked_group_confirmed_mules",
    "escort_listed_applications_365d",
    "intermediary_listed_applications_365d",
    "address_listed_applications_365d",
    "phone_listed_applications_365d",
    "device_listed_applications_365d",
    "linked_group_listed_applicants",
}
# Small trees that still learn a step per count value.
SMALL = {
    "n_estimators": 120,
    "num_leaves": 7,
    "min_child_samples": 10,
    "negative_rate": 1.0,
    "num_threads": 1,
}


def test_the_registry_declares_increasing_risk_exactly_on_the_confirmed_and_listed_counts() -> None:
    declared = {f.name: f.monotone for f in FEATURES if f.monotone}
    assert declared == dict.fromkeys(INCREASING, 1)
    assert set(MODEL_FEATURES) >= INCREASING
    for name in INCREASING:
        feature = BY_NAME[name]
        # a count, never a share or a ratio, whose direction could flip with its denominator
        assert feature.transform is values.count
        (aggregate,) = feature.aggregates
        assert aggregate.op in (Op.CONFIRMED, Op.LISTED) or aggregate.column in ("confirmed", "listed")
    # the applicant's own ended listings are not a count over linked applications: left free
    assert BY_NAME["applicant_ended_listings"].monotone == 0


def test_the_constraint_vector_follows_the_order_of_the_names_it_is_asked_for() -> None:
    vector = monotone_constraints(MODEL_FEATURES)
    assert len(vector) == len(MODEL_FEATURES)
    assert [n for n, c in zip(MODEL_FEATURES, vector, strict=True) if c == 1] == [
        n for n in MODEL_FEATURES if n in INCREASING
    ]
    assert set(vector) == {0, 1}
    assert monotone_constraints(["applicant_age", "staff_confirmed_mules_365d"]) == (0, 1)
    with pytest.raises(KeyError, match="not in the registry"):
        monotone_constraints(["staff_confirmed_mules_356d"])


def test_a_direction_is_minus_one_zero_or_one_and_leaves_the_feature_set_version() -> None:
    staff = BY_NAME["staff_confirmed_mules_365d"]
    with pytest.raises(ValueError, match="monotone"):
        dataclasses.replace(staff, monotone=2)
    # a constraint on the model, not on the values: registered models keep their version
    free = tuple(dataclasses.replace(f, monotone=0) for f in FEATURES)
    assert feature_set_version(free) == FEATURE_SET_VERSION


def test_training_fits_both_models_under_the_registrys_constraints() -> None:
    model = classifier(FitOptions())
    assert model.monotone_constraints == list(monotone_constraints(MODEL_FEATURES))
    names = ["applicant_age", "escort_confirmed_mules_365d"]
    assert classifier(FitOptions(), names=names).monotone_constraints == [0, 1]
    # a tuning search's parameters do not drop them
    tuned = classifier(FitOptions(), names=names, num_leaves=15)
    assert tuned.lgb_params()["monotone_constraints"] == [0, 1]


def _non_monotone_counts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A count whose mule rate dips: one earlier mule is risky, two or three look safe (the
    teller of a small bank), four or more risky again; plus a free noise column."""
    rng = np.random.default_rng(seed)
    count = rng.choice(np.arange(7), size=n, p=[0.55, 0.15, 0.1, 0.08, 0.05, 0.04, 0.03]).astype(float)
    other = rng.normal(size=n)
    log_odds = np.array([-3.0, 0.5, -2.5, -2.5, 0.0, 0.5, 1.0])[count.astype(int)] + other
    y = (rng.random(n) < 1 / (1 + np.exp(-log_odds))).astype(int)
    return np.column_stack([count, other]), y


def _along_the_count(model: MuleClassifier, X: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mule probability of each row of ``X`` with its count set to each of ``counts``:
    shape ``(rows, len(counts))``, every other column as it was."""
    out = np.empty((len(X), len(counts)))
    for j, c in enumerate(counts):
        grid = X.copy()
        grid[:, 0] = c
        out[:, j] = model.predict_proba(grid)[:, 1]
    return out


def test_a_constrained_count_never_lowers_the_probability_where_the_data_would_teach_it_to() -> None:
    X, y = _non_monotone_counts(8_000, seed=5)
    counts = np.arange(9, dtype=float)  # past the largest seen value too
    rows = X[:200]

    free = MuleClassifier(**SMALL).fit(X, y)
    # the trap is real: left free, the model lowers the risk of a second and third mule
    assert (np.diff(_along_the_count(free, rows, counts), axis=1) < -1e-3).any()

    constrained = MuleClassifier(**SMALL, monotone_constraints=[1, 0]).fit(X, y)
    proba = _along_the_count(constrained, rows, counts)
    assert (np.diff(proba, axis=1) >= 0).all()
    # and it still learns that mules raise the risk
    assert (proba[:, -1] > proba[:, 0]).all()
    assert constrained.booster_.params["monotone_constraints"] == [1, 0]


def test_the_constraints_are_a_parameter_stored_as_given_and_checked_at_fit() -> None:
    given = [1, 0]
    model = MuleClassifier(**SMALL, monotone_constraints=given)
    assert model.get_params()["monotone_constraints"] is given
    assert clone(model).get_params()["monotone_constraints"] == given
    # all free is no constraint at all: the parameters LightGBM sees stay as before
    assert "monotone_constraints" not in MuleClassifier(monotone_constraints=[0, 0]).lgb_params()
    X, y = _non_monotone_counts(2_000, seed=6)
    with pytest.raises(ValueError, match="3 monotone constraints for 2 features"):
        MuleClassifier(**SMALL, monotone_constraints=[1, 0, 0]).fit(X, y)
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        MuleClassifier(**SMALL, monotone_constraints=[2, 0]).fit(X, y)


def test_a_registered_model_never_scores_lower_for_one_more_confirmed_or_listed_link(served_bank) -> None:
    """The teller of the report: confirming three of a new teller's openings took the count from 0
    to 3 and lowered the next application's score. Every declared count, every held-out row."""
    loaded = load_registered(served_bank.uri, served_bank.client())
    bundle = loaded.bundle
    assert bundle.feature_names == list(MODEL_FEATURES)
    frame = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=loaded.run_id, artifact_path="evaluation_frame.parquet")
    ).head(300)
    X = frame.loc[:, bundle.feature_names].to_numpy(dtype=float)
    for name in sorted(INCREASING):
        at = bundle.feature_names.index(name)
        scores = []
        for count in range(8):
            grid = X.copy()
            grid[:, at] = count
            scores.append(bundle.score(grid))
        steps = np.diff(np.column_stack(scores), axis=1)
        assert (steps >= 0).all(), f"{name}: a score fell by {-steps.min():.4f} for one more"
