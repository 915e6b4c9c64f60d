"""The decision record: an append-only audit trail, and each application's stored response.

One SQLite file (WAL, ``synchronous=FULL``: a decision acknowledged to the
caller survives a power cut). Three tables:

``decisions``
    One row per scored request item: request id, application id, caller's key
    id, time, model name, version and booster hash, score, band, reason codes,
    latency, whether it replayed a stored response, and which hard rule decided
    (``watchlist``; empty when the model did), and the application's branch and
    time (``branch_id``, ``applied_at``). Triggers refuse UPDATE and DELETE.
    A file made before the ``rule`` column existed gets it on open (empty for
    the rows already there: the model decided them); one made before
    ``branch_id`` and ``applied_at`` gets them, NULL for its rows. Batch
    decisions (``duanka score --record``) are here too, with ``key_id``
    :data:`BATCH_KEY_ID`.
``events``
    Model loads and switches, label feeds: when, who, what. Append-only too.
``responses``
    The response given for each application id, so that a retry gets the same
    answer without scoring or counting twice, and the prepared (pseudonymised)
    application it answered: the redo record of the online state. A batch
    decision's response holds no application (NULL): it came from the event
    store, which the state follows, so there is nothing to redo.
``meta``
    ``state_synced_through``: the last response whose application is known to be
    on disk in the online state too. The state is written without an fsync per
    application (:class:`duanka.serving.scorer.Scorer` syncs it about once a second); on
    start, the applications of later responses are recorded into it again
    (idempotent), so a power cut loses nothing that was answered. Each row is sealed
    (:func:`duanka.serving.chain.meta_seal`): a row whose seal does not match refuses the
    record; a row without one (written before seals) is dropped on open, never trusted, and
    the state redone from every answer.

The three appended tables are chained (:mod:`duanka.serving.chain`). A record that holds any
chain value or seal and a row without a chain value was tampered with: it is refused on open
(:class:`RecordTampered`), never chained again. Only a record with no chain value at all, from
before chains, is chained on open, and that is audited (``chain_started``).

Nothing here holds a raw identifier: application ids, pseudonymised features
and reason texts filled with feature values only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from duanka.data.private import private_file
from duanka.data.wal import FALLBACK_AUTOCHECKPOINT_PAGES, Checkpointer
from duanka.serving.chain import (
    CHAINED,
    DECISION_COLUMNS,
    ChainWriter,
    Head,
    backfill,
    first_unchained,
    is_chained,
    meta_rows,
    meta_seal,
    open_problem,
    selected_columns,
)
from duanka.serving.workbook import write_workbook

TABLES = ("decisions", "events")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "request_id TEXT NOT NULL, application_id TEXT NOT NULL, key_id TEXT NOT NULL, "
    "decided_at TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, "
    "booster_sha256 TEXT NOT NULL, score REAL NOT NULL, band TEXT NOT NULL, reason_codes TEXT NOT NULL, "
    "latency_ms REAL NOT NULL, replayed INTEGER NOT NULL, rule TEXT NOT NULL DEFAULT '', "
    "chain TEXT NOT NULL DEFAULT '', client_request_id TEXT, bundle_sha256 TEXT, branch_id TEXT, "
    "applied_at TEXT)",
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, "
    "kind TEXT NOT NULL, key_id TEXT, request_id TEXT, detail TEXT NOT NULL, chain TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS responses (application_id TEXT PRIMARY KEY, row_digest TEXT NOT NULL, "
    "response TEXT NOT NULL, event TEXT, chain TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL, "
    "seal TEXT NOT NULL DEFAULT '')",
    *(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for table in TABLES
        for verb in ("UPDATE", "DELETE")
    ),
)

# What the case queue reads (duanka.serving.review.cases), so that a page never scans a record of
# millions of decisions: the referred ones (a few percent of rows) and the events by kind.
REFERRED_WHERE = "band IN ('critical', 'high', 'blocked') AND replayed = 0"
CASE_INDEXES = (
    # seq first: the queue reads them in record order, from the index alone
    "CREATE INDEX IF NOT EXISTS decisions_referred ON decisions (seq, application_id, branch_id, applied_at, "
    f"decided_at, score, band, rule, model_version) WHERE {REFERRED_WHERE}",
    "CREATE INDEX IF NOT EXISTS events_kind ON events (kind, seq)",
)

_SYNCED = "state_synced_through"
_IDS_PER_QUERY = 900
_SEALED_UPSERT = (
    "INSERT INTO meta (name, value, seal) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, seal = excluded.seal"
)


class RecordTampered(RuntimeError):
    """The decision record was changed behind the service's back; it is not opened (fail closed).

    Parameters
    ----------
    path : Path
        The record.
    problem : str
        What was found, naming the table and row (:func:`duanka.serving.chain.open_problem`).
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"{path}: {problem}; the service does not open a tampered decision record "
            "(`duanka audit verify` names the first problem)"
        )


