"""The linked group of a case: the applications and keys the case page draws.

:func:`linked_group` walks the online state (its ``apps`` table, read only) the way the model's
linked-group features do (:mod:`duanka.features.linked`): from the case's application over the
values of :data:`~duanka.features.registry.LINK_KEYS` it shares with others, two hops, plus one
hop over the case's own phone number block (a block is a weaker link: the applications found
only through it are not walked further). The picture differs from the features where a
reviewer needs it to: its window runs :data:`~duanka.features.registry.LINK_WINDOW_DAYS` either
side of the case (what came after the decision is shown, apart), and a key keeps all of its
applications in the window (no ``LINK_FANOUT``), up to ``max_applications`` in all: the case's
own, then the others nearest in time to it. :mod:`duanka.serving.review.graph` draws it.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from duanka.features.registry import LINK_KEYS, LINK_WINDOW_DAYS
from duanka.features.values import DAY_US

BLOCK_KEY = "phone_block_key"
"""The key walked one hop only, and only the case's own value."""
KEY_LABELS: dict[str, str] = {
    "escort_key": "escort",
    "intermediary_key": "intermediary",
    "address_key": "address building",
    "phone_key": "phone",
    BLOCK_KEY: "phone block",
    "device_key": "device",
}
"""The human label of each key column a group's keys come from."""
SHORT_CHARS = 8
"""How much of a pseudonym a key node shows."""
Confirmation = Literal["confirmed", "confirmed since"]
Listing = Literal["listed", "listed since"]

_KEYS = (*LINK_KEYS, BLOCK_KEY)
_COLUMNS = ("application_id", "ts", "branch_id", *_KEYS, "conf", "listed")
_SELECT = ", ".join(_COLUMNS)
_WINDOW_US = LINK_WINDOW_DAYS * DAY_US
_IN_CHUNK = 500  # values per ``IN (...)`` list: far under SQLite's bound on parameters


class _Row(NamedTuple):
    application_id: str
    ts: int
    branch_id: str | None
    escort_key: str | None
    address_key: str | None
    phone_key: str | None
    device_key: str | None
    intermediary_key: str | None
    phone_block_key: str | None
    conf: int | None
    listed: int | None


assert _Row._fields == _COLUMNS, "the row's fields follow the SELECT"


@dataclass(frozen=True, slots=True)
class ApplicationNode:
    """One application of the group, as the decision saw it and as it stands now.

    Attributes
    ----------
    application_id : str
        The application.
    ts : int
        When it was made, microseconds since the Unix epoch (UTC).
    branch_id : str or None
        Its branch.
    hop : int
        0 for the case's own application, 1 for one sharing a key with it, 2 for one sharing
        a key with a hop-1 application.
    known : bool
        Whether it was in the state when the decision was made (``ts <= known_at_us``); the
        others arrived since.
    confirmed : {"confirmed", "confirmed since"} or None
        Confirmed a mule at or before the decision, after it, or never.
    listed : {"listed", "listed since"} or None
        Its applicant on the watchlist at or before the decision, after it, or never.
    """

    application_id: str
    ts: int
    branch_id: str | None
    hop: int
    known: bool
    confirmed: Confirmation | None
    listed: Listing | None

    @property
    def is_case(self) -> bool:
        """Whether this is the case's own application."""
        return self.hop == 0


@dataclass(frozen=True, slots=True)
class KeyNode:
    """A link key shared in the group.

    Attributes
    ----------
    kind : str
        Its column in ``apps`` (a key of :data:`KEY_LABELS`).
    pseudonym : str
        The full pseudonym: an internal id, never rendered (:attr:`short` is).
    """

    kind: str
    pseudonym: str

    @property
    def label(self) -> str:
        """The kind, in words (``"address building"``)."""
        return KEY_LABELS[self.kind]

    @property
    def short(self) -> str:
        """The pseudonym's first :data:`SHORT_CHARS` characters: what is displayed."""
        return self.pseudonym[:SHORT_CHARS]


