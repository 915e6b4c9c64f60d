"""Which rows the shipped model is refit on, and what each row's label is worth: label delay.

A mule is confirmed weeks or months after the account opens (a freeze, a police
request). At the as-of date an application younger than the outcome window
that has no confirmation yet is not a clean negative; but leaving every such row
out throws away the months in which rings adapted. Three policies:

- ``mature``: only rows whose whole outcome window has passed (the evidence split's rows).
- ``delay-weighted``: every row known at the as-of date, labelled with the
  confirmations known then; a row without a confirmation counts as a negative
  in proportion to the chance that its label would have arrived by now, read
  off the confirmation delays the store shows for rows old enough to have all
  of theirs (``delay_distribution``).
- ``horizon``: a shorter outcome horizon (``horizon_days``): a row is labelled 1
  when confirmed within the horizon and takes part once the horizon has passed.

Which is the default is decided by rolling backtest (docs/model.md).

Reviewed negatives: an application a case reviewer *cleared* (looked at and found no mule)
may be passed as a column of the frame (:data:`REVIEWED_COLUMN`, from :func:`reviewed_us`);
under every policy such a row, when no confirmation of it is known at the as-of date, takes
part as a negative of weight 1 whatever its age. Whether training should use them is decided
by rolling backtest too (``bench/bench_reviewed_negatives.py``, docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from duanka.features.values import DAY_US

# Weight below which an unconfirmed row is dropped from the refit: it would teach nothing.
_LEAST_WEIGHT = 0.01
# Fewer confirmations of mature rows than this and the delay distribution is not trusted.
_FEWEST_DELAYS = 20
# The optional frame column holding each row's clearance by a reviewer known at the as-of date.
REVIEWED_COLUMN = "reviewed_us"
# The disposition status that makes a reviewed negative (serving/review/cases.py's STATUSES).
CLEARED = "cleared"


class LabelPolicy(StrEnum):
    MATURE = "mature"
    DELAY_WEIGHTED = "delay-weighted"
    HORIZON = "horizon"


DEFAULT_POLICY = LabelPolicy.DELAY_WEIGHTED
DEFAULT_HORIZON_DAYS = 60


@dataclass(frozen=True)
class DelayDistribution:
    """Days from opening to confirmation of the mules confirmed within the outcome window.

    Read from applications old enough at ``as_of`` to have had their whole window, so no
    slow confirmation is missing from it (``cdf`` is then unbiased); ``delays`` is empty
    when the store shows too few of them and every age then counts as fully labelled.
    """

    delays: np.ndarray  # sorted, in days

    def cdf(self, age_days: np.ndarray) -> np.ndarray:
        """P(a mule's confirmation has arrived | the application is ``age_days`` old)."""
        age = np.asarray(age_days, dtype=float)
        if len(self.delays) == 0:
            return np.ones_like(age)
        return np.searchsorted(self.delays, age, side="right") / len(self.delays)

    def quantiles(self) -> dict[str, float]:
        if len(self.delays) == 0:
            return {}
        return {f"delay_p{q}": float(np.percentile(self.delays, q)) for q in (25, 50, 75, 90)}


def confirmed_us(frame: pd.DataFrame, labels: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """Each row's earliest confirmation known at ``as_of`` in UTC microseconds, -1 where none.

    ``labels`` has ``application_id`` and ``confirmed_at`` (the store's label events).
    """
    known = labels.loc[labels["confirmed_at"] <= as_of]
    first = known.groupby("application_id")["confirmed_at"].min()
    at = frame["application_id"].map(first)
    out = np.full(len(frame), -1, dtype=np.int64)
    present = at.notna().to_numpy()
    out[present] = at[present].to_numpy(dtype="datetime64[us]").astype(np.int64)
    return out


def reviewed_us(frame: pd.DataFrame, reviewed: pd.DataFrame | None, as_of: pd.Timestamp) -> np.ndarray:
    """Each row's clearance by a case reviewer known at ``as_of`` in UTC microseconds, -1 where none.

    Parameters
    ----------
    frame : pandas.DataFrame
        With ``application_id``.
    reviewed : pandas.DataFrame or None
        ``application_id`` and ``reviewed_at`` (timezone-aware: when the reviewer disposed of
        the case) and optionally ``status``. Without ``status`` every row is a clearance. With
        it, an application's latest disposition made by ``as_of`` decides, as the case queue
        reads it: a clearance counts only while no later escalation or confirmation
        supersedes it. None: no reviewed outcomes.
    as_of : pandas.Timestamp
        Dispositions made after it are not known and change nothing.

    Returns
    -------
    numpy.ndarray
        int64, the (latest) clearance's time, for :data:`REVIEWED_COLUMN`.
    """
    out = np.full(len(frame), -1, dtype=np.int64)
    if reviewed is None or reviewed.empty:
        return out
    known = reviewed.loc[reviewed["reviewed_at"] <= as_of]
    if "status" in known.columns:
        # A stable sort keeps the record's order among dispositions made in the same instant.
        latest = known.sort_values("reviewed_at", kind="stable").groupby("application_id").tail(1)
        cleared = latest.loc[latest["status"] == CLEARED].set_index("application_id")["reviewed_at"]
    else:
        cleared = known.groupby("application_id")["reviewed_at"].max()
    if cleared.empty:
        return out
    micros = pd.Series(
        pd.to_datetime(cleared, utc=True).to_numpy(dtype="datetime64[us]").astype(np.int64),
        index=cleared.index,
    )
    # Mapped through float64 (NaN where none): exact, microseconds since 1970 stay below 2**53.
    at = frame["application_id"].map(micros)
    present = at.notna().to_numpy()
    out[present] = at[present].to_numpy().astype(np.int64)
    return out


def _applied_us(frame: pd.DataFrame) -> np.ndarray:
    return frame["applied_at"].to_numpy(dtype="datetime64[us]").astype(np.int64)


def delay_distribution(
    frame: pd.DataFrame, confirmed: np.ndarray, as_of: pd.Timestamp, outcome_window_days: int
) -> DelayDistribution:
    """The confirmation delays of rows whose outcome window had closed by ``as_of``."""
    applied = _applied_us(frame)
    window = outcome_window_days * DAY_US
    mature = applied + window <= as_of.value // 1_000
    hit = mature & (confirmed >= 0) & (confirmed - applied <= window)
    delays = np.sort((confirmed[hit] - applied[hit]) / DAY_US)
    return DelayDistribution(delays if len(delays) >= _FEWEST_DELAYS else np.empty(0))


@dataclass(frozen=True)
class RefitRows:
    """The rows of a training frame a refit learns from, their labels and weights."""

    rows: np.ndarray  # positions in the frame
    label: np.ndarray
    weight: np.ndarray  # before downsampling
    delays: DelayDistribution | None = None


def refit_rows(
    frame: pd.DataFrame,
    confirmed: np.ndarray,
    as_of: pd.Timestamp,
    *,
    policy: LabelPolicy,
    outcome_window_days: int,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> RefitRows:
    """Select and label the rows of ``frame`` (a training set as of ``as_of``) for a refit.

    Parameters
    ----------
    frame : pandas.DataFrame
        With ``applied_at`` and ``label_mature`` (:mod:`duanka.features.training_set`), and
        optionally :data:`REVIEWED_COLUMN` (:func:`reviewed_us` at ``as_of``): a row a reviewer
        cleared by ``as_of`` and with no confirmation known then is a negative of weight 1
        under every policy, however young (:func:`with_reviewed_negatives`).
    confirmed : numpy.ndarray
        :func:`confirmed_us` of the frame at ``as_of``.
    policy : LabelPolicy
    outcome_window_days : int
        The label's outcome window.
    horizon_days : int
        The shorter horizon of :attr:`LabelPolicy.HORIZON`.
    """
    return with_reviewed_negatives(
        frame,
        confirmed,
        as_of,
        _policy_rows(frame, confirmed, as_of, policy, outcome_window_days, horizon_days),
    )


def _policy_rows(
    frame: pd.DataFrame,
    confirmed: np.ndarray,
    as_of: pd.Timestamp,
    policy: LabelPolicy,
    outcome_window_days: int,
    horizon_days: int,
) -> RefitRows:
    """The rows, labels and weights ``policy`` alone gives (see :func:`refit_rows`)."""
    applied = _applied_us(frame)
    now = as_of.value // 1_000
    window = outcome_window_days * DAY_US
    hit = confirmed >= 0
    if policy is LabelPolicy.MATURE:
        rows = np.flatnonzero(frame["label_mature"].to_numpy())
        label = (hit & (confirmed - applied <= window))[rows]
        return RefitRows(rows, label.astype(np.int8), np.ones(len(rows)))
    if policy is LabelPolicy.HORIZON:
        if not 0 < horizon_days <= outcome_window_days:
            raise ValueError(f"the label horizon must be 1 to {outcome_window_days} days, got {horizon_days}")
        horizon = horizon_days * DAY_US
        rows = np.flatnonzero(applied + horizon <= now)
        label = (hit & (confirmed - applied <= horizon))[rows]
        return RefitRows(rows, label.astype(np.int8), np.ones(len(rows)))
    delays = delay_distribution(frame, confirmed, as_of, outcome_window_days)
    label = (hit & (confirmed - applied <= window)).astype(np.int8)
    age_days = (now - applied) / DAY_US
    weight = np.where(label == 1, 1.0, delays.cdf(np.minimum(age_days, outcome_window_days)))
    rows = np.flatnonzero(weight >= _LEAST_WEIGHT)
    return RefitRows(rows, label[rows], weight[rows], delays)


def with_reviewed_negatives(
    frame: pd.DataFrame, confirmed: np.ndarray, as_of: pd.Timestamp, refit: RefitRows
) -> RefitRows:
    """``refit`` with the frame's reviewed negatives added or raised to label 0, weight 1.

    A reviewed negative is a row whose :data:`REVIEWED_COLUMN` holds a clearance made by
    ``as_of`` and that has no confirmation known at ``as_of``: the reviewer's look stands in
    for the outcome window that has not passed yet. A row confirmed by ``as_of`` (before or
    after its clearance) keeps what the policy says, so a clearance never turns a known mule
    negative. Without the column ``refit`` is returned as it is.
    """
    if REVIEWED_COLUMN not in frame.columns:
        return refit
    cleared = frame[REVIEWED_COLUMN].to_numpy(dtype=np.int64)
    # The time test repeats reviewed_us's cut, so a column computed at a later as-of leaks nothing.
    reviewed = (cleared >= 0) & (cleared <= as_of.value // 1_000) & (confirmed < 0)
    if not reviewed.any():
        return refit
    label = np.zeros(len(frame), dtype=np.int8)
    weight = np.zeros(len(frame))
    label[refit.rows], weight[refit.rows] = refit.label, refit.weight
    label[reviewed], weight[reviewed] = 0, 1.0
    rows = np.union1d(refit.rows, np.flatnonzero(reviewed))
    return RefitRows(rows, label[rows], weight[rows], refit.delays)
