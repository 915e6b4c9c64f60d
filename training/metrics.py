"""Out-of-time evaluation of a risk score: point metrics, bootstrap intervals, alert-rate tables.

Every metric is computed from one kernel that works on *row weights* over the rows sorted
once by score. The point estimate uses weight 1 per row; a bootstrap resample is the same
rows with weights equal to how often each row was drawn. Resampling therefore never
re-sorts, which is what keeps 200 resamples of 200k rows to a few seconds.

Conventions
-----------
- Higher score = riskier. Alert-rate metrics flag the top ``ceil(r * n)`` rows; ties in score
  are broken by row order (stable sort by score descending), so results are deterministic.
- Threshold-based metrics (ROC AUC, average precision, KS, recall at a false-positive rate)
  move the threshold between distinct score values, as scikit-learn does: tied scores are
  flagged together.
- ``brier`` reads the score as a probability. It is only meaningful for calibrated scores;
  for a raw margin or a rank it is a number without interpretation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALERT_RATES: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)
# What a comparison table and the model report show, in this order.
HEADLINE_METRICS = (
    "roc_auc",
    "pr_auc",
    "ks",
    "brier",
    "recall@0.5%",
    "recall@1.0%",
    "recall@2.0%",
    "recall@5.0%",
    "precision@1.0%",
    "recall@fpr5%",
)

# Rows × resamples held in memory at once; about 32 MB per float64 working array.
_CHUNK_CELLS = 4_000_000
_CI_LEVEL = 0.95


def recall_key(rate: float) -> str:
    """Name of the recall-at-alert-rate metric, e.g. ``recall@0.5%``."""
    return f"recall@{rate:.1%}"


def precision_key(rate: float) -> str:
    """Name of the precision-at-alert-rate metric, e.g. ``precision@0.5%``."""
    return f"precision@{rate:.1%}"


def fpr_key(fpr: float) -> str:
    """Name of the recall-at-false-positive-rate metric, e.g. ``recall@fpr5%``."""
    return f"recall@fpr{100 * fpr:g}%"


def _validate(
    y: np.ndarray, score: np.ndarray, alert_rates: Sequence[float], fpr: float
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    score = np.asarray(score, dtype=float)
    if y.ndim != 1 or score.ndim != 1 or len(y) != len(score):
        raise ValueError(f"y and score must be 1-D of the same length, got {y.shape} and {score.shape}")
    if len(y) == 0:
        raise ValueError("y is empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must contain only 0/1 (or booleans)")
    if not np.isfinite(score).all():
        raise ValueError("score contains NaN or infinite values")
    y = y.astype(np.int8)
    if y.min() == y.max():
        raise ValueError("y needs both positives and negatives for ranking metrics")
    if not all(0.0 < r <= 1.0 for r in alert_rates):
        raise ValueError(f"alert rates must lie in (0, 1], got {tuple(alert_rates)}")
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    return y, score


def _alert_count(rate: float, n: int) -> int:
    # Rounding first keeps float noise (0.07 * 100 = 7.000000000000001) from adding an alert.
    return max(1, math.ceil(round(rate * n, 9)))


@dataclass(frozen=True)
class _Ranked:
    """Rows sorted by score descending (stable), indexed for the kernel.

    Ranking metrics only change where a run of tied scores holds a mule, so besides the
    running total of rows the kernel only reads these runs: few, because mules are rare.
    """

    y: np.ndarray  # labels, ranked
    score: np.ndarray  # scores, ranked
    positive_rows: np.ndarray  # positions of the mules
    run_first_positive: np.ndarray  # per run holding a mule: index in positive_rows of its first
    run_start: np.ndarray  # per run holding a mule: its first position
    run_end: np.ndarray  # per run holding a mule: its last position

    @classmethod
    def of(cls, y: np.ndarray, score: np.ndarray) -> _Ranked:
        order = np.argsort(-score, kind="stable")
        s, ranked_y = score[order], y[order]
        new_run = np.r_[True, s[1:] != s[:-1]]
        starts = np.flatnonzero(new_run)
        ends = np.r_[starts[1:], len(s)] - 1
        positive_rows = np.flatnonzero(ranked_y)
        runs, first = np.unique(np.cumsum(new_run)[positive_rows] - 1, return_index=True)
        return cls(
            y=ranked_y.astype(float),
            score=s,
            positive_rows=positive_rows,
            run_first_positive=first,
            run_start=starts[runs],
            run_end=ends[runs],
        )


def _kernel(
    ranked: _Ranked, weights: np.ndarray, alert_rates: Sequence[float], fpr: float
) -> dict[str, np.ndarray]:
    """All metrics for each row of ``weights``: shape ``(b, n)``, ranked order, rows summing to n."""
    b, n = weights.shape
    resample = np.arange(b)
    rows_through = np.cumsum(weights, axis=1)
    w_pos = weights[:, ranked.positive_rows]
    # Column m: weight of the first m mules in rank order.
    pos_before = np.concatenate([np.zeros((b, 1)), np.cumsum(w_pos, axis=1)], axis=1)

    # Per run of tied scores: its rows cross any threshold together.
    pos_g = np.add.reduceat(w_pos, ranked.run_first_positive, axis=1)
    cum_pos = np.cumsum(pos_g, axis=1)
    through = rows_through[:, ranked.run_end]
    before = rows_through[:, ranked.run_start] - weights[:, ranked.run_start]
    neg_g = through - before - pos_g
    cum_neg = through - cum_pos
    pos = cum_pos[:, -1]
    neg = n - pos
    tpr = cum_pos / pos[:, None]
    fpr_g = cum_neg / neg[:, None]
    precision_g = np.divide(cum_pos, through, out=np.zeros_like(cum_pos), where=through > 0)

    out: dict[str, np.ndarray] = {
        # Each mule outranks the negatives below its run and half of those tied with it.
        "roc_auc": (pos_g * (neg[:, None] - cum_neg + neg_g / 2)).sum(axis=1) / (pos * neg),
        "pr_auc": (pos_g * precision_g).sum(axis=1) / pos,
        # Between runs holding mules TPR - FPR only falls, so its maximum is at one of them.
        "ks": np.maximum((tpr - fpr_g).max(axis=1), 0.0),
        "brier": weights @ (ranked.score - ranked.y) ** 2 / n,
    }
    for rate in alert_rates:
        k = _alert_count(rate, n)
        # The row where the running total reaches k is the last flagged, perhaps only in part.
        last = np.array([np.searchsorted(row, k) for row in rows_through])
        above = rows_through[resample, last] - weights[resample, last]
        mules_above = pos_before[resample, np.searchsorted(ranked.positive_rows, last)]
        hits = mules_above + ranked.y[last] * (k - above)
        out[recall_key(rate)] = hits / pos
        out[precision_key(rate)] = hits / k
    # Tolerance so an FPR of exactly the target is not lost to float division.
    out[fpr_key(fpr)] = np.where(fpr_g <= fpr + 1e-12, tpr, 0.0).max(axis=1)
    out["positives"] = pos
    out["n"] = np.full(b, float(n))
    return out


def _point(ranked: _Ranked, alert_rates: Sequence[float], fpr: float) -> dict[str, float]:
    values = _kernel(ranked, np.ones((1, len(ranked.y))), alert_rates, fpr)
    return {name: float(v[0]) for name, v in values.items()}


def point_metrics(
    y: np.ndarray,
    score: np.ndarray,
    *,
    alert_rates: Sequence[float] = ALERT_RATES,
    fpr: float = 0.05,
) -> dict[str, float]:
    """Ranking, calibration and alert-rate metrics of one score on one labelled sample.

    Parameters
    ----------
    y : array of shape (n,)
        1 for a mule, 0 otherwise. Both classes must be present.
    score : array of shape (n,)
        Higher is riskier. Must be a calibrated probability for ``brier`` to mean anything.
    alert_rates : sequence of float
        Shares of applications flagged, each in (0, 1].
    fpr : float
        False-positive rate at which recall is reported (the BAF benchmark's 5%).

    Returns
    -------
    dict of str to float
        ``roc_auc``, ``pr_auc`` (average precision), ``ks`` (max of TPR - FPR, so a reversed
        score gets 0 rather than a high value), ``brier``; for each rate ``r``,
        ``recall@{r:.1%}`` and ``precision@{r:.1%}`` over the top ``ceil(r * n)`` rows;
        ``recall@fpr5%`` (the highest recall of any threshold whose FPR is at most ``fpr``,
        without interpolation); ``positives`` and ``n``.
    """
    return _point(_Ranked.of(*_validate(y, score, alert_rates, fpr)), alert_rates, fpr)


@dataclass(frozen=True)
class Evaluation:
    """Point metrics with 95% percentile-bootstrap intervals.

    Attributes
    ----------
    point : dict of str to float
        :func:`point_metrics` on the full sample.
    ci_low, ci_high : dict of str to float
        2.5th and 97.5th percentiles over the usable resamples (NaN when none was usable).
    n_boot : int
        Resamples drawn.
    n_skipped : int
        Resamples left out because they held no positive or no negative.
    """

    point: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    n_boot: int
    n_skipped: int = 0

    def to_frame(self) -> pd.DataFrame:
        """One row per metric; columns ``value``, ``ci_low``, ``ci_high``."""
        frame = pd.DataFrame({"value": self.point, "ci_low": self.ci_low, "ci_high": self.ci_high})
        frame.index.name = "metric"
        return frame


def evaluate(
    y: np.ndarray,
    score: np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
    alert_rates: Sequence[float] = ALERT_RATES,
    fpr: float = 0.05,
) -> Evaluation:
    """Point metrics and 95% percentile-bootstrap confidence intervals.

    The bootstrap resamples rows with replacement, *not* stratified by class: the number of
    positives varies between resamples as it would between test periods, so the intervals
    of precision include prevalence uncertainty. A resample without positives or without
    negatives is skipped and counted in ``n_skipped``. Rows are treated as independent;
    members of one mule ring are not, so the intervals are somewhat too narrow where rings
    are large.

    Parameters
    ----------
    y, score, alert_rates, fpr
        As in :func:`point_metrics`.
    n_boot : int
        Number of resamples; 0 gives NaN intervals.
    seed : int
        Seed of the resampling; the same seed gives identical intervals.

    Returns
    -------
    Evaluation
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    ranked = _Ranked.of(*_validate(y, score, alert_rates, fpr))
    point = _point(ranked, alert_rates, fpr)
    n = len(ranked.y)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in point}
    skipped = 0
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        # Drawing rank positions instead of rows is the same uniform draw and saves a reorder.
        idx = rng.integers(0, n, size=(b, n))
        weights = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        weights = weights.astype(float)
        pos = weights @ ranked.y
        usable = (pos > 0) & (pos < n)
        skipped += int(b - usable.sum())
        if not usable.any():
            continue
        for name, values in _kernel(ranked, weights[usable], alert_rates, fpr).items():
            draws[name].append(values)
    tail = 100 * (1 - _CI_LEVEL) / 2
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for name, parts in draws.items():
        if parts:
            lo, hi = np.percentile(np.concatenate(parts), [tail, 100 - tail])
            low[name], high[name] = float(lo), float(hi)
        else:
            low[name] = high[name] = math.nan
    return Evaluation(point=point, ci_low=low, ci_high=high, n_boot=n_boot, n_skipped=skipped)


