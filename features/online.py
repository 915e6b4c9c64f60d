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

What the state keeps and which statements read it is planned in
:mod:`duanka.features.online_queries`; events become rows in :mod:`duanka.features.online_rows`.

One job, the store, past 500 lines: its write paths (an application, a confirmation, a listing,
the bulk history load, the prune) share one connection's transaction, commit grouping and sync
protocol (savepoints, the held transaction, :meth:`OnlineFeatureStore.sync_soon`), which reads
best in one place beside the writes it serves; the planner and the row shapes already live apart.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.private import private_file
from duanka.data.wal import FALLBACK_AUTOCHECKPOINT_PAGES, Checkpointer, GroupSync, SyncFailed
from duanka.features import values
from duanka.features.columns import COMPARED, MARK_COLUMN
from duanka.features.declaration import Aggregate, Entity, Op
from duanka.features.linked import ZERO_STATS
from duanka.features.online_queries import (
    EARLIEST_LISTING,
    STATE_LAYOUT,
    STORED,
    StateLayoutMismatch,
    check_layout,
    index_name,
    parameters,
    plan_online,
)
from duanka.features.online_rows import (
    EPOCH,
    compared_values,
    listing_rows,
    micros,
    own_columns,
    stored_row,
    stored_table,
    with_totals,
)
from duanka.features.registry import BY_NAME, LINK_WINDOW_DAYS, MAX_WINDOW_DAYS, MODEL_FEATURES
from duanka.features.values import DAY_US


class HeldApplication(NamedTuple):
    """What the state holds of an application that a confirmation needs."""

    branch_id: str
    applied_at: datetime


