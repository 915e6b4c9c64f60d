"""The calendar the monitoring counts in: Beijing days, weeks from Monday and months.

Decisions are counted on the local day their application was made (``applied_at``; the day it
was decided for a record from before applications' times were kept), as branches and the
budget count them: a batch run scoring last month's openings today counts in last month. Keys
are ISO text (``2025-06-02`` for a day and for the week that starts on that Monday, ``2025-06``
for a month), so they sort as they read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

from duanka.features.values import BEIJING_OFFSET_US, DAY_US

WEEK = "w"
MONTH = "m"
_EPOCH_MONDAY_OFFSET = 3  # 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on Mondays


def instants_us(iso: Sequence[str | None]) -> np.ndarray:
    """Microseconds since the epoch (UTC) of ISO 8601 instants; -1 where none is given."""
    stamps = pd.to_datetime(pd.Series(iso, dtype=object), utc=True, format="ISO8601")
    us = stamps.to_numpy(dtype="datetime64[us]").astype(np.int64)
    return np.where(stamps.isna().to_numpy(), -1, us)


def local_day_numbers(us: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the Beijing calendar day of each instant (microseconds, UTC)."""
    return (np.asarray(us, dtype=np.int64) + BEIJING_OFFSET_US) // DAY_US


def day_keys(days: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DD`` of day numbers."""
    return np.asarray(days, dtype=np.int64).astype("datetime64[D]").astype(str).astype(object)


def week_keys(days: np.ndarray) -> np.ndarray:
    """The Monday (``YYYY-MM-DD``) of the week of each day number."""
    days = np.asarray(days, dtype=np.int64)
    return day_keys(days - (days + _EPOCH_MONDAY_OFFSET) % 7)


def month_keys(days: np.ndarray) -> np.ndarray:
    """``YYYY-MM`` of day numbers."""
    return (
        np.asarray(days, dtype=np.int64)
        .astype("datetime64[D]")
        .astype("datetime64[M]")
        .astype(str)
        .astype(object)
    )


def period_key(kind: str, key: str) -> str:
    """A week's or month's key in one column of periods: ``w:2025-06-02``, ``m:2025-06``."""
    return f"{kind}:{key}"


def month_last_day(month: str) -> date:
    """The last day of ``YYYY-MM``."""
    first = date.fromisoformat(f"{month}-01")
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return following - timedelta(days=1)


def week_last_day(week: str) -> date:
    """The Sunday of the week starting on Monday ``week``."""
    return date.fromisoformat(week) + timedelta(days=6)


def period_first_day(period: str) -> date:
    """The first day of a period key (:func:`period_key`)."""
    kind, _, key = period.partition(":")
    return date.fromisoformat(key if kind == WEEK else f"{key}-01")


def period_last_day(period: str) -> date:
    """The last day of a period key (:func:`period_key`)."""
    kind, _, key = period.partition(":")
    return week_last_day(key) if kind == WEEK else month_last_day(key)
