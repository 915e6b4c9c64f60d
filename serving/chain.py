"""A keyed hash chain over the decision record, so that any change to it can be seen.

SQLite triggers keep honest code from updating or deleting audit rows, but whoever holds
the file can drop them, edit, and put them back; ``PRAGMA integrity_check`` still says ok.
So every row appended to ``decisions``, ``responses`` and ``events`` carries a chain value::

    chain[i] = HMAC-SHA256(key, chain[i-1] | table | i | the row's columns, as JSON)

with ``chain[-1]`` an HMAC of the table's name. A row changed, inserted, removed or moved
no longer follows from the one before it, and without the key nobody can write values that
do. ``meta``, updated in place by design, is sealed instead: each of its rows carries an HMAC
of its name and value (:func:`meta_seal`).

The key is the audit key (:func:`chain_key`), never stored beside the record and, outside a
demo, never derived from the pseudonym key: every ingest and batch operator holds that one,
and could otherwise edit a row and compute the chain again.

A chain cannot see rows cut from its end, or a whole file replaced by an older copy: both
are still chains. :class:`Head` (each table's row count and last chain value) is the
anchor kept elsewhere (signed: :mod:`duanka.serving.anchor`), and :func:`verify` checks the
record still reaches it.
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
    # the application's branch and time (ISO 8601, UTC), so that decisions can be listed by both
    # without the responses' JSON
    "branch_id",
    "applied_at",
)
# Columns added after chains existed, at a table's end: covered when they hold a value, so that
# rows written before them (where they read NULL) keep the chain values they were given. Raised
# by one with each column appended: ``client_request_id``, ``bundle_sha256``, ``branch_id``,
# ``applied_at``.
ADDED_SINCE_CHAINING = {"decisions": 4}
# table -> (order, the columns each chain value covers, in order)
CHAINED: dict[str, tuple[str, tuple[str, ...]]] = {
    "decisions": ("seq", DECISION_COLUMNS),
    "responses": ("rowid", ("application_id", "row_digest", "response", "event")),
    "events": ("seq", ("at", "kind", "key_id", "request_id", "detail")),
}
_SEPARATOR = b"\x1f"


class MissingChainKey(RuntimeError):
    """No audit key is configured outside a demo, or the configured one cannot be read or is too short."""


def configured_chain_secret(settings: Settings) -> bytes | None:
    """The audit key's secret: ``DUANKA_AUDIT_CHAIN_KEY``, else ``DUANKA_AUDIT_CHAIN_KEY_FILE``;
    None when neither is set.

    Raises
    ------
    MissingChainKey
        A configured key file cannot be read, or a configured key is shorter than 32 bytes.
    """
    return configured_secret(
        settings.audit_chain_key,
        settings.audit_chain_key_file,
        "DUANKA_AUDIT_CHAIN_KEY",
        min_bytes=MIN_CHAIN_KEY_BYTES,
        error=MissingChainKey,
    )


def chain_key(settings: Settings, keys: Pseudonymiser) -> bytes:
    """The chain key: from the audit key (:func:`configured_chain_secret`), which only the service
    host's operator and the auditors hold.

    A demo store (pseudonymised with the public demo key) without an audit key derives one from
    the demo key: public too, so its chain proves nothing (:func:`is_demo_chain`).

    Raises
    ------
    MissingChainKey
        No audit key is configured and ``keys`` is not the demo key, or the configured one
        cannot be read or is too short.
    """
    secret = configured_chain_secret(settings)
    if secret is not None:
        return hashlib.sha256(b"duanka/audit-chain-key/" + secret).digest()
    if keys.is_demo:
        return keys.audit_chain_key()
    # every ingest and batch operator holds the pseudonym key: they could redo a chain keyed by it
    raise MissingChainKey(
        "no audit key configured, and outside a demo the decision record is never chained with a key "
        "derived from the pseudonym key, which every ingest and batch operator holds"
    )


def is_demo_chain(settings: Settings, keys: Pseudonymiser) -> bool:
    """Whether :func:`chain_key` derives the key from the public demo key (a chain that proves nothing)."""
    return keys.is_demo and configured_chain_secret(settings) is None


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


def _chain_column(con: sqlite3.Connection, table: str) -> str:
    """``chain``, or an empty one for a table laid out before chains (read-only, nothing is added)."""
    columns = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
    return "chain" if "chain" in columns else "'' AS chain"


def selected_columns(con: sqlite3.Connection, table: str) -> str:
    """The SELECT list of ``table``'s chained columns, in :data:`CHAINED` order.

    A record laid out before a column of :data:`ADDED_SINCE_CHAINING` existed gets it on open for
    writing; a reader opens it read-only and adds nothing, so the column reads NULL here, as its
    rows do once it is added, and their chain values still follow.
    """
    _, columns = CHAINED[table]
    present = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
    added = columns[len(columns) - ADDED_SINCE_CHAINING.get(table, 0) :]
    return ", ".join(c if c in present or c not in added else f"NULL AS {c}" for c in columns)


@dataclass(frozen=True)
class UnchainedRow:
    """The first row, in :data:`CHAINED` order, that holds no chain value."""

    table: str
    order: str
    rowid: int

    def text(self) -> str:
        return f"{self.table} row {self.order} {self.rowid}"


def first_unchained(con: sqlite3.Connection) -> UnchainedRow | None:
    """The first row holding no chain value, or None."""
    for table, (order, _) in CHAINED.items():
        found = con.execute(
            f"SELECT {order} FROM {table} WHERE {_chain_column(con, table)} = '' ORDER BY {order} LIMIT 1"
        ).fetchone()
        if found is not None:
            return UnchainedRow(table, order, found[0])
    return None


def is_chained(con: sqlite3.Connection) -> bool:
    """Whether any row holds a chain value, or any ``meta`` row a seal: the record was written by
    code that chains, so a row without a value was unchained after (tampering), never "from before"."""
    chained = any(
        con.execute(f"SELECT 1 FROM {table} WHERE {_chain_column(con, table)} != '' LIMIT 1").fetchone()
        for table in CHAINED
    )
    return chained or any(seal for _, _, seal in meta_rows(con))


def backfill(con: sqlite3.Connection, key: bytes) -> dict[str, int]:
    """Chain the rows of a record written before chains existed (no row holds a chain value).

    Such rows are vouched for from this moment on, not before; the caller audits how many, and
    refuses a record that :func:`is_chained` (tampering, never backfilled).
    """
    chained: dict[str, int] = {}
    for table, (order, columns) in CHAINED.items():
        rows = con.execute(f"SELECT {order}, {', '.join(columns)} FROM {table} ORDER BY {order}").fetchall()
        if not rows:
            continue
        previous = genesis(key, table)
        for position, (rowid, *values) in enumerate(rows):
            previous = link(key, previous, table, position, values)
            con.execute(f"UPDATE {table} SET chain = ? WHERE {order} = ?", (previous, rowid))
        chained[table] = len(rows)
    return chained


def meta_seal(key: bytes, name: str, value: int) -> str:
    """The seal of the ``meta`` row ``name``: an HMAC of its name and value."""
    return _mac(key, _SEPARATOR.join([b"duanka/audit-meta", name.encode(), str(int(value)).encode("ascii")]))


def meta_rows(con: sqlite3.Connection) -> list[tuple[str, int, str]]:
    """``meta``'s rows as ``(name, value, seal)``, by name; the seal is empty where there is none."""
    columns = {row[1] for row in con.execute("PRAGMA table_info(meta)")}
    if not columns:
        return []
    seal = "seal" if "seal" in columns else "''"
    return con.execute(f"SELECT name, value, {seal} FROM meta ORDER BY name").fetchall()


