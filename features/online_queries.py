"""What the online store keeps and which statements it runs for the registry's aggregates.

:func:`plan_online` turns :data:`duanka.features.registry.AGGREGATES` into the SQLite state's
tables, its indexes and one prepared statement per group of counts; the store
(:mod:`duanka.features.online`) only runs them. Each statement reads an index that holds every
column it needs (no table lookups, which is what a busy escort or a dormitory would
otherwise cost) and scans one window. Counts and flag sums are running totals
(:mod:`duanka.features.running`); the linked group is :func:`duanka.features.linked.online_group_sql`.

Every statement takes NAMED parameters, all from one mapping per asked instant:
:func:`parameters` (``:t`` and each window's start, ``:since_<days>d``) and the asking
application's :data:`duanka.features.columns.COMPARED` by name (``:escort_key``). A statement
names what it reads, so nothing has to follow the order in which its SQL was assembled.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from duanka.data.events import APPLICATION_EVENTS
from duanka.features.columns import COMPARED, COUNTED_FLAGS, MARK_COLUMN
from duanka.features.declaration import Aggregate, Entity, Op
from duanka.features.linked import online_group_sql
from duanka.features.registry import AGGREGATES, LINK_KEYS, LINK_WINDOW_DAYS
from duanka.features.running import RunningTotals, running_totals
from duanka.features.values import DAY_US

STATE_LAYOUT = 6  # the columns the state file keeps; 2: running totals; 3: listings; 4: shared indexes;
# 5: the full-bundle and new-phone flags the linked group counts; 6: home county, branch city and
# address province (fellow villagers, the address against the branch)
STORED = ("application_id", "ts", *COMPARED, *COUNTED_FLAGS)
"""An application's own columns as the state keeps them (:func:`duanka.features.online_rows.stored_row`)."""
EARLIEST_LISTING = (
    # The applicant's earliest listing that applies at some instant (withdrawn ones never do).
    "SELECT MIN(listed_at) FROM listings WHERE applicant_key = {key} AND expires_at > listed_at"
)
_NULLABLE = {f.name for f in APPLICATION_EVENTS if f.nullable}
_DISTINCT = (Op.DISTINCT, Op.OTHERS)  # counts of distinct values, with or without the asker's own
_WINDOWS_DAYS = sorted({a.window_days for a in AGGREGATES if a.window_days is not None})
_ENTITY_OF_KEY = {e.keys: e for e in Entity if e.keys}


class StateLayoutMismatch(RuntimeError):
    """The state file was written by code that kept other columns."""


def check_layout(con: sqlite3.Connection, path: Path) -> None:
    """Refuse a state file written by code that kept other columns (it would answer wrongly).

    Raises
    ------
    StateLayoutMismatch
        The file at ``path`` holds a state of another :data:`STATE_LAYOUT`.
    """
    if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'apps'").fetchone() is None:
        return
    row = con.execute("SELECT value FROM meta WHERE name = 'layout'").fetchone()
    if row is None or row[0] != STATE_LAYOUT:
        raise StateLayoutMismatch(
            f"{path} was written by another version of the online state (layout "
            f"{row[0] if row else 1}, this code writes {STATE_LAYOUT}): remove it and its -wal/-shm "
            "files; `duanka serve` rebuilds it from the event store"
        )


def since(days: int) -> str:
    """The name of the parameter that holds ``t`` less a window of ``days``."""
    return f"since_{days}d"


def parameters(t: int) -> dict[str, int]:
    """``t`` and every window's start, by parameter name (the keys come from the application)."""
    return {"t": t, **{since(days): t - days * DAY_US for days in _WINDOWS_DAYS}}


@dataclass(frozen=True)
class Query:
    """One prepared statement: its one row answers ``aggregates`` in order.

    Attributes
    ----------
    entity : Entity
        Whose key columns it reads; an application with any of them null gets NaN.
    aggregates : tuple of Aggregate
    sql : str
    index : str
        The ``CREATE INDEX`` statement of the index it reads.
    """

    entity: Entity
    aggregates: tuple[Aggregate, ...]
    sql: str
    index: str


