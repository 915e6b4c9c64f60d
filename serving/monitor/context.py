"""What the plan's rows read: the sidecar's counts, the record, the models' baselines, the labels and
the dates that bound them."""

from __future__ import annotations

import hashlib
import importlib
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache, cached_property, partial
from pathlib import Path

import pandas as pd

import duanka.training as training_room
from duanka.serving.monitor.baselines import Baseline
from duanka.serving.monitor.periods import period_first_day, period_last_day
from duanka.serving.monitor.record import DecisionRecord
from duanka.serving.monitor.sidecar import Sidecar
from duanka.training.bands import ALERT_BUDGET


@cache
def _drawing_code() -> bytes:
    """The source of the code that draws the figures: a change in it draws them all again."""
    return (
        Path(__file__).with_name("plots.py").read_bytes()
        + Path(training_room.__file__).with_name("plots.py").read_bytes()
    )


RECENT_DAYS = 7  # the band shares' window: the last week of decisions, overall and per branch
LinkLookup = Callable[[Sequence[str]], dict[str, dict[str, str | None]]]
"""``application ids -> {id: {link key: pseudonym}}`` of the batch decisions, from the event store."""


@dataclass
class Context:
    """The inputs of one run of the plan.

    Attributes
    ----------
    sidecar : Sidecar
        Counted up to the record's head.
    record : DecisionRecord
        Open read-only: the referred decisions and the dispositions are read from it directly.
    baselines : mapping of str to Baseline
        By booster.
    as_of : date
        The Beijing day the monitoring is as of: labels and dispositions known by its end, months
        whose outcome window has closed by then.
    outcome_window_days : int
        Days after an opening within which a confirmation makes it a mule.
    labels : pandas.DataFrame
        ``application_id``, ``confirmed_at`` (UTC) of the event store's confirmations.
    links : LinkLookup, optional
        Link keys of batch decisions; None: rings are drawn from the service's decisions only.
    budget : dict
        Share of openings per band.
    """

    sidecar: Sidecar
    record: DecisionRecord
    baselines: Mapping[str, Baseline]
    as_of: date
    outcome_window_days: int
    labels: pd.DataFrame
    links: LinkLookup | None = None
    budget: dict[str, float] = field(default_factory=lambda: dict(ALERT_BUDGET))

    @cached_property
    def day_bands(self) -> pd.DataFrame:
        """Decisions per Beijing day (index, ``YYYY-MM-DD``) and band (columns), up to the as-of day."""
        table = self.sidecar.table("day_bands", "day <= ?", [self.as_of.isoformat()])
        return table.pivot_table(index="day", columns="band", values="n", aggfunc="sum", fill_value=0)

    @cached_property
    def through(self) -> date | None:
        """The last day with decisions on or before the as-of day; None for none."""
        return None if self.day_bands.empty else date.fromisoformat(str(self.day_bands.index.max()))

    @cached_property
    def first(self) -> date | None:
        """The first day with decisions; None for none."""
        return None if self.day_bands.empty else date.fromisoformat(str(self.day_bands.index.min()))

    def whole(self, period: str) -> bool:
        """Whether the record holds all of a week or month (a :func:`~.periods.period_key`).

        A period cut by the record's start or end is not judged: its weekdays are not a whole
        week's, and features that move with the day of the week would read as drift.
        """
        if self.first is None or self.through is None:
            return False
        return self.first <= period_first_day(period) and period_last_day(period) <= self.through

    @cached_property
    def recent(self) -> tuple[date, date] | None:
        """The last :data:`RECENT_DAYS` days of decisions: ``(first, last)``."""
        if self.through is None:
            return None
        return self.through - timedelta(days=RECENT_DAYS - 1), self.through

    @cached_property
    def groups(self) -> pd.DataFrame:
        """Decisions and alerts per month and fairness group, up to the as-of month."""
        return self.sidecar.table("groups", "month <= ?", [self.as_of.isoformat()[:7]])

    @cached_property
    def dispositions(self) -> pd.DataFrame:
        """The reviewers' dispositions (:meth:`DecisionRecord.dispositions`), read once."""
        return self.record.dispositions()

    def periods_until(self, table: str, **where: object) -> pd.DataFrame:
        """Rows of a table keyed by ``period`` whose week or month started by the as-of day.

        ``where``: further columns that must equal the values given.
        """
        day = self.as_of.isoformat()
        weeks = "(period LIKE 'w:%' AND substr(period, 3) <= ?)"
        months = "(period LIKE 'm:%' AND substr(period, 3) <= ?)"
        clause = f"({weeks} OR {months})" + "".join(f" AND {column} = ?" for column in where)
        read = self.sidecar.bins if table == "bins" else partial(self.sidecar.table, table)
        return read(clause, [day, day[:7], *where.values()])

    @cached_property
    def models(self) -> pd.DataFrame:
        """Decisions per model and day, up to the as-of day."""
        return self.sidecar.table("models", "day <= ?", [self.as_of.isoformat()])

    def draw(self, key: str, figure: str, *args: object) -> str:
        """Figure ``figure`` of :mod:`duanka.serving.monitor.plots` drawn from ``args``, for row ``key``.

        Drawing is most of a run's time (matplotlib lays out every label), so each row's figure is
        kept in the sidecar with a digest of its inputs and of the drawing code, and drawn again only
        when they change; matplotlib is not even imported by a run that draws nothing.
        """
        digest = hashlib.sha256(
            _drawing_code() + figure.encode() + pickle.dumps(args, protocol=5)
        ).hexdigest()
        found = self.sidecar.figure(key, digest)
        if found is None:
            found = getattr(importlib.import_module("duanka.serving.monitor.plots"), figure)(*args)
            self.sidecar.keep_figure(key, digest, found)
        return found

    def dominant(self, first: date, last: date) -> Baseline | None:
        """The baseline of the model that made most decisions from ``first`` to ``last``."""
        days = self.models["day"]
        chosen = self.models.loc[(days >= first.isoformat()) & (days <= last.isoformat())]
        if chosen.empty:
            return None
        booster = chosen.groupby("booster")["n"].sum().idxmax()
        return self.baselines.get(booster)
