"""Who applies: ages and birth dates, home counties, identity numbers, phones.

Applicants are drawn where they are needed and never stored, so memory does not
grow with volume. Ages are exact: an applicant drawn aged 16 is 16 on the day
of the application, by the rule :func:`duanka.data.identity.parse_resident_id` applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from duanka.data.synthetic.identifiers import resident_ids
from duanka.data.synthetic.places import HOMES, MIGRATION, PROVINCES
from duanka.data.synthetic.rows import sparse

AgeBands = Sequence[tuple[int, int, float]]
"""Age mixture: (youngest, oldest, weight) bands, uniform within a band."""

# Month and day of each day of a common year; nobody here is born on 29 February.
_COMMON_YEAR = np.arange(np.datetime64("2001-01-01"), np.datetime64("2002-01-01"))
_BIRTH_MONTH = (_COMMON_YEAR.astype("datetime64[M]").astype(np.int64) % 12) + 1
_BIRTH_DAY = (_COMMON_YEAR - _COMMON_YEAR.astype("datetime64[M]")).astype(np.int64) + 1

COUNTIES_OF = [np.flatnonzero(HOMES.province == i) for i in range(len(PROVINCES))]

# Mobile prefixes, roughly by subscribers. 16x, 17x and 19x include the newer and
# virtual-operator ranges; card farmers favour them, but so do students and migrants.
_PREFIXES_BY_WEIGHT = {
    4: (134, 135, 136, 137, 138, 139, 150, 151, 152, 157, 158, 159, 182, 183, 187, 188),
    3: (130, 131, 132, 155, 156, 185, 186),
    2: (133, 153, 180, 181, 189),
    1: (199, 191, 177, 173, 170, 171, 165, 166, 167, 162, 198, 195),
}
PHONE_PREFIXES = np.array([p for group in _PREFIXES_BY_WEIGHT.values() for p in group])
_PREFIX_WEIGHT = np.array([w for w, group in _PREFIXES_BY_WEIGHT.items() for _ in group], dtype=float)
VIRTUAL_PREFIXES = np.array([170, 171, 162, 165, 167])


@dataclass(frozen=True, slots=True)
class Applicants:
    """Drawn applicants: their identity numbers and what those say."""

    id_number: pa.Array
    home: np.ndarray  # index into HOMES
    age: np.ndarray


def draw_ages(n: int, bands: AgeBands, rng: np.random.Generator) -> np.ndarray:
    """``n`` ages from a mixture of uniform bands."""
    low = np.array([b[0] for b in bands])
    high = np.array([b[1] for b in bands])
    weight = np.array([b[2] for b in bands], dtype=float)
    band = rng.choice(len(bands), n, p=weight / weight.sum())
    return rng.integers(low[band], high[band] + 1)


def birth_dates(on: np.ndarray, ages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Birth dates (datetime64[D]) of people exactly ``ages`` old on the days ``on``."""
    pick = rng.integers(0, len(_COMMON_YEAR), len(on))
    month, day = _BIRTH_MONTH[pick], _BIRTH_DAY[pick]
    on = on.astype("datetime64[D]")
    on_year = on.astype("datetime64[Y]")
    on_month = on.astype("datetime64[M]")
    year = on_year.astype(np.int64) + 1970
    on_m = (on_month - on_year).astype(np.int64) + 1
    on_d = (on - on_month).astype(np.int64) + 1
    birthday_ahead = (month > on_m) | ((month == on_m) & (day > on_d))
    born_year = year - ages - birthday_ahead
    months = ((born_year - 1970) * 12 + month - 1).astype("datetime64[M]")
    return months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")