@dataclass(frozen=True)
class OnlinePlan:
    """Everything the store runs and keeps for the registry's aggregates.

    Attributes
    ----------
    queries : tuple of Query
        Distinct values, marked counts and ended listings.
    totals : tuple of RunningTotals
        Counts and flag sums; an entity with both keeps them in the index of its queries.
    linked_sql : str
        The linked group's statistics (:func:`duanka.features.linked.online_group_sql`).
    link_indexes : tuple of str
        The ``CREATE INDEX`` statements of the indexes the linked group reads that no query reads.
    """

    queries: tuple[Query, ...]
    totals: tuple[RunningTotals, ...]
    linked_sql: str
    link_indexes: tuple[str, ...]

    def indexes(self) -> list[str]:
        """Every ``CREATE INDEX`` statement of the query indexes, once each."""
        own = [sql for sql in (r.index_sql() for r in self.totals) if sql is not None]
        return [*dict.fromkeys(q.index for q in self.queries), *self.link_indexes, *own]

    def schema(self) -> list[str]:
        """The statements that create the state's tables and indexes (each ``IF NOT EXISTS``)."""
        columns = ", ".join(
            ["application_id TEXT PRIMARY KEY", "ts INTEGER NOT NULL"]
            + [f"{c} TEXT" for c in COMPARED]
            + [f"{c} INTEGER NOT NULL" for c in COUNTED_FLAGS]
            + [f"{c} INTEGER" for c in MARK_COLUMN.values()]
            + [f"{c} INTEGER" for c in self.total_columns]
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
            *self.indexes(),
        ]

    @property
    def total_columns(self) -> tuple[str, ...]:
        """The running-total columns of a row, in :attr:`totals` order."""
        return tuple(c for r in self.totals for c in r.columns)

    def insert_sql(self, order: Sequence[str] | None = None) -> str:
        """Insert one row: :data:`STORED` and :attr:`total_columns`.

        ``conf`` and ``listed`` come from what the state holds: a confirmation or a listing
        may arrive before its application.

        Parameters
        ----------
        order : sequence of str, optional
            For a bulk load: the columns of its rows, which then come as tuples in this order
            (numbered parameters ``?1``, ``?2``, ... taken from it; executemany binds tuples a
            quarter faster than mappings). None: the values are named, ``:application_id``.
        """
        columns = [*STORED, *self.total_columns]
        if order is None:
            value = {c: f":{c}" for c in columns}
        else:
            value = {c: f"?{i}" for i, c in enumerate(order, start=1)}
        conf, listed = MARK_COLUMN[Op.CONFIRMED], MARK_COLUMN[Op.LISTED]
        return (
            f"INSERT INTO apps ({', '.join(columns)}, {conf}, {listed}) "
            f"VALUES ({', '.join(value[c] for c in columns)}, "
            f"(SELECT confirmed_at FROM labels WHERE application_id = {value['application_id']}), "
            f"({EARLIEST_LISTING.format(key=value['applicant_key'])}))"
        )


def index_name(statement: str) -> str:
    """The name a ``CREATE INDEX`` statement gives its index."""
    return statement.split(" ON ")[0].split()[-1]


def plan_online(aggregates: Sequence[Aggregate] = AGGREGATES) -> OnlinePlan:
    """The state's statements for ``aggregates`` (default: every one the registry declares).

    Every index is one more page to write per recorded application: the escort's,
    intermediary's and applicant's distinct counts and running totals share theirs.
    """
    totals = {r.entity: r for r in running_totals(aggregates)}
    queries = _queries(aggregates, totals)
    names = {index_name(q.index) for q in queries}
    shared = tuple(
        replace(r, shared_index=f"by_{r.entity.label}") if f"by_{r.entity.label}" in names else r
        for r in totals.values()
    )
    link_indexes = {key: f"by_{_ENTITY_OF_KEY[(key,)].label}" for key in LINK_KEYS}
    # A link key no query counts over still needs its index for the linked group's lookups.
    missing = tuple(
        f"CREATE INDEX IF NOT EXISTS {name} ON apps ({key}, ts, application_id) WHERE {key} IS NOT NULL"
        for key, name in link_indexes.items()
        if name not in names
    )
    return OnlinePlan(
        queries=tuple(queries),
        totals=shared,
        linked_sql=online_group_sql(link_indexes, f":{since(LINK_WINDOW_DAYS)}"),
        link_indexes=missing,
    )


