"""Cases: the referred decisions of the decision record, their dispositions, and the rings they form.

A case is an application the record decided ``critical`` or ``high`` (referred to the anti-fraud
team) or refused by a hard rule (``blocked``, listed apart). Its status is its latest disposition
(``case_disposed`` events of the record), ``open`` without one. Open cases that share an escort,
intermediary, address building, phone or device (the model's link keys,
:data:`duanka.features.registry.LINK_KEYS`) are one group: one ring is one piece of work.

Everything here only reads: the decision record and the online state through read-only
connections, so a page never waits for the scoring thread nor blocks it. The cases and groups
are cached until the record grows.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from duanka.features.registry import LINK_KEYS
from duanka.serving.audit import REFERRED_WHERE

REFERRED_BANDS = ("critical", "high")
BLOCKED = "blocked"
STATUSES = ("open", "confirmed", "cleared", "escalated")
VERBS = {"confirm": "confirmed", "clear": "cleared", "escalate": "escalated"}
"""A disposition's form verb and the status it gives the case."""
DISPOSED = "case_disposed"
ORDERS = ("newest", "score")
PAGE_SIZE = 50


@dataclass(frozen=True)
class Case:
    """One referred decision as the queue lists it."""

    application_id: str
    branch_id: str | None
    applied_at: str | None
    decided_at: str
    score: float
    band: str
    rule: str
    model_version: str
    status: str = "open"

    @property
    def blocked(self) -> bool:
        return self.band == BLOCKED


@dataclass(frozen=True)
class Disposition:
    """One disposition as recorded: who, when, what, and why."""

    application_id: str
    status: str
    at: str
    key_id: str
    note: str
    label: str | None


@dataclass(frozen=True)
class QueueFilter:
    """What the reviewer asked the queue for; ``band`` None means every referred band."""

    band: str | None = None
    branch: str | None = None
    status: str = "open"
    date_from: date | None = None
    date_to: date | None = None
    order: str = "newest"
    page: int = 1

    def keeps(self, case: Case) -> bool:
        if self.band is None and case.blocked:
            return False  # blocked-by-rule cases are listed apart
        if self.band is not None and case.band != self.band:
            return False
        if self.branch is not None and case.branch_id != self.branch:
            return False
        if self.status != "any" and case.status != self.status:
            return False
        day = (case.applied_at or case.decided_at)[:10]
        if self.date_from is not None and day < self.date_from.isoformat():
            return False
        return not (self.date_to is not None and day > self.date_to.isoformat())


