"""Fitting across a Dask cluster (lightgbm.dask): a booster as good as the local one, round chosen on
every validation row, shipped and served the same way."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import average_precision_score

from duanka.training.dask_fit import DaskMuleClassifier, margins_by_round
from duanka.training.model import MuleClassifier

NAMES = [f"f{i}" for i in range(12)]
SMALL = {"n_estimators": 120, "early_stopping_rounds": 30, "random_state": 3}


@pytest.fixture(scope="module")
def data():
    """Rare positives (about 3 %), as mule openings are among account openings."""
    X, y = make_classification(
        n_samples=24_000, n_features=len(NAMES), n_informative=6, weights=[0.97], flip_y=0.01, random_state=7
    )
    return X[:16_000], y[:16_000], X[16_000:20_000], y[16_000:20_000], X[20_000:], y[20_000:]


def test_margins_by_round_are_the_booster_s_margins_after_each_round(data):
    X, y, Xv, _, _, _ = data
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbosity": -1, "seed": 1}, lgb.Dataset(X, y), 25
    )
    margins = margins_by_round(booster, Xv)
    assert margins.shape == (len(Xv), 25)
    for k in (1, 7, 25):
        np.testing.assert_allclose(
            margins[:, k - 1], booster.predict(Xv, raw_score=True, num_iteration=k), rtol=0, atol=1e-9
        )


def test_a_cluster_fit_ranks_as_well_as_the_local_fit(dask_client, data):
    X, y, Xv, yv, Xt, yt = data
    local = MuleClassifier(**SMALL).fit(X, y, eval_set=(Xv, yv), feature_names=NAMES)
    spread = DaskMuleClassifier(client=dask_client, **SMALL).fit(X, y, eval_set=(Xv, yv), feature_names=NAMES)
    # The round is the best one on every validation row, as early stopping would pick.
    assert spread.booster_.best_iteration == int(np.argmax(spread.validation_precision_)) + 1
    assert spread.booster_.num_trees() == SMALL["n_estimators"]
    local_ap = average_precision_score(yt, local.decision_function(Xt))
    spread_ap = average_precision_score(yt, spread.decision_function(Xt))
    assert spread_ap > 0.5  # it learned something: a useless model sits near the 3 % base rate
    assert abs(spread_ap - local_ap) < 0.05
    # Same downsampling, same weights: the training rows are the local fit's.
    assert spread.training_rows_ == local.training_rows_


def test_the_cluster_booster_ships_as_lightgbm_text(dask_client, data):
    X, y, Xv, yv, Xt, _ = data
    spread = DaskMuleClassifier(client=dask_client, **SMALL).fit(X, y, eval_set=(Xv, yv), feature_names=NAMES)
    text = spread.booster_.model_to_string(num_iteration=spread.booster_.best_iteration)
    reloaded = lgb.Booster(model_str=text)
    assert reloaded.feature_name() == NAMES
    np.testing.assert_allclose(
        reloaded.predict(Xt, raw_score=True), spread.decision_function(Xt), rtol=0, atol=1e-9
    )


def test_a_cluster_fit_needs_a_client_and_takes_no_callbacks(dask_client, data):
    X, y, Xv, yv, _, _ = data
    with pytest.raises(ValueError, match="needs a Dask client"):
        DaskMuleClassifier(**SMALL).fit(X, y, eval_set=(Xv, yv), feature_names=NAMES)
    with pytest.raises(ValueError, match="no training callbacks"):
        DaskMuleClassifier(client=dask_client, **SMALL).fit(
            X, y, eval_set=(Xv, yv), feature_names=NAMES, callbacks=[lambda env: None]
        )
