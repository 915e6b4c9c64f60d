"""The monitoring figures: population stability, information value, error rates by group, band shares
against the alert budget, and binomial intervals.

One definition of each, as pure functions on arrays, for everything that watches a model: the
model report (:mod:`duanka.training.report`), the scorecard baseline (:mod:`duanka.training.scorecard`), the
backtest (:mod:`duanka.training.backtest`) and the monitoring of live decisions
(:mod:`duanka.serving.monitor`), which keeps counts rather than rows and so reads the count forms
here (:func:`error_rates_from_counts`, :func:`shares_against_budget`).

PSI, CSI and IV are one quantity, the symmetric (Jeffreys) divergence of two binned
distributions, :func:`binned_divergence`: PSI compares a period's values with a reference
period's, CSI is PSI of one feature, IV compares a feature's values among mules with those among
legitimate applicants.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from duanka.training.bands import ALERT_BANDS, ALERT_BUDGET

BINS = 10
# Traffic lights of the PSI convention: below WATCH stable, above ACT investigate or retrain.
PSI_WATCH, PSI_ACT = 0.10, 0.25
# Siddiqi's conventions: IV below each bound earns its label; above the last, "very strong"
# (which above 0.5 often means the feature leaks the label).
IV_STRENGTH: tuple[tuple[float, str], ...] = ((0.02, "none"), (0.1, "weak"), (0.3, "medium"), (0.5, "strong"))
# Below this many legitimate rows a group's false-positive rate is too noisy to rank.
MIN_NEGATIVES = 100
# A group's FPR ratio above this deserves a look (predictive equality, as in the BAF benchmark):
# the line of the report's fairness section and of the monitoring plan's act trigger.
RATIO_LINE = 1.25
# Half a row added to every kept bin keeps a bin empty on one side finite.
_SMOOTHING = 0.5
# The report's monitoring plan: a band's share outside half to double its budget is out of line.
BUDGET_LOW, BUDGET_HIGH = 0.5, 2.0
# Each share the budget bounds, and the bands it counts: the three bands and the alert (high or critical).
BUDGETED_SHARES: dict[str, tuple[str, ...]] = {
    "critical": ("critical",),
    "high": ("high",),
    "medium": ("medium",),
    "alert": ALERT_BANDS,
}
Z_95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval
# Age bands of the fairness tables (the model report's and the monitoring's), lower bound inclusive.
AGE_BANDS: tuple[tuple[int, int, str], ...] = (
    (0, 25, "under 25"),
    (25, 35, "25-34"),
    (35, 45, "35-44"),
    (45, 60, "45-59"),
    (60, 200, "60+"),
)


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


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin ``(edge[i-1], edge[i]]``; missing values (NaN, infinities) in bin ``len(edges) + 1``.

    Closed on the right so a 0/1 flag whose only edge is 0 still splits into two bins.

    Parameters
    ----------
    values : numpy.ndarray
    edges : numpy.ndarray
        Inner edges, as :func:`quantile_edges` gives them.

    Returns
    -------
    numpy.ndarray of int, the shape of ``values``
    """
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    return np.where(finite, np.searchsorted(edges, values, side="left"), len(edges) + 1)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin of :func:`bin_index`, the missing values counted in a last bin of their own.

    Parameters
    ----------
    values : numpy.ndarray
    edges : numpy.ndarray
        Inner edges, as :func:`quantile_edges` gives them.

    Returns
    -------
    numpy.ndarray of int, shape ``(len(edges) + 2,)``
    """
    return np.bincount(bin_index(values, edges), minlength=len(edges) + 2)


def binned_divergences(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Jeffreys divergence ``sum((a - e) * ln(a / e))`` over the last axis, for many pairs at once.

    Bins empty on both sides carry no information and are dropped; every other bin gets half a
    row on each side, so a bin empty on one side stays finite. A variable with fewer bins than
    the axis holds is padded with bins empty on both sides, which are dropped.

    Parameters
    ----------
    expected, actual : numpy.ndarray
        Counts (or summed weights) per bin, the same bins in the same order on the last axis;
        the other axes broadcast (one reference against many periods).

    Returns
    -------
    numpy.ndarray
        The divergence of each pair: 0 for identical shares; larger the more the shares differ.
    """
    e, a = np.broadcast_arrays(np.asarray(expected, dtype=float), np.asarray(actual, dtype=float))
    keep = (e + a) > 0
    kept = keep.sum(axis=-1, keepdims=True)
    # a bin dropped holds 0 on both sides: the sums of the kept bins are the sums of all
    e = (e + _SMOOTHING) / (e.sum(axis=-1, keepdims=True) + _SMOOTHING * kept)
    a = (a + _SMOOTHING) / (a.sum(axis=-1, keepdims=True) + _SMOOTHING * kept)
    return np.where(keep, (a - e) * np.log(a / e), 0.0).sum(axis=-1)