# The count each linked-group statistic answers.
_LINKED_COUNT = {
    stat: Aggregate(Entity.LINKED, Op.LINKED, LINK_WINDOW_DAYS, stat).name
    for stat in (*ZERO_STATS, "first_at")
}


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
        as the redo log (:class:`duanka.serving.scorer.Scorer`), and enough for replays and tests.
    checkpoint_every_s : float, optional
        Copy the write-ahead log into the database from a background thread this often
        (:class:`duanka.data.wal.Checkpointer`), so that no write pays for a checkpoint: what a
        service wants. None: SQLite checkpoints in the write that fills the log.
    writes_per_commit : int
        Writes grouped in one transaction: each write is still all or nothing (a savepoint),
        and the transaction is committed after this many, at :meth:`sync` or :meth:`sync_soon`,
        when the log is to start over, and at :meth:`close`. A commit writes every page its
        transaction changed to the log and takes SQLite's locks: on a 1M-application state,
        recording an application with its features cost 1.28 ms committed one by one and
        0.98 ms committed 25 at a time (the commit itself 3.4 ms). The price: a killed process
        loses the uncommitted writes too, not only a power cut, so only a writer with a redo
        log of its own groups them (the service: its decision record,
        :meth:`duanka.serving.scorer.Scorer.redo`). Not with ``durable``.

    Raises
    ------
    ValueError
        ``writes_per_commit`` other than 1 with ``durable``, or below 1.
    """

    def __init__(
        self,
        path: Path,
        *,
        durable: bool = False,
        checkpoint_every_s: float | None = None,
        writes_per_commit: int = 1,
    ) -> None:
        if writes_per_commit < 1 or (durable and writes_per_commit != 1):
            raise ValueError(
                f"writes_per_commit={writes_per_commit}: at least 1, and 1 for a durable store "
                "(it commits every write)"
            )
        self.path = Path(path)
        self.durable = durable
        self.writes_per_commit = writes_per_commit
        self._uncommitted = 0  # writes in the open transaction
        self._syncer: GroupSync | None = None  # started by the first sync_soon
        self._lost: str | None = None  # why writes this store acknowledged are gone, if they are
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
        self._plan = plan_online()
        try:
            check_layout(self._con, self.path)
        except StateLayoutMismatch:
            self._con.close()
            raise
        for statement in self._plan.schema():
            self._con.execute(statement)
        self._con.execute("INSERT OR IGNORE INTO meta VALUES ('layout', ?)", (STATE_LAYOUT,))
        row = self._con.execute("SELECT value FROM meta WHERE name = 'horizon'").fetchone()
        self._horizon: int = -(2**63) if row is None else row[0]
        self._insert = self._plan.insert_sql()
        self._checkpointer = (
            None
            if checkpoint_every_s is None
            else Checkpointer(
                self.path, checkpoint_every_s, writer_lock=self._lock, before_restart=self._commit_held
            ).start()
        )

    def close(self) -> None:
        """Commit what is held (not synced: a power cut may still take it), and close."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._commit_held()
            self._con.close()
        if self._syncer is not None:
            self._syncer.stop()

    def _commit_held(self) -> None:
        """Commit the transaction held open across writes, if any (under the lock)."""
        if self._con.in_transaction:
            self._con.execute("COMMIT")
        self._uncommitted = 0

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write, all or nothing: its own transaction, or a savepoint in the held one."""
        con = self._con
        if self.writes_per_commit == 1:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return
        if not con.in_transaction:
            con.execute("BEGIN IMMEDIATE")
        con.execute("SAVEPOINT one_write")
        try:
            yield con
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK TO one_write")
                con.execute("RELEASE one_write")
            elif self._uncommitted:
                # SQLite answered the error (a full disk, an I/O error) by rolling the whole group
                # back: the writes before this one are gone too, and the store must not go on
                # as if it held them (check_synced refuses from now on; a restart redoes them)
                self._lost = f"{self._uncommitted} uncommitted writes rolled back by SQLite"
                self._uncommitted = 0
            raise
        con.execute("RELEASE one_write")
        self._uncommitted += 1
        if self._uncommitted >= self.writes_per_commit:
            self._commit_held()

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
                f"SELECT {', '.join(STORED)} FROM apps WHERE application_id = ?", (event["application_id"],)
            ).fetchone()
        return held is not None and (row is None or tuple(held) != tuple(row[c] for c in STORED))

    def held_applications(self, application_ids: Sequence[str]) -> dict[str, HeldApplication]:
        """The branch and time of each of these applications the state holds (absent: not held)."""
        held: dict[str, HeldApplication] = {}
        with self._lock:
            for application_id in dict.fromkeys(application_ids):
                row = self._con.execute(
                    "SELECT branch_id, ts FROM apps WHERE application_id = ?", (application_id,)
                ).fetchone()
                if row is not None:
                    held[application_id] = HeldApplication(row[0], EPOCH + timedelta(microseconds=row[1]))
        return held

    def newest_applied_at(self) -> datetime | None:
        """When the latest application held was made (one pass over the table: call it once)."""
        with self._lock:
            (ts,) = self._con.execute("SELECT MAX(ts) FROM apps").fetchone()
        return None if ts is None else EPOCH + timedelta(microseconds=ts)

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

    def _insert_row(self, con: sqlite3.Connection, row: dict[str, object]) -> bool:
        """Insert one stored row with its running totals, inside the caller's transaction."""
        if con.execute("SELECT 1 FROM apps WHERE application_id = ?", (row["application_id"],)).fetchone():
            return False
        totals: dict[str, object] = {}
        for running in self._plan.totals:
            if any(row[k] is None for k in running.entity.keys):
                totals.update(dict.fromkeys(running.columns))
                continue
            totals.update(running.row_totals(con.execute, row))
            running.shift_later(con.execute, row)
        con.execute(self._insert, {**row, **totals})
        return True

    def sync(self) -> None:
        """Put every write made so far on disk, so that a power cut cannot take it back.

        One commit under ``synchronous=FULL``: its fsync of the write-ahead log covers every
        frame before it, so a store opened with ``durable=False`` pays one fsync here instead
        of one per write, and one that holds its commits commits here.
        """
        with self._lock:
            con = self._con
            self._commit_held()  # the safety level cannot change inside a transaction
            con.execute("PRAGMA synchronous = FULL")
            try:
                with self._transaction():
                    con.execute(
                        "INSERT INTO meta VALUES ('syncs', 1) "
                        "ON CONFLICT (name) DO UPDATE SET value = value + 1"
                    )
                self._commit_held()
            finally:
                if not self.durable:
                    con.execute("PRAGMA synchronous = NORMAL")

    def sync_soon(self) -> int:
        """Commit what is written and have it fsynced off this thread; returns the ticket to ask
        :meth:`synced` about. What :meth:`sync` does, without the wait (an fsync of a second's
        writes took 7-13 ms on a 1M-application state). After a failed fsync the ticket is never
        synced (:meth:`check_synced` says so)."""
        with self._lock:
            if self._syncer is None:
                self._syncer = GroupSync(self.path)
            self._commit_held()
            return self._syncer.committed()

    def check_synced(self) -> None:
        """Raise :class:`duanka.data.wal.SyncFailed` if a :meth:`sync_soon` fsync has failed, or
        SQLite rolled back a group of writes: what was written may not be on disk or held, and a
        writer that answers for it must stop."""
        if self._lost is not None:
            raise SyncFailed(f"{self.path.name}: {self._lost}")
        if self._syncer is not None:
            self._syncer.check()

    def synced(self, ticket: int) -> bool:
        """Whether the writes committed by the :meth:`sync_soon` that gave ``ticket`` are on disk.

        Raises
        ------
        duanka.data.wal.SyncFailed
            Its fsync failed: they may never be.
        """
        if self._syncer is None:
            raise ValueError("no sync_soon was asked of this store")
        return self._syncer.is_durable(ticket)

    def writable(self) -> bool:
        """Whether this store can write now (readiness): it holds the write lock, or can take it."""
        with self._lock:
            try:
                self.check_synced()
            except SyncFailed:
                return False
            if self._con.in_transaction:  # a held transaction holds the file's write lock
                return True
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.execute("ROLLBACK")
            except sqlite3.Error:
                return False
        return True

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
            Rows of :data:`duanka.data.events.APPLICATION_EVENTS` with unique application ids.
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
        table = stored_table(applications)
        if self._horizon > -(2**63):
            table = table.filter(pc.greater_equal(table["ts"], self._horizon))
        loaded = 0
        indexes = self._plan.indexes()
        with self._lock:
            for statement in indexes:
                self._con.execute(f"DROP INDEX IF EXISTS {index_name(statement)}")
            with self._transaction() as con:
                for batch in with_totals(table, self._plan.totals):
                    # listed is looked up per row in the listings held (their primary key): a
                    # store given its listings first is loaded complete, as add_applications would.
                    rows = zip(*(column.to_pylist() for column in batch.columns), strict=True)
                    con.executemany(self._plan.insert_sql(batch.schema.names), rows)
                    loaded += batch.num_rows
                    if progress is not None:
                        progress(loaded)
            for statement in indexes:
                self._con.execute(statement)
            self._con.execute("ANALYZE")
            self._commit_held()  # a bulk load is never held: nothing else could redo it
        return loaded

    def _row(self, event: Mapping[str, object]) -> dict[str, object] | None:
        """The event as the state keeps it; None when it is older than :meth:`prune` left reachable."""
        ts = micros(event["applied_at"])  # type: ignore[arg-type]
        return None if ts < self._horizon else stored_row(event, ts)

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
        rows = [
            {"application_id": application_id, "confirmed_at": micros(at), "source": source}
            for application_id, at, source in labels
        ]
        changed = 0
        with self._lock, self._transaction() as con:
            for row in rows:
                if con.execute(
                    "INSERT INTO labels VALUES (:application_id, :confirmed_at, :source) "
                    "ON CONFLICT (application_id) DO UPDATE SET "
                    "confirmed_at = excluded.confirmed_at, source = excluded.source "
                    "WHERE excluded.confirmed_at < labels.confirmed_at",
                    row,
                ).rowcount:
                    con.execute(
                        f"UPDATE apps SET {MARK_COLUMN[Op.CONFIRMED]} = :confirmed_at "
                        "WHERE application_id = :application_id",
                        row,
                    )
                    changed += 1
        return changed

    def add_listings(self, listings: pa.Table | pd.DataFrame) -> int:
        """Record joint-punishment listings (and removals) in one transaction; idempotent.

        For one listing (person, source, ``listed_at``) the earliest ``expires_at`` received
        wins, as in :mod:`duanka.data.watchlist`: a removal ends a listing, a later expiry never
        extends it, and ``expires_at == listed_at`` withdraws it. The applications of every
        person whose listings changed get their earliest listing again (``apps.listed``).

        Parameters
        ----------
        listings : pyarrow.Table or pandas.DataFrame
            ``applicant_key``, ``source``, ``listed_at`` and ``expires_at`` (tz-aware) of
            :data:`duanka.data.events.WATCHLIST_EVENTS` rows, or of
            :meth:`duanka.data.watchlist.Watchlist.received`; other columns are ignored.

        Returns
        -------
        int
            How many listings changed the state (new, or ending earlier than the one held).
        """
        rows = listing_rows(listings)
        if not rows:
            return 0
        with self._lock, self._transaction() as con:
            con.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming (applicant_key TEXT, source TEXT, "
                "listed_at INTEGER, expires_at INTEGER)"
            )
            con.execute("DELETE FROM incoming")
            con.executemany(
                "INSERT INTO incoming VALUES (:applicant_key, :source, :listed_at, :expires_at)", rows
            )
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
                f"UPDATE apps SET {MARK_COLUMN[Op.LISTED]} = "
                f"({EARLIEST_LISTING.format(key='apps.applicant_key')}) WHERE applicant_key = ?",
                sorted(set(changed)),
            )
            con.execute("DELETE FROM incoming")
        return len(changed)

    def features_for(self, event: Mapping[str, object], names: Sequence[str] = MODEL_FEATURES) -> np.ndarray:
        """Feature values of one application as of its ``applied_at``, without recording it.

        Parameters
        ----------
        event : mapping
            One row of :data:`duanka.data.events.APPLICATION_EVENTS`.
        names : sequence of str
            Which features, in order; :data:`MODEL_FEATURES` by default.

        Returns
        -------
        numpy.ndarray
            float64, one value per name; NaN where undefined.
        """
        t = micros(event["applied_at"])  # type: ignore[arg-type]
        columns = own_columns(event)
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
                f"SELECT ts, {', '.join(COMPARED)} FROM apps INDEXED BY apps_ts ORDER BY ts DESC LIMIT ?",
                (applications,),
            ).fetchall()
            for ts, *keys in rows:
                self._counts(dict(zip(COMPARED, keys, strict=True)), ts + 1)
        return len(rows)

    def _counts(self, event: Mapping[str, object], t: int) -> dict[str, np.ndarray]:
        """Every aggregate's count for ``event`` as of ``t``, by aggregate name."""
        keys = compared_values(event)
        asked = {**parameters(t), **keys}
        execute = self._con.execute
        found: dict[str, float] = {}
        for query in self._plan.queries:
            if any(keys[k] is None for k in query.entity.keys):
                answers: Sequence[float | None] = [np.nan] * len(query.aggregates)
            else:
                answers = execute(query.sql, asked).fetchone()
            found.update(zip((a.name for a in query.aggregates), answers, strict=True))
        for running in self._plan.totals:
            if any(keys[k] is None for k in running.entity.keys):
                found.update(dict.fromkeys((a.name for a in running.aggregates), np.nan))
            else:
                found.update(running.counts(execute, keys, t))
        # The linked group's statistics (features.linked): no row for an empty group, whose
        # statistics are 0 and first_at null.
        group = execute(self._plan.linked_sql, asked)
        row = group.fetchone() or (*(0 for _ in ZERO_STATS), None)
        for (stat, *_), value in zip(group.description, row, strict=True):
            found[_LINKED_COUNT[stat]] = value
        return {
            name: np.array([np.nan if value is None else value], dtype=np.float64)
            for name, value in found.items()
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
            self._commit_held()  # a checkpoint cannot run inside this connection's transaction
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed
