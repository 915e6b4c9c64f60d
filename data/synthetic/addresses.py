"""Addresses as applicants write them, assembled column-wise.

An address is built from parts (district, road, number, place name, building,
floor, room); a :class:`Spelling` decides per row how it is written: with or
without 广东省 and the city, 号 or 號, 栋/幢/座/号楼, 305房/305室/-305/房间305,
ASCII or full-width digits. Every spelling of one place must give the same
building key in :mod:`duanka.data.address`; writing one hotel many ways is how rings hide
that their recruits share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.synthetic.keyed import keyed_bits
from duanka.data.synthetic.places import (
    BUSINESS_CENTRES,
    CITIES,
    DISTRICT_CITY,
    DISTRICTS,
    ESTATES,
    FACTORY_BRANDS,
    FACTORY_KINDS,
    HOMES,
    LODGINGS,
    OFFICE_TOWERS,
    PROVINCE,
    RENTALS,
    ROADS,
    TOWNS,
    VILLAGES,
)
from duanka.data.synthetic.rows import interleave

HAO = ("号", "號")
BUILDING_MARKS = ("栋", "幢", "座", "号楼")
ROOM_FORMS = (("", "房"), ("", "室"), ("-", ""), ("房间", ""))
SITES = 40  # buildings of each Place kind in a district that applicants name
_FULL_WIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}

_CITY_NAMES = pa.array(CITIES)
_DISTRICT_NAMES = pa.array([d.name for d in DISTRICTS])
_HOME_LABELS = pa.array(HOMES.label)


@dataclass(frozen=True, slots=True)
class Spelling:
    """Per-row choices of how an address is written."""

    province: np.ndarray  # bool: 广东省 written (only ever before the city)
    city: np.ndarray  # bool: the city written
    hao: np.ndarray  # index into HAO
    building: np.ndarray  # index into BUILDING_MARKS
    room: np.ndarray  # index into ROOM_FORMS
    full_width: np.ndarray  # bool: digits written full-width


def spellings(n: int, variety: float | np.ndarray, rng: np.random.Generator) -> Spelling:
    """Draw how ``n`` addresses are written.

    Parameters
    ----------
    n : int
        Number of addresses.
    variety : float or numpy.ndarray
        Per row, the probability that the address departs from the house style
        (city, 号, 栋, ``305房``, ASCII digits); a departing row draws every part
        at random among its spellings, so it may still keep some house-style parts.
    rng : numpy.random.Generator

    Returns
    -------
    Spelling
    """
    varied = rng.random(n) < variety

    def part(options: int) -> np.ndarray:
        return np.where(varied, rng.integers(0, options, n), 0)

    city = ~varied | (rng.random(n) < 0.6)
    return Spelling(
        province=city & varied & (rng.random(n) < 0.4),
        city=city,
        hao=part(len(HAO)),
        building=part(len(BUILDING_MARKS)),
        room=part(len(ROOM_FORMS)),
        full_width=varied & (rng.random(n) < 0.4),
    )


def pick(table: Sequence[str], index: np.ndarray) -> pa.Array:
    """The strings of ``table`` at ``index``, as an Arrow column."""
    return pa.array(table, pa.string()).take(pa.array(index))


def _number(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _where(mask: np.ndarray, text: pa.Array | str) -> pa.Array:
    return pc.if_else(pa.array(mask), text, "")


def _joined(parts: Sequence[pa.Array | str]) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _full_width(text: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return text
    wide = text.filter(pa.array(mask))
    for ascii_digit, wide_digit in _FULL_WIDTH.items():
        wide = pc.replace_substring(wide, ascii_digit, wide_digit)
    return pc.replace_with_mask(text, pa.array(mask), wide)


def _room(room: np.ndarray, spelling: Spelling) -> pa.Array:
    before = pick([b for b, _ in ROOM_FORMS], spelling.room)
    after = pick([a for _, a in ROOM_FORMS], spelling.room)
    return _where(room >= 0, _joined([before, _number(room), after]))


def street_address(
    district: np.ndarray,
    road: pa.Array,
    number: np.ndarray,
    name: pa.Array,
    spelling: Spelling,
    *,
    building: np.ndarray | None = None,
    floor: np.ndarray | None = None,
    room: np.ndarray | None = None,
) -> pa.Array:
    """Addresses of the form [广东省][市]区 路 n号 名称 [n栋] [n楼] [room].

    Parameters
    ----------
    district : numpy.ndarray
        Index into :data:`~duanka.data.synthetic.places.DISTRICTS` per row.
    road, name : pyarrow.Array
        Road name and place name (estate, hotel, dormitory, office block) per row.
    number : numpy.ndarray
        Street number per row.
    spelling : Spelling
    building, floor, room : numpy.ndarray, optional
        Per row; absent, or -1 in a row, leaves that part out.

    Returns
    -------
    pyarrow.Array
        UTF-8 strings.
    """
    n = len(district)
    absent = np.full(n, -1)
    building = absent if building is None else building
    floor = absent if floor is None else floor
    room = absent if room is None else room
    city = pa.array(DISTRICT_CITY[district])
    text = _joined(
        [
            _where(spelling.province, PROVINCE),
            _where(spelling.city, _CITY_NAMES.take(city)),
            _DISTRICT_NAMES.take(pa.array(district)),
            road,
            _number(number),
            pick(HAO, spelling.hao),
            name,
            _where(building >= 0, _joined([_number(building), pick(BUILDING_MARKS, spelling.building)])),
            _where(floor >= 0, _joined([_number(floor), "楼"])),
            _room(room, spelling),
        ]
    )
    return _full_width(text, spelling.full_width)


def home_address(home: np.ndarray, rng: np.random.Generator, spelling: Spelling) -> pa.Array:
    """Household-register addresses in the home county: 省 县 镇 村 n组 n号.

    Parameters
    ----------
    home : numpy.ndarray
        Index into :data:`~duanka.data.synthetic.places.HOMES` per row.
    rng : numpy.random.Generator
        Draws the town, village, group and house number.
    spelling : Spelling
        Only ``hao`` and ``full_width`` apply.
    """
    n = len(home)
    text = _joined(
        [
            _HOME_LABELS.take(pa.array(home)),
            pick(TOWNS, rng.integers(0, len(TOWNS), n)),
            pick(VILLAGES, rng.integers(0, len(VILLAGES), n)),
            _number(rng.integers(1, 15, n)),
            "组",
            _number(rng.integers(1, 200, n)),
            pick(HAO, spelling.hao),
        ]
    )
    return _full_width(text, spelling.full_width)


class Place(Enum):
    """Kinds of building an address can point to, with the names they carry."""

    RESIDENCE = ESTATES
    RENTAL = RENTALS
    LODGING = LODGINGS
    DORMITORY = tuple(b + k + "员工宿舍" for b in FACTORY_BRANDS for k in FACTORY_KINDS)
    OFFICE = OFFICE_TOWERS
    BUSINESS_CENTRE = BUSINESS_CENTRES


def place_address(
    place: Place,
    district: np.ndarray,
    site: np.ndarray,
    rng: np.random.Generator,
    spelling: Spelling,
) -> pa.Array:
    """Addresses in buildings identified by (district, site).

    A site always stands at the same road and number; its name is
    ``place.value[site % len(place.value)]``, so callers choose names by choosing
    sites. Inside, a residence's building and room are fixed by the site too
    (``site`` is then a household, and everyone in it shares the address);
    elsewhere the room is drawn, so many people share the building only. The
    map is the same for every seed: seeds change who lives where, not the city.

    Parameters
    ----------
    place : Place
    district : numpy.ndarray
        Index into :data:`~duanka.data.synthetic.places.DISTRICTS` per row.
    site : numpy.ndarray
        Non-negative building (or household) number within the district per row.
    rng : numpy.random.Generator
    spelling : Spelling
    """
    n = len(district)
    names = place.value
    bits = keyed_bits(np.asarray(district, np.int64) * 2**32 + site, list(Place).index(place))

    def field(shift: int, size: int) -> np.ndarray:
        return ((bits >> np.uint64(shift)) % np.uint64(size)).astype(np.int64)

    interior: dict[str, np.ndarray] = {}
    if place is Place.RESIDENCE:
        interior["building"] = field(24, 30) + 1
        interior["room"] = (field(30, 32) + 1) * 100 + field(36, 8) + 1
    elif place is Place.DORMITORY:
        interior["building"] = rng.integers(1, 9, n)
        interior["room"] = rng.integers(1, 7, n) * 100 + rng.integers(1, 30, n)
    elif place in (Place.OFFICE, Place.BUSINESS_CENTRE):
        interior["floor"] = rng.integers(2, 41, n)
        # Business centres let rooms or desks to many firms; towers often write no room.
        with_room = (place is Place.BUSINESS_CENTRE) | (rng.random(n) < 0.6)
        interior["room"] = np.where(with_room, rng.integers(1, 61, n), -1)
    else:
        interior["room"] = rng.integers(1, 10, n) * 100 + rng.integers(1, 40, n)
    return street_address(
        district,
        pick(ROADS, field(0, len(ROADS))),
        field(8, 398) + 1,
        pick(names, np.asarray(site) % len(names)),
        spelling,
        **interior,
    )


def mixed_addresses(
    kind: np.ndarray,
    places: Sequence[Place | None],
    *,
    district: np.ndarray,
    site: np.ndarray,
    home: np.ndarray,
    variety: float | np.ndarray,
    rng: np.random.Generator,
) -> pa.Array:
    """Addresses of rows of several kinds at once.

    Parameters
    ----------
    kind : numpy.ndarray
        Per row, an index into ``places``.
    places : sequence of Place or None
        None stands for the household-register address in the home county.
    district, site : numpy.ndarray
        Per row, as :func:`place_address` takes them (unused for None).
    home : numpy.ndarray
        Per row, index into HOMES (used for None).
    variety : float or numpy.ndarray
        As :func:`spellings` takes it.
    rng : numpy.random.Generator
    """
    variety = np.broadcast_to(variety, kind.shape)
    parts = []
    for k, place in enumerate(places):
        rows = np.flatnonzero(kind == k)
        spelling = spellings(len(rows), variety[rows], rng)
        if place is None:
            parts.append((rows, home_address(home[rows], rng, spelling)))
        else:
            parts.append((rows, place_address(place, district[rows], site[rows], rng, spelling)))
    return interleave(len(kind), parts)
