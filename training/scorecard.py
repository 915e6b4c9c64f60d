"""The bank's classic baseline: a weight-of-evidence binned logistic-regression scorecard.

Each numeric feature is cut at quantiles, bins holding less than ``min_bin_share`` of the
rows are merged into a neighbour, and every bin is replaced by its weight of evidence

    WoE = ln( share of mules in the bin / share of non-mules in the bin ),

so a positive WoE marks a bin riskier than average. A logistic regression on the WoE values
gives the probability; the coefficients and WoE together give the points table that risk
officers know from credit scorecards.

The binning is written here rather than taken from ``optbinning`` (1.0.0). Its own wheel is
small (234 kB) but it requires ``ortools>=9.15`` (a 29.8 MB wheel, 82 MB installed) which
pins ``protobuf<6.34``, while the project's constraints pin protobuf 7.36.2 (needed by
MLflow), so the environment cannot resolve; it also pulls ``ropwr`` and with it ``cvxpy``
and six solver packages. What it would add, optimal monotone binning, is not needed for a
baseline whose job is to be the familiar yardstick.
"""

from __future__ import annotations

import math
import numbers
from itertools import pairwise

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from duanka.training.monitoring import binned_divergence

# Added to each class count per bin, so an all-mule or mule-free bin gets a finite WoE.
_SMOOTHING = 0.5

# Points convention: 600 points at odds 50:1 (non-mule : mule), 20 points to double the odds.
# Higher points mean lower mule risk, as on the bank's credit scorecards.
BASE_POINTS = 600.0
BASE_ODDS = 50.0
PDO = 20.0

MISSING = "missing"


def _weighted_quantile_edges(x: np.ndarray, w: np.ndarray, n_bins: int) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs, cw = x[order], np.cumsum(w[order])
    targets = cw[-1] * np.arange(1, n_bins) / n_bins
    edges = np.unique(xs[np.searchsorted(cw, targets, side="left")])
    # An edge at the maximum would leave the top bin empty.
    return edges[edges < xs[-1]]


