"""Small pure functions that turn raw columns and counts into feature values.

Both engines call these on numpy arrays (the online store on arrays of one
element), so a feature's arithmetic exists once and its floats agree bit for
bit. Counts arrive as float64 with NaN where the application has no such
entity; every function here lets that NaN through. An undefined ratio (0/0)
is NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from duanka.data.contract import CHANNELS
from duanka.data.events import ADDRESS_KINDS

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
# Branches are in China: Beijing time, no daylight saving since 1991.
BEIJING_OFFSET_US = 8 * HOUR_US
NIGHT_HOURS = (22, 6)  # from 22:00 to 06:00, local
YOUNG_COMPANY_DAYS = 90
NEW_PHONE_DAYS = 30  # a number activated this recently is "new" (card dealers hand out fresh SIMs)

CHANNEL_CODES: tuple[str, ...] = CHANNELS
ADDRESS_KIND_CODES: tuple[str, ...] = ADDRESS_KINDS
GENDER_CODES: tuple[str, ...] = ("F", "M")

FLAG_COLUMNS = (
    "out_of_province",
    "corporate",
    "young_company",
    "corporate_without_onsite",
    "full_bundle",
    "new_phone",
)
"""Columns :func:`derived_flags` adds; aggregates may count applications where they hold."""


def number(x: np.ndarray) -> np.ndarray:
    """As float64; None and missing values become NaN, booleans 0 and 1."""
    return np.asarray(x, dtype=np.float64)


def count(n: np.ndarray) -> np.ndarray:
    return number(n)


def share(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``part / total``; NaN where ``total`` is 0 or NaN."""
    part, total = number(part), number(total)
    # divides only where total > 0 (no warning to silence: np.errstate costs more than the division)
    out = np.full(np.broadcast_shapes(part.shape, total.shape), np.nan)
    return np.divide(part, total, out=out, where=total > 0)


def weekly_burst(n_7d: np.ndarray, n_90d: np.ndarray) -> np.ndarray:
    """How far the last 7 days' applications exceed what the 83 days before them lead one to
    expect, in units of its Poisson noise: ``(n - e) / sqrt(e + 1)``.

    A burst, not a level, and on one scale whatever the usual volume: a pair that sees ten
    applications every week scores near 0 in an ordinary week, one that sees one a month and
    six this week about 5.
    """
    n_7d = number(n_7d)
    expected = (number(n_90d) - n_7d) * (7.0 / 83.0)
    return (n_7d - expected) / np.sqrt(expected + 1.0)


def elsewhere(province: np.ndarray, branch_province: np.ndarray) -> np.ndarray:
    """1 where a known province is not the branch's, 0 where it is, NaN where it is unknown."""
    province = np.asarray(province, dtype=object)
    return np.where(pd.notna(province), np.not_equal(province, branch_province), np.nan).astype(np.float64)


def share_difference(
    part: np.ndarray, total: np.ndarray, base_part: np.ndarray, base_total: np.ndarray
) -> np.ndarray:
    """How far one share exceeds a baseline share."""
    return share(part, total) - share(base_part, base_total)


def excess_share(
    own_part: np.ndarray, own_total: np.ndarray, all_part: np.ndarray, all_total: np.ndarray
) -> np.ndarray:
    """How far one member's share exceeds the share of everyone else in the group.

    ``all_*`` include the member's own counts, which are taken out first.
    """
    own_part, own_total = number(own_part), number(own_total)
    return share(own_part, own_total) - share(number(all_part) - own_part, number(all_total) - own_total)


def weekly_vs_quarterly_rate(n_7d: np.ndarray, n_90d: np.ndarray) -> np.ndarray:
    """Daily rate over the last 7 days divided by the daily rate over the last 90."""
    return share(number(n_7d) * 90.0, number(n_90d) * 7.0)


def days_since(at_us: np.ndarray, first_us: np.ndarray) -> np.ndarray:
    """Days from ``first_us`` to ``at_us`` (microsecond timestamps); NaN without a first."""
    return (number(at_us) - number(first_us)) / DAY_US


def local_hour(at_us: np.ndarray) -> np.ndarray:
    """Hour of the day, Beijing time, of UTC microsecond timestamps."""
    at = np.asarray(at_us, dtype=np.int64)
    return number((at + BEIJING_OFFSET_US) // HOUR_US % 24)


def night(at_us: np.ndarray) -> np.ndarray:
    hour = local_hour(at_us)
    start, end = NIGHT_HOURS
    return number((hour >= start) | (hour < end))


def all_true(*flags: np.ndarray) -> np.ndarray:
    return number(np.logical_and.reduce([np.asarray(f, dtype=bool) for f in flags]))


def _code(x: np.ndarray, codes: tuple[str, ...]) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i, category in enumerate(codes):
        out[x == category] = i
    return out


def channel_code(channel: np.ndarray) -> np.ndarray:
    return _code(channel, CHANNEL_CODES)


def address_kind_code(kind: np.ndarray) -> np.ndarray:
    return _code(kind, ADDRESS_KIND_CODES)


def gender_code(gender: np.ndarray) -> np.ndarray:
    return _code(gender, GENDER_CODES)


FLAG_INPUTS = (
    "home_province",
    "branch_province",
    "account_type",
    "company_age_days",
    "onsite_verified",
    "u_shield",
    "mobile_banking",
    "payment_binding",
    "phone_tenure_days",
)
"""The application columns :func:`derived_flags` reads."""


def derived_flags(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-application flags that features and aggregates use, as booleans.

    ``columns`` holds the :data:`FLAG_INPUTS`: ``home_province``, ``branch_province``,
    ``account_type`` (object arrays) and the others (anything :func:`number` takes).
    """
    corporate = np.asarray(columns["account_type"] == "corporate", dtype=bool)
    company_age = number(columns["company_age_days"])
    onsite = number(columns["onsite_verified"])
    bundle = all_true(columns["u_shield"], columns["mobile_banking"], columns["payment_binding"])
    return {
        "out_of_province": np.asarray(columns["home_province"] != columns["branch_province"], dtype=bool),
        "corporate": corporate,
        # An unknown company age is not young; an unknown visit is not a visit.
        "young_company": corporate & (company_age < YOUNG_COMPANY_DAYS),
        "corporate_without_onsite": corporate & (onsite != 1),
        "full_bundle": bundle == 1,
        # an unknown tenure is not new
        "new_phone": number(columns["phone_tenure_days"]) < NEW_PHONE_DAYS,
    }
