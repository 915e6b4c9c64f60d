"""The case page's picture of a linked group (:mod:`duanka.serving.review.ring`): one inline SVG.

:func:`render_svg` lays the group out (networkx's spring layout, seeded: the same group gives the
same picture) and draws it as one self-contained inline SVG: no script, no external reference,
every value escaped, and no full pseudonym (a key shows its kind and the first
:data:`~duanka.serving.review.ring.SHORT_CHARS` characters of its pseudonym).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import networkx as nx
import numpy as np

from duanka.serving.review.ring import BLOCK_KEY, ApplicationNode, KeyNode, LinkedGroup

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
