"""The online store's own promises: idempotent events, bounded state, durable file."""

from __future__ import annotations

import random
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from duanka.features.columns import COMPARED
from duanka.features.declaration import Entity
from duanka.features.online import OnlineFeatureStore
from duanka.features.online_queries import StateLayoutMismatch, index_name, parameters, plan_online
from duanka.features.registry import AGGREGATES, FEATURE_NAMES
from tests.factories import EventFactory, application, listing, listings_table

T0 = pd.Timestamp("2024-05-01 03:00", tz="UTC")
DAY = pd.Timedelta(days=1)


def _at(ts: pd.Timestamp) -> datetime:
    return ts.to_pydatetime()


@pytest.fixture
def store(tmp_path):
    with OnlineFeatureStore(tmp_path / "state.db") as opened:
        yield opened


def test_an_application_added_twice_changes_nothing(store):
    first = application("a", T0, escort_key="e", applicant_key="p1")
    assert store.add_application(first)
    target = application("x", T0 + DAY, escort_key="e")
    before = store.features_for(target, FEATURE_NAMES)
    # Same id again, even with other content: still the first one.
    assert not store.add_application(first)
    assert not store.add_application({**first, "applicant_key": "p2", "escort_key": "e2"})
    np.testing.assert_array_equal(store.features_for(target, FEATURE_NAMES), before)


def test_a_bulk_load_is_the_same_as_one_at_a_time(tmp_path):
    apps = EventFactory(n=600, seed=32).build().applications.to_pylist()
    targets = apps[-50:]
    with OnlineFeatureStore(tmp_path / "one.db") as one, OnlineFeatureStore(tmp_path / "bulk.db") as bulk:
        for event in apps:
            one.add_application(event)
        assert bulk.add_applications(apps[:300]) == 300
        assert bulk.add_applications(apps) == len(apps) - 300  # the first 300 already held
        for event in targets:
            np.testing.assert_array_equal(
                bulk.features_for(event, FEATURE_NAMES), one.features_for(event, FEATURE_NAMES)
            )


def test_arrival_order_does_not_change_any_feature(tmp_path):
    """Running totals of rows that arrive after later ones are shifted, not left stale."""
    apps = EventFactory(n=800, seed=33).build().applications.to_pylist()
    ordered = sorted(apps, key=lambda e: (e["applied_at"], e["application_id"]))
    shuffled = list(ordered)
    random.Random(3).shuffle(shuffled)
    targets = ordered[-60:]
    with OnlineFeatureStore(tmp_path / "a.db") as a, OnlineFeatureStore(tmp_path / "b.db") as b:
        for event in ordered:
            a.add_application(event)
        for event in shuffled:
            b.add_application(event)
        for event in targets:
            np.testing.assert_array_equal(
                b.features_for(event, FEATURE_NAMES), a.features_for(event, FEATURE_NAMES)
            )


def test_loading_history_is_the_same_as_adding_it(tmp_path):
    events = EventFactory(n=1_500, seed=34).build()
    apps = events.applications.to_pylist()
    targets = sorted(apps, key=lambda e: e["applied_at"])[-80:]
    with OnlineFeatureStore(tmp_path / "one.db") as one, OnlineFeatureStore(tmp_path / "bulk.db") as bulk:
        one.add_applications(apps)
        loaded = []
        assert bulk.load_history(events.applications, progress=loaded.append) == len(apps)
        assert loaded[-1] == len(apps)
        for row in events.labels.to_pylist():
            one.add_label(row["application_id"], row["confirmed_at"], row["source"])
            bulk.add_label(row["application_id"], row["confirmed_at"], row["source"])
        for event in targets:
            np.testing.assert_array_equal(
                bulk.features_for(event, FEATURE_NAMES), one.features_for(event, FEATURE_NAMES)
            )
        # Once warm, the store takes events one at a time; a second warm-up is refused.
        assert not bulk.add_application(apps[0])
        with pytest.raises(ValueError, match="already holds applications"):
            bulk.load_history(events.applications)


