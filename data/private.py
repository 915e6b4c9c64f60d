"""Folders and files that hold pseudonymised events, decisions, state, keys and models: owner only.

Pseudonyms are still personal data under the contract (docs/contract.md), and the key file
and decision record are what an attacker on the same machine would want. What duanka
creates is 0700 (folders) and 0600 (files) whatever the process umask; what already
exists keeps the mode its operator gave it.

Two ways, for two kinds of writer: the files duanka's own code writes under the event store are
created owner-only one by one (:func:`private_folder`, :func:`private_file`,
:func:`new_private_file`), which holds in any process, the service's threads included; what
libraries write (MLflow's database and artifacts, reports, exports) is owner-only because the
``duanka`` command makes its process's umask owner-only before any verb runs
(:func:`owner_only_umask`).
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """Create ``path`` (and missing parents) as owner-only folders; an existing one is left alone."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is masked by the umask
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty and owner-only unless it exists, so that SQLite opens it as it is.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.
    """
    path = Path(path)
    private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    return path


def new_private_file(path: Path) -> Path:
    """Create ``path`` empty and owner-only, replacing whatever is there (a temporary file that a
    crash left, perhaps with another mode); the caller then writes it whole."""
    path = Path(path)
    private_folder(path.parent)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.close(fd)
    return path


def owner_only_umask() -> int:
    """Make everything this process creates from now on owner-only; return the umask it had.

    The umask belongs to the whole process: call this where a process starts (the ``duanka``
    command does), not around a write in a threaded one, where another thread's restore could
    interleave.
    """
    old = os.umask(0o077)
    os.umask(old | 0o077)
    return old