@dataclass(frozen=True, slots=True)
class LinkedGroup:
    """An application's linked group: applications, the keys they share, and who shares what.

    Attributes
    ----------
    case_id : str
        The case's application.
    known_at_us : int
        When the decision was made (microseconds): what ``known``, ``confirmed`` and ``listed``
        are relative to.
    applications : tuple of ApplicationNode
        The case's own first, then the others nearest in time to it first.
    keys : tuple of KeyNode
        The keys drawn: every key of the case's application, and every other key that at
        least two of :attr:`applications` share.
    edges : tuple of (str, KeyNode)
        ``(application_id, key)``: the application has that key. Both ends are in the group.
    left_out : int
        Applications found but not kept (``max_applications``).
    left_out_exact : bool
        Whether :attr:`left_out` counts all of them. When the case's direct links alone fill
        the group, the second hop is walked only from the direct links that were kept (the
        others could not bring in a kept application), and :attr:`left_out` is then a floor.
    """

    case_id: str
    known_at_us: int
    applications: tuple[ApplicationNode, ...]
    keys: tuple[KeyNode, ...]
    edges: tuple[tuple[str, KeyNode], ...]
    left_out: int
    left_out_exact: bool


def _fetch(con: sqlite3.Connection, key: str, values: Sequence[str], lo: int, hi: int) -> Iterator[_Row]:
    """The applications with ``lo <= ts <= hi`` whose ``key`` is one of ``values``."""
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        # ``key`` is a column name of ours (never input); the values are parameters. The
        # IS NOT NULL lets SQLite read the partial index on the key.
        sql = (
            f"SELECT {_SELECT} FROM apps WHERE {key} IN ({marks}) AND {key} IS NOT NULL "
            "AND ts BETWEEN ? AND ?"
        )
        for row in con.execute(sql, (*chunk, lo, hi)):
            yield _Row(*row)


def linked_group(
    con: sqlite3.Connection, application_id: str, *, known_at_us: int, max_applications: int = 200
) -> LinkedGroup:
    """The linked group of ``application_id`` in the online state, for the case page.

    Hop 1 takes the applications sharing one of the case application's
    :data:`~duanka.features.registry.LINK_KEYS` or its phone number block; hop 2 those sharing a
    link key (not a block) with a hop-1 application found through a link key. Either hop takes
    only applications made within :data:`~duanka.features.registry.LINK_WINDOW_DAYS` before the
    case's up to as long after it. One statement per key kind and hop (its values in an
    ``IN`` list), reading the key indexes; nothing is written.

    Parameters
    ----------
    con : sqlite3.Connection
        The online state (any connection that can read its ``apps`` table; read only is enough).
    application_id : str
        The case's application.
    known_at_us : int
        When the decision was made (microseconds since the Unix epoch): applications made
        later "arrived since", confirmations and listings later are "since".
    max_applications : int, default 200
        The most applications kept: the case's own, then the others nearest in time to it, each
        linked to one already kept (no application is kept without the one that links it to the
        case).

    Returns
    -------
    LinkedGroup
        The applications kept, the keys drawn and the edges between them, and how many
        applications were left out.

    Raises
    ------
    LookupError
        The state holds no such application.
    ValueError
        ``max_applications`` is below 1.
    """
    if max_applications < 1:
        raise ValueError(f"max_applications must be at least 1, not {max_applications}")
    found = con.execute(f"SELECT {_SELECT} FROM apps WHERE application_id = ?", (application_id,)).fetchone()
    if found is None:
        raise LookupError(f"no application {application_id!r} in the online state")
    case = _Row(*found)
    lo, hi = case.ts - _WINDOW_US, case.ts + _WINDOW_US
    rows: dict[str, _Row] = {case.application_id: case}
    hop1: dict[str, bool] = {}  # hop-1 application -> found through a link key (walked on)
    for key in _KEYS:
        value = getattr(case, key)
        if value is None:
            continue
        for row in _fetch(con, key, [value], lo, hi):
            if row.application_id == case.application_id:
                continue
            rows[row.application_id] = row
            hop1[row.application_id] = hop1.get(row.application_id, False) or key != BLOCK_KEY

    def nearness(row: _Row) -> tuple[int, int, str]:
        return abs(row.ts - case.ts), row.ts, row.application_id

    # Only the nearest hop-1 applications can be kept (hop 1 is taken nearest first whatever
    # hop 2 holds), so only their hop-2 applications can be: walk from those alone.
    room = max_applications - 1
    ranked = sorted((rows[a] for a in hop1), key=nearness)
    walked = [row for row in ranked[:room] if hop1[row.application_id]]
    children: dict[str, set[str]] = {}
    for key in LINK_KEYS:
        holders: dict[str, list[str]] = {}
        for row in walked:
            value = getattr(row, key)
            if value is not None and value != getattr(case, key):
                holders.setdefault(value, []).append(row.application_id)
        if not holders:
            continue
        for row in _fetch(con, key, sorted(holders), lo, hi):
            member = row.application_id
            if member == case.application_id or member in hop1:
                continue
            rows[member] = row
            for parent in holders[getattr(row, key)]:
                children.setdefault(parent, set()).add(member)

    kept = _keep(case, rows, ranked, children, room, nearness)
    kept[1:] = sorted(kept[1:], key=lambda a: nearness(rows[a]))
    applications = tuple(
        _node(rows[a], 0 if i == 0 else 1 if a in hop1 else 2, known_at_us) for i, a in enumerate(kept)
    )
    keys, edges = _keys_and_edges(case, [rows[a] for a in kept])
    return LinkedGroup(
        case_id=case.application_id,
        known_at_us=known_at_us,
        applications=applications,
        keys=keys,
        edges=edges,
        left_out=len(rows) - len(kept),
        left_out_exact=len(ranked) <= room,
    )


