"""The case page's picture of an application's linked group: what it holds, and its SVG.

:func:`linked_group` walks the online state (its ``apps`` table, read only) the way the model's
linked-group features do (:mod:`duanka.features.linked`): from the case's application over the
values of :data:`~duanka.features.registry.LINK_KEYS` it shares with others, two hops, plus one
hop over the case's own phone number block (a block is a weaker link: the applications found
only through it are not walked further). The picture differs from the features where a
reviewer needs it to: its window runs :data:`~duanka.features.registry.LINK_WINDOW_DAYS` either
side of the case (what came after the decision is shown, apart), and a key keeps all of its
applications in the window (no ``LINK_FANOUT``), up to ``max_applications`` in all: the case's
own, then the others nearest in time to it.

:func:`render_svg` lays the group out (networkx's spring layout, seeded: the same group gives the
same picture) and draws it as one self-contained inline SVG: no script, no external reference,
every value escaped, and no full pseudonym (a key shows its kind and the first
:data:`SHORT_CHARS` characters of its pseudonym).
"""

from __future__ import annotations

import heapq
import math
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import networkx as nx
import numpy as np

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
BAND_COLOURS: dict[str, str] = {
    "critical": "#b2182b",
    "high": "#ef8a62",
    "medium": "#fddbc7",
    "low": "#d1e5f0",
}
"""An application's fill by band; any other band, or none, is :data:`UNKNOWN_COLOUR`."""
UNKNOWN_COLOUR = "#cccccc"
DISPOSITION_RINGS: dict[str, tuple[str, float]] = {
    "confirmed": ("#40004b", 3.0),
    "cleared": ("#1b7837", 3.0),
    "escalated": ("#e08214", 3.0),
    "open": ("#4d4d4d", 1.0),
}
"""An application's outline (colour, width) by disposition; any other, or none, is ``open``."""

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


# ---------------------------------------------------------------------------------------- drawing

_WIDTH, _GRAPH_HEIGHT, _LEGEND_HEIGHT = 960, 640, 96
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_Y = 24, 120, 28  # room on the right for key labels
_RADIUS, _CASE_RADIUS, _KEY_HALF = 7.0, 12.0, 4.5
_LAYOUT_ITERATIONS = 25
_FISHEYE = 0.6  # the power applied to each node's distance from the middle
_SPREAD = 2.0  # the spring length, times networkx's default (1/sqrt(nodes))
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: object) -> str:
    """``value`` as XML character data (characters XML cannot hold become U+FFFD)."""
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _attr(value: object) -> str:
    """``value`` as a quoted XML attribute value."""
    return quoteattr(_NOT_XML.sub("\ufffd", str(value)))


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1e6, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _band_colour(band: str | None) -> str:
    return BAND_COLOURS.get(band or "", UNKNOWN_COLOUR)


def _disposition(value: str | None) -> str:
    return value if value in DISPOSITION_RINGS else "open"


