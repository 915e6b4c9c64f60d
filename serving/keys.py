"""API keys: random secrets shown once, stored as SHA-256 hashes, optionally scoped to branches.

A key reads ``dk_<key id>_<secret>``. The key id is public (it names the caller
in the audit log and in ``duanka keys list``); the secret is 32 random bytes,
so a plain SHA-256 of the whole key is enough to store: there is nothing to
guess that a slow hash would protect. A change is read, made and written under
an exclusive lock on a file beside it (two operators cannot undo each other's
revocation), and written atomically with fsync, readable by its owner only;
the service re-reads it when it changes, so a revoked key stops working
without a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from duanka.data.private import FILE_MODE, private_folder

_PREFIX = "dk_"
_KEY_ID_BYTES = 5
_SECRET_BYTES = 32


class UnknownKey(KeyError):
    """No key with that id."""


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never the secret itself).

    Attributes
    ----------
    key_id : str
        Public identifier, 10 hex characters.
    sha256 : str
        SHA-256 of the whole key as given to the caller.
    branches : tuple of str or None
        Branches the key may score for; None for every branch.
    admin : bool
        May reload the model (``POST /v1/admin/reload``) and feed the watchlist (``POST /v1/watchlist``).
    labels : bool
        May confirm mule accounts (``POST /v1/labels``), of its branches when it is scoped.
    reviewer : bool
        A case reviewer's key: signs in to the case queue (``/review``, through ``duanka review
        link``) and disposes of its branches' cases; it neither scores nor calls any other route.
    model_reviewer : bool
        A model reviewer's key: signs in to ``/models`` (through ``duanka review link``) and
        approves or rejects registered model versions there or with ``duanka models approve``;
        it opens no case and calls no ``/v1/`` route.
    created_at, revoked_at : str
        ISO 8601 UTC; ``revoked_at`` is None while the key is valid.
    """

    key_id: str
    sha256: str
    branches: tuple[str, ...] | None
    admin: bool
    created_at: str
    revoked_at: str | None = None
    labels: bool = False
    reviewer: bool = False
    model_reviewer: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def signs_in(self) -> bool:
        """Whether the key is a reviewer's (of cases or of models), who signs in by link."""
        return self.reviewer or self.model_reviewer

    def may_score_for(self, branch_id: str) -> bool:
        return self.branches is None or branch_id in self.branches


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _key_id_of(token: str) -> str | None:
    if not token.startswith(_PREFIX):
        return None
    key_id, sep, secret = token[len(_PREFIX) :].partition("_")
    return key_id if sep and secret else None


class KeyFile:
    """The keys stored in one JSON file.

    Parameters
    ----------
    path : Path
        The file; it need not exist until the first key is created.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    def records(self) -> list[ApiKey]:
        """Every key ever created, revoked ones included, oldest first."""
        self._refresh()
        return list(self._keys.values())

    def create(
        self,
        branches: tuple[str, ...] | None = None,
        *,
        admin: bool = False,
        labels: bool = False,
        reviewer: bool = False,
        model_reviewer: bool = False,
    ) -> tuple[ApiKey, str]:
        """Make a new key.

        Raises
        ------
        ValueError
            ``reviewer`` or ``model_reviewer`` with any other power: a reviewer's powers stay apart
            (a key that leaks from a browser session must not also reload models or feed the API,
            and whoever disposes of cases is not who approves the model that referred them); or
            ``model_reviewer`` with ``branches``: a model serves every branch.

        Returns
        -------
        (ApiKey, str)
            The stored record and the key itself, which is not kept anywhere:
            show it to the operator once.
        """
        if reviewer and (admin or labels):
            raise ValueError("a reviewer key has no other power: make --admin or --labels keys apart")
        if model_reviewer and (admin or labels or reviewer):
            raise ValueError(
                "a model reviewer key has no other power: make --admin, --labels or --reviewer keys apart"
            )
        if model_reviewer and branches:
            raise ValueError("a model reviewer key is not scoped to branches: a model serves every branch")
        with self._changing():
            key_id = secrets.token_hex(_KEY_ID_BYTES)
            while key_id in self._keys:
                key_id = secrets.token_hex(_KEY_ID_BYTES)
            token = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
            scoped = tuple(sorted(set(branches))) if branches else None
            record = ApiKey(
                key_id,
                _digest(token),
                scoped,
                admin,
                _now(),
                labels=labels,
                reviewer=reviewer,
                model_reviewer=model_reviewer,
            )
            self._write({**self._keys, key_id: record})
        return record, token

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (it stays listed, so audit rows keep a meaning).

        Raises
        ------
        UnknownKey
            No key has that id.
        """
        with self._changing():
            if key_id not in self._keys:
                raise UnknownKey(key_id)
            record = self._keys[key_id]
            if record.active:
                record = replace(record, revoked_at=_now())
                self._write({**self._keys, key_id: record})
        return record

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the file's lock and read what is stored now (another process may just have written)."""
        private_folder(self.path.parent)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._seen = None
            self._refresh()
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def active_key(self, key_id: str) -> ApiKey | None:
        """The key with that id while it is not revoked, else None."""
        self._refresh()
        record = self._keys.get(key_id)
        return record if record is not None and record.active else None

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key that ``token`` is, or None."""
        key_id = _key_id_of(token)
        if key_id is None:
            return None
        self._refresh()
        record = self._keys.get(key_id)
        if record is None or not record.active:
            return None
        return record if hmac.compare_digest(record.sha256, _digest(token)) else None

    def _refresh(self) -> None:
        """Re-read the file when it changed; a stat per call is microseconds."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._keys = None, {}
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        stored = json.loads(self.path.read_text(encoding="utf-8"))
        self._keys = {
            k["key_id"]: ApiKey(**{**k, "branches": tuple(k["branches"]) if k["branches"] else None})
            for k in stored["keys"]
        }
        self._seen = seen

    def _write(self, keys: dict[str, ApiKey]) -> None:
        """Replace the file (under :meth:`_changing`); a crash leaves the old or the new one whole."""
        tmp = self.path.with_suffix(".tmp")
        payload = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._seen = None
        self._refresh()