_COUNTS = frozenset({"positives", "n"})


def compare(evaluations: Mapping[str, Evaluation], metrics: Sequence[str]) -> pd.DataFrame:
    """Side-by-side table of models, ready to print.

    Cells are strings ``"0.912 [0.901, 0.923]"`` (counts as plain integers), so the frame can
    be handed to a console table as is; the numbers themselves stay in the evaluations.

    Parameters
    ----------
    evaluations : mapping of model name to Evaluation
    metrics : sequence of str
        Metric names, in column order.

    Returns
    -------
    pandas.DataFrame
        Index: model name; one column per metric.
    """
    rows = {}
    for model, ev in evaluations.items():
        missing = [m for m in metrics if m not in ev.point]
        if missing:
            raise KeyError(f"{model}: no metric {missing}; available: {sorted(ev.point)}")
        rows[model] = {m: _cell(m, ev) for m in metrics}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(metrics))
    frame.index.name = "model"
    return frame


def _cell(metric: str, ev: Evaluation) -> str:
    value = ev.point[metric]
    if metric in _COUNTS:
        return f"{value:,.0f}"
    low, high = ev.ci_low[metric], ev.ci_high[metric]
    if math.isnan(low) or math.isnan(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def threshold_table(
    y: np.ndarray,
    score: np.ndarray,
    *,
    alert_rates: Sequence[float] = ALERT_RATES,
    days: float,
    branches: int,
) -> pd.DataFrame:
    """What each alert rate means at the counter: threshold, workload, precision, recall.

    Parameters
    ----------
    y, score
        As in :func:`point_metrics`.
    alert_rates : sequence of float
        Shares of applications flagged.
    days : float
        Length of the period the sample covers, in days.
    branches : int
        Branches that opened these accounts.

    Returns
    -------
    pandas.DataFrame
        One row per rate: ``alert_rate``, ``threshold`` (score of the last flagged row),
        ``alerts``, ``alerts_per_branch_day``, ``precision``, ``recall``. Counts are for the
        top ``ceil(r * n)`` rows; a rule ``score >= threshold`` flags more when other rows
        tie with the threshold.
    """
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    if branches < 1:
        raise ValueError(f"branches must be >= 1, got {branches}")
    ranked = _Ranked.of(*_validate(y, score, alert_rates, fpr=0.05))
    n = len(ranked.y)
    positives = ranked.y.sum()
    rows = []
    for rate in alert_rates:
        k = _alert_count(rate, n)
        hits = ranked.y[:k].sum()
        rows.append(
            {
                "alert_rate": rate,
                "threshold": float(ranked.score[k - 1]),
                "alerts": k,
                "alerts_per_branch_day": k / (days * branches),
                "precision": hits / k,
                "recall": hits / positives,
            }
        )
    return pd.DataFrame(rows)
