"""The offline builder agrees with a slow reference written straight from the definitions.

The reference is plain Python over lists of events: for each target it walks
the earlier events and applies the point-in-time rule, the entity match, the
window and the linked-group bound as the registry and features.linked state
them, and reads the joint-punishment list as docs/contract.md states it (the
earliest expiry of a listing wins; a withdrawn one never applied). Only the
final arithmetic (the shared transforms in features.values) is reused, and
that has its own tests.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from duanka.features.declaration import Op
from duanka.features.offline import build_features
from duanka.features.registry import (
    AGGREGATES,
    FEATURE_NAMES,
    FEATURES,
    LINK_FANOUT,
    LINK_KEYS,
    LINK_WINDOW_DAYS,
)
from tests.factories import EventFactory

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = 86_400_000_000


def us(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def flag(event: dict, name: str) -> bool:
    corporate = event["account_type"] == "corporate"
    if name == "out_of_province":
        return event["home_province"] != event["branch_province"]
    if name == "corporate":
        return corporate
    if name == "young_company":
        return corporate and event["company_age_days"] is not None and event["company_age_days"] < 90
    if name == "corporate_without_onsite":
        return corporate and event["onsite_verified"] is not True
    if name == "photo_tampered":
        return event["photo_tampered"]
    raise KeyError(name)


def own_columns(event: dict) -> dict[str, np.ndarray]:
    def one(value: object, dtype: object = np.float64) -> np.ndarray:
        return np.array([np.nan if value is None else value], dtype=dtype)

    strings = ("address_kind", "gender", "channel", "address_province", "branch_province")
    columns = {name: one(event[name], object) for name in strings}
    for name in (
        "age",
        "phone_tenure_days",
        "photo_tampered",
        "onsite_verified",
        "company_age_days",
        "u_shield",
        "mobile_banking",
        "payment_binding",
    ):
        columns[name] = one(event[name])
    columns["out_of_province"] = one(flag(event, "out_of_province"))
    columns["corporate"] = one(flag(event, "corporate"))
    columns["applied_at"] = np.array([event["_t"]], dtype=np.int64)
    return columns


def reference_listings(rows: list[dict]) -> list[tuple[str, int, int]]:
    """``(person, listed_at, expires_at)`` of every listing that applied at some instant."""
    earliest_end: dict[tuple[str, str, int], int] = {}
    for row in rows:
        listing = (row["applicant_key"], row["source"], us(row["listed_at"]))
        end = us(row["expires_at"])
        earliest_end[listing] = min(end, earliest_end.get(listing, end))
    return [(person, start, end) for (person, _, start), end in earliest_end.items() if end > start]


def reference_counts(x: dict, history: list[dict], confirmed: dict[str, int], listings: list[tuple]) -> dict:
    t = x["_t"]
    earlier = [e for e in history if e["_t"] < t]
    first_listed: dict[str, int] = {}
    for person, start, _ in listings:
        first_listed[person] = min(start, first_listed.get(person, start))
    counts: dict[str, np.ndarray] = {}
    for agg in AGGREGATES:
        if agg.op is Op.LINKED:
            continue
        if agg.op is Op.LISTINGS_ENDED:
            ended = [1 for person, _, end in listings if person == x["applicant_key"] and end <= t]
            counts[agg.name] = np.array([float(len(ended))])
            continue
        key = [x[k] for k in agg.entity.keys]
        if any(k is None for k in key):
            counts[agg.name] = np.array([np.nan])
            continue
        window = [
            e for e in earlier if t - agg.window_us <= e["_t"] and [e[k] for k in agg.entity.keys] == key
        ]
        if agg.op is Op.COUNT:
            n = len(window)
        elif agg.op is Op.FLAGGED:
            n = sum(1 for e in window if flag(e, agg.column))
        elif agg.op is Op.DISTINCT:
            n = len({e[agg.column] for e in window if e[agg.column] is not None})
        elif agg.op is Op.OTHERS:  # other applicants: never the asking application's own value
            n = len({e[agg.column] for e in window if e[agg.column] not in (None, x[agg.column])})
        elif agg.op is Op.LISTED:
            n = sum(1 for e in window if first_listed.get(e["applicant_key"], math.inf) < t)
        else:
            n = sum(1 for e in window if confirmed.get(e["application_id"], math.inf) < t)
        counts[agg.name] = np.array([float(n)])
    counts.update(reference_linked_group(x, earlier, confirmed, first_listed))
    return counts


def reference_linked_group(
    x: dict, earlier: list[dict], confirmed: dict[str, int], first_listed: dict[str, int]
) -> dict:
    t = x["_t"]

    def kept(kind: str, key: str) -> list[dict]:
        recent = [e for e in earlier if e[kind] == key and e["_t"] >= t - LINK_WINDOW_DAYS * DAY]
        recent.sort(key=lambda e: (e["_t"], e["application_id"]))
        return recent[-LINK_FANOUT:]

    def neighbours(event: dict) -> list[dict]:
        return [m for kind in LINK_KEYS if event[kind] is not None for m in kept(kind, event[kind])]

    hop1 = neighbours(x)
    reached = {m["application_id"]: m for m in hop1}
    for m in hop1:
        reached.update({o["application_id"]: o for o in neighbours(m)})
    group = [m for m in reached.values() if m["applicant_key"] != x["applicant_key"]]
    stats = {
        "applicants": len({m["applicant_key"] for m in group}),
        "branches": len({m["branch_id"] for m in group}),
        "first_at": min((m["_t"] for m in group), default=math.nan),
        "confirmed": sum(1 for m in group if confirmed.get(m["application_id"], math.inf) < t),
        "listed": len({p for p in (m["applicant_key"] for m in group) if first_listed.get(p, math.inf) < t}),
        "new_1d": len({m["applicant_key"] for m in group if m["_t"] >= t - DAY}),
        "new_7d": len({m["applicant_key"] for m in group if m["_t"] >= t - 7 * DAY}),
        "out_of_province": len({m["applicant_key"] for m in group if flag(m, "out_of_province")}),
        "full_bundle": len(
            {
                m["applicant_key"]
                for m in group
                if m["u_shield"] and m["mobile_banking"] and m["payment_binding"]
            }
        ),
        "new_phone": len(
            {
                m["applicant_key"]
                for m in group
                if m["phone_tenure_days"] is not None and m["phone_tenure_days"] < 30
            }
        ),
    }
    return {a.name: np.array([float(stats[a.column])]) for a in AGGREGATES if a.op is Op.LINKED}


@pytest.mark.parametrize(("seed", "days"), [(11, 90), (12, 500)])
def test_offline_builder_matches_the_reference_loop(seed, days):
    # A dense quarter, then a sparse year and a half where the 365-day windows close.
    events = EventFactory(n=900, seed=seed, days=days).build()
    history = [dict(e, _t=us(e["applied_at"])) for e in events.applications.to_pylist()]
    confirmed: dict[str, int] = {}
    for row in events.labels.to_pylist():
        at = us(row["confirmed_at"])
        confirmed[row["application_id"]] = min(at, confirmed.get(row["application_id"], at))

    listings = reference_listings(events.listings.to_pylist())

    built = build_features(events.applications, events.labels, listings=events.listings)
    built = built.set_index("application_id")
    targets = np.random.default_rng(seed).choice(len(history), 250, replace=False)
    mismatches = []
    for i in targets:
        x = history[i]
        counts = reference_counts(x, history, confirmed, listings)
        columns = own_columns(x)
        expected = np.array([f.evaluate(columns, counts)[0] for f in FEATURES])
        got = built.loc[x["application_id"], list(FEATURE_NAMES)].to_numpy(dtype=float)
        same = np.isclose(got, expected, rtol=0, atol=1e-9, equal_nan=True)
        mismatches += [(x["application_id"], FEATURE_NAMES[j]) for j in np.flatnonzero(~same)]
    assert mismatches == []


def test_reference_sample_exercises_every_feature():
    """The comparison above means something only if the sample has non-trivial values."""
    events = EventFactory(n=900, seed=11, days=90).build()
    built = build_features(events.applications, events.labels, listings=events.listings)
    for name in FEATURE_NAMES:
        column = built[name].dropna()
        assert column.nunique() > 1, name