@dataclass(frozen=True)
class Group:
    """Cases of one ring on the queue: the lead (highest score) and the others."""

    cases: tuple[Case, ...]

    @property
    def lead(self) -> Case:
        return self.cases[0]

    @property
    def newest(self) -> str:
        return max(c.applied_at or c.decided_at for c in self.cases)


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue: its groups, how many cases and groups matched, and the blocked count."""

    groups: tuple[Group, ...]
    matched_cases: int
    matched_groups: int
    pages: int
    blocked_open: int
    branches: tuple[str, ...]
    reasons: dict[str, list[dict]] = field(default_factory=dict)


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection: a page never writes, never creates a file, never takes the writer's lock."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        yield con
    finally:
        con.close()


def _ids_json(ids: Iterable[str]) -> str:
    # one parameter however many ids: SQLite's json_each instead of thousands of placeholders
    return json.dumps(list(ids))


class CaseBook:
    """The cases of one decision record, with the online state that links them.

    Parameters
    ----------
    decisions : Path
        The decision record (:class:`duanka.serving.audit.DecisionLog`'s file).
    online : Path
        The online state (its ``apps`` table holds each application's link keys).
    """

    def __init__(self, decisions: Path, online: Path) -> None:
        self.decisions = Path(decisions)
        self.online = Path(online)
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], list[Case], dict[str, int]] | None = None

    def _version(self, con: sqlite3.Connection) -> tuple[int, int]:
        (decisions,) = con.execute("SELECT COALESCE(MAX(seq), 0) FROM decisions").fetchone()
        # dispositions only: every page view is an event too, and must not empty the cache
        (events,) = con.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE kind = ?", (DISPOSED,)
        ).fetchone()
        return int(decisions), int(events)

    def _load(self) -> tuple[list[Case], dict[str, int]]:
        """Every case with its status, and each open case's group number (cached per record version)."""
        with read_only(self.decisions) as con:
            version = self._version(con)
            with self._lock:
                if self._cached is not None and self._cached[0] == version:
                    return self._cached[1], self._cached[2]
            statuses = {d.application_id: d.status for d in self._dispositions(con)}
            # the partial index's own condition, literally: SQLite uses it only then
            rows = con.execute(
                "SELECT application_id, branch_id, applied_at, decided_at, score, band, rule, model_version "
                f"FROM decisions WHERE {REFERRED_WHERE} ORDER BY seq"
            ).fetchall()
        latest = {row[0]: row for row in rows}  # a later decision of one application supersedes
        cases = [
            Case(*row[:4], float(row[4]), *row[5:], status=statuses.get(row[0], "open"))
            for row in latest.values()
        ]
        groups = self._groups([c.application_id for c in cases if c.status == "open" and not c.blocked])
        with self._lock:
            self._cached = (version, cases, groups)
        return cases, groups

    def stale(self) -> bool:
        """Whether a decision or disposition arrived since the cases were last read (or never were).

        The page then has the scoring thread commit the online state first: the rings are read
        from it, and an application scored within the last second may not be committed yet.
        """
        with read_only(self.decisions) as con:
            version = self._version(con)
        with self._lock:
            return self._cached is None or self._cached[0] != version

    def _groups(self, open_ids: Sequence[str]) -> dict[str, int]:
        """Open cases joined by any shared link key (union-find): application id -> group number."""
        parent = {a: a for a in open_ids}

        def root(a: str) -> str:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        if open_ids and self.online.exists():
            first_holder: dict[tuple[int, str], str] = {}
            with read_only(self.online) as con:
                rows = con.execute(
                    f"SELECT application_id, {', '.join(LINK_KEYS)} FROM apps "
                    "WHERE application_id IN (SELECT value FROM json_each(?))",
                    (_ids_json(open_ids),),
                )
                for application_id, *keys in rows:
                    for kind, value in enumerate(keys):
                        if value is None:
                            continue
                        other = first_holder.setdefault((kind, value), application_id)
                        if other != application_id:
                            parent[root(application_id)] = root(other)
        numbers: dict[str, int] = {}
        return {a: numbers.setdefault(root(a), len(numbers)) for a in open_ids}

    def visible(self, branches: tuple[str, ...] | None) -> list[Case]:
        """The cases a reviewer of ``branches`` (None: every branch) sees."""
        cases, _ = self._load()
        return [c for c in cases if branches is None or c.branch_id in branches]

    def queue(self, branches: tuple[str, ...] | None, wanted: QueueFilter) -> QueuePage:
        """One page of the queue: matching cases, ring members together, newest or highest first."""
        cases, numbers = self._load()
        mine = [c for c in cases if branches is None or c.branch_id in branches]
        matched = [c for c in mine if wanted.keeps(c)]
        by_group: dict[object, list[Case]] = {}
        for case in matched:
            number = numbers.get(case.application_id)
            by_group.setdefault(case.application_id if number is None else number, []).append(case)
        groups = [Group(tuple(sorted(g, key=lambda c: -c.score))) for g in by_group.values()]
        if wanted.order == "score":
            groups.sort(key=lambda g: (-g.lead.score, g.lead.application_id))
        else:
            groups.sort(key=lambda g: (g.newest, g.lead.application_id), reverse=True)
        pages = max(1, -(-len(groups) // PAGE_SIZE))
        page = min(max(wanted.page, 1), pages)
        shown = tuple(groups[(page - 1) * PAGE_SIZE : page * PAGE_SIZE])
        return QueuePage(
            groups=shown,
            matched_cases=len(matched),
            matched_groups=len(groups),
            pages=pages,
            blocked_open=sum(c.blocked and c.status == "open" for c in mine),
            branches=tuple(sorted({c.branch_id for c in mine if c.branch_id is not None})),
            reasons=self.reasons([c.application_id for g in shown for c in g.cases]),
        )

    def reasons(self, application_ids: Sequence[str]) -> dict[str, list[dict]]:
        """The reasons each answer gave (code, texts, feature and its value), by application id."""
        if not application_ids:
            return {}
        with read_only(self.decisions) as con:
            rows = con.execute(
                "SELECT application_id, response FROM responses "
                "WHERE application_id IN (SELECT value FROM json_each(?))",
                (_ids_json(application_ids),),
            ).fetchall()
        return {a: json.loads(r).get("reasons", []) for a, r in rows}

    def case(self, application_id: str) -> Case | None:
        """The case of an application, or None when the record referred no such application."""
        cases, _ = self._load()
        return next((c for c in cases if c.application_id == application_id), None)

    def response(self, application_id: str) -> dict | None:
        """The answer given for the application, as stored with its decision."""
        with read_only(self.decisions) as con:
            row = con.execute(
                "SELECT response FROM responses WHERE application_id = ?", (application_id,)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def group_of(self, case: Case, branches: tuple[str, ...] | None) -> list[Case]:
        """The open cases of the ring ``case`` belongs to that ``branches`` may see, ``case`` first."""
        cases, numbers = self._load()
        number = numbers.get(case.application_id)
        if number is None:
            return [case]
        ring = [
            c
            for c in cases
            if numbers.get(c.application_id) == number
            and c.application_id != case.application_id
            and (branches is None or c.branch_id in branches)
        ]
        return [case, *sorted(ring, key=lambda c: -c.score)]

    def history(self, application_id: str) -> list[Disposition]:
        """Every disposition of the application, oldest first."""
        with read_only(self.decisions) as con:
            return [d for d in self._dispositions(con, application_id) if d.application_id == application_id]

    def bands_and_statuses(self, application_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """The latest band the record gave each application, and each one's disposition status."""
        with read_only(self.decisions) as con:
            bands = dict(
                con.execute(
                    "SELECT application_id, band FROM decisions WHERE replayed = 0 "
                    "AND application_id IN (SELECT value FROM json_each(?)) ORDER BY seq",
                    (_ids_json(application_ids),),
                ).fetchall()
            )
            statuses = {d.application_id: d.status for d in self._dispositions(con)}
        return bands, {a: statuses[a] for a in application_ids if a in statuses}

    def _dispositions(self, con: sqlite3.Connection, application_id: str | None = None) -> list[Disposition]:
        where = "" if application_id is None else " AND json_extract(detail, '$.application_id') = ?"
        rows = con.execute(
            f"SELECT at, key_id, detail FROM events WHERE kind = ?{where} ORDER BY seq",
            (DISPOSED,) if application_id is None else (DISPOSED, application_id),
        ).fetchall()
        out = []
        for at, key_id, text in rows:
            detail = json.loads(text)
            out.append(
                Disposition(
                    detail["application_id"],
                    detail["status"],
                    at,
                    key_id or "",
                    detail.get("note", ""),
                    detail.get("label"),
                )
            )
        return out
