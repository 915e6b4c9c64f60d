"""Reviewer sign-in: one-time links exchanged for a session, the way notebook servers do it.

``duanka review link`` writes a link token (valid :data:`LINK_MINUTES`); the service exchanges it
once for a session (valid :data:`SESSION_HOURS`), kept in an HttpOnly, SameSite=Strict cookie,
with its own CSRF token for every form. Only SHA-256 hashes of link and session tokens are
stored; a session is honoured only while its key is an active reviewer key, so revoking the key
ends every session it holds at the next request.

Two roles sign in this way (:data:`ROLES`): reviewers of cases (``/review``) and reviewers of
models (``/models``). A key has at most one of them; a link is exchanged only at its own role's
sign-in page, and each page checks the role of the session it is shown to
(:attr:`Session.role`), so a case reviewer opens no model page and the other way round.

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


CASES, MODELS = "cases", "models"
# What each role may do, as the key says it; the sign-in page of each is its area's (HOMES).
ROLES: dict[str, Callable[[ApiKey], bool]] = {
    CASES: lambda key: key.reviewer,
    MODELS: lambda key: key.model_reviewer,
}
HOMES = {CASES: "/review", MODELS: "/models"}


class LinkRefused(ValueError):
    """A sign-in link that is unknown, used, expired, whose key is no longer a reviewer's, or that
    signs in another role than the page it was opened at."""


def role_of(key: ApiKey) -> str | None:
    """The role a key signs in as, or None for a key that signs in nowhere."""
    return next((role for role, has in ROLES.items() if has(key)), None)


@dataclass(frozen=True)
class Session:
    """A signed-in reviewer: their key, the form token, and when the session ends."""

    key: ApiKey
    csrf: str
    expires_at: datetime

    @property
    def role(self) -> str | None:
        """:data:`CASES` or :data:`MODELS`: what the key reviews."""
        return role_of(self.key)

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
        return key if key is not None and key.signs_in else None

    def issue_link(self, key_id: str) -> str:
        """A new one-time sign-in token for ``key_id``, a reviewer of cases or of models.

        Raises
        ------
        LinkRefused
            The key is unknown, revoked, or not a reviewer's.
        """
        if self._reviewer(key_id) is None:
            raise LinkRefused(
                f"key {key_id} is not an active reviewer key "
                "(duanka keys create --reviewer or --model-reviewer; duanka keys list)"
            )
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._connect() as con:
            con.execute(
                "INSERT INTO links (token_sha256, key_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (_sha256(token), key_id, _iso(now), _iso(now + timedelta(minutes=LINK_MINUTES))),
            )
        return token

    def exchange(self, link_token: str, role: str = CASES) -> tuple[str, Session]:
        """Use a link once, at the sign-in page of ``role``: the new session's cookie token and the session.

        Raises
        ------
        LinkRefused
            Unknown, already used, expired, its key is no longer an active reviewer key, or the key
            reviews something else than ``role`` (then the link stays unused, for its own page).
        """
        now = _iso(self.clock())
        con = self._connect()
        try:
            with con:  # committed only when no refusal below is raised
                # checked and marked in one statement: two tabs racing with one link get one session
                row = con.execute(
                    "UPDATE links SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL "
                    "AND expires_at > ? RETURNING key_id",
                    (now, _sha256(link_token), now),
                ).fetchone()
                if row is None:
                    raise LinkRefused(
                        "this sign-in link is unknown, used or expired: "
                        "ask for a new one (duanka review link)"
                    )
                key = self._reviewer(row[0])
                if key is not None and role_of(key) != role:
                    raise LinkRefused(
                        f"this link signs in a reviewer of {role_of(key)}, not of {role}: open it at "
                        f"{HOMES[role_of(key) or role]}/sign-in"
                    )
        finally:
            con.close()
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
        """The live session of a cookie: not ended, not expired, its key still an active reviewer's
        (of cases or of models: the page checks :attr:`Session.role`)."""
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