def _layout(group: LinkedGroup) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Positions in the SVG's coordinates: one per application, one per key.

    Spring layout from a seeded start (the case in the middle, hop 1 around it, hop 2 outside,
    each key among its applications), so a few dozen iterations settle it.
    """
    n_apps, n_keys = len(group.applications), len(group.keys)
    graph = nx.Graph()
    graph.add_nodes_from(range(n_apps + n_keys))
    index = {node.application_id: i for i, node in enumerate(group.applications)}
    key_index = {key: n_apps + j for j, key in enumerate(group.keys)}
    graph.add_edges_from((index[a], key_index[k]) for a, k in group.edges)
    start: dict[int, np.ndarray] = {}
    rings = {1: 0.45, 2: 0.9}
    for i, node in enumerate(group.applications):
        if node.hop == 0:
            start[i] = np.zeros(2)
        else:
            angle = 2 * math.pi * ((i * 0.618034) % 1.0)  # golden-ratio spread, deterministic
            start[i] = rings[node.hop] * np.array([math.cos(angle), math.sin(angle)])
    held: dict[int, list[int]] = {}
    for a, k in group.edges:
        held.setdefault(key_index[k], []).append(index[a])
    for j in range(n_keys):
        around = np.mean([start[i] for i in held.get(n_apps + j, [0])], axis=0)
        angle = 2 * math.pi * ((j * 0.381966) % 1.0)
        start[n_apps + j] = around + 0.08 * np.array([math.cos(angle), math.sin(angle)])
    if len(graph) > 1:
        pos = nx.spring_layout(
            graph,
            k=_SPREAD / math.sqrt(len(graph)),
            pos=start,
            seed=0,
            iterations=_LAYOUT_ITERATIONS,
            method="force",
        )
    else:
        pos = start
    points = np.array([pos[i] for i in range(n_apps + n_keys)], dtype=float).reshape(-1, 2)
    # A fish-eye about the middle: the few far leaves stop squeezing the busy core into a corner.
    offset = points - points.mean(axis=0)
    reach = np.hypot(offset[:, 0], offset[:, 1])
    if reach.max() > 1e-9:
        factor = np.ones_like(reach)
        np.power(reach / reach.max(), _FISHEYE - 1, out=factor, where=reach > 1e-9)
        points = offset * factor[:, None]
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high - low > 1e-9, high - low, 1.0)
    inner = np.array([_WIDTH - _MARGIN_LEFT - _MARGIN_RIGHT, _GRAPH_HEIGHT - 2 * _MARGIN_Y], dtype=float)
    # a small group keeps to the middle rather than strewn over the whole picture
    used = inner * min(1.0, 0.3 + math.sqrt(len(points)) / 16)
    scaled = np.where(high - low > 1e-9, (points - low) / span, 0.5) * used
    scaled += np.array([_MARGIN_LEFT, _MARGIN_Y]) + (inner - used) / 2
    xy = [(float(x), float(y)) for x, y in scaled]
    return xy[:n_apps], xy[n_apps:]


def _cross(x: float, y: float, half: float, colour: str) -> str:
    return (
        f'<path d="M{x - half:.1f} {y - half:.1f}L{x + half:.1f} {y + half:.1f}'
        f'M{x - half:.1f} {y + half:.1f}L{x + half:.1f} {y - half:.1f}" '
        f'stroke="{colour}" stroke-width="1.6" fill="none"/>'
    )


def _badge(x: float, y: float, mark: str, since: bool) -> str:
    """A small round badge: filled dark at or before the decision, hollow for "since"."""
    fill, ink = ("#ffffff", "#111111") if since else ("#111111", "#ffffff")
    parts = [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}" stroke="#111111" stroke-width="1"/>']
    if mark == "x":
        parts.append(_cross(x, y, 2.3, ink))
    else:
        parts.append(
            f'<text x="{x:.1f}" y="{y + 2.6:.1f}" font-size="7.5" font-weight="bold" '
            f'text-anchor="middle" fill="{ink}">{_text(mark)}</text>'
        )
    return "".join(parts)


def _diamond(x: float, y: float, half: float) -> str:
    return (
        f'<path d="M{x:.1f} {y - half:.1f}L{x + half:.1f} {y:.1f}L{x:.1f} {y + half:.1f}'
        f'L{x - half:.1f} {y:.1f}Z" fill="#ffffff" stroke="#555555" stroke-width="1.2"/>'
    )


def _application(
    node: ApplicationNode, x: float, y: float, band: str | None, disposition: str, link: str | None
) -> str:
    radius = _CASE_RADIUS if node.is_case else _RADIUS
    ring, width = DISPOSITION_RINGS[disposition]
    facts = [
        node.application_id + (" (this case)" if node.is_case else ""),
        f"branch {node.branch_id or 'unknown'}",
        f"applied {_when(node.ts)}",
        f"band {band or 'unknown'}",
        f"disposition {disposition}",
    ]
    if not node.known:
        facts.append("arrived since the decision")
    if node.confirmed:
        facts.append(
            "confirmed mule" + (" since the decision" if node.confirmed == "confirmed since" else "")
        )
    if node.listed:
        facts.append("applicant listed" + (" since the decision" if node.listed == "listed since" else ""))
    faded = "" if node.known else ' opacity="0.5"'
    dash = "" if node.known else ' stroke-dasharray="3 2"'
    parts = [f"<g{faded}><title>{_text(chr(10).join(facts))}</title>"]
    if node.is_case:
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius + 4:.1f}" fill="none" stroke="#000000" '
            'stroke-width="2"/>'
        )
    parts.append(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{_band_colour(band)}" '
        f'stroke="{ring}" stroke-width="{width:.1f}"{dash}/>'
    )
    if node.confirmed:
        parts.append(_badge(x + radius * 0.85, y - radius * 0.85, "x", node.confirmed == "confirmed since"))
    if node.listed:
        parts.append(_badge(x - radius * 0.85, y - radius * 0.85, "L", node.listed == "listed since"))
    if node.is_case:
        parts.append(
            f'<text x="{x:.1f}" y="{y + radius + 16:.1f}" font-size="11" font-weight="bold" '
            f'text-anchor="middle" fill="#000000" stroke="#ffffff" stroke-width="3" paint-order="stroke">'
            f"{_text(node.application_id)}</text>"
        )
    parts.append("</g>")
    body = "".join(parts)
    return body if link is None else f"<a href={_attr(link)}>{body}</a>"


def _legend(group: LinkedGroup) -> str:
    top = _GRAPH_HEIGHT
    parts = [
        f'<g font-size="10" fill="#222222"><rect x="0" y="{top}" width="{_WIDTH}" '
        f'height="{_LEGEND_HEIGHT}" fill="#f7f7f7" stroke="#dddddd"/>'
    ]
    y = top + 18
    x = 12.0
    parts.append(f'<text x="{x}" y="{y + 4}" font-weight="bold">Band</text>')
    x += 60
    for band, colour in (*BAND_COLOURS.items(), ("unknown", UNKNOWN_COLOUR)):
        parts.append(f'<circle cx="{x}" cy="{y}" r="6" fill="{colour}" stroke="#4d4d4d"/>')
        parts.append(f'<text x="{x + 10}" y="{y + 4}">{_text(band)}</text>')
        x += 80
    y += 24
    x = 12.0
    parts.append(f'<text x="{x}" y="{y + 4}" font-weight="bold">Disposition</text>')
    x += 80
    for disposition, (ring, width) in DISPOSITION_RINGS.items():
        parts.append(
            f'<circle cx="{x}" cy="{y}" r="6" fill="#ffffff" stroke="{ring}" stroke-width="{width}"/>'
        )
        label = "open / none" if disposition == "open" else disposition
        parts.append(f'<text x="{x + 10}" y="{y + 4}">{_text(label)}</text>')
        x += 95
    y += 24
    x = 12.0
    parts.append(
        f'<circle cx="{x + 6}" cy="{y}" r="7" fill="{UNKNOWN_COLOUR}" stroke="#4d4d4d"/>'
        f'<circle cx="{x + 6}" cy="{y}" r="10" fill="none" stroke="#000000" stroke-width="2"/>'
        f'<text x="{x + 20}" y="{y + 4}">this case</text>'
    )
    x += 90
    parts.append(
        f'<circle cx="{x}" cy="{y}" r="6" fill="{UNKNOWN_COLOUR}" stroke="#4d4d4d" '
        f'stroke-dasharray="3 2" opacity="0.5"/>'
        f'<text x="{x + 10}" y="{y + 4}">arrived since the decision</text>'
    )
    x += 175
    parts.append(_badge(x, y, "x", False) + _badge(x + 12, y, "x", True))
    parts.append(
        f'<text x="{x + 22}" y="{y + 4}">confirmed mule (filled: by the decision; hollow: since)</text>'
    )
    x += 305
    parts.append(_badge(x, y, "L", False) + _badge(x + 12, y, "L", True))
    parts.append(f'<text x="{x + 22}" y="{y + 4}">applicant listed</text>')
    x += 115
    parts.append(_diamond(x, y, _KEY_HALF) + f'<text x="{x + 9}" y="{y + 4}">shared key</text>')
    x += 80
    parts.append(
        f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="#999999" stroke-dasharray="4 3"/>'
        f'<text x="{x + 22}" y="{y + 4}">phone block</text>'
    )
    if group.left_out:
        plural = "" if group.left_out == 1 else "s"
        more = f"{group.left_out} {'more' if group.left_out_exact else 'or more'} linked application{plural}"
        parts.append(
            f'<text x="{_WIDTH - 12}" y="{top + 22}" text-anchor="end" font-style="italic">'
            f"{_text(more)} not shown (the nearest in time are)</text>"
        )
    parts.append("</g>")
    return "".join(parts)


def render_svg(
    group: LinkedGroup,
    *,
    bands: Mapping[str, str],
    dispositions: Mapping[str, str],
    href: Callable[[str], str | None],
) -> str:
    """The group as a self-contained inline SVG: the case page's graph.

    Applications are circles filled by band and outlined by disposition (the case larger, in a
    black ring and named; one that arrived since the decision dashed and faded; a confirmed
    mule badged ✕, a listed applicant badged L, filled when known by the decision and hollow
    when since); keys are small diamonds labelled with their kind and short pseudonym. Every
    element carries a ``<title>`` tooltip, a legend sits under the graph.

    Parameters
    ----------
    group : LinkedGroup
        What :func:`linked_group` found.
    bands : mapping of str to str
        Each application's band (``critical``, ``high``, ``medium``, ``low``); a missing or
        other one is drawn as unknown.
    dispositions : mapping of str to str
        Each application's disposition (``confirmed``, ``cleared``, ``escalated``); a missing
        or other one is drawn as open.
    href : callable
        The link opening an application's case, or None for none. Must be a relative reference
        (no scheme, no host): the picture refers to nothing outside the page's site.

    Returns
    -------
    str
        One ``<svg>`` element (with ``viewBox``, ``role="img"`` and an ``aria-label``): no
        script, no style sheet, no external reference, every value escaped.

    Raises
    ------
    ValueError
        ``href`` gave a link with a scheme or a host.
    """
    app_xy, key_xy = _layout(group)
    where = {node.application_id: xy for node, xy in zip(group.applications, app_xy, strict=True)}
    key_at = dict(zip(group.keys, key_xy, strict=True))
    sharing: dict[KeyNode, int] = {}
    for _, key in group.edges:
        sharing[key] = sharing.get(key, 0) + 1
    height = _GRAPH_HEIGHT + _LEGEND_HEIGHT
    label = (
        f"Linked group of application {group.case_id}: {len(group.applications)} applications, "
        f"{len(group.keys)} shared keys"
        + (
            f", {group.left_out}{'' if group.left_out_exact else '+'} more not shown"
            if group.left_out
            else ""
        )
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" '
        f'width="{_WIDTH}" height="{height}" role="img" aria-label={_attr(label)} '
        'font-family="sans-serif" font-size="10">',
        f"<title>{_text(label)}</title>",
        f'<rect x="0" y="0" width="{_WIDTH}" height="{_GRAPH_HEIGHT}" fill="#ffffff"/>',
        '<g stroke="#9a9a9a" stroke-width="1">',
    ]
    for member, key in group.edges:
        (x1, y1), (x2, y2) = where[member], key_at[key]
        dash = ' stroke-dasharray="4 3"' if key.kind == BLOCK_KEY else ""
        out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"{dash}/>')
    # labels on a white halo: legible over edges
    out.append(
        '</g><g font-size="8" fill="#333333" stroke="#ffffff" stroke-width="2.5" paint-order="stroke">'
    )
    for key, (x, y) in key_at.items():
        name = f"{key.label} {key.short}"
        out.append(
            f"<g><title>{_text(f'{name}: {sharing.get(key, 0)} application(s) in the group')}</title>"
            f'{_diamond(x, y, _KEY_HALF)}<text x="{x + 7:.1f}" y="{y + 3:.1f}">{_text(name)}</text></g>'
        )
    out.append("</g>")
    # the case last: drawn over the others
    for node in sorted(group.applications, key=lambda node: node.is_case):
        link = href(node.application_id)
        if link is not None:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                raise ValueError("a case link must be a relative reference (no scheme, no host)")
        x, y = where[node.application_id]
        out.append(
            _application(
                node,
                x,
                y,
                bands.get(node.application_id),
                _disposition(dispositions.get(node.application_id)),
                link,
            )
        )
    out.append(_legend(group))
    out.append("</svg>")
    return "".join(out)