def meta_problem(con: sqlite3.Connection, key: bytes, *, unsealed_ok: bool = False) -> str | None:
    """What is wrong with ``meta``'s seals, or None.

    Parameters
    ----------
    unsealed_ok : bool
        Pass over rows without a seal (written before seals, or their seal removed): the service,
        which never trusts them, drops them on open. A seal that does not match is never ok.
    """
    for name, value, seal in meta_rows(con):
        if not seal:
            if unsealed_ok:
                continue
            return (
                f"meta: {name} holds no seal: it was written before meta was sealed, or its seal was "
                "removed (the service does not trust it: it drops it on open and redoes the state)"
            )
        if not hmac.compare_digest(seal, meta_seal(key, name, value)):
            return (
                f"meta: {name} does not match its seal: it was changed (or the chain key is not the one "
                "the record was written with)"
            )
    return None


def open_problem(con: sqlite3.Connection, key: bytes) -> str | None:
    """Why the record must not be opened for writing, or None: checked on every open, quickly
    (the rows' links are :func:`verify`'s to check).

    A row without a chain value in a record that :func:`is_chained` had its value removed, so
    that the service would chain the record again and so vouch for whatever was changed; a
    ``meta`` row that does not match its seal was changed. Rows without a seal are no problem
    here: the service drops them unread.
    """
    problem = meta_problem(con, key, unsealed_ok=True)
    if problem is not None:
        return problem
    unchained = first_unchained(con)
    if unchained is not None and is_chained(con):
        return f"{unchained.text()} holds no chain value though the record is chained: its value was removed"
    return None


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``problem`` is None for an intact record that reaches every anchor.

    Attributes
    ----------
    unreached : int, optional
        When the problem is an anchor not reached: its position among the anchors given
        (``anchor`` first, then ``anchors``).
    """

    head: Head
    problem: str | None
    unreached: int | None = None


def verify(
    con: sqlite3.Connection, key: bytes, anchor: Head | None = None, *, anchors: Sequence[Head] = ()
) -> Verdict:
    """Recompute every chain and ``meta``'s seals; name the first row that does not follow, else the
    first anchor not reached.

    Parameters
    ----------
    con : sqlite3.Connection
        The record, opened read-only.
    key : bytes
        The chain key (:func:`chain_key`).
    anchor : Head, optional
        A head printed earlier: each table must still hold at least its rows, the last of
        them with its chain value.
    anchors : sequence of Head
        More heads, each checked as ``anchor`` is, in the same single pass over the record.
    """
    expected = ([] if anchor is None else [anchor]) + list(anchors)
    chained = is_chained(con)
    heads: dict[str, TableHead] = {}
    problem: str | None = None
    missed: dict[int, str] = {}  # anchor position -> why the record does not reach it
    for table, (order, _) in CHAINED.items():
        wanted: dict[int, list[tuple[int, str]]] = {}
        for i, head in enumerate(expected):
            wanted.setdefault(head.tables[table].rows, []).append((i, head.tables[table].value))
        previous, position = genesis(key, table), 0
        for rowid, *values, stored in con.execute(
            f"SELECT {order}, {selected_columns(con, table)}, {_chain_column(con, table)} "
            f"FROM {table} ORDER BY {order}"
        ):
            expected_value = link(key, previous, table, position, values)
            if problem is None and not hmac.compare_digest(expected_value, stored or ""):
                problem = _row_problem(table, order, rowid, position, stored, chained=chained)
            position += 1
            for i, value in wanted.get(position, ()):
                if i not in missed and not hmac.compare_digest(stored or "", value):
                    missed[i] = (
                        f"{table}: row {position} has another chain value than the anchor's: the record "
                        "was rewritten or an older copy restored"
                    )
            previous = stored or expected_value
        heads[table] = TableHead(position, previous)
        for i, head in enumerate(expected):
            rows = head.tables[table].rows
            if i not in missed and position < rows:
                missed[i] = (
                    f"{table}: holds {position} rows, the anchor {rows}: rows were cut from its end "
                    "or an older copy of the record was restored"
                )
    if problem is None:
        problem = meta_problem(con, key)
    if problem is None and missed:
        first = min(missed)
        return Verdict(Head(heads), missed[first], first)
    return Verdict(Head(heads), problem)


def _row_problem(
    table: str, order: str, rowid: int, position: int, stored: str | None, *, chained: bool
) -> str:
    where = f"{table}: row {order} {rowid} (the {_ordinal(position + 1)} row)"
    if stored:
        return (
            f"{where} does not follow from the row before it: that row or this one was changed, inserted, "
            "removed or moved (or the chain key is not the one the record was written with)"
        )
    if chained:
        return (
            f"{where} holds no chain value though the record is chained: its value was removed, which "
            "is tampering (the service refuses to open the record)"
        )
    return f"{where} holds no chain value: the record is from before chains (the service chains it on open)"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"
