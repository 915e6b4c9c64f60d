"""The online store: live feature state in one SQLite file, one event at a time.

It keeps the applications of the last year (the longest window) with the
columns aggregates count, each one's earliest confirmation and its applicant's
earliest joint-punishment listing, and the listings themselves. A feature
vector is computed on demand from that state with the same declarations and
transforms as the offline builder, and the same point-in-time rule: only
applications with ``applied_at < t``, confirmations with ``confirmed_at < t``
and listings with ``listed_at < t`` (ended: ``expires_at <= t``). Because the
rule is applied at query time, the state may hold later events, confirmations
and listings without leaking them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.events import APPLICATION_EVENTS
from duanka.data.private import private_file
from duanka.data.wal import FALLBACK_AUTOCHECKPOINT_PAGES, Checkpointer
from duanka.features import values
from duanka.features.linked import GROUP_FLAGS, ZERO_STATS
from duanka.features.registry import (
    AGGREGATES,
    BY_NAME,
    LINK_FANOUT,
    LINK_KEYS,
    LINK_WINDOW_DAYS,
    MAX_WINDOW_DAYS,
    MODEL_FEATURES,
    Aggregate,
    Entity,
    Op,
)
from duanka.features.running import RunningTotals, running_totals
from duanka.features.values import DAY_US

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_TEXT = (
    "applicant_key",
    "branch_id",
    "staff_id",
    "escort_key",
    "intermediary_key",
    "address_key",
    "phone_key",
    "phone_block_key",
    "device_key",
    "home_province",
    "company_key",
)
_FLAGS = ("photo_tampered", *values.FLAG_COLUMNS)
_ROW_STRINGS = ("account_type", "home_province", "branch_province", "channel", "address_kind", "gender")
_ROW_NUMBERS = (
    "age",
    "phone_tenure_days",
    "company_age_days",
    "onsite_verified",
    "photo_tampered",
    "u_shield",
    "mobile_banking",
    "payment_binding",
)
_NULLABLE = {f.name for f in APPLICATION_EVENTS if f.nullable}
_MEMBER = ("application_id", "ts", "applicant_key", "branch_id", "conf", "listed", *GROUP_FLAGS, *LINK_KEYS)
_FLAG_AT = {flag: _MEMBER.index(flag) for flag in GROUP_FLAGS}
_ROW_ORDER = ("application_id", "ts", *_TEXT, *_FLAGS)  # what :meth:`OnlineFeatureStore._row` gives
STATE_LAYOUT = 5  # the columns the state file keeps; 2: running totals; 3: listings; 4: shared indexes;
# 5: the full-bundle and new-phone flags the linked group counts
# The applicant's earliest listing that applies at some instant (withdrawn ones never do).
_EARLIEST_LISTING = (
    "SELECT MIN(listed_at) FROM listings WHERE applicant_key = {key} AND expires_at > listed_at"
)
_LOAD_SLICE = 100_000
# The apps column a marked count compares with t: the confirmation, or the applicant's earliest listing.
_MARK = {Op.CONFIRMED: "conf", Op.LISTED: "listed"}


class StateLayoutMismatch(RuntimeError):
    """The state file was written by code that kept other columns."""


_ID, _TS, _APPLICANT, _BRANCH, _CONF, _LISTED = range(6)


def micros(at: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime (or pandas Timestamp)."""
    if at.tzinfo is None:
        raise ValueError(f"timestamp {at} has no timezone; events carry UTC timestamps")
    return (at - _EPOCH) // _MICROSECOND


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


@dataclass(frozen=True)
class _Plan:
    """One prepared query, and the partial covering index it reads."""

    entity: Entity
    aggregates: tuple[Aggregate, ...]
    sql: str
    index: str
    starts: tuple[int, ...] = ()  # windows (microseconds) whose start the SELECT takes, in order
    scan_us: int = 0


def _plans_and_totals() -> tuple[list[_Plan], tuple[RunningTotals, ...]]:
    """The queries, and the running totals; an entity with both keeps them in one index.

    Every index is one more page to write per recorded application: the escort's,
    intermediary's and applicant's distinct counts and running totals share theirs.
    """
    totals = {r.entity: r for r in running_totals()}
    plans = _plans(totals)
    names = {plan.index.split(" ON ")[0].split()[-1] for plan in plans}
    shared = tuple(
        replace(r, shared_index=f"by_{r.entity.name.lower()}")
        if f"by_{r.entity.name.lower()}" in names
        else r
        for r in totals.values()
    )
    return plans, shared


def _plans(totals: Mapping[Entity, RunningTotals]) -> list[_Plan]:
    """The queries for distinct values and confirmations (counts and flags: :class:`_Running`).

    Each reads an index that holds every column it needs (no table lookups,
    which is what a busy escort or a dormitory would otherwise cost) and scans
    one window. Distinct values of one column over nested windows take one
    pass over the longest. A window that only counts the distinct values of
    one nullable column (companies at an address over a year) scans only the
    rows that have it.
    """
    by_window: dict[tuple[Entity, int], list[Aggregate]] = {}
    plans = []
    for a in AGGREGATES:
        if a.op is Op.DISTINCT:
            by_window.setdefault((a.entity, a.window_us), []).append(a)
        elif a.op in _MARK:
            plans.append(_marked_plan(a))
        elif a.op is Op.LISTINGS_ENDED:
            plans.append(_ended_plan(a))
    groups: dict[tuple[Entity, str | None], list[Aggregate]] = {}
    for (entity, _), aggregates in by_window.items():
        columns = {a.column for a in aggregates}
        only = columns.pop() if len(columns) == 1 else None
        if only not in _NULLABLE or any(a.op is not Op.DISTINCT for a in aggregates):
            only = None
        groups.setdefault((entity, only), []).extend(aggregates)
    for (entity, only), aggregates in groups.items():
        running = totals.get(entity) if only is None else None
        plans += _windowed_plans(entity, only, aggregates, running)
    return plans


def _windowed_plans(
    entity: Entity, only: str | None, aggregates: list[Aggregate], running: RunningTotals | None
) -> list[_Plan]:
    keys = entity.keys
    name = f"by_{entity.name.lower()}" + (f"_{only}" if only else "")
    # The link keys' main index orders ties by id: "most recent F" reads F entries and stops;
    # running totals are kept in (ts, application_id) order too.
    linked = only is None and keys[0] in LINK_KEYS
    order = ["ts", "application_id"] if linked or running is not None else ["ts"]
    covered = sorted({a.column for a in aggregates if a.column} - set(keys))
    if running is not None:
        covered += [c for c in running.index_columns if c not in covered]
    present = [f"{c} IS NOT NULL" for c in (*keys, only) if c in _NULLABLE]
    index = f"CREATE INDEX IF NOT EXISTS {name} ON apps ({', '.join([*keys, *order, *covered])})"
    if present:
        index += f" WHERE {' AND '.join(present)}"
    rows = f"FROM apps INDEXED BY {name} WHERE " + " AND ".join(
        [*(f"{k} = ?" for k in keys), *present, "ts >= ?", "ts < ?"]
    )
    # Distinct values of one column over several windows: one pass that keeps each
    # value's last time, instead of one distinct-set per window.
    nested: dict[str, list[Aggregate]] = {}
    for a in aggregates:
        if a.op is Op.DISTINCT:
            nested.setdefault(str(a.column), []).append(a)
    plans = []
    grouped: set[Aggregate] = set()
    for column, group in nested.items():
        if len(group) < 2:
            continue
        grouped.update(group)
        scan = max(a.window_us for a in group)
        shorter = tuple(a.window_us for a in group if a.window_us < scan)
        selected = ", ".join(
            "COUNT(*)" if a.window_us == scan else "COUNT(*) FILTER (WHERE last >= ?)" for a in group
        )
        set_only = f" AND {column} IS NOT NULL" if column in _NULLABLE else ""
        last = f"SELECT MAX(ts) AS last {rows}{set_only} GROUP BY {column}"
        plans.append(_Plan(entity, tuple(group), f"SELECT {selected} FROM ({last})", index, shorter, scan))
    # Anything else: one statement per window, each scanning only its own.
    by_window: dict[int, list[Aggregate]] = {}
    for a in aggregates:
        if a not in grouped:
            by_window.setdefault(a.window_us, []).append(a)
    for span, group in by_window.items():
        sql = f"SELECT {', '.join(a.sql() for a in group)} {rows}"
        plans.append(_Plan(entity, tuple(group), sql, index, (), span))
    return plans


