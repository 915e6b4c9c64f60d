"""The simulated period: its months, its days, and when in a day accounts are opened.

Instants are local wall-clock seconds (UTC+08:00) since 1970-01-01 00:00, int64:
the bank's clock, written with its ``+08:00`` offset.
"""

from __future__ import annotations

import calendar
import itertools
from dataclasses import dataclass
from datetime import date

import numpy as np

DAY = 86_400
HOUR = 3_600

# Branches are busiest mid-morning and mid-afternoon and quieter over lunch.
_COUNTER_HOURS = np.array([1.0, 1.4, 1.4, 0.7, 0.9, 1.3, 1.3, 1.0])  # 9:00-17:00
_COUNTER_OPENS = 9
# Self-service traffic over a day (0:00-23:00), apart from the night hours 0:00-6:00.
_DAY_HOURS = np.array(
    [
        0,
        0,
        0,
        0,
        0,
        0,
        0.4,
        0.8,
        1.0,
        1.2,
        1.4,
        1.3,
        1.2,
        1.1,
        1.2,
        1.2,
        1.1,
        1.0,
        1.0,
        1.2,
        1.5,
        1.6,
        1.4,
        0.9,
    ]
)
# Weekends see fewer openings: fewer counters staffed, companies closed.
_WEEKDAY_WEIGHT = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.45])


@dataclass(frozen=True, slots=True)
class Chunk:
    """The part of one calendar month inside the period: what is generated and written at once."""

    index: int
    first: np.datetime64  # first day
    stop: np.datetime64  # the day after the last

    @property
    def label(self) -> str:
        return str(self.first.astype("datetime64[M]"))


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole months, clamped to the end of a shorter month."""
    year, month0 = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month0 + 1, min(day.day, calendar.monthrange(year, month0 + 1)[1]))


@dataclass(frozen=True, slots=True)
class Period:
    """``months`` calendar months of openings from ``start``."""

    start: date
    months: int

    @property
    def end(self) -> date:
        """The day after the last day of the period."""
        return add_months(self.start, self.months)

    @property
    def days(self) -> np.ndarray:
        """Every day of the period, datetime64[D]."""
        return np.arange(np.datetime64(self.start), np.datetime64(self.end))

    def chunks(self) -> list[Chunk]:
        """The period cut at month boundaries (one more than ``months`` if it starts mid-month)."""
        bounds = [np.datetime64(self.start, "D")]
        month = np.datetime64(self.start, "M") + 1
        while (first := month.astype("datetime64[D]")) < np.datetime64(self.end):
            bounds.append(first)
            month += 1
        bounds.append(np.datetime64(self.end, "D"))
        return [Chunk(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(bounds))]

    def progress(self, at: np.ndarray) -> np.ndarray:
        """How far into the period each instant is: 0 at its start, 1 at its end."""
        first = np.datetime64(self.start, "D").astype(np.int64) * DAY
        length = len(self.days) * DAY
        return np.clip((np.asarray(at, np.int64) - first) / length, 0.0, 1.0)


def ramp(ends: tuple[float, float], progress: float | np.ndarray) -> float | np.ndarray:
    """A value moving linearly from ``ends[0]`` at the period's start to ``ends[1]`` at its end."""
    return ends[0] + (ends[1] - ends[0]) * progress


def day_weights(days: np.ndarray) -> np.ndarray:
    """Relative volume of openings on each day (weekends are quieter)."""
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    return _WEEKDAY_WEIGHT[weekday]


def draw_days(n: int, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` days among ``days``, weighted by :func:`day_weights`."""
    weights = day_weights(days)
    return days[rng.choice(len(days), n, p=weights / weights.sum())]


def _in_hours(hours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return hours * HOUR + rng.integers(0, HOUR, len(hours))


def counter_seconds(n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds after midnight within branch hours, 9:00-17:00."""
    hours = _COUNTER_OPENS + rng.choice(len(_COUNTER_HOURS), n, p=_COUNTER_HOURS / _COUNTER_HOURS.sum())
    return _in_hours(hours, rng)


def after_hours_seconds(n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds after midnight between closing and 20:00."""
    return _in_hours(rng.integers(17, 20, n), rng)


def anytime_seconds(n: int, rng: np.random.Generator, night: float | np.ndarray) -> np.ndarray:
    """Seconds after midnight of self-service openings; ``night`` of them 0:00-6:00."""
    day = rng.choice(24, n, p=_DAY_HOURS / _DAY_HOURS.sum())
    at_night = rng.random(n) < night
    return _in_hours(np.where(at_night, rng.integers(0, 6, n), day), rng)


def queued(
    batch: np.ndarray, start: np.ndarray, gap: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Seconds after midnight of people served one after another, batch by batch.

    Parameters
    ----------
    batch : numpy.ndarray
        Per row, its batch (0, 1, ...), rows of a batch together and in order.
    start : numpy.ndarray
        Per batch, the second after midnight its first row is served.
    gap : (int, int)
        Range of seconds between one row and the next within a batch.
    """
    wait = rng.integers(gap[0], gap[1], len(batch))
    first = np.r_[True, batch[1:] != batch[:-1]]
    wait[first] = 0
    waited = np.cumsum(wait)
    since_first = waited - np.maximum.accumulate(np.where(first, waited, 0))
    return np.minimum(start[batch] + since_first, DAY - 1)


def stamp(days: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Local instants from days (datetime64[D]) and seconds after midnight."""
    return days.astype("datetime64[D]").astype(np.int64) * DAY + np.asarray(seconds, np.int64)
