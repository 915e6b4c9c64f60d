"""The case page's linked-group graph: what :func:`linked_group` finds, and the SVG it draws."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import pytest

from duanka.features.values import DAY_US
from duanka.serving.review.graph import BAND_COLOURS, UNKNOWN_COLOUR, render_svg
from duanka.serving.review.ring import BLOCK_KEY, KEY_LABELS, KeyNode, LinkedGroup, linked_group

T0 = 1_717_200_000_000_000  # 2024-06-01 UTC, microseconds
SVG = "{http://www.w3.org/2000/svg}"
COLUMNS = (
    "application_id",
    "ts",
    "branch_id",
    "escort_key",
    "intermediary_key",
    "address_key",
    "phone_key",
    "phone_block_key",
    "device_key",
    "conf",
    "listed",
)
KEY_COLUMNS = ("escort_key", "intermediary_key", "address_key", "phone_key", "phone_block_key", "device_key")


def pseudonym(name: str) -> str:
    """A pseudonym as the state holds one: a long hex string."""
    return hashlib.sha256(name.encode()).hexdigest()


def app(application_id: str, day: float, *, conf: int | None = None, listed: int | None = None, **keys: str):
    """One ``apps`` row: made ``day`` days after T0, its keys pseudonymised from short names."""
    row: dict[str, object] = {
        "application_id": application_id,
        "ts": T0 + round(day * DAY_US),
        "branch_id": "B1",
        "conf": conf,
        "listed": listed,
    }
    for column in KEY_COLUMNS:
        row[column] = (
            pseudonym(keys[column.removesuffix("_key")]) if column.removesuffix("_key") in keys else None
        )
    return row


def state(tmp_path: Path, rows: list[dict[str, object]]) -> sqlite3.Connection:
    """An ``apps`` table like the online state's (its key indexes too), opened read only."""
    path = tmp_path / "online.db"
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE apps (application_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, branch_id TEXT, "
            "escort_key TEXT, intermediary_key TEXT, address_key TEXT, phone_key TEXT, "
            "phone_block_key TEXT, device_key TEXT, conf INTEGER, listed INTEGER)"
        )
        for column in KEY_COLUMNS:
            con.execute(f"CREATE INDEX by_{column} ON apps ({column}, ts, application_id)")
        marks = ", ".join("?" * len(COLUMNS))
        con.executemany(
            f"INSERT INTO apps ({', '.join(COLUMNS)}) VALUES ({marks})",
            [tuple(row[c] for c in COLUMNS) for row in rows],
        )
    con.close()
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A case ``C`` and applications around it, each named for how it relates to ``C``."""
    rows = [
        app("C", 0, escort="E1", address="A1", phone="P1", phone_block="B1"),
        app("H1", -2, escort="E1", device="D1", address="A7"),  # hop 1 (escort)
        app("H2", 3, device="D1", address="A9"),  # hop 2, through H1's device
        app("H3", 4, address="A9"),  # hop 3: not in the group
        app("EDGE", -30, address="A1"),  # hop 1, on the window's first instant
        app("LATE", 31, escort="E1"),  # outside the window (31 days after)
        app("EARLY", -31, address="A1"),  # outside the window (31 days before)
        app("BLOCK", 1, phone_block="B1", device="D2"),  # hop 1 through the number block only
        app("BB", 2, device="D2"),  # behind a block: not walked
        app("U", 0.5, escort="E9", address="A8", phone="P9", phone_block="B9"),  # unrelated
    ]
    con = state(tmp_path, rows)
    yield con
    con.close()


def ids(group: LinkedGroup) -> list[str]:
    return [node.application_id for node in group.applications]


def key(kind: str, name: str) -> KeyNode:
    return KeyNode(kind, pseudonym(name))


def test_two_hops_within_the_window(ring: sqlite3.Connection) -> None:
    group = linked_group(ring, "C", known_at_us=T0)
    assert group.case_id == "C"
    assert set(ids(group)) == {"C", "H1", "H2", "EDGE", "BLOCK"}
    hops = {node.application_id: node.hop for node in group.applications}
    assert hops == {"C": 0, "H1": 1, "EDGE": 1, "BLOCK": 1, "H2": 2}
    assert group.applications[0].is_case and not group.applications[1].is_case
    assert group.left_out == 0 and group.left_out_exact


def test_applications_nearest_in_time_first(ring: sqlite3.Connection) -> None:
    group = linked_group(ring, "C", known_at_us=T0)
    assert ids(group) == ["C", "BLOCK", "H1", "H2", "EDGE"]


def test_keys_and_edges(ring: sqlite3.Connection) -> None:
    group = linked_group(ring, "C", known_at_us=T0)
    edges = set(group.edges)
    # the case's keys are drawn even where no other application has them (its phone)
    assert ("C", key("phone_key", "P1")) in edges
    assert {("C", key("escort_key", "E1")), ("H1", key("escort_key", "E1"))} <= edges
    assert {("C", key(BLOCK_KEY, "B1")), ("BLOCK", key(BLOCK_KEY, "B1"))} <= edges
    assert {("H1", key("device_key", "D1")), ("H2", key("device_key", "D1"))} <= edges
    # another application's key no one else in the group has is not drawn
    drawn = set(group.keys)
    assert key("address_key", "A7") not in drawn and key("address_key", "A9") not in drawn
    assert key("device_key", "D2") not in drawn
    assert {k for _, k in group.edges} == drawn
    assert {a for a, _ in group.edges} <= set(ids(group))
    escort = key("escort_key", "E1")
    assert escort.label == KEY_LABELS["escort_key"] == "escort"
    assert escort.short == pseudonym("E1")[:8]


def test_known_and_arrived_since(ring: sqlite3.Connection) -> None:
    group = linked_group(ring, "C", known_at_us=T0 + DAY_US + 1)
    known = {node.application_id: node.known for node in group.applications}
    assert known == {"C": True, "H1": True, "EDGE": True, "BLOCK": True, "H2": False}


def test_confirmed_and_listed_relative_to_the_decision(tmp_path: Path) -> None:
    decided = T0 + DAY_US
    rows = [
        app("C", 0, escort="E1", listed=T0 - DAY_US),
        app("BEFORE", -1, escort="E1", conf=decided),  # confirmed on the decision's instant
        app("AFTER", -2, escort="E1", conf=decided + 1, listed=decided + 1),
        app("NEVER", -3, escort="E1"),
    ]
    with state(tmp_path, rows) as con:
        group = linked_group(con, "C", known_at_us=decided)
    status = {node.application_id: (node.confirmed, node.listed) for node in group.applications}
    assert status == {
        "C": (None, "listed"),
        "BEFORE": ("confirmed", None),
        "AFTER": ("confirmed since", "listed since"),
        "NEVER": (None, None),
    }


def test_max_applications_keeps_the_case_and_the_nearest(tmp_path: Path) -> None:
    rows = [app("C", 0, escort="E1")]
    rows += [app(f"N{i}", (-1) ** i * (i + 1), escort="E1") for i in range(10)]
    with state(tmp_path, rows) as con:
        group = linked_group(con, "C", known_at_us=T0, max_applications=4)
        only = linked_group(con, "C", known_at_us=T0, max_applications=1)
        with pytest.raises(ValueError, match="max_applications"):
            linked_group(con, "C", known_at_us=T0, max_applications=0)
    assert ids(group) == ["C", "N0", "N1", "N2"]
    assert group.left_out == 7
    assert ids(only) == ["C"] and only.left_out == 10
    assert {a for a, _ in group.edges} == set(ids(group))


def test_capped_group_keeps_no_application_without_its_link(tmp_path: Path) -> None:
    rows = [
        app("C", 0, escort="E1"),
        app("FAR", 10, escort="E1", device="D1"),  # hop 1, far in time
        app("NEAR", 20, escort="E1"),  # hop 1, farther still
        app("CHILD", 0.1, device="D1"),  # hop 2 through FAR, nearest of all
        app("OTHER", -15, device="D1"),  # hop 2 through FAR
    ]
    with state(tmp_path, rows) as con:
        two = linked_group(con, "C", known_at_us=T0, max_applications=2)
        three = linked_group(con, "C", known_at_us=T0, max_applications=3)
    assert ids(two) == ["C", "FAR"]  # CHILD is nearer in time, but only through FAR
    assert two.left_out == 3 and not two.left_out_exact  # NEAR was not walked on
    assert ids(three) == ["C", "CHILD", "FAR"]  # nearest in time first, once both are kept
    assert three.left_out == 2 and three.left_out_exact


def test_unknown_application(ring: sqlite3.Connection) -> None:
    with pytest.raises(LookupError):
        linked_group(ring, "NOPE", known_at_us=T0)


def test_the_state_is_only_read(tmp_path: Path) -> None:
    rows = [app("C", 0, escort="E1"), app("X", 1, escort="E1")]
    with state(tmp_path, rows) as con:
        before = con.total_changes
        linked_group(con, "C", known_at_us=T0)
        assert con.total_changes == before
        assert not con.in_transaction


# ------------------------------------------------------------------------------------------ SVG

NASTY = 'A<1>&"x"'


def nasty_group(tmp_path: Path) -> tuple[LinkedGroup, list[str]]:
    rows = [
        app(NASTY, 0, escort="E1", phone="P1", phone_block="B1", listed=T0 - 1),
        app("H1", -1, escort="E1", device="D1", conf=T0 - 1),
        app("H2", 2, device="D1", conf=T0 + DAY_US),
        app("BLOCK", 1, phone_block="B1"),
    ]
    with state(tmp_path, rows) as con:
        group = linked_group(con, NASTY, known_at_us=T0)
    return group, [pseudonym(n) for n in ("E1", "P1", "B1", "D1")]


def case_link(application_id: str) -> str | None:
    return None if application_id == "BLOCK" else f"/review/cases/{quote(application_id, safe='')}"


def draw(group: LinkedGroup, bands: Mapping[str, str] | None = None, dispositions=None) -> str:
    return render_svg(group, bands=bands or {}, dispositions=dispositions or {}, href=case_link)


def test_svg_parses_and_links_each_case(tmp_path: Path) -> None:
    group, _ = nasty_group(tmp_path)
    svg = draw(group)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("viewBox")
    assert NASTY in (root.get("aria-label") or "")
    links = root.findall(f".//{SVG}a")
    expected = [case_link(a) for a in ids(group) if case_link(a) is not None]
    assert sorted(a.get("href") or "" for a in links) == sorted(e or "" for e in expected)
    assert len(links) == len(group.applications) - 1
    for link in links:  # each link holds its application's tooltip
        title = link.find(f".//{SVG}title")
        assert title is not None and title.text


def test_svg_escapes_and_shows_no_full_pseudonym(tmp_path: Path) -> None:
    group, pseudonyms = nasty_group(tmp_path)
    svg = draw(group)
    assert NASTY not in svg  # only escaped
    texts = [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}title")]
    assert any(t.startswith(NASTY + " (this case)") for t in texts)
    for full in pseudonyms:
        assert full not in svg
        assert full[:8] in svg
        assert full[:9] not in svg
    assert "<script" not in svg.lower()
    assert "@import" not in svg and "<foreignObject" not in svg
    assert re.findall(r"https?:[^\"' >]*", svg) == ["http://www.w3.org/2000/svg"]
    assert "xlink" not in svg and "url(" not in svg


def tooltips(root: ET.Element) -> dict[str, tuple[ET.Element, str]]:
    """Each application's drawing (the ``<g>`` its tooltip names first) and its tooltip."""
    found: dict[str, tuple[ET.Element, str]] = {}
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        if title is not None and title.text:
            found[title.text.split("\n")[0]] = (g, title.text)
    return found