@pytest.mark.parametrize("listings_first", [True, False])
def test_a_bulk_load_takes_listings_held_before_or_added_after(tmp_path, listings_first):
    events = EventFactory(n=1_500, seed=34).build()
    apps = events.applications.to_pylist()
    targets = sorted(apps, key=lambda e: e["applied_at"])[-150:]
    with OnlineFeatureStore(tmp_path / "one.db") as one, OnlineFeatureStore(tmp_path / "bulk.db") as bulk:
        one.add_applications(apps)
        one.add_listings(events.listings)
        if listings_first:
            bulk.add_listings(events.listings)
        bulk.load_history(events.applications)
        if not listings_first:
            assert bulk.add_listings(events.listings) > 0
        held = bulk._con.execute("SELECT COUNT(*) FROM apps WHERE listed IS NOT NULL").fetchone()[0]
        assert held > 0
        for event in targets:
            np.testing.assert_array_equal(
                bulk.features_for(event, FEATURE_NAMES), one.features_for(event, FEATURE_NAMES)
            )


def test_listings_are_idempotent_and_a_removal_or_withdrawal_takes_effect(store):
    escort = FEATURE_NAMES.index("escort_listed_applications_365d")
    ended = FEATURE_NAMES.index("applicant_ended_listings")
    store.add_application(application("a", T0, escort_key="e", applicant_key="p"))
    later = application("x", T0 + 40 * DAY, escort_key="e", applicant_key="p")
    first = listing("p", T0 + DAY)
    assert store.add_listings(listings_table([first, first])) == 1  # a repeat within the call: once
    assert store.add_listings(listings_table([first])) == 0
    assert store.features_for(later, FEATURE_NAMES)[[escort, ended]].tolist() == [1, 0]
    # Ended by a removal 10 days on: still listed before x, and one ended listing at x.
    assert store.add_listings(listings_table([{**first, "expires_at": _at(T0 + 11 * DAY)}])) == 1
    assert store.add_listings(listings_table([{**first, "expires_at": _at(T0 + 30 * DAY)}])) == 0  # later
    assert store.features_for(later, FEATURE_NAMES)[[escort, ended]].tolist() == [1, 1]
    # Withdrawn (expires at listed_at): as if never listed.
    assert store.add_listings(listings_table([{**first, "expires_at": first["listed_at"]}])) == 1
    assert store.features_for(later, FEATURE_NAMES)[[escort, ended]].tolist() == [0, 0]


def test_a_listing_may_arrive_before_its_person_s_application(store):
    assert store.add_listings(listings_table([listing("p", T0 - 10 * DAY)])) == 1
    store.add_application(application("a", T0, escort_key="e", applicant_key="p"))
    target = application("x", T0 + DAY, escort_key="e")
    index = FEATURE_NAMES.index("escort_listed_applications_365d")
    assert store.features_for(target, FEATURE_NAMES)[index] == 1


def test_listings_with_naive_times_are_refused(store):
    rows = listings_table([listing("p", T0)]).to_pandas()
    rows["listed_at"] = rows["listed_at"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="tz-aware"):
        store.add_listings(rows)


def test_a_state_file_of_another_layout_is_refused(tmp_path):
    path = tmp_path / "state.db"
    OnlineFeatureStore(path).close()
    with sqlite3.connect(path) as con:
        con.execute("UPDATE meta SET value = 1 WHERE name = 'layout'")
    with pytest.raises(StateLayoutMismatch, match="rebuilds it from the event store"):
        OnlineFeatureStore(path)


def test_features_for_does_not_record_the_application(store):
    store.add_application(application("a", T0, escort_key="e"))
    x = application("x", T0 + DAY, escort_key="e")
    store.features_for(x)
    later = application("y", T0 + 2 * DAY, escort_key="e")
    index = FEATURE_NAMES.index("escort_applicants_7d")
    assert store.features_for(later, FEATURE_NAMES)[index] == 1  # a, and not x
    assert store.add_application(x)
    assert store.features_for(later, FEATURE_NAMES)[index] == 2


