"""A keyed hash chain over the decision record, so that any change to it can be seen.

SQLite triggers keep honest code from updating or deleting audit rows, but whoever holds
the file can drop them, edit, and put them back; ``PRAGMA integrity_check`` still says ok.
So every row appended to ``decisions``, ``responses`` and ``events`` carries a chain value::

    chain[i] = HMAC-SHA256(key, chain[i-1] | table | i | the row's columns, as JSON)

with ``chain[-1]`` an HMAC of the table's name. A row changed, inserted, removed or moved
no longer follows from the one before it, and without the key nobody can write values that
do. The key comes from configuration (:func:`chain_key`) and is never stored beside the
record. ``meta`` is updated in place by design and is not chained.

A chain cannot see rows cut from its end, or a whole file replaced by an older copy: both
are still chains. :class:`Head` (each table's row count and last chain value) is the
anchor an operator keeps elsewhere (``duanka audit anchor``; the service logs it too), and
:func:`verify` checks the record still reaches it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from duanka.data.config import Settings, configured_secret

if TYPE_CHECKING:
    from duanka.data.pseudonym import Pseudonymiser

MIN_CHAIN_KEY_BYTES = 32

# One row of the decisions table; the audit log writes these and the chain covers them.
DECISION_COLUMNS = (
    "request_id",
    "application_id",
    "key_id",
    "decided_at",
    "model_name",
    "model_version",
    "booster_sha256",
    "score",
    "band",
    "reason_codes",
    "latency_ms",
    "replayed",
    "rule",
    "client_request_id",
    "bundle_sha256",
)
# Columns added after chains existed, at a table's end: covered when they hold a value, so that
# rows written before them (where they read NULL) keep the chain values they were given.
ADDED_SINCE_CHAINING = {"decisions": 2}
# table -> (order, the columns each chain value covers, in order)
CHAINED: dict[str, tuple[str, tuple[str, ...]]] = {
    "decisions": ("seq", DECISION_COLUMNS),
    "responses": ("rowid", ("application_id", "row_digest", "response", "event")),
    "events": ("seq", ("at", "kind", "key_id", "request_id", "detail")),
}
_SEPARATOR = b"\x1f"


class MissingChainKey(RuntimeError):
    """The configured chain key cannot be read or is too short."""


def chain_key(settings: Settings, keys: Pseudonymiser) -> bytes:
    """The chain key: ``DUANKA_AUDIT_CHAIN_KEY``, else ``DUANKA_AUDIT_CHAIN_KEY_FILE``, else one
    derived from the pseudonym secret (never the secret itself, never stored with the record).

    Raises
    ------
    MissingChainKey
        A configured key file cannot be read, or a configured key is shorter than 32 bytes.
    """
    secret = configured_secret(
        settings.audit_chain_key,
        settings.audit_chain_key_file,
        "DUANKA_AUDIT_CHAIN_KEY",
        min_bytes=MIN_CHAIN_KEY_BYTES,
        error=MissingChainKey,
    )
    if secret is None:
        return keys.audit_chain_key()
    return hashlib.sha256(b"duanka/audit-chain-key/" + secret).digest()


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def genesis(key: bytes, table: str) -> str:
    """The chain value before a table's first row."""
    return _mac(key, b"duanka/audit-chain/" + table.encode("ascii"))


