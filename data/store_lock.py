"""One process at a time holds an event store for the life of the service it runs.

``duanka serve`` keeps the online state and the decision record under the store (``DIR/serving``):
two services on one store would take applications into one state from two processes and each
extend the record's hash chain from the same head, forking it. So the service holds the store
while it runs, and a second one is refused with one line naming the process that holds it.

The hold is an advisory ``flock`` on ``DIR/holder.lock``, taken without waiting. The kernel
drops it when its process ends, however it ends: a holder killed with SIGKILL leaves nothing
to clean, and the next one takes the store at once. The holder writes its PID and verb into
the file for that refusal; the file's content is a note, the ``flock`` is the lock.

Writers that run beside the service take other locks, held only while they write: ``duanka
ingest`` and ``POST /v1/watchlist`` append parts under ``DIR/.lock``
(:meth:`duanka.data.store.EventStore.locked`), ``duanka keys`` rewrites the key file under its
own lock (:mod:`duanka.serving.keys`). They must keep working while the service runs: a key is
revoked, and a listing ingested, without a restart.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from duanka.data.private import FILE_MODE, private_folder

HOLDER_FILE = "holder.lock"


class StoreHeld(RuntimeError):
    """Another process holds the store; the message names it by PID and verb."""


class StoreHold:
    """The store at ``root`` held by this process until :meth:`release` or the ``with`` block ends.

    Parameters
    ----------
    root : Path
        The event store's folder (created owner-only when missing).
    verb : str
        What this process does with the store (``serve``), for the refusal of the next.

    Raises
    ------
    StoreHeld
        Another process (or another hold in this one) holds the store.
    """

    def __init__(self, root: Path, verb: str) -> None:
        self.path = private_folder(Path(root)) / HOLDER_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreHeld(_refusal(self.path, verb)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "verb": verb}).encode("utf-8"), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Let the store go (the note first, so that it never names a process that let go)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None

    def __enter__(self) -> StoreHold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _refusal(path: Path, verb: str) -> str:
    """One line: who holds the store, as its note says, and what to do."""
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
        holder = f"process {int(note['pid'])} (duanka {note['verb']})"
    except (OSError, ValueError, KeyError, TypeError):
        # the holder has taken the lock and not yet written its note
        holder = "another process"
    return (
        f"cannot {verb}: the store {path.parent} is held by {holder}; one service runs on a store "
        "at a time: stop that one first, or give this one another --data"
    )
