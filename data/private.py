"""Folders and files that hold pseudonymised events, decisions, state and keys: owner only.

Pseudonyms are still personal data under the contract (docs/contract.md), and the key file
and decision record are what an attacker on the same machine would want. What duanka
creates is 0700 (folders) and 0600 (files) whatever the process umask; what already
exists keeps the mode its operator gave it.
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