def link(key: bytes, previous: str, table: str, position: int, values: Sequence[object]) -> str:
    """The chain value of the row at ``position`` (0-based) of ``table`` with these column values."""
    covered = list(values)
    for _ in range(ADDED_SINCE_CHAINING.get(table, 0)):
        if covered and covered[-1] is None:
            covered.pop()
    body = json.dumps(covered, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    message = _SEPARATOR.join(
        [previous.encode("ascii"), table.encode("ascii"), str(position).encode("ascii"), body.encode()]
    )
    return _mac(key, message)


@dataclass(frozen=True)
class TableHead:
    """How many rows a table's chain holds, and the chain value of the last."""

    rows: int
    value: str


@dataclass(frozen=True)
class Head:
    """Every chained table's head: what ``duanka audit anchor`` prints and ``verify`` checks."""

    tables: dict[str, TableHead]

    def text(self) -> str:
        """``decisions=ROWS:VALUE,events=ROWS:VALUE,responses=ROWS:VALUE``."""
        return ",".join(f"{t}={h.rows}:{h.value}" for t, h in sorted(self.tables.items()))

    @classmethod
    def parse(cls, text: str) -> Head:
        """Read :meth:`text` back.

        Raises
        ------
        ValueError
            Not an anchor this code printed.
        """
        tables: dict[str, TableHead] = {}
        for part in text.strip().split(","):
            table, _, rest = part.partition("=")
            rows, _, value = rest.partition(":")
            if table not in CHAINED or not rows.isdigit() or len(value) != 64:
                raise ValueError(f"not an audit anchor: {part!r} (expected TABLE=ROWS:64 hex characters)")
            tables[table] = TableHead(int(rows), value)
        if set(tables) != set(CHAINED):
            raise ValueError(f"an audit anchor names every chained table: {', '.join(sorted(CHAINED))}")
        return cls(tables)


class ChainWriter:
    """Chain values of rows about to be appended, and the heads once they are committed.

    One writer per open record, used under the record's lock: :meth:`next_values` gives the
    values of new rows, :meth:`commit` takes them as the new heads after the transaction
    committed (a rolled-back transaction leaves the heads as they were).
    """

    def __init__(self, con: sqlite3.Connection, key: bytes) -> None:
        self._key = key
        self._heads = {table: _last(con, key, table) for table in CHAINED}
        self._pending: dict[str, TableHead] = {}

    def next_values(self, table: str, rows: Iterable[Sequence[object]]) -> list[str]:
        head = self._pending.get(table, self._heads[table])
        values, previous, position = [], head.value, head.rows
        for row in rows:
            previous = link(self._key, previous, table, position, row)
            values.append(previous)
            position += 1
        self._pending[table] = TableHead(position, previous)
        return values

    def commit(self) -> None:
        self._heads.update(self._pending)
        self._pending.clear()

    def rollback(self) -> None:
        self._pending.clear()

    def head(self) -> Head:
        return Head(dict(self._heads))


def _last(con: sqlite3.Connection, key: bytes, table: str) -> TableHead:
    order, _ = CHAINED[table]
    rows = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    if rows == 0:
        return TableHead(0, genesis(key, table))
    (value,) = con.execute(f"SELECT chain FROM {table} ORDER BY {order} DESC LIMIT 1").fetchone()
    return TableHead(rows, value)


def backfill(con: sqlite3.Connection, key: bytes) -> dict[str, int]:
    """Chain the rows of a record written before chains existed (their ``chain`` is empty).

    Such rows are vouched for from this moment on, not before; the caller audits how many.
    """
    chained: dict[str, int] = {}
    for table, (order, columns) in CHAINED.items():
        rows = con.execute(
            f"SELECT {order}, {', '.join(columns)}, chain FROM {table} ORDER BY {order}"
        ).fetchall()
        if not rows or all(row[-1] for row in rows):
            continue
        previous = genesis(key, table)
        for position, (rowid, *values, _) in enumerate(rows):
            previous = link(key, previous, table, position, values)
            con.execute(f"UPDATE {table} SET chain = ? WHERE {order} = ?", (previous, rowid))
        chained[table] = len(rows)
    return chained


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``problem`` is None for an intact record."""

    head: Head
    problem: str | None


def verify(con: sqlite3.Connection, key: bytes, anchor: Head | None = None) -> Verdict:
    """Recompute every chain; name the first row that does not follow, or the anchor not reached.

    Parameters
    ----------
    con : sqlite3.Connection
        The record, opened read-only.
    key : bytes
        The chain key (:func:`chain_key`).
    anchor : Head, optional
        A head printed earlier: each table must still hold at least its rows, the last of
        them with its chain value.
    """
    heads: dict[str, TableHead] = {}
    problem: str | None = None
    for table, (order, columns) in CHAINED.items():
        previous, position = genesis(key, table), 0
        reached = anchor.tables[table] if anchor is not None else None
        for rowid, *values, stored in con.execute(
            f"SELECT {order}, {', '.join(columns)}, chain FROM {table} ORDER BY {order}"
        ):
            expected = link(key, previous, table, position, values)
            if problem is None and not hmac.compare_digest(expected, stored or ""):
                problem = (
                    f"{table}: row {order} {rowid} (the {_ordinal(position + 1)} row) does not follow "
                    "from the row before it: that row or this one was changed, inserted, removed or "
                    "moved (or the chain key is not the one the record was written with)"
                )
            at_anchor = reached is not None and position + 1 == reached.rows
            if at_anchor and problem is None and not hmac.compare_digest(stored or "", reached.value):
                problem = (
                    f"{table}: row {reached.rows} has another chain value than the anchor's: the record "
                    "was rewritten or an older copy restored"
                )
            previous, position = stored or expected, position + 1
        heads[table] = TableHead(position, previous)
        if reached is not None and problem is None and position < reached.rows:
            problem = (
                f"{table}: holds {position} rows, the anchor {reached.rows}: rows were cut from its end "
                "or an older copy of the record was restored"
            )
    return Verdict(Head(heads), problem)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"
