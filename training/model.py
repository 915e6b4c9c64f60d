"""The LightGBM mule classifier, shaped for explanation cost.

Explanation (TreeSHAP), not prediction, sets the latency of a scored request,
and its cost grows with trees x leaves x depth^2; ``max_depth=6`` and 31 leaves
keep one explanation at a few milliseconds at no measured loss of ranking
(docs/model.md records the trade-off).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data


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


class MuleClassifier(ClassifierMixin, BaseEstimator):
    """LightGBM with negative downsampling and early stopping on validation months.

    A scikit-learn classifier (the mixin first, so that its tags say "classifier"): ``clone``
    keeps every parameter, and ``predict_proba`` gives the uncalibrated probability of the
    second class (the mule). A training run maps :meth:`decision_function`'s margins to
    probabilities with its own calibrator (:mod:`duanka.training.calibration`).

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
    num_threads : int
        LightGBM's threads.
    monotone_constraints : sequence of int, optional
        One of -1, 0, +1 per column of ``X``, in its order: the direction the margin must follow
        as that column grows, all else fixed (LightGBM's ``monotone_constraints``, its "basic"
        method). Training passes the registry's declaration
        (:func:`duanka.features.registry.monotone_constraints`) so that, for example, one more
        confirmed mule among a teller's openings never lowers the next application's score.
        None: every column free.

    Attributes
    ----------
    booster_ : lightgbm.Booster
        Its ``best_iteration`` is the round every prediction uses.
    classes_ : numpy.ndarray of shape (2,)
        The second class is the mule class.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str
        Only when ``X`` was a DataFrame with string column names.
    training_rows_ : int
        Rows the booster was fitted on, after downsampling.
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
        monotone_constraints: Sequence[int] | None = None,
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
        self.monotone_constraints = monotone_constraints

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # LightGBM sends missing values down a learnt side
        tags.classifier_tags.multi_class = False  # one objective: mule or not
        return tags

    def lgb_params(self) -> dict[str, object]:
        """The LightGBM training parameters these estimator parameters make."""
        constrained = {}
        if self.monotone_constraints is not None and any(self.monotone_constraints):
            # absent when all free: an unconstrained model's parameters stay as they were
            constrained = {"monotone_constraints": [int(c) for c in self.monotone_constraints]}
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
            **constrained,
        }

    def _matrix(self, X: object, *, reset: bool) -> np.ndarray:
        return validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite="allow-nan")

    def _encoded(self, y: object, what: str) -> np.ndarray:
        """1 for the mule class (``classes_[1]``), 0 for the other; unknown labels refused."""
        y = column_or_1d(y, warn=True)
        unknown = set(np.unique(y).tolist()) - set(self.classes_.tolist())
        if unknown:
            raise ValueError(f"{what} holds labels {sorted(unknown)} that y does not")
        return (y == self.classes_[1]).astype(int)

    def fit(
        self,
        X: object,
        y: object,
        *,
        eval_set: tuple[object, object] | None = None,
        feature_names: Sequence[str] | None = None,
        sample_weight: object | None = None,
        callbacks: list | None = None,
    ) -> MuleClassifier:
        """Fit on the training rows, stopping early on the validation rows.

        Parameters
        ----------
        X : array-like of shape (n, p)
            Training rows; NaN allowed.
        y : array-like of shape (n,)
            Two classes; the larger one (1, True) is the mule class.
        eval_set : (X_valid, y_valid), optional
            Validation rows and labels for early stopping; they must hold mules. None: a
            refit, which runs exactly ``n_estimators`` rounds (the number an earlier fit chose).
        feature_names : sequence of str, optional
            The booster's feature names; by default ``X``'s column names, else LightGBM's.
        sample_weight : array-like of shape (n,), optional
            The rows are already downsampled (the cluster chose them,
            :mod:`duanka.training.sampled_set`) and these are their weights: nothing is
            downsampled here. None: keep every positive and ``negative_rate`` of
            the negatives, weighted ``1 / negative_rate``.
        callbacks : list, optional
            LightGBM training callbacks.

        Returns
        -------
        MuleClassifier
            Fitted.
        """
        if not 0 < self.negative_rate <= 1:
            raise ValueError("negative_rate must be in (0, 1]")
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        self._check_constraints()
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) > 2:
            raise ValueError(f"Only binary classification is supported: y holds {len(classes)} classes")
        if len(classes) < 2:
            raise ValueError("y holds one class: MuleClassifier needs both, legitimate and mule")
        self.classes_ = classes
        label = self._encoded(y, "y")
        valid = None
        if eval_set is not None:
            X_valid, y_valid = eval_set
            valid = (self._matrix(X_valid, reset=False), self._encoded(y_valid, "eval_set"))
            if valid[1].sum() == 0:
                raise ValueError("the validation rows (eval_set) need mules: they choose the best round")
        names = self._names(feature_names)
        if sample_weight is None:
            rows, weight = downsample(label, self.negative_rate, self.random_state)
        else:
            weight = np.asarray(sample_weight, dtype=np.float64)
            if weight.shape != label.shape or not (weight > 0).all():
                raise ValueError(
                    "sample_weight must be positive (a zero weight is a row the sample never chose), "
                    "one per training row"
                )
            rows = np.arange(len(label))
        self.booster_ = self._boost(X[rows], label[rows], weight, valid, names, callbacks)
        self.training_rows_ = len(rows)
        return self

    def _check_constraints(self) -> None:
        """Refuse a constraint vector LightGBM would misread: it takes one per column, and a
        short one would constrain the wrong features."""
        if self.monotone_constraints is None:
            return
        constraints = list(self.monotone_constraints)
        if len(constraints) != self.n_features_in_:
            raise ValueError(f"{len(constraints)} monotone constraints for {self.n_features_in_} features")
        if not set(constraints) <= {-1, 0, 1}:
            raise ValueError(f"monotone constraints must be -1, 0 or 1, got {sorted(set(constraints))}")

    def _names(self, feature_names: Sequence[str] | None) -> list[str] | str:
        if feature_names is None:
            return list(map(str, self.feature_names_in_)) if hasattr(self, "feature_names_in_") else "auto"
        if len(feature_names) != self.n_features_in_:
            raise ValueError(f"{len(feature_names)} feature names for {self.n_features_in_} features")
        return list(feature_names)

    def _boost(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray] | None,
        feature_names: list[str] | str,
        callbacks: list | None,
    ) -> lgb.Booster:
        """The booster for the downsampled, weighted rows, its best round chosen on the validation
        rows (every round kept when there are none: a refit)."""
        train = lgb.Dataset(X, y, weight=weight, feature_name=feature_names, free_raw_data=True)
        if valid is None:
            booster = lgb.train(
                self.lgb_params(), train, num_boost_round=self.n_estimators, callbacks=callbacks
            )
            booster.best_iteration = booster.current_iteration()
            return booster
        return lgb.train(
            self.lgb_params(),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=[lgb.Dataset(*valid, reference=train)],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False), *(callbacks or [])],
        )

    def decision_function(self, X: object) -> np.ndarray:
        """Raw margin (log-odds) of the mule class, at the booster's best round."""
        check_is_fitted(self, "booster_")
        return self.booster_.predict(
            self._matrix(X, reset=False), raw_score=True, num_iteration=self.booster_.best_iteration
        )

    def predict_proba(self, X: object) -> np.ndarray:
        """Uncalibrated probabilities of shape (n, 2), columns in ``classes_`` order."""
        mule = expit(self.decision_function(X))
        return np.column_stack([1.0 - mule, mule])

    def predict(self, X: object) -> np.ndarray:
        """The more probable class of each row."""
        mule = self.decision_function(X) > 0
        return self.classes_[mule.astype(int)]