def test_svg_marks_bands_dispositions_and_status(tmp_path: Path) -> None:
    group, _ = nasty_group(tmp_path)
    svg = draw(group, bands={"H1": "critical", "H2": "weird"}, dispositions={"H1": "cleared"})
    drawn = tooltips(ET.fromstring(svg))
    (h1_g, h1_title), (h2_g, h2_title) = drawn["H1"], drawn["H2"]
    h1, h2 = h1_g.find(f"{SVG}circle"), h2_g.find(f"{SVG}circle")
    assert h1 is not None and h2 is not None
    assert h1.get("fill") == BAND_COLOURS["critical"]
    assert h2.get("fill") == UNKNOWN_COLOUR
    assert h1.get("stroke") != h2.get("stroke")  # cleared against open
    assert h2_g.get("opacity") == "0.5" and h2.get("stroke-dasharray")  # arrived since the decision
    assert h1_g.get("opacity") is None and h1.get("stroke-dasharray") is None
    assert "band critical" in h1_title and "disposition cleared" in h1_title
    assert "confirmed mule" in h1_title and "branch B1" in h1_title and "2024-05-31" in h1_title
    assert "confirmed mule since the decision" in h2_title and "arrived since the decision" in h2_title
    assert "band weird" in h2_title and "disposition open" in h2_title  # as given, drawn as unknown
    assert "band unknown" in drawn["BLOCK"][1]
    assert drawn[NASTY + " (this case)"][1].count("applicant listed") == 1


