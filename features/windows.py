"""Windowed counts offline, by prefix counts instead of window frames.

For an application at ``t``, an aggregate counts its entity's applications in ``[t - W, t)``
(:class:`duanka.features.declaration.Aggregate`): all of them, those with a flag, or the
distinct values of a column. An earlier application ``j`` of the entity counts at every ``t``
with ``ts_j < t <= end_j``: ``end_j = ts_j + W`` (it leaves the window after ``W``), and for a
distinct count the earlier of that and the next application with the same value (which stands
for the value from then on). So the count at ``t`` is how many of the entity's applications
started before ``t`` less how many ended before it: two binary searches in sorted arrays.

DuckDB's ``RANGE`` window frames did the same work in time that grew faster than the history
(a branch's four counts took 3.1 s at 1M applications and 116 s at 10M, with hub entities of a
million applications; docs/benchmarks.md); this is O(n log n) whatever an entity's size.

Times are compared through their rank among the applications' distinct times (a rank fits
beside an entity's code in one int64), and the counts are exact: the same values as the window
frames, which :mod:`tests.test_features_reference` checks against a reference loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from duanka.features.declaration import Aggregate, Op

_NEVER = np.iinfo(np.int64).max
_LONG_AGO = np.iinfo(np.int64).min


def window_counts(
    keys: Sequence[np.ndarray],
    ts: np.ndarray,
    aggregates: Sequence[Aggregate],
    columns: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Each aggregate of one entity, for every application, point in time.

    Parameters
    ----------
    keys : sequence of numpy.ndarray
        The entity's key columns as non-negative integer codes, -1 where missing; an application
        missing any of them has no such entity.
    ts : numpy.ndarray
        ``applied_at`` in microseconds (int64), in ascending order.
    aggregates : sequence of Aggregate
        Windowed counts of this entity (:attr:`Op.COUNT`, :attr:`Op.FLAGGED`,
        :attr:`Op.DISTINCT`, :attr:`Op.OTHERS`).
    columns : mapping
        What the aggregates read: each flag as booleans, each distinct column as codes (-1 where
        missing, never counted).

    Returns
    -------
    dict
        Float64 counts by aggregate name; NaN for an application without the entity.
    """
    window = _Window(_group_codes(keys), ts)
    last_seen: dict[str, np.ndarray] = {}  # by column: when the entity last saw the asker's value
    result = {}
    for aggregate in aggregates:
        counted = _counted(aggregate, window.order, columns)
        value = columns[aggregate.column] if aggregate.op in (Op.DISTINCT, Op.OTHERS) else None
        counts = window.counts(aggregate.window_us, counted, value)
        if aggregate.op is Op.OTHERS:
            # less the asker's own value, when the entity saw it in the window
            if aggregate.column not in last_seen:
                last_seen[aggregate.column] = window.last_seen(value)
            counts[window.order] -= last_seen[aggregate.column] >= window.at - aggregate.window_us
        result[aggregate.name] = counts
    return result


class _Window:
    """One entity's applications sorted by entity, then time, to count over windows."""

    def __init__(self, group: np.ndarray, ts: np.ndarray) -> None:
        self.size = len(ts)
        has_entity = np.flatnonzero(group >= 0)
        # Entity, then time (the rows are in time order already and the sort is stable).
        self.order = has_entity[np.argsort(group[has_entity], kind="stable")]
        first_at_time = np.ones(len(ts), dtype=bool)
        first_at_time[1:] = ts[1:] != ts[:-1]
        self.times = ts[first_at_time]  # the distinct times, ascending
        self.entity, self.at = group[self.order], ts[self.order]
        self.base = self.entity * (len(self.times) + 1)
        # sorted: entity, then rank of the time
        self.asked = self.base + np.cumsum(first_at_time)[self.order]

    def counts(self, window_us: int, counted: np.ndarray, value: np.ndarray | None = None) -> np.ndarray:
        """For every application (NaN without the entity), the ``counted`` ones (a mask in
        :attr:`order`) in its window, or the distinct ``value`` codes among them."""
        starts, started_at, start_base = self.asked[counted], self.at[counted], self.base[counted]
        ends = started_at + window_us
        if value is not None:
            seen = value[self.order][counted]
            ends = np.minimum(ends, _next_of_same_value(self.entity[counted], seen, started_at))
            ended = np.sort(start_base + np.searchsorted(self.times, ends, side="right"))
        else:  # in the order of the starts already: within an entity, ts + W rises with ts
            ended = start_base + np.searchsorted(self.times, ends, side="right")
        counts = np.full(self.size, np.nan)
        begun_before, ended_before = (np.searchsorted(a, self.asked, side="left") for a in (starts, ended))
        counts[self.order] = begun_before - ended_before
        return counts

    def last_seen(self, value: np.ndarray) -> np.ndarray:
        """For each application in :attr:`order`, the latest time strictly before its own at
        which its entity saw its ``value`` (:data:`_LONG_AGO` if never, or without a value)."""
        own = value[self.order]
        # an application without a value is its own -1 pair (answered _LONG_AGO below), never
        # the neighbouring entity's largest value
        pair = np.where(own >= 0, self.entity * (int(own.max(initial=0)) + 1) + own, -1)
        by_pair = np.argsort(pair, kind="stable")  # pair, then time
        same, at = pair[by_pair], self.at[by_pair]
        run_starts = np.ones(len(same), dtype=bool)  # a run: one pair at one instant (ties)
        run_starts[1:] = (same[1:] != same[:-1]) | (at[1:] != at[:-1])
        before = np.full(len(same), _LONG_AGO)
        before[1:] = np.where(same[1:] == same[:-1], at[:-1], _LONG_AGO)
        run_start = np.maximum.accumulate(np.where(run_starts, np.arange(len(same)), 0))
        last = np.empty(len(same), dtype=np.int64)
        last[by_pair] = before[run_start]
        last[own < 0] = _LONG_AGO
        return last


def _group_codes(keys: Sequence[np.ndarray]) -> np.ndarray:
    """One non-negative int64 code per entity (-1: no entity), at most the number of rows."""
    first, *rest = keys
    group = first.astype(np.int64)
    for key in rest:
        pair = group * (int(key.max(initial=0)) + 1) + key
        known = (group >= 0) & (key >= 0)
        group = np.full(len(pair), -1, dtype=np.int64)
        group[known] = np.unique(pair[known], return_inverse=True)[1]
    return group


def _counted(aggregate: Aggregate, order: np.ndarray, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Which of the entity's applications (in ``order``) the aggregate counts, as a mask."""
    if aggregate.op is Op.COUNT:
        return np.ones(len(order), dtype=bool)
    if aggregate.op is Op.FLAGGED:
        return np.asarray(columns[aggregate.column], dtype=bool)[order]
    if aggregate.op in (Op.DISTINCT, Op.OTHERS):
        return columns[aggregate.column][order] >= 0
    raise ValueError(f"{aggregate.name} is not a plain window count")


def _next_of_same_value(entity: np.ndarray, value: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """For each application (in entity, time order), when the entity's next one with the same
    value came (:data:`_NEVER` if none did)."""
    pair = entity * (int(value.max(initial=0)) + 1) + value
    by_pair = np.argsort(pair, kind="stable")  # pair, then time
    following = np.full(len(ts), _NEVER)
    same = pair[by_pair][1:] == pair[by_pair][:-1]
    following[by_pair[:-1][same]] = ts[by_pair][1:][same]
    return following
