"""The online store replays a stream and gives exactly the offline builder's values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from duanka.data.events import WATCHLIST_EVENTS
from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import FEATURE_NAMES, MODEL_FEATURES
from tests.factories import EventFactory


def _mismatches(online: np.ndarray, offline: np.ndarray, ids: list[str]) -> list[tuple[str, str]]:
    same = np.isclose(online, offline, rtol=0, atol=1e-9, equal_nan=True)
    rows, cols = np.nonzero(~same)
    return [(ids[r], FEATURE_NAMES[c]) for r, c in zip(rows, cols, strict=True)]


def _replay(
    store: OnlineFeatureStore, apps: list[dict], labels: list[dict], listings: list[dict] = ()
) -> np.ndarray:
    """Events in time order; each confirmation and each listing is added once it has happened."""
    labels = sorted(labels, key=lambda row: row["confirmed_at"])
    listings = sorted(listings, key=lambda row: row["listed_at"])
    vectors = np.empty((len(apps), len(FEATURE_NAMES)))
    next_label = next_listing = 0
    for i, event in enumerate(apps):
        while next_label < len(labels) and labels[next_label]["confirmed_at"] < event["applied_at"]:
            row = labels[next_label]
            store.add_label(row["application_id"], row["confirmed_at"], row["source"])
            next_label += 1
        arrived = next_listing
        while next_listing < len(listings) and listings[next_listing]["listed_at"] < event["applied_at"]:
            next_listing += 1
        if next_listing > arrived:
            store.add_listings(pa.Table.from_pylist(listings[arrived:next_listing], schema=WATCHLIST_EVENTS))
        vectors[i] = store.features_for(event, FEATURE_NAMES)
        assert store.add_application(event)
    return vectors


@pytest.fixture(scope="module")
def stream():
    events = EventFactory(n=20_000, seed=5).build()
    offline = build_features(events.applications, events.labels, listings=events.listings)
    # The builder orders by (applied_at, application_id): the order a stream arrives in.
    apps = events.applications.to_pylist()
    apps.sort(key=lambda e: (e["applied_at"], e["application_id"]))
    return events, apps, offline


def test_the_stream_exercises_the_listing_features(stream):
    """The comparisons below mean something only if listings move the values."""
    _, _, offline = stream
    for name in FEATURE_NAMES:
        if "listed" in name or "listings" in name:
            assert (offline[name].fillna(0) > 0).sum() >= 20, name


def test_replayed_stream_matches_offline_for_every_feature(stream, tmp_path):
    events, apps, offline = stream
    assert len(apps) >= 20_000
    assert offline["application_id"].tolist() == [e["application_id"] for e in apps]
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        online = _replay(store, apps, events.labels.to_pylist(), events.listings.to_pylist())
    expected = offline[list(FEATURE_NAMES)].to_numpy()
    assert _mismatches(online, expected, [e["application_id"] for e in apps]) == []


def test_later_confirmations_in_the_store_are_not_used(stream, tmp_path):
    """Every confirmation, past and future, is in the store before the replay starts."""
    events, apps, offline = stream
    window = apps[:4_000]
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        for row in events.labels.to_pylist():
            store.add_label(row["application_id"], row["confirmed_at"], row["source"])
        online = _replay(store, window, [], events.listings.to_pylist())
    expected = offline[list(FEATURE_NAMES)].to_numpy()[: len(window)]
    assert _mismatches(online, expected, [e["application_id"] for e in window]) == []


def test_later_listings_in_the_store_are_not_used(stream, tmp_path):
    """Every listing, removal and withdrawal, past and future, is held before the replay starts."""
    events, apps, offline = stream
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        assert store.add_listings(events.listings) > 0
        assert store.add_listings(events.listings) == 0  # idempotent
        online = _replay(store, apps, events.labels.to_pylist())
    expected = offline[list(FEATURE_NAMES)].to_numpy()
    assert _mismatches(online, expected, [e["application_id"] for e in apps]) == []


def test_model_vector_is_the_model_features_in_order(stream, tmp_path):
    events, apps, offline = stream
    target = apps[500]
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        for event in apps[:500]:
            store.add_application(event)
        for row in events.labels.to_pylist():
            store.add_label(row["application_id"], row["confirmed_at"], row["source"])
        store.add_listings(events.listings)
        vector = store.features_for(target)
    assert vector.dtype == np.float64
    assert vector.shape == (len(MODEL_FEATURES),)
    expected = offline.loc[500, list(MODEL_FEATURES)].to_numpy(dtype=float)
    np.testing.assert_allclose(vector, expected, rtol=0, atol=1e-9)
