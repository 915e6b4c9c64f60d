"""The service's bounds in time, in the words every refusal uses.

An application is taken from the server's clock less the backdating tolerance to the clock plus
the future tolerance, and a confirmation no later than the clock plus the future tolerance. The
refusals show the server's clock, in Beijing time, and no other time: nothing another caller sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from duanka.data.config import SHANGHAI

_BEIJING = ZoneInfo(SHANGHAI)


def _span(span: timedelta) -> str:
    """A tolerance as a person reads it: in seconds up to two minutes, else in minutes."""
    seconds = span.total_seconds()
    return f"{seconds:g} seconds" if seconds < 120 else f"{seconds / 60:g} minutes"


def _clock(now: datetime) -> str:
    return f"the server's clock ({now.astimezone(_BEIJING):%Y-%m-%d %H:%M:%S} Beijing time)"


def after_the_clock(at: datetime, now: datetime, tolerance: timedelta) -> str | None:
    """Why ``at`` is refused as dated too far after ``now``, or None when it is not."""
    if at <= now + tolerance:
        return None
    return f"more than {_span(tolerance)} after {_clock(now)}: check the clock of the system that sent it"


def before_the_clock(at: datetime, now: datetime, tolerance: timedelta) -> str | None:
    """Why an application dated ``at`` is refused as a backfill, or None when it is not."""
    if at >= now - tolerance:
        return None
    return (
        f"more than {_span(tolerance)} before {_clock(now)}: the service scores openings as they "
        "happen; backfills go through `duanka ingest`"
    )
