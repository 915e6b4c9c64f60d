"""The service's online state groups its writes into commits and syncs them off the scoring thread.

What grouping may change is only when a write lands on disk, never what the state answers:
features are the same as with a commit per write; a write that fails leaves the others of its
group; another connection sees a group once it is committed; the log is still started over
while writes go on; a sync asked for (:meth:`OnlineFeatureStore.sync_soon`) reports itself done
only after its fsync, and a failed fsync is reported, never taken for done.
"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from duanka.data.wal import SyncFailed
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import FEATURE_NAMES
from tests.conftest import service_client
from tests.factories import EventFactory


def _apps(n: int, seed: int) -> list[dict]:
    return EventFactory(n=n, seed=seed).build().applications.to_pylist()


def _held_elsewhere(path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT COUNT(*) FROM apps").fetchone()[0]


def test_grouped_commits_answer_exactly_as_a_commit_per_write(tmp_path):
    apps = _apps(500, seed=41)
    with (
        OnlineFeatureStore(tmp_path / "one.db") as one,
        OnlineFeatureStore(tmp_path / "grouped.db", writes_per_commit=25) as grouped,
    ):
        for event in apps:
            a, b = one.features_for(event, FEATURE_NAMES), grouped.features_for(event, FEATURE_NAMES)
            np.testing.assert_array_equal(a, b)
            assert one.add_application(event) == grouped.add_application(event)


def test_a_group_is_seen_by_other_connections_once_committed(tmp_path):
    path = tmp_path / "state.db"
    apps = _apps(60, seed=42)
    with OnlineFeatureStore(path, writes_per_commit=25) as store:
        for event in apps[:24]:
            store.add_application(event)
        assert _held_elsewhere(path) == 0  # the group is not committed yet
        store.add_application(apps[24])
        assert _held_elsewhere(path) == 25
        for event in apps[25:30]:
            store.add_application(event)
        store.sync()
        assert _held_elsewhere(path) == 30
        store.add_application(apps[30])
    assert _held_elsewhere(path) == 31  # closing commits what is held


def test_a_write_that_fails_half_way_is_undone_and_leaves_the_rest_of_its_group(tmp_path):
    apps = sorted(_apps(200, seed=43), key=lambda e: e["applied_at"])
    # a late arrival: the running totals of every later application of its keys move for it
    failing, later = {**apps[20], "application_id": "LATE"}, apps[100:]
    with (
        OnlineFeatureStore(tmp_path / "grouped.db", writes_per_commit=25) as grouped,
        OnlineFeatureStore(tmp_path / "reference.db") as reference,
    ):
        for event in apps[:100]:
            grouped.add_application(event)
            reference.add_application(event)
        insert, grouped._insert = grouped._insert, "INSERT INTO no_such_table VALUES (1)"
        with pytest.raises(sqlite3.OperationalError):
            # fails at its last statement, once the running totals of later rows were shifted
            grouped.add_application(failing)
        grouped._insert = insert
        for event in later:
            grouped.add_application(event)
            reference.add_application(event)
        grouped.sync()
        for event in later:
            np.testing.assert_array_equal(
                grouped.features_for(event, FEATURE_NAMES), reference.features_for(event, FEATURE_NAMES)
            )
        assert not grouped.held_applications([failing["application_id"]])
        rows = "SELECT * FROM apps ORDER BY application_id"
        assert grouped._con.execute(rows).fetchall() == reference._con.execute(rows).fetchall()


def test_a_durable_store_commits_every_write(tmp_path):
    with pytest.raises(ValueError, match="writes_per_commit"):
        OnlineFeatureStore(tmp_path / "state.db", durable=True, writes_per_commit=25)
    with pytest.raises(ValueError, match="at least 1"):
        OnlineFeatureStore(tmp_path / "state.db", writes_per_commit=0)


def test_the_log_starts_over_while_grouped_writes_go_on(tmp_path):
    path = tmp_path / "state.db"
    apps = _apps(1_500, seed=44)
    with OnlineFeatureStore(path, writes_per_commit=25, checkpoint_every_s=0.005) as store:
        store._checkpointer.restart_frames = 64
        for event in apps:
            store.add_application(event)
        store.sync()
        assert store._checkpointer.restarts > 0
    assert _held_elsewhere(path) == len(apps)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_sync_asked_for_is_done_only_after_its_fsync(tmp_path):
    path = tmp_path / "state.db"
    apps = _apps(30, seed=45)
    with OnlineFeatureStore(path, writes_per_commit=25) as store:
        for event in apps[:10]:
            store.add_application(event)
        store.sync_soon()  # starts the syncer
        syncer = store._syncer
        assert syncer is not None
        go, began = threading.Event(), threading.Event()

        def held_fsync() -> None:
            began.set()
            go.wait(timeout=10)

        syncer._fsync = held_fsync  # type: ignore[method-assign]
        for event in apps[10:20]:
            store.add_application(event)
        ticket = store.sync_soon()
        assert _held_elsewhere(path) == 20  # committed at once, on disk only after the fsync
        assert began.wait(timeout=10)
        assert not store.synced(ticket)
        go.set()
        syncer.wait(ticket)
        assert store.synced(ticket)


def test_a_failed_fsync_is_reported_and_the_state_is_not_ready(tmp_path):
    with OnlineFeatureStore(tmp_path / "state.db", writes_per_commit=25) as store:
        store.add_application(_apps(1, seed=46)[0])
        store.sync_soon()
        store._syncer.wait(1)
        store._syncer._fsync = lambda: OSError(5, "Input/output error")  # type: ignore[method-assign]
        ticket = store.sync_soon()
        with pytest.raises(SyncFailed, match="Input/output error"):
            store._syncer.wait(ticket)
        with pytest.raises(SyncFailed):
            store.synced(ticket)
        with pytest.raises(SyncFailed):
            store.check_synced()
        assert not store.writable()


def test_a_service_whose_state_cannot_be_synced_decides_nothing_and_is_not_ready(served_bank, tmp_path):
    with service_client(served_bank, tmp_path / "serving") as (client, headers, paths):
        assert client.post("/v1/score", json=served_bank.holdout[0], headers=headers).status_code == 200
        scoring = client.app.state.service.scoring

        def fail_the_next_fsync(scorer) -> int:
            scorer.online.sync_soon()
            scorer.online._syncer._fsync = lambda: OSError(5, "Input/output error")
            return scorer.online.sync_soon()

        ticket = client.portal.call(scoring.run, fail_the_next_fsync)
        with pytest.raises(SyncFailed):
            client.portal.call(scoring.run, lambda scorer: scorer.online._syncer.wait(ticket))
        answer = client.post("/v1/score", json=served_bank.holdout[1], headers=headers)
        assert answer.status_code == 503
        assert "cannot make its records durable" in answer.json()["detail"]
        assert client.get("/readyz").status_code == 503
    with sqlite3.connect(paths.decisions) as con:
        decided = [r for (r,) in con.execute("SELECT application_id FROM decisions")]
    assert decided == [served_bank.holdout[0]["application_id"]]  # the refused one was not decided


def test_a_group_sqlite_rolls_back_itself_is_reported_never_taken_as_held(tmp_path):
    apps = _apps(10, seed=47)
    with OnlineFeatureStore(tmp_path / "state.db", writes_per_commit=25) as store:
        for event in apps[:3]:
            store.add_application(event)
        # what SQLite does on a full disk or an I/O error: the whole transaction is rolled back
        insert, store._insert = store._insert, "INSERT OR ROLLBACK INTO meta VALUES ('layout', 0)"
        with pytest.raises(sqlite3.Error):
            store.add_application(apps[3])
        store._insert = insert
        with pytest.raises(SyncFailed, match="3 uncommitted writes rolled back"):
            store.check_synced()
        assert not store.writable()
