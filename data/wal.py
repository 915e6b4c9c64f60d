"""Checkpointing SQLite's write-ahead log from a background thread.

With SQLite's default, the commit that fills the log past ``wal_autocheckpoint``
pages copies the log into the database file itself, with an fsync under
``synchronous = FULL``: one write in a thousand took 50-350 ms on this machine, and
in a service every request queued behind it waited too. A second connection on a
daemon thread runs ``PASSIVE`` checkpoints instead, which never block the writer
(WAL lets a checkpoint and a writer run at once); the writer's own automatic
checkpoint stays on at a high mark, only as a bound should the thread stop.

Copying the log is not enough under a steady stream of writes: SQLite starts the
log over only when a write begins with every frame already copied, and with a
write every 10 ms and a pass every 500 ms that never happens. The log then grew
to the writer's mark (50,000 frames, 200 MB) and the writer's own checkpoint
stalled one write in about 1,100 for 210 ms (measured on the 10M-application
state at 100 writes/s). So once a pass has copied a log longer than
``restart_frames``, the thread follows it with a ``RESTART`` checkpoint: it waits
for the write under way, copies the few frames since, and starts the log over,
holding the writer back for milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FALLBACK_AUTOCHECKPOINT_PAGES = 50_000  # about 200 MB of log before a writer checkpoints itself
RESTART_FRAMES = 8_192  # about 32 MB of log (4 KiB pages) before the thread starts it over
RESTART_WAIT_MS = 200  # how long a restart may wait for the writer before the next pass tries again


class Checkpointer:
    """Checkpoints one WAL database every ``interval_s`` seconds until stopped.

    Parameters
    ----------
    path : Path
        The database file (already in WAL mode).
    interval_s : float
        Pause between two checkpoints.
    restart_frames : int
        Start the log over once a pass has copied a log at least this long.
    writer_lock : threading.Lock, optional
        The writer's lock, held for the restart so that no write is under way meanwhile.
    before_restart : callable, optional
        Called under ``writer_lock`` before the restart: a writer that holds its transaction
        open between writes (:class:`duanka.features.online.OnlineFeatureStore` in a service)
        commits it here, or the restart would wait for it and hold the writer back all that time.
    """

    def __init__(
        self,
        path: Path,
        interval_s: float = 0.5,
        restart_frames: int = RESTART_FRAMES,
        writer_lock: threading.Lock | None = None,
        before_restart: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.writer_lock = writer_lock
        self.before_restart = before_restart
        self.interval_s = interval_s
        self.restart_frames = restart_frames
        self.passes = 0
        self.restarts = 0
        self.last: tuple[int, int, int] | None = None  # the latest pass's (busy, frames, copied)
        self._passed = threading.Condition()  # notified after each pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def checkpoint(self, con: sqlite3.Connection, db_fd: int) -> tuple[int, int, int]:
        """One passive checkpoint: ``(busy, frames in the log, frames checkpointed)``."""
        busy, frames, done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        os.fdatasync(db_fd)
        if busy == 0 and done == frames >= self.restart_frames:
            # Nearly everything is copied already: the restart holds the writer only for the rest.
            with self.writer_lock or contextlib.nullcontext():
                if self.before_restart is not None:
                    self.before_restart()
                restarted = con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if restarted[0] == 0:
                self.restarts += 1
        with self._passed:
            self.last = (busy, frames, done)
            self.passes += 1
            self._passed.notify_all()
        return busy, frames, done

    def settled(self, timeout_s: float) -> tuple[int, int, int] | None:
        """Wait for a pass that began after this call and copied the whole log (before a backup).

        Returns
        -------
        tuple or None
            That pass's ``(busy, frames, copied)``, or None when none came within ``timeout_s``.
        """

        def copied_all() -> bool:
            last = self.last
            return self.passes > began_after and last is not None and last[0] == 0 and last[1] == last[2]

        with self._passed:
            began_after = self.passes + 1  # a pass under way now may have started before the call
            return self.last if self._passed.wait_for(copied_all, timeout=timeout_s) else None

    def _run(self) -> None:
        con = sqlite3.connect(self.path, isolation_level=None, timeout=RESTART_WAIT_MS / 1000)
        db_fd = os.open(self.path, os.O_RDONLY)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self.checkpoint(con, db_fd)
                except (sqlite3.Error, OSError) as error:  # a busy database or a full disk: try again later
                    log.warning("checkpoint of %s failed: %s", self.path.name, error)
        finally:
            os.close(db_fd)
            con.close()

    def start(self) -> Checkpointer:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"checkpoint-{self.path.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and join the thread; the log's remaining frames are checkpointed at close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class SyncFailed(OSError):
    """An fsync of the write-ahead log failed: what was committed since the last one may not be on
    disk, and no later fsync can say it is (the kernel may have dropped the pages). Every commit
    waiting, and every later one, is refused."""


class GroupSync:
    """Commits made durable off the committing thread: one fsync of the write-ahead log for all
    commits made before it.

    A connection under ``synchronous = NORMAL`` commits without an fsync: the commit is in the
    log file (in the page cache) and survives a killed process, not a power cut. Each such commit
    takes a ticket (:meth:`committed`); a daemon thread fsyncs the log whenever tickets wait, and
    every ticket taken before that fsync began is durable when it returns (:meth:`is_durable`,
    :meth:`wait`). The committing thread goes on meanwhile, and the commits made during one fsync
    share the next. SQLite under ``NORMAL`` still syncs the log before a checkpoint copies it and
    the log header when it starts over, so an fsync of the log file is all a commit lacks.

    Parameters
    ----------
    path : Path
        The database file (in WAL mode; its log is ``path`` + ``-wal``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._log = self.path.with_name(self.path.name + "-wal")
        self._changed = threading.Condition()
        self._issued = 0
        self._synced = 0
        self._failed: OSError | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"fsync-{self.path.name}", daemon=True)
        self._thread.start()

    def committed(self) -> int:
        """A ticket for every commit made so far; call it after each commit."""
        with self._changed:
            self._issued += 1
            self._changed.notify_all()
            return self._issued

    def is_durable(self, ticket: int) -> bool:
        """Whether the commits up to ``ticket`` are on disk (never waits).

        Raises
        ------
        SyncFailed
            An fsync failed: they may never be.
        """
        with self._changed:
            self._raise_if_failed()
            return ticket <= self._synced

    def check(self) -> None:
        """Raise :class:`SyncFailed` if an fsync has failed: commit nothing more."""
        with self._changed:
            self._raise_if_failed()

    def wait(self, ticket: int) -> None:
        """Block until the commits up to ``ticket`` are on disk.

        Raises
        ------
        SyncFailed
            An fsync failed.
        """
        with self._changed:
            self._changed.wait_for(lambda: ticket <= self._synced or self._failed is not None)
            self._raise_if_failed()

    def stop(self) -> None:
        """Sync what is committed, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise SyncFailed(f"fsync of {self._log.name} failed: {self._failed}") from self._failed

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._issued > self._synced or self._stopping)
                if self._failed is not None or (self._stopping and self._issued == self._synced):
                    return
                target = self._issued
            failure = self._fsync()
            with self._changed:
                if failure is None:
                    self._synced = target
                else:
                    self._failed = failure
                self._changed.notify_all()

    def _fsync(self) -> OSError | None:
        try:
            # opened for each pass: the log is the file under that name now, whatever came before
            fd = os.open(self._log, os.O_RDONLY)
        except FileNotFoundError:
            # no log: a closing connection checkpointed it into the database and synced that
            return None
        except OSError as error:
            log.error("cannot open %s to sync it: %s", self._log.name, error)
            return error
        try:
            os.fsync(fd)
        except OSError as error:
            log.error("fsync of %s failed: %s", self._log.name, error)
            return error
        finally:
            os.close(fd)
        return None
