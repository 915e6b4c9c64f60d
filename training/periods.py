"""The periods of a rolling backtest, and the earliest one a store can support."""

from __future__ import annotations

from enum import StrEnum

import pandas as pd

from duanka.data.config import SHANGHAI


class Every(StrEnum):
    MONTH = "month"
    QUARTER = "quarter"

    @property
    def months(self) -> int:
        return {Every.MONTH: 1, Every.QUARTER: 3}[self]


def period_starts(start: pd.Timestamp, end: pd.Timestamp, every: Every) -> list[pd.Timestamp]:
    """Starts of the periods from ``start`` up to ``end``, in local calendar months."""
    if end <= start:
        raise ValueError(f"--to ({end.date()}) must come after --from ({start.date()})")
    local = start.tz_convert(SHANGHAI)
    starts, k = [], 0
    while (at := (local + pd.DateOffset(months=k * every.months)).tz_convert("UTC")) < end:
        starts.append(at)
        k += 1
    return starts


def earliest_start(
    first_applied: pd.Timestamp,
    outcome_window_days: int,
    valid_months: int,
    test_months: int,
    train_months: int | None = None,
) -> pd.Timestamp:
    """The earliest period start with a month of mature training history before the split."""
    months = valid_months + test_months + (train_months or 1)
    local = (first_applied + pd.Timedelta(days=outcome_window_days)).tz_convert(SHANGHAI)
    at = local.normalize() + pd.DateOffset(months=months)
    if at.day != 1:
        at = (at + pd.offsets.MonthBegin(1)).normalize()
    return at.tz_convert("UTC")