def _event_text(event: Mapping[str, object] | None) -> str | None:
    """A prepared application as JSON: its one timestamp as ISO 8601, the rest as they are; None for
    none (a batch decision: its application is the event store's, nothing for the state to redo)."""
    if event is None:
        return None
    return json.dumps({**event, "applied_at": event["applied_at"].isoformat()})  # type: ignore[attr-defined]


def _event_from_text(text: str) -> dict:
    event = json.loads(text)
    event["applied_at"] = datetime.fromisoformat(event["applied_at"])
    return event


@dataclass(frozen=True)
class DecisionRow:
    """One audit line; field order is :data:`DECISION_COLUMNS`."""

    request_id: str
    application_id: str
    key_id: str
    decided_at: str
    model_name: str
    model_version: str
    booster_sha256: str
    score: float
    band: str
    reason_codes: str
    latency_ms: float
    replayed: bool
    rule: str = ""  # the hard rule that decided (serving.rules), empty when the model did
    client_request_id: str | None = None  # the caller's X-Request-ID, beside the server's own
    # the signed bundle (booster, calibrator, band cuts) as a whole: the booster alone does not say
    # which cuts turned the score into this band
    bundle_sha256: str | None = None
    branch_id: str | None = None  # the application's branch
    applied_at: str | None = None  # the application's time, :func:`iso_utc`

    @classmethod
    def of_response(
        cls,
        application_id: str,
        response: Mapping[str, object],
        *,
        request_id: str,
        key_id: str,
        decided_at: str,
        latency_ms: float,
        replayed: bool,
        branch_id: str,
        applied_at: str,
        client_request_id: str | None = None,
    ) -> DecisionRow:
        """The audit line of one answer (:func:`duanka.serving.decision.answer`), as the service and
        ``duanka score --record`` both write it.

        Parameters
        ----------
        application_id : str
            The application answered.
        response : mapping
            The answer: its model, score, band, reasons and rule are audited.
        request_id, key_id, decided_at, latency_ms, replayed, client_request_id
            As :class:`DecisionRow`'s fields.
        branch_id, applied_at : str
            The application's branch and time (:func:`iso_utc`).
        """
        model: dict = response["model"]  # type: ignore[assignment]
        reasons: list[dict] = response["reasons"]  # type: ignore[assignment]
        return cls(
            request_id=request_id,
            application_id=application_id,
            key_id=key_id,
            decided_at=decided_at,
            model_name=model["name"],
            model_version=model["version"],
            booster_sha256=model["booster_sha256"],
            score=float(response["score"]),  # type: ignore[arg-type]
            band=str(response["band"]),
            reason_codes="|".join(r["code"] for r in reasons),
            latency_ms=latency_ms,
            replayed=replayed,
            rule=str(response.get("rule") or ""),
            client_request_id=client_request_id,
            bundle_sha256=model["bundle_sha256"],
            branch_id=branch_id,
            applied_at=applied_at,
        )


BATCH_KEY_ID = "batch"
"""The ``key_id`` of decisions ``duanka score --record`` made: an operator's run, not an API key's
caller (API key ids are hexadecimal, so never this)."""


