"""The monitoring figures: population stability, information value, error rates by group, band shares.

One definition of each, as pure functions on arrays, for everything that watches a model: the
model report (:mod:`duanka.training.report`), the scorecard baseline (:mod:`duanka.training.scorecard`), the
backtest (:mod:`duanka.training.backtest`) and a monitoring page reading live decisions.

PSI, CSI and IV are one quantity, the symmetric (Jeffreys) divergence of two binned
distributions, :func:`binned_divergence`: PSI compares a period's values with a reference
period's, CSI is PSI of one feature, IV compares a feature's values among mules with those among
legitimate applicants.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from duanka.training.bands import ALERT_BANDS

BINS = 10
# Traffic lights of the PSI convention: below WATCH stable, above ACT investigate or retrain.
PSI_WATCH, PSI_ACT = 0.10, 0.25
# Siddiqi's conventions: IV below each bound earns its label; above the last, "very strong"
# (which above 0.5 often means the feature leaks the label).
IV_STRENGTH: tuple[tuple[float, str], ...] = ((0.02, "none"), (0.1, "weak"), (0.3, "medium"), (0.5, "strong"))
# Below this many legitimate rows a group's false-positive rate is too noisy to rank.
MIN_NEGATIVES = 100
# Half a row added to every kept bin keeps a bin empty on one side finite.
_SMOOTHING = 0.5


def quantile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, ties merged.

    Parameters
    ----------
    reference : numpy.ndarray
        Values whose quantiles cut the bins; NaN and infinities are ignored.
    bins : int
        Bins wanted; fewer come back where values repeat.

    Returns
    -------
    numpy.ndarray
        Sorted unique inner edges; empty when the reference holds no finite value.
    """
    finite = reference[np.isfinite(reference)]
    if finite.size == 0:
        return np.array([])
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin ``(edge[i-1], edge[i]]``, the missing values counted in a last bin of their own.

    Closed on the right so a 0/1 flag whose only edge is 0 still splits into two bins.

    Parameters
    ----------
    values : numpy.ndarray
    edges : numpy.ndarray
        Inner edges, as :func:`quantile_edges` gives them.

    Returns
    -------
    numpy.ndarray of int, shape ``(len(edges) + 2,)``
    """
    finite = np.isfinite(values)
    index = np.where(finite, np.searchsorted(edges, values, side="left"), len(edges) + 1)
    return np.bincount(index, minlength=len(edges) + 2)


def binned_divergence(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jeffreys divergence ``sum((a - e) * ln(a / e))`` of two distributions over the same bins.

    Bins empty on both sides carry no information and are dropped; every other bin gets half a
    row on each side, so a bin empty on one side stays finite.

    Parameters
    ----------
    expected, actual : numpy.ndarray
        Counts (or summed weights) per bin, the same bins in the same order.

    Returns
    -------
    float
        0 for identical shares; larger the more the shares differ.
    """
    expected, actual = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    keep = (expected + actual) > 0
    e = (expected[keep] + _SMOOTHING) / (expected[keep].sum() + _SMOOTHING * keep.sum())
    a = (actual[keep] + _SMOOTHING) / (actual[keep].sum() + _SMOOTHING * keep.sum())
    return float(((a - e) * np.log(a / e)).sum())


