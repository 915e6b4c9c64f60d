"""The LightGBM mule classifier, shaped for explanation cost.

Explanation (TreeSHAP), not prediction, sets the latency of a scored request,
and its cost grows with trees x leaves x depth^2; ``max_depth=6`` and 31 leaves
keep one explanation at a few milliseconds at no measured loss of ranking
(docs/model.md records the trade-off).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


def downsample(
    y: np.ndarray, negative_rate: float, seed: int, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every positive and ``negative_rate`` of the negatives, drawn with ``seed``.

    Returns the kept positions and their weights: ``weight`` (1 by default) times
    ``1 / negative_rate`` for the kept negatives, so the loss still sees the bank's prevalence.
    """
    rng = np.random.default_rng(seed)
    keep = (y == 1) | (rng.random(len(y)) < negative_rate)
    base = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    kept = np.flatnonzero(keep)
    return kept, base[kept] * np.where(y[kept] == 1, 1.0, 1.0 / negative_rate)


class MuleClassifier(BaseEstimator, ClassifierMixin):
    """LightGBM with negative downsampling and early stopping on validation months.

    Parameters
    ----------
    negative_rate : float
        Share of negatives kept in training; kept negatives get weight
        ``1 / negative_rate`` so the loss still sees the bank's prevalence.
    num_leaves, max_depth, learning_rate, n_estimators, min_child_samples,
    bagging_fraction, lambda_l2 : LightGBM parameters.
    feature_fraction : float
        Share of the features each tree may split on. Low (0.35) so that the model
        spreads over many signals rather than leaning on the few tells a ring drops
        once it adapts: measured over six generated worlds and three seeds
        (docs/model.md, "Feature fraction").
    early_stopping_rounds : int
        Stop when validation average precision has not improved for this many rounds.
    random_state : int
        Seeds the downsampling and LightGBM; with ``deterministic`` training the
        same data give the same booster.
    """

    def __init__(
        self,
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
    ) -> None:
        self.negative_rate = negative_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.num_threads = num_threads

    def lgb_params(self) -> dict:
        return {
            "objective": "binary",
            "metric": "average_precision",
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def _checked_labels(
        self, y: np.ndarray, y_valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The labels as integers, after the checks every fit makes."""
        if not 0 < self.negative_rate <= 1:
            raise ValueError("negative_rate must be in (0, 1]")
        y = np.asarray(y).astype(int)
        if y_valid is not None:
            y_valid = np.asarray(y_valid).astype(int)
        if y.sum() == 0 or (y_valid is not None and y_valid.sum() == 0):
            raise ValueError("training and validation months both need confirmed mules")
        return y, y_valid

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_valid: np.ndarray | None,
        y_valid: np.ndarray | None,
        feature_names: list[str],
        callbacks: list | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> MuleClassifier:
        """Fit on the training rows, stopping early on the validation rows.

        Parameters
        ----------
        X, y : training rows and labels.
        X_valid, y_valid : validation rows and labels (early stopping). None: a refit,
            which runs exactly ``n_estimators`` rounds (the number an earlier fit chose).
        feature_names : list of str
        callbacks : list, optional
            LightGBM training callbacks.
        sample_weight : numpy.ndarray, optional
            The rows are already downsampled (the cluster chose them,
            :mod:`training.sampled_set`) and these are their weights: nothing is
            downsampled here. None: keep every positive and ``negative_rate`` of
            the negatives, weighted ``1 / negative_rate``.
        """
        y, y_valid = self._checked_labels(y, y_valid)
        if sample_weight is None:
            rows, weight = downsample(y, self.negative_rate, self.random_state)
        else:
            weight = np.asarray(sample_weight, dtype=np.float64)
            if weight.shape != y.shape or not (weight > 0).all():
                raise ValueError("sample_weight must be positive, one per training row")
            rows = np.arange(len(y))
        self.booster_ = self._boost(
            np.asarray(X)[rows],
            y[rows],
            weight,
            None if X_valid is None else np.asarray(X_valid),
            y_valid,
            list(feature_names),
            callbacks,
        )
        self.feature_names_ = list(feature_names)
        self.training_rows_ = len(rows)
        return self

    def _boost(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray,
        X_valid: np.ndarray | None,
        y_valid: np.ndarray | None,
        feature_names: list[str],
        callbacks: list | None,
    ) -> lgb.Booster:
        """The booster for the downsampled, weighted rows, its best round chosen on validation
        (every round kept when there is no validation: a refit)."""
        train = lgb.Dataset(X, y, weight=weight, feature_name=feature_names, free_raw_data=True)
        if X_valid is None:
            booster = lgb.train(
                self.lgb_params(), train, num_boost_round=self.n_estimators, callbacks=callbacks
            )
            booster.best_iteration = booster.current_iteration()
            return booster
        valid = lgb.Dataset(X_valid, y_valid, reference=train)
        return lgb.train(
            self.lgb_params(),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False), *(callbacks or [])],
        )

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw margin (log-odds under the downsampled prior)."""
        best = self.booster_.best_iteration
        return self.booster_.predict(np.asarray(X), raw_score=True, num_iteration=best)