def _keep(
    case: _Row,
    rows: Mapping[str, _Row],
    hop1: Sequence[_Row],
    children: Mapping[str, set[str]],
    room: int,
    nearness: Callable[[_Row], tuple[int, int, str]],
) -> list[str]:
    """The case, then up to ``room`` others nearest in time first, each linked to one kept before."""
    kept = [case.application_id]
    taken = {case.application_id}
    frontier = [(nearness(row), row.application_id) for row in hop1]
    heapq.heapify(frontier)
    while frontier and len(kept) <= room:
        _, member = heapq.heappop(frontier)
        if member in taken:
            continue
        kept.append(member)
        taken.add(member)
        for child in children.get(member, ()):
            if child not in taken:
                heapq.heappush(frontier, (nearness(rows[child]), child))
    return kept


def _node(row: _Row, hop: int, known_at_us: int) -> ApplicationNode:
    confirmed: Confirmation | None = None
    if row.conf is not None:
        confirmed = "confirmed" if row.conf <= known_at_us else "confirmed since"
    listed: Listing | None = None
    if row.listed is not None:
        listed = "listed" if row.listed <= known_at_us else "listed since"
    return ApplicationNode(
        application_id=row.application_id,
        ts=row.ts,
        branch_id=row.branch_id,
        hop=hop,
        known=row.ts <= known_at_us,
        confirmed=confirmed,
        listed=listed,
    )


def _keys_and_edges(
    case: _Row, kept: Sequence[_Row]
) -> tuple[tuple[KeyNode, ...], tuple[tuple[str, KeyNode], ...]]:
    """The keys to draw (the case's, and others shared by two kept applications) and their edges."""
    members: dict[KeyNode, list[str]] = {}
    for row in kept:
        for key in LINK_KEYS:
            value = getattr(row, key)
            if value is not None:
                members.setdefault(KeyNode(key, value), []).append(row.application_id)
        if case.phone_block_key is not None and row.phone_block_key == case.phone_block_key:
            members.setdefault(KeyNode(BLOCK_KEY, case.phone_block_key), []).append(row.application_id)
    order = {kind: i for i, kind in enumerate(_KEYS)}
    drawn = sorted(
        (key for key, held in members.items() if len(held) >= 2 or held[0] == case.application_id),
        key=lambda key: (order[key.kind], -len(members[key]), key.pseudonym),
    )
    edges = tuple((member, key) for key in drawn for member in members[key])
    return tuple(drawn), edges