def _merge_small_bins(edges: np.ndarray, weight: np.ndarray, min_weight: float) -> np.ndarray:
    """Remove edges until every bin holds at least ``min_weight`` (or one bin is left)."""
    edges, weight = list(edges), list(weight)
    while len(weight) > 1 and min(weight) < min_weight:
        i = int(np.argmin(weight))
        if i == 0:
            j = 1
        elif i == len(weight) - 1:
            j = i - 1
        else:
            j = i - 1 if weight[i - 1] <= weight[i + 1] else i + 1
        lo = min(i, j)
        weight[lo : lo + 2] = [weight[lo] + weight[lo + 1]]
        del edges[lo]
    return np.asarray(edges, dtype=float)


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value; bins are ``(e[i-1], e[i]]`` with open outer ends, NaN last."""
    idx = np.searchsorted(edges, x, side="left")
    idx[np.isnan(x)] = len(edges) + 1
    return idx


def _bin_labels(edges: np.ndarray) -> list[str]:
    bounds = [-math.inf, *edges.tolist(), math.inf]
    numeric = [f"({lo:g}, {hi:g}]" if hi < math.inf else f"({lo:g}, inf)" for lo, hi in pairwise(bounds)]
    return [*numeric, MISSING]


class WoEScorecard(ClassifierMixin, BaseEstimator):
    """Weight-of-evidence binned logistic regression on numeric features.

    The mixin comes first so that scikit-learn recognises a classifier (``is_classifier``,
    stratified splits, calibration); in the other order its tags say "no estimator type".

    Parameters
    ----------
    n_bins : int
        Quantile bins per feature before merging (fewer where values repeat).
    min_bin_share : float
        Bins with a smaller (weighted) share of all rows are merged into their smaller
        neighbour. A missing-value bin below this share is not merged but gets WoE 0, i.e.
        it is read as the population average; so does NaN at predict time when training
        had none.
    C : float
        Inverse L2 regularisation strength of the logistic regression.
    max_iter : int
        Iterations of the logistic regression solver.
    random_state : int or None
        Passed to the logistic regression.

    Attributes
    ----------
    feature_names_in_ : ndarray of str
    n_features_in_ : int
    classes_ : ndarray of shape (2,)
        The second class is the one whose probability is modelled (mule).
    edges_ : dict of str to ndarray
        Inner cut points per feature.
    woe_ : dict of str to ndarray
        WoE per bin per feature; the last entry is the missing-value bin.
    logistic_ : LogisticRegression
        The model on WoE values.
    """

    def __init__(
        self,
        n_bins: int = 8,
        min_bin_share: float = 0.05,
        C: float = 1.0,
        max_iter: int = 1000,
        random_state: int | None = 0,
    ) -> None:
        self.n_bins = n_bins
        self.min_bin_share = min_bin_share
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None) -> WoEScorecard:
        """Bin every feature, compute WoE, fit the logistic regression.

        Parameters
        ----------
        X : pandas.DataFrame of shape (n, p)
            Numeric or boolean columns; NaN allowed.
        y : array of shape (n,)
            Two classes; the larger one (1, True) is the mule class.
        sample_weight : array of shape (n,), optional
            Used for the quantiles, the shares, the WoE and the regression.

        Returns
        -------
        WoEScorecard
        """
        if not isinstance(self.n_bins, numbers.Integral) or self.n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {self.n_bins!r}")
        if not 0.0 <= self.min_bin_share < 0.5:
            raise ValueError(f"min_bin_share must lie in [0, 0.5), got {self.min_bin_share!r}")
        if not isinstance(X, pd.DataFrame) or X.shape[1] == 0:
            raise TypeError("X must be a pandas DataFrame with at least one column")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        values = self._numeric(X)
        y = np.asarray(y)
        if y.shape != (len(values),):
            raise ValueError(f"y must have shape ({len(values)},), got {y.shape}")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"y must hold exactly two classes, got {self.classes_.tolist()}")
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if w.shape != y.shape or (w < 0).any() or w.sum() <= 0:
            raise ValueError("sample_weight must be non-negative, as long as y, with a positive sum")
        bad = (y == self.classes_[1]).astype(float)
        if not 0 < (w * bad).sum() < w.sum():
            raise ValueError("both classes need positive total sample_weight")
        min_weight = self.min_bin_share * w.sum()

        self.edges_: dict[str, np.ndarray] = {}
        self.woe_: dict[str, np.ndarray] = {}
        rows, iv = [], {}
        for name, x in zip(self.feature_names_in_, values.T, strict=True):
            present = ~np.isnan(x)
            edges = np.array([])
            if present.any():
                edges = _weighted_quantile_edges(x[present], w[present], self.n_bins)
            bin_weight = np.bincount(np.searchsorted(edges, x[present]), w[present], minlength=len(edges) + 1)
            edges = _merge_small_bins(edges, bin_weight, min_weight)
            idx = _bin_index(x, edges)
            n_slots = len(edges) + 2
            total = np.bincount(idx, w, minlength=n_slots)
            bads = np.bincount(idx, w * bad, minlength=n_slots)
            goods = total - bads
            # Too little weight to estimate (a small or empty missing bin): no evidence either way.
            estimated = (total > 0) & (total >= min_weight)
            k = estimated.sum()
            woe = np.log(
                ((bads + _SMOOTHING) / (bads[estimated].sum() + _SMOOTHING * k))
                / ((goods + _SMOOTHING) / (goods[estimated].sum() + _SMOOTHING * k))
            )
            woe[~estimated] = 0.0
            self.edges_[name], self.woe_[name] = edges, woe
            iv[name] = binned_divergence(goods, bads)
            bad_rate = np.divide(bads, total, out=np.full(n_slots, np.nan), where=total > 0)
            for label, share, rate, v in zip(_bin_labels(edges), total / w.sum(), bad_rate, woe, strict=True):
                rows.append({"feature": name, "bin": label, "share": share, "bad_rate": rate, "woe": v})
        self._bins = pd.DataFrame(rows)
        self._iv = pd.Series(iv, name="information_value").sort_values(ascending=False)

        self.logistic_ = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state)
        self.logistic_.fit(self._woe(values), bad, sample_weight=w)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities of shape (n, 2): columns follow ``classes_`` (non-mule, mule)."""
        check_is_fitted(self, "logistic_")
        return self.logistic_.predict_proba(self._woe(self._numeric(X)))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The more probable class of each row."""
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]

    def information_value(self) -> pd.Series:
        """Information value per feature on the scorecard's bins, largest first.

        The report's definition (:func:`duanka.training.monitoring.binned_divergence` of the legitimate
        and mule shares per bin), read on the bins the scorecard fitted, missing values included.
        """
        check_is_fitted(self, "logistic_")
        return self._iv.copy()

    def points(self) -> pd.DataFrame:
        """The scorecard table: one row per feature and bin.

        Columns ``feature``, ``bin``, ``share`` (of training rows), ``bad_rate``, ``woe``,
        ``points``. A row's score is the sum of its bins' points; 600 points are odds of
        50:1 against being a mule and every 20 points double those odds. The intercept is
        spread evenly over the features, as is customary.
        """
        check_is_fitted(self, "logistic_")
        factor = PDO / math.log(2)
        offset = BASE_POINTS - factor * math.log(BASE_ODDS)
        coef = dict(zip(self.feature_names_in_, self.logistic_.coef_[0], strict=True))
        intercept = self.logistic_.intercept_[0]
        table = self._bins.copy()
        per_feature = (offset - factor * intercept) / self.n_features_in_
        table["points"] = per_feature - factor * table["feature"].map(coef) * table["woe"]
        return table

    def _numeric(self, X: pd.DataFrame) -> np.ndarray:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a pandas DataFrame, got {type(X).__name__}")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"X lacks the fitted features {missing}")
        X = X[list(self.feature_names_in_)]
        is_number = pd.api.types.is_numeric_dtype
        non_numeric = [c for c in X.columns if not (is_number(X[c]) or pd.api.types.is_bool_dtype(X[c]))]
        if non_numeric:
            raise TypeError(f"columns {non_numeric} are not numeric; encode categories as numbers first")
        return X.to_numpy(dtype=float, na_value=np.nan)

    def _woe(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        for j, name in enumerate(self.feature_names_in_):
            out[:, j] = self.woe_[name][_bin_index(values[:, j], self.edges_[name])]
        return out