def _queries(aggregates: Sequence[Aggregate], totals: Mapping[Entity, RunningTotals]) -> list[Query]:
    """The queries for distinct values, marked counts and ended listings.

    Distinct values of one column over nested windows take one pass over the longest.
    A window that only counts the distinct values of one nullable column (companies at an
    address over a year) scans only the rows that have it.
    """
    by_window: dict[tuple[Entity, int], list[Aggregate]] = {}
    queries = []
    for a in aggregates:
        if a.op in _DISTINCT:
            by_window.setdefault((a.entity, a.window_us), []).append(a)
        elif a.op in MARK_COLUMN:
            queries.append(_marked_query(a))
        elif a.op is Op.LISTINGS_ENDED:
            queries.append(_ended_query(a))
    groups: dict[tuple[Entity, str | None], list[Aggregate]] = {}
    for (entity, _), in_window in by_window.items():
        columns = {a.column for a in in_window}
        only = columns.pop() if len(columns) == 1 else None
        if only not in _NULLABLE or any(a.op not in _DISTINCT for a in in_window):
            only = None
        groups.setdefault((entity, only), []).extend(in_window)
    for (entity, only), grouped in groups.items():
        running = totals.get(entity) if only is None else None
        queries += _windowed_queries(entity, only, grouped, running)
    return queries


def _windowed_queries(
    entity: Entity, only: str | None, aggregates: list[Aggregate], running: RunningTotals | None
) -> list[Query]:
    keys = entity.keys
    name = f"by_{entity.label}" + (f"_{only}" if only else "")
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

    def rows(days: int) -> str:
        """The key's rows in the window of ``days`` before ``t``."""
        matched = [f"{k} = :{k}" for k in keys]
        return f"FROM apps INDEXED BY {name} WHERE " + " AND ".join(
            [*matched, *present, f"ts >= :{since(days)}", "ts < :t"]
        )

    # Distinct values of one column over several windows: one pass that keeps each
    # value's last time, instead of one distinct-set per window.
    nested: dict[tuple[Op, str], list[Aggregate]] = {}
    for a in aggregates:
        if a.op in _DISTINCT:
            nested.setdefault((a.op, str(a.column)), []).append(a)
    queries = []
    grouped: set[Aggregate] = set()
    for (op, column), group in nested.items():
        if len(group) < 2:
            continue
        grouped.update(group)
        scan = max(group, key=lambda a: a.window_us)
        selected = ", ".join(
            "COUNT(*)"
            if a.window_us == scan.window_us
            else f"COUNT(*) FILTER (WHERE last >= :{since(a.window_days)})"
            for a in group
        )
        set_only = f" AND {column} IS NOT NULL" if column in _NULLABLE else ""
        if op is Op.OTHERS:
            set_only += f" AND {column} IS NOT :{column}"
        last = f"SELECT MAX(ts) AS last {rows(scan.window_days)}{set_only} GROUP BY {column}"
        queries.append(Query(entity, tuple(group), f"SELECT {selected} FROM ({last})", index))
    # Anything else: one statement per window, each scanning only its own.
    by_window: dict[int, list[Aggregate]] = {}
    for a in aggregates:
        if a not in grouped:
            by_window.setdefault(a.window_days, []).append(a)
    for days, group in by_window.items():
        sql = f"SELECT {', '.join(a.sql() for a in group)} {rows(days)}"
        queries.append(Query(entity, tuple(group), sql, index))
    return queries


def _marked_query(a: Aggregate) -> Query:
    """Applications of a key in ``[t - W, t)`` marked before ``t``: a small partial index of marked rows."""
    (key,) = a.entity.keys
    mark = MARK_COLUMN[a.op]
    name = f"{a.op}_{a.entity.label}"
    sql = (
        f"SELECT COUNT(*) FROM apps INDEXED BY {name} WHERE {key} = :{key} AND {mark} IS NOT NULL "
        f"AND ts >= :{since(a.window_days)} AND ts < :t AND {mark} < :t"
    )
    index = f"CREATE INDEX IF NOT EXISTS {name} ON apps ({key}, ts, {mark}) WHERE {mark} IS NOT NULL"
    return Query(a.entity, (a,), sql, index)


def _ended_query(a: Aggregate) -> Query:
    """The applicant's listings that applied at some instant and had ended by ``t``."""
    (key,) = a.entity.keys
    sql = (
        f"SELECT COUNT(*) FROM listings INDEXED BY listings_ended WHERE applicant_key = :{key} "
        "AND expires_at <= :t AND expires_at > listed_at"
    )
    index = "CREATE INDEX IF NOT EXISTS listings_ended ON listings (applicant_key, expires_at, listed_at)"
    return Query(a.entity, (a,), sql, index)
