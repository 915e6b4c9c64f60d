"""Nothing from the future reaches a feature: later events, later confirmations, own labels.

Each test builds the same rows twice, once with and once without what must
not matter, and compares every feature of every affected row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.offline import build_features
from features.online import OnlineFeatureStore
from features.registry import FEATURE_NAMES
from tests.factories import EventFactory, label, labels_table

DAY = pd.Timedelta(days=1)


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
    pd.testing.assert_frame_equal(
        build_features(apps, labels), build_features(events.applications, events.labels)
    )


def test_online_state_ignores_what_arrives_after_the_query_time(events, tmp_path):
    cut = _cut_time(events, 0.5)
    apps = events.applications.to_pylist()
    labels = events.labels.to_pylist()
    targets = [e for e in apps if e["applied_at"] <= cut][-300:]
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        for event in apps:
            if event["applied_at"] <= cut:
                store.add_application(event)
        for row in labels:
            if row["confirmed_at"] < cut:
                store.add_label(row["application_id"], row["confirmed_at"], row["source"])
        before = np.array([store.features_for(e, FEATURE_NAMES) for e in targets])
        for event in apps:
            if event["applied_at"] > cut:
                store.add_application(event)
        for row in labels:
            if row["confirmed_at"] >= cut:
                store.add_label(row["application_id"], row["confirmed_at"], row["source"])
        for event in targets:  # each target confirmed too, at the cut: not before any of them
            store.add_label(event["application_id"], cut.to_pydatetime(), "investigation")
        after = np.array([store.features_for(e, FEATURE_NAMES) for e in targets])
    np.testing.assert_array_equal(after, before)
