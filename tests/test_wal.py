"""The background checkpointer keeps the write-ahead log short under a steady stream of writes."""

from __future__ import annotations

import sqlite3
import threading

from duanka.data.wal import Checkpointer


def _writer(path, lock: threading.Lock, commits: int) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for i in range(commits):
            with lock:
                con.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 3000))  # its own transaction
    finally:
        con.close()


def test_the_log_is_started_over_while_writes_go_on(tmp_path):
    path = tmp_path / "busy.db"
    with sqlite3.connect(path, isolation_level=None) as con:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, payload TEXT)")
        con.execute("PRAGMA wal_autocheckpoint = 0")  # only the thread checkpoints, as in the service
    lock = threading.Lock()
    checkpointer = Checkpointer(path, interval_s=0.002, restart_frames=64, writer_lock=lock).start()
    try:
        _writer(path, lock, commits=3_000)
    finally:
        checkpointer.stop()
    # SQLite starts the log over by itself only when a write finds it fully copied: the thread did.
    assert checkpointer.restarts > 0
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 3_000
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_log_shorter_than_the_mark_is_only_copied(tmp_path):
    path = tmp_path / "quiet.db"
    with sqlite3.connect(path, isolation_level=None) as con:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, payload TEXT)")
        con.execute("PRAGMA wal_autocheckpoint = 0")
    lock = threading.Lock()
    checkpointer = Checkpointer(path, interval_s=0.002, restart_frames=10**9, writer_lock=lock).start()
    try:
        _writer(path, lock, commits=200)
        assert checkpointer.settled(timeout_s=30) is not None
    finally:
        checkpointer.stop()
    assert checkpointer.restarts == 0
