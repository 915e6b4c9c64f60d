"""The mule classifiers are scikit-learn classifiers: parameters, clone, fit's keywords, predictions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from duanka.training.dask_fit import DaskMuleClassifier
from duanka.training.model import MuleClassifier

# scikit-learn's checks fit on a few dozen rows: leaves of one row and few rounds let them learn.
SMALL = {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 1, "num_threads": 1}
# Checks whose premise the classifier does not share, and why (scikit-learn 1.6+ keeps these
# beside the checks rather than in the estimator's tags).
NOT_APPLICABLE = {
    "check_sample_weight_equivalence_on_dense_data": (
        "a weight is a sampled row's inverse inclusion probability, not a repetition count: LightGBM's "
        "bins and min_child_samples count rows, and zero weights (rows never chosen) are refused"
    ),
    "check_classifiers_one_label_sample_weights": (
        "the zero weights that trim a class away are refused first, so the error names the weights"
    ),
}
# Parameters unlike the defaults, so that a clone keeping defaults would show.
CHOSEN = {
    "negative_rate": 0.5,
    "num_leaves": 15,
    "max_depth": 4,
    "learning_rate": 0.1,
    "n_estimators": 77,
    "min_child_samples": 25,
    "feature_fraction": 0.6,
    "bagging_fraction": 0.7,
    "lambda_l2": 3.0,
    "early_stopping_rounds": 11,
    "random_state": 9,
    "num_threads": 1,
    "monotone_constraints": [1, 0, -1],
}


@parametrize_with_checks([MuleClassifier(**SMALL)], expected_failed_checks=lambda estimator: NOT_APPLICABLE)
def test_the_mule_classifier_passes_scikit_learns_checks(estimator, check) -> None:
    check(estimator)


def _rare_positives(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(3 * X[:, 0] - 4)))).astype(int)
    return X, y


def test_clone_keeps_every_parameter() -> None:
    model = MuleClassifier(**CHOSEN)
    assert model.get_params() == CHOSEN
    assert clone(model).get_params() == CHOSEN
    assert is_classifier(model)


def test_the_cluster_classifier_takes_every_parameter_of_the_local_one() -> None:
    local = MuleClassifier().get_params()
    spread = DaskMuleClassifier().get_params()
    assert {k: spread[k] for k in local} == local  # same names, same defaults
    assert set(spread) - set(local) == {"client", "partitions"}
    model = DaskMuleClassifier(partitions=3, **CHOSEN)
    assert clone(model).get_params() == {**CHOSEN, "client": None, "partitions": 3}
    assert model.lgb_params() == MuleClassifier(**CHOSEN).lgb_params()
    assert is_classifier(model)


class _Connection:
    """Stands for a Dask client: a live connection that cannot be copied."""

    def __deepcopy__(self, memo: dict) -> _Connection:
        raise TypeError("a connection cannot be copied")


def test_a_clone_of_the_cluster_classifier_shares_its_client() -> None:
    client = _Connection()
    with pytest.raises(TypeError):
        copy.deepcopy(client)
    twin = clone(DaskMuleClassifier(client=client, **CHOSEN))
    assert twin.client is client
    assert twin.get_params() == {**CHOSEN, "client": client, "partitions": None}


def test_validation_rows_and_feature_names_are_keywords_of_fit() -> None:
    X, y = _rare_positives(3_000, seed=1)
    with pytest.raises(TypeError):
        MuleClassifier(**SMALL).fit(X[:2000], y[:2000], X[2000:], y[2000:], ["a", "b", "c"])
    model = MuleClassifier(**SMALL).fit(
        X[:2000], y[:2000], eval_set=(X[2000:], y[2000:]), feature_names=["a", "b", "c"]
    )
    assert model.booster_.feature_name() == ["a", "b", "c"]
    assert model.n_features_in_ == 3
    with pytest.raises(ValueError, match="feature names"):
        MuleClassifier(**SMALL).fit(X, y, feature_names=["a", "b"])


def test_the_validation_rows_need_mules() -> None:
    X, y = _rare_positives(3_000, seed=2)
    with pytest.raises(ValueError, match="eval_set"):
        MuleClassifier(**SMALL).fit(X, y, eval_set=(X[:50], np.zeros(50, dtype=int)))


def test_predictions_follow_the_margin_and_name_the_classes() -> None:
    X, y = _rare_positives(3_000, seed=3)
    labels = np.where(y == 1, "mule", "legitimate")
    model = MuleClassifier(**SMALL).fit(X, labels)
    assert model.classes_.tolist() == ["legitimate", "mule"]
    margin = model.decision_function(X)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-margin)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.predict(X), np.where(margin > 0, "mule", "legitimate"))
    # names or 0/1, the same rows give the same booster: the second class is the mule either way
    numeric = MuleClassifier(**SMALL).fit(X, y)
    np.testing.assert_array_equal(numeric.decision_function(X), margin)
