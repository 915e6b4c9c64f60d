"""Prefix-count window counts equal a loop over ``[t - W, t)`` that reads the rule as written.

The data is made to hit the edges: many applications at the same microsecond (none sees
another), applications exactly ``W`` apart (the earlier one is still in the window) and ``W + 1``
apart (it has left), a value repeated inside and across windows, missing keys and values, and
an entity of two keys.
"""

from __future__ import annotations

import numpy as np
import pytest

from duanka.features.declaration import Aggregate, Entity, Op
from duanka.features.windows import window_counts

W_DAYS = 2
W = W_DAYS * 86_400_000_000
ONE = Entity.BRANCH
PAIR = Entity.STAFF_AT_BRANCH


def _events(seed: int, n: int = 400) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # times on a coarse grid, so that ties and gaps of exactly W and W + 1 are common
    grid = rng.integers(0, 12, n) * (W // 2) + rng.choice([0, 1], n, p=[0.8, 0.2])
    return {
        "ts": np.sort(grid).astype(np.int64),
        "branch_id": np.where(rng.random(n) < 0.1, -1, rng.integers(0, 5, n)).astype(np.int32),
        "staff_id": np.where(rng.random(n) < 0.1, -1, rng.integers(0, 3, n)).astype(np.int32),
        "value": np.where(rng.random(n) < 0.2, -1, rng.integers(0, 6, n)).astype(np.int32),
        "flag": rng.random(n) < 0.4,
    }


def _by_loop(events: dict[str, np.ndarray], entity: Entity, aggregate: Aggregate) -> np.ndarray:
    ts = events["ts"]
    out = np.full(len(ts), np.nan)
    for i in range(len(ts)):
        key = tuple(events[k][i] for k in entity.keys)
        if min(key) < 0:
            continue
        window = [
            j
            for j in range(len(ts))
            if tuple(events[k][j] for k in entity.keys) == key and ts[i] - W <= ts[j] < ts[i]
        ]
        if aggregate.op is Op.COUNT:
            out[i] = len(window)
        elif aggregate.op is Op.FLAGGED:
            out[i] = sum(bool(events["flag"][j]) for j in window)
        elif aggregate.op is Op.DISTINCT:
            out[i] = len({events["value"][j] for j in window if events["value"][j] >= 0})
        else:  # the asker's own value is never one of the others
            out[i] = len(
                {events["value"][j] for j in window if events["value"][j] not in (-1, events["value"][i])}
            )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("entity", [ONE, PAIR], ids=lambda e: e.label)
@pytest.mark.parametrize(
    ("op", "column"), [(Op.COUNT, None), (Op.FLAGGED, "flag"), (Op.DISTINCT, "value"), (Op.OTHERS, "value")]
)
def test_prefix_counts_equal_the_window_read_as_written(seed, entity, op, column):
    events = _events(seed)
    aggregate = Aggregate(entity, op, W_DAYS, column)
    keys = [events[k] for k in entity.keys]
    found = window_counts(keys, events["ts"], [aggregate], events)[aggregate.name]
    np.testing.assert_array_equal(found, _by_loop(events, entity, aggregate))


def test_the_edges_are_in_the_data():
    # a test that never met a tie or an exact-W gap would prove nothing about them
    ts = _events(0)["ts"]
    gaps = ts[:, None] - ts[None, :]
    assert (gaps == 0).sum() > len(ts)
    assert (gaps == W).any()
    assert (gaps == W + 1).any()
