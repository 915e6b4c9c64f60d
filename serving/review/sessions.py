"""Reviewer sign-in: one-time links exchanged for a session, the way notebook servers do it.

``duanka review link`` writes a link token (valid :data:`LINK_MINUTES`); the service exchanges it
once for a session (valid :data:`SESSION_HOURS`), kept in an HttpOnly, SameSite=Strict cookie,
with its own CSRF token for every form. Only SHA-256 hashes of link and session tokens are
stored; a session is honoured only while its key is an active reviewer key, so revoking the key
ends every session it holds at the next request.

One SQLite file (``serving/review.db`` beside the decision record) that the CLI and the service
both write: each write is one short transaction, and a link is marked used in the same
statement that checks it is unused, so one link never opens two sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from duanka.data.private import private_file
from duanka.serving.keys import ApiKey

LINK_MINUTES = 10
SESSION_HOURS = 8
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS links (token_sha256 TEXT PRIMARY KEY, key_id TEXT NOT NULL, "
    "created_at TEXT NOT NULL, expires_at TEXT NOT NULL, used_at TEXT)",
    "CREATE TABLE IF NOT EXISTS sessions (token_sha256 TEXT PRIMARY KEY, key_id TEXT NOT NULL, "
    "csrf TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL, ended_at TEXT)",
)


class LinkRefused(ValueError):
    """A sign-in link that is unknown, used, expired, or whose key is no longer a reviewer's."""


@dataclass(frozen=True)
class Session:
    """A signed-in reviewer: their key, the form token, and when the session ends."""

    key: ApiKey
    csrf: str
    expires_at: datetime

    def csrf_matches(self, submitted: str | None) -> bool:
        """Whether a form carried this session's CSRF token (constant-time comparison)."""
        return submitted is not None and hmac.compare_digest(submitted.encode(), self.csrf.encode())


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


class ReviewSessions:
    """The link and session tables of one service.

    Parameters
    ----------
    path : Path
        ``review.db``; created (private to its owner) with its tables if new.
    active_key : callable
        ``key_id -> ApiKey | None``: the key while it is not revoked
        (:meth:`duanka.serving.keys.KeyFile.active_key`).
    clock : callable, optional
        The time now (aware); the wall clock by default.
    """

    def __init__(
        self,
        path: Path,
        active_key: Callable[[str], ApiKey | None],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.path = Path(path)
        self.active_key = active_key
        self.clock = clock or (lambda: datetime.now(UTC))
        with self._connect() as con:
            for statement in _SCHEMA:
                con.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        private_file(self.path)
        con = sqlite3.connect(self.path, timeout=10)
        con.execute("PRAGMA journal_mode = WAL")
        return con

    def _reviewer(self, key_id: str) -> ApiKey | None:
        key = self.active_key(key_id)
        return key if key is not None and key.reviewer else None

    def issue_link(self, key_id: str) -> str:
        """A new one-time sign-in token for ``key_id``.

        Raises
        ------
        LinkRefused
            The key is unknown, revoked, or not a reviewer's.
        """
        if self._reviewer(key_id) is None:
            raise LinkRefused(
                f"key {key_id} is not an active reviewer key "
                "(duanka keys create --reviewer; duanka keys list)"
            )
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._connect() as con:
            con.execute(
                "INSERT INTO links (token_sha256, key_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (_sha256(token), key_id, _iso(now), _iso(now + timedelta(minutes=LINK_MINUTES))),
            )
        return token

    def exchange(self, link_token: str) -> tuple[str, Session]:
        """Use a link once: the new session's cookie token and the session.

        Raises
        ------
        LinkRefused
            Unknown, already used, expired, or its key is no longer an active reviewer key.
        """
        now = _iso(self.clock())
        with self._connect() as con:
            # checked and marked in one statement: two tabs racing with one link get one session
            row = con.execute(
                "UPDATE links SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL AND expires_at > ? "
                "RETURNING key_id",
                (now, _sha256(link_token), now),
            ).fetchone()
        if row is None:
            raise LinkRefused(
                "this sign-in link is unknown, used or expired: ask for a new one (duanka review link)"
            )
        key = self._reviewer(row[0])
        if key is None:
            raise LinkRefused("the key of this sign-in link was revoked")
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = self.clock() + timedelta(hours=SESSION_HOURS)
        with self._connect() as con:
            con.execute(
                "INSERT INTO sessions (token_sha256, key_id, csrf, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (_sha256(token), key.key_id, csrf, now, _iso(expires)),
            )
        return token, Session(key, csrf, expires)

    def session(self, cookie_token: str | None) -> Session | None:
        """The live session of a cookie: not ended, not expired, its key still an active reviewer's."""
        if not cookie_token:
            return None
        with self._connect() as con:
            row = con.execute(
                "SELECT key_id, csrf, expires_at FROM sessions WHERE token_sha256 = ? AND ended_at IS NULL",
                (_sha256(cookie_token),),
            ).fetchone()
        if row is None:
            return None
        expires = datetime.fromisoformat(row[2])
        key = self._reviewer(row[0])
        if key is None or expires <= self.clock():
            return None
        return Session(key, row[1], expires)

    def end(self, cookie_token: str) -> None:
        """Sign out: the session is refused from now on."""
        with self._connect() as con:
            con.execute(
                "UPDATE sessions SET ended_at = ? WHERE token_sha256 = ? AND ended_at IS NULL",
                (_iso(self.clock()), _sha256(cookie_token)),
            )