def _marked_plan(a: Aggregate) -> _Plan:
    """Applications of a key in ``[t - W, t)`` marked before ``t``: a small partial index of marked rows."""
    (key,) = a.entity.keys
    mark = _MARK[a.op]
    name = f"{a.op}_{a.entity.name.lower()}"
    sql = (
        f"SELECT COUNT(*) FROM apps INDEXED BY {name} WHERE {key} = ? AND {mark} IS NOT NULL "
        f"AND ts >= ? AND ts < ? AND {mark} < ?"
    )
    index = f"CREATE INDEX IF NOT EXISTS {name} ON apps ({key}, ts, {mark}) WHERE {mark} IS NOT NULL"
    return _Plan(a.entity, (a,), sql, index, scan_us=a.window_us)


def _ended_plan(a: Aggregate) -> _Plan:
    """The applicant's listings that applied at some instant and had ended by ``t``."""
    sql = (
        "SELECT COUNT(*) FROM listings INDEXED BY listings_ended WHERE applicant_key = ? "
        "AND expires_at <= ? AND expires_at > listed_at"
    )
    index = "CREATE INDEX IF NOT EXISTS listings_ended ON listings (applicant_key, expires_at, listed_at)"
    return _Plan(a.entity, (a,), sql, index)


def _schema(plans: list[_Plan], totals: tuple[RunningTotals, ...]) -> list[str]:
    columns = ", ".join(
        ["application_id TEXT PRIMARY KEY", "ts INTEGER NOT NULL"]
        + [f"{c} TEXT" for c in _TEXT]
        + [f"{c} INTEGER NOT NULL" for c in _FLAGS]
        + ["conf INTEGER", "listed INTEGER"]
        + [f"{c} INTEGER" for r in totals for c in r.columns]
    )
    return [
        f"CREATE TABLE IF NOT EXISTS apps ({columns})",
        "CREATE TABLE IF NOT EXISTS labels "
        "(application_id TEXT PRIMARY KEY, confirmed_at INTEGER NOT NULL, source TEXT NOT NULL)",
        # One row per listing received; the earliest expiry wins (data.watchlist). Never pruned:
        # a listing that ended years ago still counts, and a bank's list is small.
        "CREATE TABLE IF NOT EXISTS listings (applicant_key TEXT NOT NULL, source TEXT NOT NULL, "
        "listed_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, "
        "PRIMARY KEY (applicant_key, source, listed_at)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS apps_ts ON apps (ts)",  # for prune
        *_indexes(plans, totals),
    ]


def _indexes(plans: list[_Plan], totals: tuple[RunningTotals, ...]) -> list[str]:
    own = [sql for sql in (r.index_sql() for r in totals) if sql is not None]
    return [*dict.fromkeys(plan.index for plan in plans), *own]


