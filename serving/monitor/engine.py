"""The monitoring's entry point: bring the counts up to the record, then compute every row of the plan.

:func:`run_monitoring` is what ``duanka monitor`` calls, and what a ``/monitor`` page or a metrics
exporter should call: it returns a :class:`Monitoring` (its rows, their statuses, the worst of
them as an exit status), which :func:`duanka.serving.monitor.render.render_html` turns into one
self-contained page.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from duanka.data.config import SHANGHAI, Settings
from duanka.data.store import EventStore
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.monitor.attributes import StoreApplications
from duanka.serving.monitor.baselines import BaselineResolver
from duanka.serving.monitor.context import Context
from duanka.serving.monitor.outcomes import outcomes
from duanka.serving.monitor.plan_bands import branch_row, overall_row
from duanka.serving.monitor.plan_cases import cases_row, overrides_row
from duanka.serving.monitor.plan_drift import divergences, feature_row, missing_row, score_row
from duanka.serving.monitor.plan_outcomes import fairness_row, performance_row
from duanka.serving.monitor.plan_reasons import mix_row, origin_row
from duanka.serving.monitor.plan_row import PlanRow, Status
from duanka.serving.monitor.record import DecisionRecord
from duanka.serving.monitor.refresh import Progress, Refreshed, refresh
from duanka.serving.monitor.sidecar import Sidecar
from duanka.serving.state import ServingPaths
from duanka.training.bands import ALERT_BUDGET

LABEL_COLUMNS = ["application_id", "confirmed_at"]
PLOTS = "duanka.serving.monitor.plots"


def no_labels() -> pd.DataFrame:
    """No confirmation at all (a record monitored without its event store)."""
    return pd.DataFrame(
        {"application_id": pd.Series(dtype=str), "confirmed_at": pd.Series(dtype="datetime64[us, UTC]")}
    )


@dataclass(frozen=True)
class MonitorInputs:
    """Where the monitoring reads and keeps its counts.

    Attributes
    ----------
    record : Path
        The decision record (``decisions.db``), opened read-only.
    sidecar : Path
        The counts (``monitor.db``), created when missing.
    resolve : BaselineResolver
        Each model's reference and tested figures (:func:`~.baselines.registry_resolver`).
    outcome_window_days : int
        ``Settings.outcome_window_days``.
    labels : callable
        The event store's confirmations (``application_id``, ``confirmed_at``), read when needed.
    store : StoreApplications, optional
        Origin, gender and link keys of batch decisions.
    features : tuple of str
        The model features the answers hold.
    budget : dict
        Share of openings per band.
    """

    record: Path
    sidecar: Path
    resolve: BaselineResolver
    outcome_window_days: int
    labels: Callable[[], pd.DataFrame] = no_labels
    store: StoreApplications | None = None
    features: tuple[str, ...] = MODEL_FEATURES
    budget: dict[str, float] = field(default_factory=lambda: dict(ALERT_BUDGET))

    @classmethod
    def for_store(cls, store: EventStore, settings: Settings, resolve: BaselineResolver) -> MonitorInputs:
        """The inputs of the service on ``store``: its record, ``serving/monitor.db``, its labels."""
        paths = ServingPaths.for_data(store.root, settings)
        return cls(
            record=paths.decisions,
            sidecar=paths.monitor,
            resolve=resolve,
            outcome_window_days=settings.outcome_window_days,
            labels=lambda: store.labels(LABEL_COLUMNS).to_pandas(),
            store=StoreApplications(store.parts("applications")),
        )


@dataclass(frozen=True)
class Monitoring:
    """Every row of the monitoring plan, computed.

    Attributes
    ----------
    as_of : date
        The Beijing day the monitoring is as of.
    through : date or None
        The last day with decisions on or before it.
    rows : tuple of PlanRow
        In the plan's order.
    refreshed : Refreshed
        What this run read of the record.
    facts : dict of str to str
        What the page's header says (record size, models, dates).
    built_at : str
    seconds : dict of str to float
        How long the run took to ``count`` the new decisions and to ``plan`` the rows.
    """

    as_of: date
    through: date | None
    rows: tuple[PlanRow, ...]
    refreshed: Refreshed
    facts: dict[str, str]
    built_at: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """The worst status of the rows that were computed (ok when none was)."""
        return max((r.status for r in self.rows if r.computed), default=Status.OK)

    @property
    def exit_code(self) -> int:
        """0 ok, 1 watch, 2 act: what ``duanka monitor`` exits with, for a scheduler to alert on."""
        return int(self.status)

    @property
    def act_triggers(self) -> int:
        """How many computed rows say act."""
        return sum(1 for r in self.rows if r.computed and r.status == Status.ACT)

    @property
    def gauges(self) -> dict[str, float]:
        """Every row's figures for ``/metrics`` (:attr:`PlanRow.gauges`)."""
        return {name: value for r in self.rows for name, value in r.gauges.items()}

    def row(self, key: str) -> PlanRow:
        """The row of ``key`` (``bands_branch``, ``feature_csi``, ...)."""
        return next(r for r in self.rows if r.key == key)