@dataclass(frozen=True)
class StoredResponse:
    row_digest: str
    response: dict


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def iso_utc(at: datetime) -> str:
    """An aware instant as the record writes times: ISO 8601 in UTC, to the microsecond.

    The service (a prepared application's ``datetime``) and batch scoring (a stored
    ``pandas.Timestamp``) write one application's time as one text.

    Raises
    ------
    ValueError
        ``at`` is naive: its zone would be a guess.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} has no time zone: the decision record holds UTC instants only")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class DecisionLog:
    """The decision record in one SQLite file, used from one thread.

    Each call holds a lock, which the background checkpointer also takes for the
    millisecond it needs to start the log over (:class:`duanka.data.wal.Checkpointer`).

    Parameters
    ----------
    path : Path
        Created with its tables and triggers if new.
    chain_key : bytes
        Keys the hash chain over every appended row and the seals of ``meta``
        (:mod:`duanka.serving.chain`); rows of a record written before chains existed are chained
        on open, and that is audited.
    checkpoint_every_s : float, optional
        Copy the write-ahead log into the database from a background thread this often
        (:class:`duanka.data.wal.Checkpointer`), so that no decision waits for a checkpoint.
        None: SQLite checkpoints in the commit that fills the log.

    Raises
    ------
    RecordTampered
        The record holds a row without a chain value beside chained ones, or a ``meta`` row
        that does not match its seal.
    """

    def __init__(self, path: Path, *, chain_key: bytes, checkpoint_every_s: float | None = None) -> None:
        self.path = Path(path)
        self._con = sqlite3.connect(private_file(self.path), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = FULL")
        if checkpoint_every_s is not None:
            self._con.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_AUTOCHECKPOINT_PAGES}")
        self._checkpointer = (
            None
            if checkpoint_every_s is None
            else Checkpointer(self.path, checkpoint_every_s, writer_lock=self._lock).start()
        )
        for statement in _SCHEMA:
            self._con.execute(statement)
        columns = {row[1] for row in self._con.execute("PRAGMA table_info(decisions)")}
        if "rule" not in columns:  # a log written before hard rules existed
            self._con.execute("ALTER TABLE decisions ADD COLUMN rule TEXT NOT NULL DEFAULT ''")
        if "client_request_id" not in columns:  # before the caller's id was kept apart
            self._con.execute("ALTER TABLE decisions ADD COLUMN client_request_id TEXT")
        if "bundle_sha256" not in columns:  # before each row named the whole bundle it was decided by
            self._con.execute("ALTER TABLE decisions ADD COLUMN bundle_sha256 TEXT")
        for added in ("branch_id", "applied_at"):  # before decisions were listed by branch and date
            if added not in columns:
                self._con.execute(f"ALTER TABLE decisions ADD COLUMN {added} TEXT")
        if "event" not in {row[1] for row in self._con.execute("PRAGMA table_info(responses)")}:
            # written when the state was fsynced per application: its older answers need no redo
            self._con.execute("ALTER TABLE responses ADD COLUMN event TEXT")
        if "seal" not in {row[1] for row in self._con.execute("PRAGMA table_info(meta)")}:
            self._con.execute("ALTER TABLE meta ADD COLUMN seal TEXT NOT NULL DEFAULT ''")
        for statement in CASE_INDEXES:
            self._con.execute(statement)
        self._chain_key = chain_key
        self._chain = self._chained()
        self._insert = (
            f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}, chain) "
            f"VALUES ({', '.join('?' * (len(DECISION_COLUMNS) + 1))})"
        )

    def _chained(self) -> ChainWriter:
        """The chain writer, after refusing a tampered record, chaining one from before chains, and
        dropping the ``meta`` rows written before seals."""
        con = self._con
        for table in CHAINED:
            if "chain" not in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}:
                con.execute(f"ALTER TABLE {table} ADD COLUMN chain TEXT NOT NULL DEFAULT ''")
        problem = open_problem(con, self._chain_key)
        if problem is not None:
            self.close()
            raise RecordTampered(self.path, problem)
        # a chained record is never chained again (open_problem refused it if a row lacks a value)
        counts = None if is_chained(con) or first_unchained(con) is None else self._backfilled()
        self._chain = ChainWriter(con, self._chain_key)
        if counts is not None:
            self.event("chain_started", {"rows_chained_on_open": counts}, key_id=None, request_id=None)
        unsealed = {name: value for name, value, seal in meta_rows(con) if not seal}
        if unsealed:
            # never trusted: a state_synced_through dropped only makes the next start redo more
            con.executemany("DELETE FROM meta WHERE name = ?", [(name,) for name in unsealed])
            self.event("meta_unsealed_dropped", unsealed, key_id=None, request_id=None)
        return self._chain

    def _backfilled(self) -> dict[str, int]:
        """Chain every row of a record from before chains (:func:`duanka.serving.chain.backfill`)."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            # the append-only triggers refuse this one update; it writes nothing but chain values
            for table in TABLES:
                con.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            counts = backfill(con, self._chain_key)
            for statement in _SCHEMA:
                if statement.startswith("CREATE TRIGGER"):
                    con.execute(statement)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return counts

    def head(self) -> Head:
        """Each chained table's row count and last chain value: the anchor to keep elsewhere."""
        with self._lock:
            return self._chain.head()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._con.close()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stored(self, application_id: str) -> StoredResponse | None:
        """The response given earlier for ``application_id``, if any."""
        with self._lock:
            row = self._con.execute(
                "SELECT row_digest, response FROM responses WHERE application_id = ?", (application_id,)
            ).fetchone()
        return None if row is None else StoredResponse(row[0], json.loads(row[1]))

    def answered(self, application_ids: Sequence[str]) -> dict[str, str]:
        """``application_id -> row_digest`` of those of ``application_ids`` already answered."""
        found: dict[str, str] = {}
        ids = list(application_ids)
        with self._lock:
            # SQLite binds at most 999 parameters per statement in older builds
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start : start + _IDS_PER_QUERY]
                found.update(
                    self._con.execute(
                        "SELECT application_id, row_digest FROM responses "
                        f"WHERE application_id IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
        return found

    def record(
        self,
        decisions: Iterable[DecisionRow],
        responses: Mapping[str, tuple[str, dict, Mapping[str, object] | None]] | None = None,
        *,
        state_synced_through: int | None = None,
    ) -> int | None:
        """Append audit rows and store new responses in one durable transaction.

        Parameters
        ----------
        decisions : iterable of DecisionRow
            Every item of the request, replays included.
        responses : mapping, optional
            ``application_id -> (row_digest, response, prepared event)`` for the newly scored items.
            The event is None for a batch decision (``duanka score --record``): its application
            came from the event store, so the online state has it already and never redoes it
            (:meth:`unsynced_events` passes over it).
        state_synced_through : int, optional
            A response position (as returned here) whose applications, and all before, are now
            synced in the online state.

        Returns
        -------
        int or None
            The position of the last response stored so far (None while there is none).
        """
        con = self._con
        rows = [tuple(int(v) if isinstance(v, bool) else v for v in astuple(d)) for d in decisions]
        answered = [
            (a, digest, json.dumps(r), _event_text(event))
            for a, (digest, r, event) in (responses or {}).items()
        ]
        with self._lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                chain = self._chain.next_values("decisions", rows)
                con.executemany(self._insert, ((*row, c) for row, c in zip(rows, chain, strict=True)))
                if answered:
                    chain = self._chain.next_values("responses", answered)
                    con.executemany(
                        "INSERT INTO responses (application_id, row_digest, response, event, chain) "
                        "VALUES (?, ?, ?, ?, ?)",
                        ((*row, c) for row, c in zip(answered, chain, strict=True)),
                    )
                if state_synced_through is not None:
                    self._note_synced(state_synced_through)
                last = con.execute("SELECT MAX(rowid) FROM responses").fetchone()[0]
                con.execute("COMMIT")
            except BaseException:
                self._chain.rollback()
                con.execute("ROLLBACK")
                raise
            self._chain.commit()
        return last

    def scores_since(self, booster_sha256: str, since: datetime) -> tuple[list[datetime], list[float]]:
        """When, and what, ``booster_sha256`` scored from ``since`` on, oldest first: the service's own
        decisions, replays and batch decisions (:data:`BATCH_KEY_ID`) excluded.

        A batch run decides a past period's applications at once: counted on the day of the run,
        its scores would cut that day's bands from openings that were not that day's.
        """
        with self._lock:
            rows = self._con.execute(
                "SELECT decided_at, score FROM decisions WHERE booster_sha256 = ? AND replayed = 0 "
                "AND key_id != ? AND decided_at >= ? ORDER BY seq",
                (booster_sha256, BATCH_KEY_ID, since.astimezone(UTC).isoformat(timespec="microseconds")),
            ).fetchall()
        return [datetime.fromisoformat(at) for at, _ in rows], [float(score) for _, score in rows]

    def state_synced(self, through: int) -> None:
        """Note that the applications of responses up to ``through`` are synced in the online state."""
        with self._lock:
            self._note_synced(through)

    def _note_synced(self, through: int) -> None:
        """Raise ``state_synced_through`` to ``through`` (never lower it), sealed; under the lock."""
        (current,) = self._con.execute("SELECT MAX(value) FROM meta WHERE name = ?", (_SYNCED,)).fetchone()
        value = through if current is None else max(int(current), through)
        self._con.execute(_SEALED_UPSERT, (_SYNCED, value, meta_seal(self._chain_key, _SYNCED, value)))

    def unsynced_events(self) -> list[dict]:
        """The prepared applications answered after the state was last known synced, oldest first.

        Recording them into the state again is what makes it whole after a power cut; after a
        clean stop there are none.
        """
        with self._lock:
            rows = self._con.execute(
                "SELECT event FROM responses WHERE rowid > COALESCE("
                "(SELECT value FROM meta WHERE name = ?), 0) AND event IS NOT NULL ORDER BY rowid",
                (_SYNCED,),
            ).fetchall()
        return [_event_from_text(text) for (text,) in rows]

    def event(
        self, kind: str, detail: Mapping[str, object], *, key_id: str | None, request_id: str | None
    ) -> None:
        """Append one non-decision event (model load or switch, label feed)."""
        row = (utc_now(), kind, key_id, request_id, json.dumps(detail, sort_keys=True))
        with self._lock:
            (chain,) = self._chain.next_values("events", [row])
            try:
                self._con.execute(
                    "INSERT INTO events (at, kind, key_id, request_id, detail, chain) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (*row, chain),
                )
            except BaseException:
                self._chain.rollback()
                raise
            self._chain.commit()

    def writable(self) -> bool:
        """Whether a write lock can be taken now (readiness)."""
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.execute("ROLLBACK")
            except sqlite3.Error:
                return False
        return True


_TEXT_SEPARATOR = " | "


def _reason_texts(con: sqlite3.Connection) -> pd.DataFrame:
    """``application_id, reasons_zh, reasons_en``: the reason texts each decision's answer gave."""
    rows = []
    for application_id, response in con.execute("SELECT application_id, response FROM responses"):
        reasons = json.loads(response).get("reasons", [])
        rows.append(
            (
                application_id,
                _TEXT_SEPARATOR.join(r["text_zh"] for r in reasons),
                _TEXT_SEPARATOR.join(r["text_en"] for r in reasons),
            )
        )
    return pd.DataFrame(rows, columns=["application_id", "reasons_zh", "reasons_en"])


def export(path: Path, out: Path, table: str = "decisions", *, excel: bool = False) -> int:
    """Write one audit table to CSV or Parquet (by ``out``'s suffix), oldest first, with each row's
    chain value (:mod:`duanka.serving.chain`) and, for decisions, the reason texts the answer gave.

    Returns
    -------
    int
        Rows written.
    """
    if table not in TABLES:
        raise ValueError(f"unknown audit table {table!r}; one of {', '.join(TABLES)}")
    suffix = ".xlsx" if excel else Path(out).suffix.lower()
    if suffix not in (".csv", ".parquet", ".xlsx"):
        raise ValueError(f"{out}: write the audit export as .csv, .parquet or .xlsx")
    # read-only: an export must never take the writer's lock or create a file
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        # named columns: a record that gained a column on open holds them in another order
        # a record not opened since a column was added reads it as NULL (nothing is added read-only)
        order, _ = CHAINED[table]
        frame = pd.read_sql_query(
            f"SELECT {order}, {selected_columns(con, table)}, chain FROM {table} ORDER BY {order}", con
        )
        if table == "decisions":
            frame = frame.merge(_reason_texts(con), on="application_id", how="left")
    finally:
        con.close()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".xlsx":
        write_workbook({table: frame}, Path(out).with_suffix(".xlsx"))
    elif suffix == ".csv":
        frame.to_csv(out, index=False, encoding="utf-8")
    else:
        frame.to_parquet(out, index=False)
    return len(frame)
