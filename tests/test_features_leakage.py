"""Nothing from the future reaches a feature: later events, confirmations and listings, own labels.

Each test builds the same rows twice, once with and once without what must
not matter, and compares every feature of every affected row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import FEATURE_NAMES
from tests.factories import (
    EventFactory,
    application,
    applications_table,
    label,
    labels_table,
    listing,
    listings_table,
)

DAY = pd.Timedelta(days=1)
US = pd.Timedelta(microseconds=1)


@pytest.fixture(scope="module")
def events():
    return EventFactory(n=6_000, seed=21, days=240).build()


def _cut_time(events, share: float) -> pd.Timestamp:
    at = events.applications["applied_at"].to_pandas()
    return at.iloc[int(len(at) * share)]


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[str, str]]:
    """(application_id, feature) of every value of ``a`` that ``b`` does not repeat."""
    b = b.set_index("application_id").loc[a["application_id"]]
    x, y = a[list(FEATURE_NAMES)].to_numpy(), b[list(FEATURE_NAMES)].to_numpy()
    same = np.isclose(x, y, rtol=0, atol=0, equal_nan=True)
    rows, cols = np.nonzero(~same)
    ids = a["application_id"].tolist()
    return [(ids[r], FEATURE_NAMES[c]) for r, c in zip(rows, cols, strict=True)]


@pytest.mark.parametrize("share", [0.3, 0.7])
def test_later_applications_change_nothing_before_them(events, share):
    cut = _cut_time(events, share)
    apps = events.applications
    past = apps.filter(pc.less_equal(apps["applied_at"], pa.scalar(cut.to_pydatetime())))
    full = build_features(apps, events.labels)
    alone = build_features(past, events.labels)
    assert len(alone) < len(full)
    assert _same_rows(alone, full) == []


@pytest.mark.parametrize("share", [0.3, 0.7])
def test_confirmations_at_or_after_an_application_change_nothing_for_it(events, share):
    cut = _cut_time(events, share)
    labels = events.labels.to_pylist()
    known = [row for row in labels if row["confirmed_at"] < cut]
    # Every application, the ones at the cut included, confirmed at the cut or later.
    ids = events.applications["application_id"].to_pylist()
    delays = np.random.default_rng(1).integers(0, 200, len(ids))
    later = [label(a, cut + int(d) * DAY) for a, d in zip(ids, delays, strict=True)]
    without = build_features(events.applications, labels_table(known))
    with_later = build_features(events.applications, labels_table(known + later))
    upto = without[without["applied_at"] <= cut]
    assert _same_rows(upto, with_later) == []
    assert _same_rows(without, with_later) != []  # the later rows do see them


def _later_listings(events, cut: pd.Timestamp) -> list[dict]:
    """Every applicant listed at the cut or later (a fifth exactly at it): a third of them for
    five years, a third for a day, a third withdrawn at once."""
    people = sorted(set(events.applications["applicant_key"].to_pylist()))
    delays = np.random.default_rng(4).integers(0, 100, len(people))
    rows = []
    for i, (person, d) in enumerate(zip(people, delays, strict=True)):
        start = cut if i % 5 == 0 else cut + int(d) * DAY + int(d) * US
        length = (None, DAY, pd.Timedelta(0))[i % 3]
        rows.append(listing(person, start, None if length is None else start + length))
    return rows


@pytest.mark.parametrize("share", [0.3, 0.7])
def test_listings_at_or_after_an_application_change_nothing_for_it(events, share):
    cut = _cut_time(events, share)
    stored = events.listings.to_pylist()
    known = [row for row in stored if row["listed_at"] < cut]
    later = _later_listings(events, cut)
    without = build_features(events.applications, events.labels, listings=listings_table(known))
    with_later = build_features(events.applications, events.labels, listings=listings_table(known + later))
    upto = without[without["applied_at"] <= cut]
    assert _same_rows(upto, with_later) == []
    assert _same_rows(without, with_later) != []  # the later rows do see them


def test_an_application_s_own_label_never_reaches_its_own_row(events):
    labels = events.labels.to_pylist()
    base = build_features(events.applications, events.labels)
    picks = np.random.default_rng(2).choice(len(base), 8, replace=False)
    for i in picks:
        row = base.iloc[[i]]
        # Even an impossible confirmation, a day before the application itself.
        own = label(row["application_id"].iloc[0], row["applied_at"].iloc[0] - DAY)
        rebuilt = build_features(events.applications, labels_table([*labels, own]))
        assert _same_rows(row, rebuilt) == []


def test_input_order_does_not_matter(events):
    rng = np.random.default_rng(3)
    apps = events.applications.take(rng.permutation(events.applications.num_rows))
    labels = events.labels.take(rng.permutation(events.labels.num_rows))
    listings = events.listings.take(rng.permutation(events.listings.num_rows))
    pd.testing.assert_frame_equal(
        build_features(apps, labels, listings=listings),
        build_features(events.applications, events.labels, listings=events.listings),
    )


def test_online_state_ignores_what_arrives_after_the_query_time(events, tmp_path):
    cut = _cut_time(events, 0.5)
    apps = events.applications.to_pylist()
    labels = events.labels.to_pylist()
    stored = events.listings.to_pylist()
    targets = [e for e in apps if e["applied_at"] <= cut][-300:]
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        for event in apps:
            if event["applied_at"] <= cut:
                store.add_application(event)
        for row in labels:
            if row["confirmed_at"] < cut:
                store.add_label(row["application_id"], row["confirmed_at"], row["source"])
        store.add_listings(listings_table([row for row in stored if row["listed_at"] < cut]))
        before = np.array([store.features_for(e, FEATURE_NAMES) for e in targets])
        assert np.nansum(before[:, FEATURE_NAMES.index("address_listed_applications_365d")]) > 0
        for event in apps:
            if event["applied_at"] > cut:
                store.add_application(event)
        for row in labels:
            if row["confirmed_at"] >= cut:
                store.add_label(row["application_id"], row["confirmed_at"], row["source"])
        for event in targets:  # each target confirmed too, at the cut: not before any of them
            store.add_label(event["application_id"], cut.to_pydatetime(), "investigation")
        store.add_listings(listings_table([row for row in stored if row["listed_at"] >= cut]))
        store.add_listings(listings_table(_later_listings(events, cut)))
        after = np.array([store.features_for(e, FEATURE_NAMES) for e in targets])
    np.testing.assert_array_equal(after, before)


T0 = pd.Timestamp("2024-05-01 03:00", tz="UTC")


@pytest.fixture
def boundaries():
    """A listed person's earlier applications beside others at the listing's start and end instants."""
    listed_at, ends_at = T0 + 10 * DAY, T0 + 40 * DAY
    apps = [
        application("p_before", T0, applicant_key="p", escort_key="e", address_key="b"),
        application("at_listing", listed_at, escort_key="e", address_key="b"),
        application("after_listing", listed_at + US, escort_key="e", address_key="b"),
        application("p_listed", listed_at + DAY, applicant_key="p"),  # in force: the rule's, not ended
        application("p_before_end", ends_at - US, applicant_key="p"),
        application("p_at_end", ends_at, applicant_key="p"),
    ]
    # at_listing's applicant was listed and the listing withdrawn: never listed at all
    withdrawn = listing("person-at_listing", T0 - DAY, T0 - DAY)
    listings = [listing("p", listed_at, ends_at), withdrawn]
    return applications_table(apps), listings_table(listings)


EXPECTED_AT_BOUNDARIES = {
    # application -> (escort_listed_applications_365d, address_..., applicant_ended_listings)
    "p_before": (0, 0, 0),
    "at_listing": (0, 0, 0),  # listed at the very instant: not before t
    "after_listing": (1, 1, 0),
    "p_listed": (np.nan, 0, 0),  # no escort; a building of its own
    "p_before_end": (np.nan, 0, 0),
    "p_at_end": (np.nan, 0, 1),  # ended at the very instant: ended by t
}
BOUNDARY_FEATURES = ["escort_listed_applications_365d", "address_listed_applications_365d"]


def test_listing_boundaries_offline(boundaries):
    apps, listings = boundaries
    built = build_features(apps, labels_table([]), listings=listings).set_index("application_id")
    columns = [*BOUNDARY_FEATURES, "applicant_ended_listings"]
    for aid, expected in EXPECTED_AT_BOUNDARIES.items():
        np.testing.assert_array_equal(built.loc[aid, columns].to_numpy(dtype=float), expected, err_msg=aid)


def test_listing_boundaries_online(boundaries, tmp_path):
    apps, listings = boundaries
    columns = [*BOUNDARY_FEATURES, "applicant_ended_listings"]
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        store.add_listings(listings)  # every listing held before any query: the rule does the rest
        for event in apps.to_pylist():
            np.testing.assert_array_equal(
                store.features_for(event, columns), EXPECTED_AT_BOUNDARIES[event["application_id"]]
            )
            store.add_application(event)