def today() -> date:
    """Today in Beijing: the default as-of day."""
    return datetime.now(ZoneInfo(SHANGHAI)).date()


def plan_rows(ctx: Context) -> tuple[PlanRow, ...]:
    """Every row of the report's monitoring plan, in its order, from one context."""
    d = divergences(ctx)
    o = outcomes(ctx)
    return (
        overall_row(ctx),
        branch_row(ctx),
        score_row(ctx, d),
        feature_row(ctx, d),
        missing_row(ctx, d),
        mix_row(ctx),
        fairness_row(ctx, o),
        origin_row(ctx),
        performance_row(ctx, o),
        cases_row(ctx),
        overrides_row(ctx),
    )


def run_monitoring(
    inputs: MonitorInputs, *, as_of: date | None = None, progress: Progress | None = None
) -> Monitoring:
    """Count the record's new decisions and compute the monitoring plan.

    Parameters
    ----------
    inputs : MonitorInputs
    as_of : date, optional
        The Beijing day to monitor as of: decisions up to its end, labels and dispositions known by
        then. Default: today.
    progress : callable, optional
        Told how far the read of new decisions got (:data:`~duanka.serving.monitor.refresh.Progress`).

    Returns
    -------
    Monitoring
    """
    as_of = today() if as_of is None else as_of
    started = time.perf_counter()
    with DecisionRecord(inputs.record, inputs.features) as record, Sidecar(inputs.sidecar) as sidecar:
        if record.head() > sidecar.watermark:
            # new decisions change figures: matplotlib is imported beside the count, which waits on
            # SQLite with the interpreter released, rather than after it
            threading.Thread(target=importlib.import_module, args=(PLOTS,), daemon=True).start()
        refreshed = refresh(record, sidecar, inputs.resolve, store=inputs.store, progress=progress)
        counted = time.perf_counter()
        ctx = Context(
            sidecar=sidecar,
            record=record,
            baselines=refreshed.baselines,
            as_of=as_of,
            outcome_window_days=inputs.outcome_window_days,
            labels=inputs.labels(),
            links=None if inputs.store is None else inputs.store.links,
            budget=inputs.budget,
        )
        rows = plan_rows(ctx)
        versions = sorted(set(ctx.models["version"]), key=lambda v: (len(v), v))
        facts = {
            "As of (Beijing)": as_of.isoformat(),
            "Decisions through": "none" if ctx.through is None else ctx.through.isoformat(),
            "Decisions counted": f"{int(ctx.day_bands.to_numpy().sum()):,}",
            "Read this run": f"{refreshed.read:,}",
            "Model versions": ", ".join(versions) or "none",
            "Outcome window": f"{inputs.outcome_window_days} days",
        }
    built = datetime.now(ZoneInfo(SHANGHAI)).strftime("%Y-%m-%d %H:%M Beijing time")
    seconds = {"count": counted - started, "plan": time.perf_counter() - counted}
    return Monitoring(as_of, ctx.through, rows, refreshed, facts, built, seconds)