class OnlineFeatureStore:
    """Live feature state in one SQLite file (WAL), for one process.

    One connection, shared by the threads of that process: each call holds a
    lock for its duration, so a threaded server may share one store.

    Parameters
    ----------
    path : Path
        The database file; created with its tables and indexes if new.
    durable : bool
        ``synchronous=FULL``: every write is on disk when it returns (one fsync per write).
        Off (``NORMAL``), a commit survives a crash of the process but the last ones may be
        lost at a power cut until :meth:`sync`: what the service uses, with its decision record
        as the redo log (:class:`serving.scorer.Scorer`), and enough for replays and tests.
    checkpoint_every_s : float, optional
        Copy the write-ahead log into the database from a background thread this often
        (:class:`data.wal.Checkpointer`), so that no write pays for a checkpoint: what a
        service wants. None: SQLite checkpoints in the write that fills the log.
    """

    def __init__(self, path: Path, *, durable: bool = False, checkpoint_every_s: float | None = None) -> None:
        self.path = Path(path)
        self.durable = durable
        self._lock = threading.Lock()
        self._con = sqlite3.connect(
            private_file(self.path), isolation_level=None, cached_statements=256, check_same_thread=False
        )
        for pragma in (
            "journal_mode = WAL",
            "synchronous = FULL" if durable else "synchronous = NORMAL",
            "cache_size = -262144",  # 256 MiB of pages
            "temp_store = MEMORY",
            # Checkpoint rarely, so that one add in a thousand, not one in a hundred, pays for it;
            # with a background checkpointer, only if that stops.
            "wal_autocheckpoint = 10000"
            if checkpoint_every_s is None
            else f"wal_autocheckpoint = {FALLBACK_AUTOCHECKPOINT_PAGES}",
        ):
            self._con.execute(f"PRAGMA {pragma}")
        self._plans, self._totals = _plans_and_totals()
        self._check_layout()
        for statement in _schema(self._plans, self._totals):
            self._con.execute(statement)
        self._con.execute("INSERT OR IGNORE INTO meta VALUES ('layout', ?)", (STATE_LAYOUT,))
        row = self._con.execute("SELECT value FROM meta WHERE name = 'horizon'").fetchone()
        self._horizon: int = -(2**63) if row is None else row[0]
        run_columns = [c for r in self._totals for c in r.columns]
        # conf and listed come from what the state holds: a confirmation or a listing may
        # arrive before its application. Parameters: the row, its totals, its id, its applicant.
        self._insert = (
            f"INSERT INTO apps ({', '.join(_ROW_ORDER)}, {', '.join(run_columns)}, conf, listed) "
            f"VALUES ({', '.join('?' * (len(_ROW_ORDER) + len(run_columns)))}, "
            "(SELECT confirmed_at FROM labels WHERE application_id = ?), "
            f"({_EARLIEST_LISTING.format(key='?')}))"
        )
        self._kept = {
            key: f"SELECT {', '.join(_MEMBER)} FROM apps INDEXED BY by_{Entity(key).name.lower()} "
            f"WHERE {key} = ? AND ts >= ? AND ts < ? "
            f"ORDER BY ts DESC, application_id DESC LIMIT {LINK_FANOUT}"
            for key in LINK_KEYS
        }
        self._checkpointer = (
            None
            if checkpoint_every_s is None
            else Checkpointer(self.path, checkpoint_every_s, writer_lock=self._lock).start()
        )

    def _check_layout(self) -> None:
        """Refuse a state file written by code that kept other columns (it would answer wrongly)."""
        con = self._con
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'apps'").fetchone() is None:
            return
        row = con.execute("SELECT value FROM meta WHERE name = 'layout'").fetchone()
        if row is None or row[0] != STATE_LAYOUT:
            con.close()
            raise StateLayoutMismatch(
                f"{self.path} was written by another version of the online state (layout "
                f"{row[0] if row else 1}, this code writes {STATE_LAYOUT}): remove it and its -wal/-shm "
                "files; `duanka serve` rebuilds it from the event store"
            )

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def __enter__(self) -> OnlineFeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def holds_other(self, event: Mapping[str, object]) -> bool:
        """Whether an application with this event's id is held with other content than the event's
        (as far as the state keeps it). The same content held is an attempt whose answer was lost
        (a process killed between the state and the decision record): its retry is scored."""
        row = self._row(event)
        with self._lock:
            held = self._con.execute(
                f"SELECT {', '.join(_ROW_ORDER)} FROM apps WHERE application_id = ?",
                (event["application_id"],),
            ).fetchone()
        return held is not None and (row is None or tuple(held) != row)

    def branches_of(self, application_ids: Sequence[str]) -> dict[str, str]:
        """The branch of each of these applications the state holds (absent: not held)."""
        held: dict[str, str] = {}
        with self._lock:
            for application_id in dict.fromkeys(application_ids):
                row = self._con.execute(
                    "SELECT branch_id FROM apps WHERE application_id = ?", (application_id,)
                ).fetchone()
                if row is not None:
                    held[application_id] = row[0]
        return held

    def newest_applied_at(self) -> datetime | None:
        """When the latest application held was made (one pass over the table: call it once)."""
        with self._lock:
            (ts,) = self._con.execute("SELECT MAX(ts) FROM apps").fetchone()
        return None if ts is None else _EPOCH + timedelta(microseconds=ts)

    def add_application(self, event: Mapping[str, object]) -> bool:
        """Record one application event.

        Returns
        -------
        bool
            False, changing nothing, when its application_id is already held
            or when it is older than anything a window can still reach after
            :meth:`prune`.
        """
        row = self._row(event)
        if row is None:
            return False
        with self._lock, self._transaction() as con:
            return self._insert_row(con, row)

    def add_applications(self, events: Iterable[Mapping[str, object]]) -> int:
        """Record many events in one transaction, each as :meth:`add_application` would.

        Returns
        -------
        int
            How many were new.
        """
        rows = [r for r in map(self._row, events) if r is not None]
        with self._lock, self._transaction() as con:
            return sum(self._insert_row(con, row) for row in rows)

    def _insert_row(self, con: sqlite3.Connection, row: tuple) -> bool:
        """Insert one prepared row with its running totals, inside the caller's transaction."""
        application_id, ts = row[0], row[1]
        if con.execute("SELECT 1 FROM apps WHERE application_id = ?", (application_id,)).fetchone():
            return False
        columns = dict(zip(_ROW_ORDER, row, strict=True))
        totals: list[object] = []
        for running in self._totals:
            key = tuple(columns[k] for k in running.entity.keys)
            if any(k is None for k in key):
                totals += [None] * len(running.columns)
                continue
            totals += running.row_totals(con.execute, key, ts, application_id, columns)
            running.shift_later(con.execute, key, ts, application_id, columns)
        con.execute(self._insert, (*row, *totals, application_id, columns["applicant_key"]))
        return True

    def sync(self) -> None:
        """Put every write made so far on disk, so that a power cut cannot take it back.

        One small commit under ``synchronous=FULL``: its fsync of the write-ahead log covers
        every frame before it, so a store opened with ``durable=False`` pays one fsync here
        instead of one per write.
        """
        with self._lock:
            con = self._con
            con.execute("PRAGMA synchronous = FULL")
            try:
                with self._transaction():
                    con.execute(
                        "INSERT INTO meta VALUES ('syncs', 1) "
                        "ON CONFLICT (name) DO UPDATE SET value = value + 1"
                    )
            finally:
                if not self.durable:
                    con.execute("PRAGMA synchronous = NORMAL")

    def is_empty(self) -> bool:
        """Whether the store holds no application."""
        with self._lock:
            return self._con.execute("SELECT 1 FROM apps LIMIT 1").fetchone() is None

    def load_history(self, applications: pa.Table, *, progress: Callable[[int], None] | None = None) -> int:
        """Warm an empty store with a table of application events, fast.

        The rows, their flags and running totals are computed for the whole table at once
        and inserted without the query indexes, which are then built in one sort each: for
        a year of a large bank (10M applications) this takes minutes where one event at a
        time would take hours. The state is the same as :meth:`add_applications` makes from
        the same events (tested).

        Parameters
        ----------
        applications : pyarrow.Table
            Rows of :data:`data.events.APPLICATION_EVENTS` with unique application ids.
        progress : callable, optional
            Called with the number of rows inserted so far, after each slice.

        Returns
        -------
        int
            Applications loaded.

        Raises
        ------
        ValueError
            The store already holds applications.

        Notes
        -----
        Listings may be added before or after (:meth:`add_listings`); either way each row
        carries its applicant's earliest listing.
        """
        if not self.is_empty():
            raise ValueError(f"{self.path} already holds applications: add them with add_applications")
        table = _event_rows(applications)
        if self._horizon > -(2**63):
            table = table.filter(pc.greater_equal(table["ts"], self._horizon))
        loaded = 0
        indexes = _indexes(self._plans, self._totals)
        applicant = _ROW_ORDER.index("applicant_key")
        with self._lock:
            for statement in indexes:
                self._con.execute(f"DROP INDEX IF EXISTS {_index_name(statement)}")
            with self._transaction() as con:
                for batch in _with_totals(table, self._totals):
                    rows = zip(*(column.to_pylist() for column in batch.columns), strict=True)
                    # listed is looked up per row in the listings held (their primary key): a
                    # store given its listings first is loaded complete, as add_applications would.
                    con.executemany(self._insert, ((*r, r[0], r[applicant]) for r in rows))
                    loaded += batch.num_rows
                    if progress is not None:
                        progress(loaded)
            for statement in indexes:
                self._con.execute(statement)
            self._con.execute("ANALYZE")
        return loaded

    def _row(self, event: Mapping[str, object]) -> tuple | None:
        ts = micros(event["applied_at"])  # type: ignore[arg-type]
        if ts < self._horizon:
            return None
        flags = values.derived_flags(_row_columns(event))
        return (
            event["application_id"],
            ts,
            *(None if _missing(event.get(c)) else event[c] for c in _TEXT),
            int(bool(event["photo_tampered"])),
            *(int(flags[c][0]) for c in values.FLAG_COLUMNS),
        )

    def add_label(self, application_id: str, confirmed_at: datetime, source: str) -> bool:
        """Record a confirmation; the earliest one of an application is the one that counts.

        Returns
        -------
        bool
            False, changing nothing, when no earlier confirmation was already held.
        """
        return self.add_labels([(application_id, confirmed_at, source)]) == 1

    def add_labels(self, labels: Iterable[tuple[str, datetime, str]]) -> int:
        """Record many confirmations ``(application_id, confirmed_at, source)`` in one transaction.

        Returns
        -------
        int
            How many changed the state (new, or earlier than the one held).
        """
        rows = [(application_id, micros(at), source) for application_id, at, source in labels]
        changed = 0
        with self._lock, self._transaction() as con:
            for application_id, at, source in rows:
                if con.execute(
                    "INSERT INTO labels VALUES (?, ?, ?) ON CONFLICT (application_id) DO UPDATE SET "
                    "confirmed_at = excluded.confirmed_at, source = excluded.source "
                    "WHERE excluded.confirmed_at < labels.confirmed_at",
                    (application_id, at, source),
                ).rowcount:
                    con.execute("UPDATE apps SET conf = ? WHERE application_id = ?", (at, application_id))
                    changed += 1
        return changed

    def add_listings(self, listings: pa.Table | pd.DataFrame) -> int:
        """Record joint-punishment listings (and removals) in one transaction; idempotent.

        For one listing (person, source, ``listed_at``) the earliest ``expires_at`` received
        wins, as in :mod:`data.watchlist`: a removal ends a listing, a later expiry never
        extends it, and ``expires_at == listed_at`` withdraws it. The applications of every
        person whose listings changed get their earliest listing again (``apps.listed``).

        Parameters
        ----------
        listings : pyarrow.Table or pandas.DataFrame
            ``applicant_key``, ``source``, ``listed_at`` and ``expires_at`` (tz-aware) of
            :data:`data.events.WATCHLIST_EVENTS` rows, or of
            :meth:`data.watchlist.Watchlist.received`; other columns are ignored.

        Returns
        -------
        int
            How many listings changed the state (new, or ending earlier than the one held).
        """
        rows = _listing_rows(listings)
        if not rows:
            return 0
        with self._lock, self._transaction() as con:
            con.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming (applicant_key TEXT, source TEXT, "
                "listed_at INTEGER, expires_at INTEGER)"
            )
            con.execute("DELETE FROM incoming")
            con.executemany("INSERT INTO incoming VALUES (?, ?, ?, ?)", rows)
            # Repeats within the call collapse first: the earliest expiry of each listing.
            collapsed = (
                "SELECT applicant_key, source, listed_at, MIN(expires_at) AS expires_at FROM incoming "
                # WHERE true: SQLite's upsert needs it after a SELECT to parse ON CONFLICT
                "WHERE true GROUP BY applicant_key, source, listed_at"
            )
            changed = con.execute(
                f"SELECT i.applicant_key FROM ({collapsed}) AS i LEFT JOIN listings AS l "
                "USING (applicant_key, source, listed_at) "
                "WHERE l.expires_at IS NULL OR i.expires_at < l.expires_at"
            ).fetchall()
            con.execute(
                f"INSERT INTO listings {collapsed} ON CONFLICT (applicant_key, source, listed_at) "
                "DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE excluded.expires_at < listings.expires_at"
            )
            con.executemany(
                f"UPDATE apps SET listed = ({_EARLIEST_LISTING.format(key='apps.applicant_key')}) "
                "WHERE applicant_key = ?",
                sorted(set(changed)),
            )
            con.execute("DELETE FROM incoming")
        return len(changed)

    def features_for(self, event: Mapping[str, object], names: Sequence[str] = MODEL_FEATURES) -> np.ndarray:
        """Feature values of one application as of its ``applied_at``, without recording it.

        Parameters
        ----------
        event : mapping
            One row of :data:`data.events.APPLICATION_EVENTS`.
        names : sequence of str
            Which features, in order; :data:`MODEL_FEATURES` by default.

        Returns
        -------
        numpy.ndarray
            float64, one value per name; NaN where undefined.
        """
        t = micros(event["applied_at"])  # type: ignore[arg-type]
        columns = _row_columns(event)
        columns.update(values.derived_flags(columns))
        columns["applied_at"] = np.array([t], dtype=np.int64)
        with self._lock:
            counts = self._counts(event, t)
        return np.array([BY_NAME[name].evaluate(columns, counts)[0] for name in names])

    def warm(self, applications: int = 2_000) -> int:
        """Read what the next applications will read, before the first of them arrives.

        A new application's queries touch the index pages of the escorts, addresses, branches
        and the like that applied lately. Running the queries of the ``applications`` most
        recent ones held (as if each came again a microsecond later; nothing is recorded)
        brings those pages into the cache, which a service does before it says it is ready:
        otherwise its first seconds of requests fill the cache, slowly.

        Returns
        -------
        int
            Applications whose queries were run.
        """
        with self._lock:
            rows = self._con.execute(
                f"SELECT ts, {', '.join(_TEXT)} FROM apps INDEXED BY apps_ts ORDER BY ts DESC LIMIT ?",
                (applications,),
            ).fetchall()
            for ts, *keys in rows:
                self._counts(dict(zip(_TEXT, keys, strict=True)), ts + 1)
        return len(rows)

    def _counts(self, event: Mapping[str, object], t: int) -> dict[str, np.ndarray]:
        counts: dict[str, np.ndarray] = {}
        execute = self._con.execute
        for plan in self._plans:
            key = tuple(event.get(k) for k in plan.entity.keys)
            if any(_missing(k) for k in key):
                found: Sequence[float] = [np.nan] * len(plan.aggregates)
            elif plan.aggregates[0].op in _MARK:
                found = execute(plan.sql, (*key, t - plan.scan_us, t, t)).fetchone()
            elif plan.aggregates[0].op is Op.LISTINGS_ENDED:
                found = execute(plan.sql, (*key, t)).fetchone()
            else:
                starts = (t - span for span in plan.starts)
                scan = t - plan.scan_us
                found = execute(plan.sql, (*starts, *key, scan, t)).fetchone()
            for a, value in zip(plan.aggregates, found, strict=True):
                counts[a.name] = np.array([value], dtype=np.float64)
        for running in self._totals:
            key = tuple(event.get(k) for k in running.entity.keys)
            if any(_missing(k) for k in key):
                found_totals = dict.fromkeys((a.name for a in running.aggregates), np.nan)
            else:
                found_totals = running.counts(execute, key, t)
            for name, value in found_totals.items():
                counts[name] = np.array([value], dtype=np.float64)
        for name, value in self._linked_group(event, t).items():
            counts[Aggregate(Entity.LINKED, Op.LINKED, LINK_WINDOW_DAYS, name).name] = np.array(
                [value], dtype=np.float64
            )
        return counts

    def _linked_group(self, event: Mapping[str, object], t: int) -> dict[str, float]:
        """The bounded two-hop group of :mod:`features.linked`, by index lookups."""
        start = t - LINK_WINDOW_DAYS * DAY_US
        execute = self._con.execute
        asked: set[tuple[str, object]] = set()
        members: dict[str, tuple] = {}

        def visit(keys: list[tuple[str, object]]) -> list[tuple]:
            found = []
            for kind, key in keys:
                if _missing(key) or (kind, key) in asked:
                    continue
                asked.add((kind, key))
                found.extend(execute(self._kept[kind], (key, start, t)).fetchall())
            for row in found:
                members[row[_ID]] = row
            return found

        hop1 = visit([(kind, event.get(kind)) for kind in LINK_KEYS])
        visit([(kind, row[_MEMBER.index(kind)]) for row in hop1 for kind in LINK_KEYS])
        own = event["applicant_key"]
        group = [m for m in members.values() if m[_APPLICANT] != own]
        if not group:
            return {**dict.fromkeys(ZERO_STATS, 0.0), "first_at": np.nan}

        def applicants(rows: Iterable[tuple]) -> float:
            return float(len({m[_APPLICANT] for m in rows}))

        return {
            "applicants": applicants(group),
            "branches": float(len({m[_BRANCH] for m in group})),
            "first_at": float(min(m[_TS] for m in group)),
            "confirmed": float(sum(1 for m in group if m[_CONF] is not None and m[_CONF] < t)),
            "listed": applicants(m for m in group if m[_LISTED] is not None and m[_LISTED] < t),
            "new_1d": applicants(m for m in group if m[_TS] >= t - DAY_US),
            "new_7d": applicants(m for m in group if m[_TS] >= t - 7 * DAY_US),
            **{flag: applicants(m for m in group if m[at]) for flag, at in _FLAG_AT.items()},
        }

    def prune(self, before: datetime) -> int:
        """Forget what no query at or after ``before`` can reach.

        Applications older than ``before`` minus the longest window go, with
        their confirmations; later :meth:`add_application` calls for such
        applications are refused. The freed pages are reused, so a long
        stream keeps the file at about one year of events.

        Returns
        -------
        int
            Applications removed.
        """
        horizon = micros(before) - MAX_WINDOW_DAYS * DAY_US
        with self._lock, self._transaction() as con:
            con.execute(
                "DELETE FROM labels WHERE application_id IN (SELECT application_id FROM apps WHERE ts < ?)",
                (horizon,),
            )
            removed = con.execute("DELETE FROM apps WHERE ts < ?", (horizon,)).rowcount
            # Confirmations of applications never seen, once old enough to be useless.
            con.execute(
                "DELETE FROM labels WHERE confirmed_at < ? AND application_id NOT IN "
                "(SELECT application_id FROM apps)",
                (horizon,),
            )
            con.execute(
                "INSERT INTO meta VALUES ('horizon', ?) ON CONFLICT (name) DO UPDATE "
                "SET value = MAX(value, excluded.value)",
                (horizon,),
            )
            self._horizon = max(self._horizon, horizon)
        with self._lock:
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed


def _index_name(statement: str) -> str:
    return statement.split(" ON ")[0].split()[-1]


def _event_rows(applications: pa.Table) -> pa.Table:
    """The table's rows as the store keeps them (``_ROW_ORDER``), flags derived as for one event."""
    columns = {
        name: applications[name].to_numpy(zero_copy_only=False)
        for name in ("account_type", "home_province", "branch_province")
    }
    for name in (
        "company_age_days",
        "onsite_verified",
        "u_shield",
        "mobile_banking",
        "payment_binding",
        "phone_tenure_days",
    ):
        columns[name] = pc.cast(applications[name], pa.float64()).to_numpy(zero_copy_only=False)
    flags = values.derived_flags(columns)
    data = {
        "application_id": applications["application_id"],
        "ts": applications["applied_at"].cast(pa.int64()),
        **{c: applications[c] for c in _TEXT},
        "photo_tampered": applications["photo_tampered"].cast(pa.int64()),
        **{c: pa.array(flags[c].astype(np.int64)) for c in values.FLAG_COLUMNS},
    }
    return pa.table(data)


def _listing_rows(listings: pa.Table | pd.DataFrame) -> list[tuple[str, str, int, int]]:
    """``(applicant_key, source, listed_at, expires_at)`` with times in microseconds.

    Raises
    ------
    ValueError
        A time column is not tz-aware: listings carry UTC instants, as events do.
    """
    if len(listings) == 0:
        return []
    columns = ["applicant_key", "source", "listed_at", "expires_at"]
    table = (
        listings.select(columns)
        if isinstance(listings, pa.Table)
        else pa.Table.from_pandas(listings.loc[:, columns], preserve_index=False)
    )
    times = []
    for name in ("listed_at", "expires_at"):
        kind = table[name].type
        if not pa.types.is_timestamp(kind) or kind.tz is None:
            raise ValueError(f"listings' {name} is {kind}, not a tz-aware timestamp")
        times.append(table[name].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist())
    return list(zip(table["applicant_key"].to_pylist(), table["source"].to_pylist(), *times, strict=True))


def _with_totals(rows: pa.Table, totals: tuple[RunningTotals, ...]) -> Iterator[pa.RecordBatch]:
    """The rows in time order with every running total, in slices (DuckDB window sums)."""
    import duckdb

    con = duckdb.connect()
    con.register("rows", rows)
    expressions = [e for running in totals for e in running.window_sql()]
    reader = con.sql(
        f"SELECT {', '.join(_ROW_ORDER)}, {', '.join(expressions)} FROM rows ORDER BY ts, application_id"
    ).to_arrow_reader(_LOAD_SLICE)
    try:
        yield from reader
    finally:
        con.close()


def _row_columns(event: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The application's own columns as arrays of one element, as the offline builder has them."""
    columns: dict[str, np.ndarray] = {}
    for name in _ROW_STRINGS:
        columns[name] = np.array([event.get(name)], dtype=object)
    for name in _ROW_NUMBERS:
        value = event.get(name)
        columns[name] = np.array([np.nan if _missing(value) else value], dtype=np.float64)
    return columns