def draw_homes(
    n: int,
    rng: np.random.Generator,
    migrant: float | np.ndarray,
    provinces: np.ndarray | None = None,
) -> np.ndarray:
    """Home counties (index into HOMES).

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator
    migrant : float or numpy.ndarray
        Probability, per row, that the applicant comes from another province.
    provinces : numpy.ndarray, optional
        Per row, the province (index into PROVINCES) a migrant comes from; drawn by
        migration share where absent.
    """
    home = rng.integers(0, HOMES.local_count, n)
    away = rng.random(n) < migrant
    province = rng.choice(len(PROVINCES), n, p=MIGRATION) if provinces is None else provinces
    for p in np.unique(province[away]):
        rows = np.flatnonzero(away & (province == p))
        home[rows] = rng.choice(COUNTIES_OF[p], len(rows))
    return home


def draw_applicants(
    on: np.ndarray,
    ages: np.ndarray,
    rng: np.random.Generator,
    migrant: float | np.ndarray,
    provinces: np.ndarray | None = None,
    homes: np.ndarray | None = None,
) -> Applicants:
    """Applicants aged ``ages`` on the days ``on``, from ``homes`` (index into HOMES) where
    given, else from homes drawn as :func:`draw_homes`."""
    n = len(on)
    home = draw_homes(n, rng, migrant, provinces) if homes is None else np.asarray(homes)
    born = birth_dates(on, ages, rng)
    ids = resident_ids(HOMES.code[home], born, rng.integers(0, 1000, n))
    return Applicants(ids, home, np.asarray(ages))


def escort_ids(
    on: np.ndarray,
    escort: np.ndarray,
    recorded: np.ndarray,
    rng: np.random.Generator,
    bands: AgeBands,
    migrant: float,
) -> pa.Array:
    """Resident ids of escorts where one is recorded, null elsewhere.

    Parameters
    ----------
    on : numpy.ndarray
        Day of each row.
    escort : numpy.ndarray
        Per row, the escort (any integers naming people): an escort's id is drawn
        once, aged from ``bands`` on the first day of the rows naming them.
    recorded : numpy.ndarray
        Per row, whether the escort was recorded.
    rng : numpy.random.Generator
    bands : AgeBands
    migrant : float
        Probability an escort comes from another province.
    """
    people, first = np.unique(escort, return_index=True)
    ids = draw_applicants(on[first], draw_ages(len(people), bands, rng), rng, migrant).id_number
    rows = np.flatnonzero(recorded)
    return sparse(len(on), rows, ids.take(pa.array(np.searchsorted(people, escort[rows]))))


def draw_phones(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mobile numbers (int64, 11 digits) across the carriers' ranges."""
    prefix = rng.choice(PHONE_PREFIXES, n, p=_PREFIX_WEIGHT / _PREFIX_WEIGHT.sum())
    return prefix * 10**8 + rng.integers(0, 10**8, n)


def draw_block(rng: np.random.Generator, virtual: float) -> int:
    """A 7-digit number block (prefix + 4 digits), from a virtual operator w.p. ``virtual``.

    Blocks are drawn low enough in their prefix that the next few blocks, which
    :func:`block_phones` spills into, still belong to it.
    """
    prefixes = VIRTUAL_PREFIXES if rng.random() < virtual else PHONE_PREFIXES
    return int(rng.choice(prefixes)) * 10**4 + int(rng.integers(0, 9_000))


def block_phones(block: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct numbers issued from ``block``, spilling into the blocks after it
    when more than half of one would be needed (carriers issue consecutive blocks)."""
    span = 10**4 * -(-n // 5_000)
    return block * 10**4 + rng.choice(span, n, replace=False)


def tenure_days(n: int, rng: np.random.Generator, new: float | np.ndarray, newest: int = 30) -> np.ndarray:
    """Days since each number was activated; -1 where the carrier check gave nothing.

    A share ``new`` are fresh SIM cards (0 to ``newest`` days); the rest are
    settled numbers, median about four years.
    """
    settled = np.clip(rng.lognormal(np.log(1_500), 0.8, n), 60, 9_000).astype(np.int64)
    fresh = rng.integers(0, newest + 1, n)
    days = np.where(rng.random(n) < new, fresh, settled)
    return np.where(rng.random(n) < 0.01, -1, days)
