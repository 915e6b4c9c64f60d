"""The mule classifier fitted across a Dask cluster with ``lightgbm.dask``.

For a training set whose downsampled rows no longer fit one machine's LightGBM (its binned
copy and gradients, about 2-3x the matrix). The rows, downsampled and weighted as
:class:`duanka.training.model.MuleClassifier` does, are cut into one block per partition and
LightGBM's data-parallel learner fits across the workers; the booster that comes back
is an ordinary LightGBM booster, shipped, explained and served like the local one.

``lightgbm.dask`` has no early stopping (LightGBM issue #3712), and its evaluation
results come from one worker's share of the validation rows. So the fit runs all
``n_estimators`` rounds and the best round is chosen here, on every validation row:
one ``pred_leaf`` pass gives each tree's leaf per row, and the running sum of those
leaf values is the margin after each round. The chosen round is the one with the best
validation average precision, as early stopping would find within its patience.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
from sklearn.metrics import average_precision_score

from duanka.training.model import MuleClassifier


def margins_by_round(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """The raw margin of every row after each round: shape ``(rows, rounds)``.

    Equal to ``booster.predict(X, raw_score=True, num_iteration=k)`` in column ``k - 1``
    (tested), from one prediction pass instead of one per round.
    """
    leaves = booster.predict(np.asarray(X), pred_leaf=True).astype(np.int64)  # (rows, trees)
    rounds = leaves.shape[1]
    values = np.empty_like(leaves, dtype=np.float64)
    for tree in range(rounds):
        outputs = np.array(
            [booster.get_leaf_output(tree, leaf) for leaf in range(int(leaves[:, tree].max()) + 1)]
        )
        values[:, tree] = outputs[leaves[:, tree]]
    return np.cumsum(values, axis=1)


class DaskMuleClassifier(MuleClassifier):
    """:class:`duanka.training.model.MuleClassifier` fitted with ``lightgbm.dask`` on a cluster.

    Parameters
    ----------
    client : distributed.Client
        The cluster to fit on; every worker takes part (one LightGBM process each).
    partitions : int, optional
        Blocks the training rows are cut into; default one per worker.
    negative_rate, num_leaves, max_depth, learning_rate, n_estimators, min_child_samples,
    feature_fraction, bagging_fraction, lambda_l2, early_stopping_rounds, random_state, num_threads,
    monotone_constraints
        As :class:`duanka.training.model.MuleClassifier`; ``num_threads`` and the early stopping
        are the local fit's only (the round is chosen here, see the module docstring).
    """

    def __init__(
        self,
        client: object = None,
        partitions: int | None = None,
        negative_rate: float = 0.2,
        num_leaves: int = 31,
        max_depth: int = 6,
        learning_rate: float = 0.05,
        n_estimators: int = 600,
        min_child_samples: int = 40,
        feature_fraction: float = 0.35,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        early_stopping_rounds: int = 60,
        random_state: int = 0,
        num_threads: int = 2,
        monotone_constraints: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            negative_rate=negative_rate,
            num_leaves=num_leaves,
            max_depth=max_depth,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            min_child_samples=min_child_samples,
            feature_fraction=feature_fraction,
            bagging_fraction=bagging_fraction,
            lambda_l2=lambda_l2,
            early_stopping_rounds=early_stopping_rounds,
            random_state=random_state,
            num_threads=num_threads,
            monotone_constraints=monotone_constraints,
        )
        self.client = client
        self.partitions = partitions

    def __sklearn_clone__(self) -> DaskMuleClassifier:
        """An unfitted copy on the same cluster: a client is a live connection, not a value to
        deep-copy as ``sklearn.base.clone`` copies parameters."""
        params = self.get_params(deep=False)
        client = params.pop("client")
        return type(self)(client=client, **copy.deepcopy(params))

    def _boost(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray] | None,
        feature_names: list[str] | str,
        callbacks: list | None,
    ) -> lgb.Booster:
        import dask.array as da
        from lightgbm.dask import DaskLGBMClassifier

        if self.client is None:
            raise ValueError("DaskMuleClassifier needs a Dask client")
        if callbacks:
            raise ValueError("lightgbm.dask takes no training callbacks")
        workers = len(self.client.scheduler_info()["workers"])  # type: ignore[attr-defined]
        chunk = math.ceil(len(y) / (self.partitions or workers))
        params = self.lgb_params()
        for local_only in ("metric", "num_threads", "deterministic", "force_row_wise"):
            params.pop(local_only)
        model = DaskLGBMClassifier(client=self.client, n_estimators=self.n_estimators, **params)
        model.fit(
            da.from_array(X, chunks=(chunk, -1)),
            da.from_array(y, chunks=chunk),
            sample_weight=da.from_array(weight, chunks=chunk),
            feature_name=feature_names,
        )
        booster = model.booster_
        if valid is None:  # a refit keeps the rounds an earlier fit chose
            booster.best_iteration = booster.current_iteration()
            return booster
        X_valid, y_valid = valid
        margins = margins_by_round(booster, X_valid)
        precision = [average_precision_score(y_valid, margins[:, k]) for k in range(margins.shape[1])]
        booster.best_iteration = int(np.argmax(precision)) + 1
        self.validation_precision_ = np.asarray(precision)
        return booster