def population_stability(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """PSI of ``current`` against ``reference`` (CSI when the values are one feature's).

    Parameters
    ----------
    reference, current : numpy.ndarray
        The reference period's values and the period's; NaN is binned apart.
    bins : int
        Quantile bins of the reference.

    Returns
    -------
    float
        Read against :data:`PSI_WATCH` and :data:`PSI_ACT`.
    """
    edges = quantile_edges(reference, bins)
    return binned_divergence(bin_counts(reference, edges), bin_counts(current, edges))


def information_value(x: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Information value of a feature on its quantile bins, missing values as their own bin.

    Parameters
    ----------
    x : numpy.ndarray
        The feature's values.
    y : numpy.ndarray
        1 for a mule, 0 otherwise.
    bins : int

    Returns
    -------
    float
        Read with :func:`information_value_strength`.
    """
    edges = quantile_edges(x, bins)
    return binned_divergence(bin_counts(x[y == 0], edges), bin_counts(x[y == 1], edges))


def information_value_strength(iv: float) -> str:
    """The conventional word for an information value: none, weak, medium, strong, very strong."""
    for bound, label in IV_STRENGTH:
        if iv < bound:
            return label
    return "very strong"


def calibration_bins(y: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Mean score and observed mule rate per score bin, finer at the top where the bands cut.

    Parameters
    ----------
    y : numpy.ndarray
        1 for a mule, 0 otherwise.
    score : numpy.ndarray
        Calibrated scores.

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``predicted``, ``observed``, ``n``.
    """
    edges = np.unique(np.quantile(score, [0.5, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995]))
    index = np.searchsorted(edges, score, side="right")
    frame = pd.DataFrame({"bin": index, "y": y, "score": score})
    return frame.groupby("bin").agg(predicted=("score", "mean"), observed=("y", "mean"), n=("y", "size"))


def error_rates(
    y: np.ndarray,
    alert: np.ndarray,
    groups: pd.Series,
    dimension: str,
    min_negatives: int = MIN_NEGATIVES,
) -> pd.DataFrame:
    """Alert rate, false-positive rate and recall per group, with FPR ratios to the lowest group.

    Parameters
    ----------
    y : numpy.ndarray
        1 for a mule, 0 otherwise.
    alert : numpy.ndarray of bool
        Whether each application was alerted.
    groups : pandas.Series
        Each application's group, by position; a missing group is named ``"none"``.
    dimension : str
        What the groups are (``"age band"``), repeated in the table.
    min_negatives : int
        Groups with fewer legitimate applications get no ratio and are not the reference.

    Returns
    -------
    pandas.DataFrame
        One row per group: ``dimension``, ``group``, ``applications``, ``mules``, ``alert_rate``,
        ``fpr``, ``recall``, ``negatives``, ``fpr_ratio`` (against the lowest positive FPR of the
        groups with enough legitimate applications).
    """
    groups = groups.reset_index(drop=True)  # positions of y and alert, whatever the caller's index
    rows = []
    for group, index in groups.groupby(groups, sort=True, dropna=False, observed=True).groups.items():
        yy, aa = y[index], alert[index]
        negatives, positives = int((yy == 0).sum()), int(yy.sum())
        rows.append(
            {
                "dimension": dimension,
                "group": "none" if pd.isna(group) else str(group),
                "applications": len(yy),
                "mules": positives,
                "alert_rate": aa.mean(),
                "fpr": aa[yy == 0].mean() if negatives else math.nan,
                "recall": aa[yy == 1].mean() if positives else math.nan,
                "negatives": negatives,
            }
        )
    table = pd.DataFrame(rows)
    ranked = table.loc[(table["negatives"] >= min_negatives) & (table["fpr"] > 0), "fpr"]
    table["fpr_ratio"] = table["fpr"] / ranked.min() if len(ranked) else math.nan
    table.loc[table["negatives"] < min_negatives, "fpr_ratio"] = math.nan
    return table


def false_positive_rate_ratio(
    y: np.ndarray, alert: np.ndarray, group: np.ndarray, reference: np.ndarray
) -> float:
    """How much more often legitimate applicants of ``group`` are alerted than those of ``reference``.

    Parameters
    ----------
    y : numpy.ndarray
        1 for a mule, 0 otherwise.
    alert : numpy.ndarray of bool
    group, reference : numpy.ndarray of bool
        The applications of each side (out-of-province and local applicants, say).

    Returns
    -------
    float
        FPR of ``group`` over FPR of ``reference``; NaN when either side has no legitimate
        application or the reference's FPR is 0.
    """
    legit = np.asarray(y) == 0
    alert = np.asarray(alert, dtype=bool)
    chosen, base = legit & np.asarray(group, dtype=bool), legit & np.asarray(reference, dtype=bool)
    if not chosen.any() or not base.any() or not alert[base].any():
        return math.nan
    return float(alert[chosen].mean() / alert[base].mean())


def band_shares(band: np.ndarray) -> dict[str, float]:
    """Realised shares of the alert budget: ``critical_share`` and ``alert_share`` (high or critical).

    Parameters
    ----------
    band : numpy.ndarray of str
        Each application's band.

    Returns
    -------
    dict
        Both shares of all applications, 0 for none.
    """
    band = np.asarray(band)
    n = max(len(band), 1)
    return {
        "critical_share": float((band == "critical").sum()) / n,
        "alert_share": float(np.isin(band, ALERT_BANDS).sum()) / n,
    }