def test_svg_refuses_links_elsewhere(tmp_path: Path) -> None:
    group, _ = nasty_group(tmp_path)
    for bad in ("https://example.org/x", "//example.org/x", "javascript:alert(1)"):
        with pytest.raises(ValueError, match="relative"):
            render_svg(group, bands={}, dispositions={}, href=lambda _, bad=bad: bad)


def test_svg_is_deterministic(tmp_path: Path) -> None:
    group, _ = nasty_group(tmp_path)
    assert draw(group) == draw(group)


def test_a_lone_case_draws(tmp_path: Path) -> None:
    with state(tmp_path, [app("C", 0)]) as con:
        group = linked_group(con, "C", known_at_us=T0)
    assert ids(group) == ["C"] and group.keys == () and group.edges == ()
    ET.fromstring(draw(group))


def test_a_200_application_group(tmp_path: Path) -> None:
    """A ring of 300 around shared escorts, addresses and devices: kept to 200, drawn whole."""
    rows = [app("C", 0, escort="E0", address="A0", phone="P0", phone_block="B0", device="D0")]
    for i in range(300):
        keys = {"escort": f"E{i % 7}", "address": f"A{i % 40}", "device": f"D{i % 90}", "phone": f"P{i}"}
        if i % 11 == 0:
            keys["phone_block"] = "B0"
        if i % 13 == 0:
            keys["intermediary"] = f"I{i % 3}"
        rows.append(app(f"R{i:03}", (i % 59) - 29 + i / 1000, conf=T0 if i % 17 == 0 else None, **keys))
    with state(tmp_path, rows) as con:
        group = linked_group(con, "C", known_at_us=T0)
    assert len(group.applications) == 200
    assert group.applications[0].application_id == "C"
    assert group.left_out == 101 and group.left_out_exact
    gaps = [abs(node.ts - T0) for node in group.applications[1:]]
    assert gaps == sorted(gaps)
    assert {a for a, _ in group.edges} == set(ids(group))
    svg = draw(group, bands={a: "high" for a in ids(group)})
    root = ET.fromstring(svg)
    assert len(root.findall(f".//{SVG}a")) == 200
    assert "101 more linked applications not shown" in svg