def test_warming_reads_the_latest_applications_and_changes_nothing(tmp_path):
    apps = EventFactory(n=400, seed=36).build().applications.to_pylist()
    with OnlineFeatureStore(tmp_path / "state.db") as store:
        store.add_applications(apps[:300])
        targets = apps[300:320]
        before = [store.features_for(t, FEATURE_NAMES) for t in targets]
        changes = store._con.total_changes
        assert store.warm(applications=50) == 50
        assert store.warm(applications=1_000) == 300  # no more than it holds
        assert store._con.total_changes == changes  # it wrote nothing
        assert store._con.execute("SELECT COUNT(*) FROM apps").fetchone()[0] == 300
        for target, features in zip(targets, before, strict=True):
            np.testing.assert_array_equal(store.features_for(target, FEATURE_NAMES), features)


def test_labels_are_idempotent_and_the_earliest_counts(store):
    store.add_application(application("a", T0, escort_key="e"))
    target = application("x", T0 + 20 * DAY, escort_key="e")
    index = FEATURE_NAMES.index("escort_confirmed_mules_365d")
    assert store.add_label("a", _at(T0 + 25 * DAY), "police_notice")
    assert not store.add_label("a", _at(T0 + 25 * DAY), "police_notice")
    assert not store.add_label("a", _at(T0 + 30 * DAY), "investigation")  # later: ignored
    assert store.features_for(target, FEATURE_NAMES)[index] == 0
    assert store.add_label("a", _at(T0 + 10 * DAY), "account_freeze")  # earlier: replaces
    assert store.features_for(target, FEATURE_NAMES)[index] == 1


def test_a_label_may_arrive_before_its_application(store):
    assert store.add_label("a", _at(T0 + DAY), "police_notice")
    store.add_application(application("a", T0, escort_key="e"))
    target = application("x", T0 + 2 * DAY, escort_key="e")
    assert store.features_for(target, FEATURE_NAMES)[FEATURE_NAMES.index("escort_confirmed_mules_365d")] == 1


def test_threads_may_share_one_store(store):
    apps = EventFactory(n=400, seed=33).build().applications.to_pylist()
    store.add_applications(apps[:300])
    targets = apps[300:]
    alone = [store.features_for(e) for e in targets]
    with ThreadPoolExecutor(max_workers=4) as pool:
        shared = list(pool.map(store.features_for, targets))
    np.testing.assert_array_equal(np.array(shared), np.array(alone))


def test_naive_timestamps_are_refused(store):
    event = application("a", T0)
    with pytest.raises(ValueError, match="timezone"):
        store.add_application({**event, "applied_at": datetime(2024, 5, 1, 3)})


def test_state_survives_reopening(tmp_path):
    path = tmp_path / "state.db"
    target = application("x", T0 + DAY, escort_key="e")
    with OnlineFeatureStore(path) as store:
        store.add_application(application("a", T0, escort_key="e"))
        store.add_label("a", _at(T0 + DAY / 2), "police_notice")
        before = store.features_for(target, FEATURE_NAMES)
    with OnlineFeatureStore(path) as store:
        np.testing.assert_array_equal(store.features_for(target, FEATURE_NAMES), before)
        assert not store.add_application(application("a", T0, escort_key="e"))


@pytest.fixture(scope="module")
def prune_stream():
    events = EventFactory(n=4_000, seed=31, days=800).build()
    return events.applications.to_pylist(), events.labels.to_pylist()