def binned_divergence(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jeffreys divergence of two distributions over the same bins (:func:`binned_divergences` of one pair).

    Parameters
    ----------
    expected, actual : numpy.ndarray
        Counts (or summed weights) per bin, the same bins in the same order.

    Returns
    -------
    float
        0 for identical shares; larger the more the shares differ.
    """
    return float(binned_divergences(expected, actual))


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


def error_counts(y: np.ndarray, alert: np.ndarray, groups: pd.Series) -> pd.DataFrame:
    """Applications, mules, alerts and alerted mules per group: what :func:`error_rates_from_counts` reads.

    Parameters
    ----------
    y : numpy.ndarray
        1 for a mule, 0 otherwise.
    alert : numpy.ndarray of bool
        Whether each application was alerted.
    groups : pandas.Series
        Each application's group, by position; a missing group is named ``"none"``.

    Returns
    -------
    pandas.DataFrame
        One row per group, in sorted order with ``"none"`` last: ``group``, ``applications``,
        ``mules``, ``alerts``, ``alerted_mules``.
    """
    groups = groups.reset_index(drop=True)  # positions of y and alert, whatever the caller's index
    y, alert = np.asarray(y), np.asarray(alert, dtype=bool)
    rows = []
    for group, index in groups.groupby(groups, sort=True, dropna=False, observed=True).groups.items():
        yy, aa = y[index], alert[index]
        rows.append(
            {
                "group": "none" if pd.isna(group) else str(group),
                "applications": len(yy),
                "mules": int(yy.sum()),
                "alerts": int(aa.sum()),
                "alerted_mules": int(aa[yy == 1].sum()),
            }
        )
    return pd.DataFrame(rows, columns=["group", "applications", "mules", "alerts", "alerted_mules"])


def error_rates_from_counts(
    counts: pd.DataFrame, dimension: str, min_negatives: int = MIN_NEGATIVES
) -> pd.DataFrame:
    """Alert rate, false-positive rate and recall per group from counts, with FPR ratios to the lowest group.

    Parameters
    ----------
    counts : pandas.DataFrame
        One row per group: ``group``, ``applications``, ``mules``, ``alerts``, ``alerted_mules``
        (as :func:`error_counts` gives them, or summed from a store of counts).
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
    n = counts["applications"].to_numpy(dtype=float)
    mules = counts["mules"].to_numpy(dtype=float)
    alerts = counts["alerts"].to_numpy(dtype=float)
    caught = counts["alerted_mules"].to_numpy(dtype=float)
    negatives = n - mules
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty side is NaN, said as such
        table = pd.DataFrame(
            {
                "dimension": dimension,
                "group": counts["group"].astype(str).to_numpy(),
                "applications": n.astype(int),
                "mules": mules.astype(int),
                "alert_rate": np.where(n > 0, alerts / n, math.nan),
                "fpr": np.where(negatives > 0, (alerts - caught) / negatives, math.nan),
                "recall": np.where(mules > 0, caught / mules, math.nan),
                "negatives": negatives.astype(int),
            }
        )
    ranked = table.loc[(table["negatives"] >= min_negatives) & (table["fpr"] > 0), "fpr"]
    table["fpr_ratio"] = table["fpr"] / ranked.min() if len(ranked) else math.nan
    table.loc[table["negatives"] < min_negatives, "fpr_ratio"] = math.nan
    return table


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
        As :func:`error_rates_from_counts`.
    """
    return error_rates_from_counts(error_counts(y, alert, groups), dimension, min_negatives)


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


def age_band(age: pd.Series | np.ndarray) -> pd.Series:
    """Each age's band of :data:`AGE_BANDS` (a categorical; missing for a missing age)."""
    labels = [label for _, _, label in AGE_BANDS]
    edges = [low for low, _, _ in AGE_BANDS] + [AGE_BANDS[-1][1]]
    values = age if isinstance(age, pd.Series) else pd.Series(age)  # a Series keeps its index
    return pd.cut(values.astype(float), edges, right=False, labels=labels)


def wilson_interval(
    successes: np.ndarray | float, trials: np.ndarray | float, z: float = Z_95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion: honest for small counts and shares near 0.

    A branch with 40 openings and one critical alert has a raw share of 2.5 %; its interval,
    about 0.4 % to 13 %, says that this is no evidence of a branch above its budget.

    Parameters
    ----------
    successes, trials : array-like
        Counts, element by element; a share of no trial is unknown, its interval ``[0, 1]``.
    z : float
        Normal quantile of the interval's level (:data:`Z_95`).

    Returns
    -------
    low, high : numpy.ndarray of float
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    safe = np.where(n > 0, n, 1.0)
    p = k / safe
    centre = (p + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    # none seen, or all: the bound on that side is exactly 0 or 1 (rounding would leave 1e-18)
    low = np.where((n > 0) & (k > 0), np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where((n > 0) & (k < n), np.clip(centre + half, 0.0, 1.0), 1.0)
    return low, high


def simultaneous_z(intervals: int, level: float = 0.95) -> float:
    """The normal quantile that makes ``intervals`` two-sided intervals hold together at ``level``.

    Bonferroni: each interval at ``1 - (1 - level) / intervals``. Read against one line, a
    hundred branches' 95 % intervals would each week leave about five out by chance alone;
    intervals that hold together leave one out in twenty weeks.

    Parameters
    ----------
    intervals : int
        How many are read together (at least one).
    level : float
        Their joint coverage.
    """
    return NormalDist().inv_cdf(1 - (1 - level) / (2 * max(intervals, 1)))


def shares_against_budget(
    counts: pd.DataFrame, budget: dict[str, float] = ALERT_BUDGET, z: float = Z_95
) -> pd.DataFrame:
    """Each budgeted share (critical, high, medium and the alert share) with its interval and budget.

    Parameters
    ----------
    counts : pandas.DataFrame
        Decisions per band: one row per unit (a day, a branch, a week), one column per band seen
        (``critical``, ``high``, ``medium``, ``low``, ``blocked``); every column is counted in
        the unit's total, as every opening is in the budget's.
    budget : dict
        Share of openings per band (:data:`duanka.training.bands.ALERT_BUDGET`).
    z : float
        Normal quantile of the intervals: :data:`Z_95`, or :func:`simultaneous_z` where many
        units are read together.

    Returns
    -------
    pandas.DataFrame
        One row per unit and share, the unit's index kept as columns, then ``share`` (the name
        of :data:`BUDGETED_SHARES`), ``count``, ``n``, ``rate``, ``low``, ``high`` (Wilson),
        ``budget`` and ``ratio`` (rate over budget).
    """
    totals = counts.sum(axis=1).to_numpy(dtype=float)
    parts = []
    for share, bands in BUDGETED_SHARES.items():
        hit = counts.reindex(columns=list(bands), fill_value=0).sum(axis=1).to_numpy(dtype=float)
        allowed = sum(budget[b] for b in bands)
        low, high = wilson_interval(hit, totals, z)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(totals > 0, hit / np.where(totals > 0, totals, 1.0), math.nan)
        part = counts.index.to_frame(index=False)
        part = part.assign(
            share=share,
            count=hit.astype(int),
            n=totals.astype(int),
            rate=rate,
            low=low,
            high=high,
            budget=allowed,
            ratio=rate / allowed,
        )
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
