"""The background checkpointer copies the write-ahead log, and starts a long one over once copied.

The rule is tested pass by pass (:meth:`Checkpointer.checkpoint` called directly, no thread,
no timing); the thread is tested on what it guarantees whatever the timing: a long log found
copied is started over, and writes beside it all land.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from duanka.data.wal import Checkpointer

PAYLOAD = "x" * 3000  # a row fills most of a 4 KiB page: at least one log frame per commit


def _wal_database(path: Path) -> Path:
    with sqlite3.connect(path, isolation_level=None) as con:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, payload TEXT)")
        con.execute("PRAGMA wal_autocheckpoint = 0")  # only the checkpointer copies, as in the service
    return path


def _write(path: Path, rows: range, lock: threading.Lock) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for i in rows:
            with lock:
                con.execute("INSERT INTO t VALUES (?, ?)", (i, PAYLOAD))  # its own transaction
    finally:
        con.close()


class _CountingLock:
    """A writer lock that counts how often the checkpointer held the writer back."""

    def __init__(self) -> None:
        self.taken = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()
        self.taken += 1

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@contextmanager
def _checkpoint_connection(path: Path) -> Iterator[tuple[sqlite3.Connection, int]]:
    """What the checkpointer's thread opens: a connection and the database file's descriptor."""
    con = sqlite3.connect(path, isolation_level=None)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield con, fd
    finally:
        os.close(fd)
        con.close()


def test_a_pass_that_copies_a_log_past_the_mark_starts_it_over(tmp_path):
    path = _wal_database(tmp_path / "long.db")
    lock = threading.Lock()
    _write(path, range(100), lock)
    writer = _CountingLock()
    checkpointer = Checkpointer(path, restart_frames=64, writer_lock=writer)  # type: ignore[arg-type]
    with _checkpoint_connection(path) as (con, fd):
        busy, frames, copied = checkpointer.checkpoint(con, fd)
    assert busy == 0 and frames == copied >= 100
    assert (checkpointer.restarts, writer.taken) == (1, 1)
    assert (checkpointer.passes, checkpointer.last) == (1, (busy, frames, copied))


def test_a_log_shorter_than_the_mark_is_only_copied(tmp_path):
    path = _wal_database(tmp_path / "short.db")
    lock = threading.Lock()
    _write(path, range(100), lock)
    writer = _CountingLock()
    checkpointer = Checkpointer(path, restart_frames=10**9, writer_lock=writer)  # type: ignore[arg-type]
    with _checkpoint_connection(path) as (con, fd):
        busy, frames, copied = checkpointer.checkpoint(con, fd)
    assert busy == 0 and frames == copied >= 100
    assert (checkpointer.restarts, writer.taken) == (0, 0)  # the writer was never held back


def test_a_log_a_reader_keeps_from_being_copied_whole_is_not_started_over(tmp_path):
    path = _wal_database(tmp_path / "read.db")
    lock = threading.Lock()
    _write(path, range(100), lock)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a snapshot of the first 100 rows
    _write(path, range(100, 200), lock)
    writer = _CountingLock()
    checkpointer = Checkpointer(path, restart_frames=64, writer_lock=writer)  # type: ignore[arg-type]
    try:
        with _checkpoint_connection(path) as (con, fd):
            busy, frames, copied = checkpointer.checkpoint(con, fd)
    finally:
        reader.close()
    assert busy == 0 and 64 <= copied < frames  # the frames the reader's snapshot predates stay in the log
    assert (checkpointer.restarts, writer.taken) == (0, 0)  # no restart tried: it would wait for the reader


def test_the_thread_starts_a_long_log_over_and_writes_beside_it_all_land(tmp_path):
    path = _wal_database(tmp_path / "busy.db")
    lock = threading.Lock()
    _write(path, range(200), lock)  # a log past the mark before the thread starts: nothing copied yet
    checkpointer = Checkpointer(path, interval_s=0.002, restart_frames=64, writer_lock=lock).start()
    try:
        first = checkpointer.settled(timeout_s=60)
        restarts_before_writes = checkpointer.restarts
        _write(path, range(200, 3_000), lock)
        last = checkpointer.settled(timeout_s=60)
    finally:
        checkpointer.stop()
    assert first is not None and last is not None
    # the thread's first pass found the 200 commits' log copied whole, past the mark
    assert restarts_before_writes >= 1
    assert last[0] == 0 and last[1] == last[2]
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 3_000
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