class TestPrune:
    def test_queries_after_the_prune_point_are_unchanged(self, prune_stream, tmp_path):
        apps, labels = prune_stream
        prune_at = apps[len(apps) // 2]["applied_at"]
        targets = [e for e in apps if e["applied_at"] >= prune_at]
        with OnlineFeatureStore(tmp_path / "state.db") as store:
            for event in apps:
                store.add_application(event)
            for row in labels:
                store.add_label(row["application_id"], row["confirmed_at"], row["source"])
            before = np.array([store.features_for(e, FEATURE_NAMES) for e in targets])
            removed = store.prune(prune_at)
            after = np.array([store.features_for(e, FEATURE_NAMES) for e in targets])
            assert removed > 0
            # Too old for any window now: refused, and refused again after reopening.
            assert not store.add_application({**apps[0], "application_id": "replayed"})
        np.testing.assert_array_equal(after, before)
        with OnlineFeatureStore(tmp_path / "state.db") as store:
            assert not store.add_application({**apps[0], "application_id": "replayed"})

    def test_the_file_stays_bounded_on_a_long_stream(self, prune_stream, tmp_path):
        apps, _ = prune_stream
        path = tmp_path / "state.db"
        quarters = np.array_split(np.arange(len(apps)), 8)  # 100 days each
        pages = []
        with OnlineFeatureStore(path) as store:
            for quarter in quarters:
                for i in quarter:
                    store.add_application(apps[i])
                store.prune(apps[quarter[-1]]["applied_at"])
                with sqlite3.connect(path) as reader:
                    held = reader.execute("SELECT COUNT(*) FROM apps").fetchone()[0]
                    pages.append(reader.execute("PRAGMA page_count").fetchone()[0])
                assert held <= 4 * len(quarter) + 10  # about a year: four quarters at most
        # Once a year has been held, freed pages are reused: no growth beyond it.
        assert max(pages[5:]) <= pages[4] * 1.1


def test_a_background_checkpointer_copies_the_log_while_writes_go_on(tmp_path):
    apps = EventFactory(n=2_000, seed=35).build().applications.to_pylist()
    path = tmp_path / "state.db"
    with OnlineFeatureStore(path, durable=True, checkpoint_every_s=0.01) as store:
        for event in apps:
            store.add_application(event)
        # A pass that began after the last write copies every frame of the log.
        settled = store._checkpointer.settled(timeout_s=30)
        assert settled is not None
        busy, frames, done = settled
        assert (busy, done) == (0, frames) and frames > 0  # nothing left that the thread had not copied
        # The writer itself no longer checkpoints at SQLite's default mark.
        assert store._con.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 10_000
    with OnlineFeatureStore(path) as reopened:
        assert reopened._con.execute("SELECT COUNT(*) FROM apps").fetchone()[0] == len(apps)
        assert reopened._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_every_query_names_its_parameters_and_one_mapping_per_instant_holds_them_all():
    """No statement depends on the order in which its SQL was assembled."""
    plan = plan_online()
    asked = {*parameters(0), *COMPARED}
    statements = [q.sql for q in plan.queries] + [plan.linked_sql]
    statements += [sql for r in plan.totals for sql in (r.last_before_sql, r.preceding_sql, r.shift_sql)]
    statements.append(plan.insert_sql())
    for sql in statements:
        assert "?" not in sql, sql
        assert re.findall(r":(\w+)", sql), sql
    for sql in [q.sql for q in plan.queries] + [plan.linked_sql]:
        assert set(re.findall(r":(\w+)", sql)) <= asked, sql


def test_a_link_key_that_no_count_reads_still_gets_the_index_the_linked_group_seeks():
    plan = plan_online(tuple(a for a in AGGREGATES if a.entity is not Entity.ESCORT))
    (escort,) = [s for s in plan.indexes() if index_name(s) == "by_escort"]
    assert "ON apps (escort_key, ts, application_id)" in escort
    con = sqlite3.connect(":memory:")
    for statement in plan.schema():
        con.execute(statement)
    group = con.execute(plan.linked_sql, {**parameters(0), **dict.fromkeys(COMPARED, "k")}).fetchall()
    assert group == []  # an empty state: nobody linked, no row (every statistic 0)
