"""The service's monitoring: the plan run on a schedule and when ``/monitor`` is opened, the latest run kept.

A run reads only the decisions recorded since the last one (:func:`~.engine.run_monitoring` keeps
its counts in ``serving/monitor.db``) and runs in a worker process of its own: pandas and the
plots hold the interpreter for a second or two per run, and a thread would hold every branch's
request that long (the latency target is p99 < 20 ms). The worker opens the record read-only
while the scoring thread appends to it. One run at a time: whoever asks while one is under way
waits for that one. The first run on a long record counts it all (about a minute per million
decisions); ``/monitor`` does not hold a reviewer for that long, it shows the latest run or says
the count is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from multiprocessing.pool import Pool
from pathlib import Path
from zoneinfo import ZoneInfo

from duanka.data.config import SHANGHAI
from duanka.serving.monitor.engine import LABEL_COLUMNS, Monitoring, MonitorInputs, run_monitoring

log = logging.getLogger(__name__)
BEIJING = ZoneInfo(SHANGHAI)
# A run that has not ended by then is given up and its worker ended: a worker killed by the
# system mid-run (out of memory) never answers, and every later view would wait on it. The first
# count of a 10M-decision record takes about ten minutes here.
RUN_LIMIT_S = 3600.0


@dataclass(frozen=True)
class MonitorJob:
    """What the worker needs to run the plan on the service's store: paths and addresses, no object.

    Attributes
    ----------
    store : Path
        The event store (its labels, and the applications of batch decisions).
    record, sidecar : Path
        The decision record (read only) and the monitoring's counts.
    tracking_uri : str
        The model registry, where each model's reference is read.
    outcome_window_days : int
    """

    store: Path
    record: Path
    sidecar: Path
    tracking_uri: str
    outcome_window_days: int

    def inputs(self) -> MonitorInputs:
        """The run's inputs, built in the worker (the store's parts and labels as they are now)."""
        import mlflow

        from duanka.data.store import EventStore
        from duanka.serving.monitor.attributes import StoreApplications
        from duanka.serving.monitor.baselines import registry_resolver

        store = EventStore(self.store)
        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return MonitorInputs(
            record=self.record,
            sidecar=self.sidecar,
            resolve=registry_resolver(client),
            outcome_window_days=self.outcome_window_days,
            labels=lambda: store.labels(LABEL_COLUMNS).to_pandas(),
            store=StoreApplications(store.parts("applications")),
        )


def run_job(job: MonitorJob, as_of: date) -> Monitoring:
    """In the worker: one run of the plan."""
    return run_monitoring(job.inputs(), as_of=as_of)


class LiveMonitoring:
    """Runs of the monitoring plan in a worker process, one at a time; the latest kept.

    Parameters
    ----------
    job : MonitorJob
    clock : callable, optional
        The service's clock (UTC); a run is as of its Beijing day. Default: now.
    on_run : callable, optional
        Told each finished run (the service's gauges).
    """

    def __init__(
        self,
        job: MonitorJob,
        clock: Callable[[], datetime] | None = None,
        on_run: Callable[[Monitoring], None] | None = None,
    ) -> None:
        self.job = job
        self.clock = clock
        self.on_run = on_run
        self.latest: Monitoring | None = None
        self.finished_at: float | None = None  # time.time() of the latest run's end
        self.started_at: float | None = None  # of the run under way, or the last one
        self.failure: str | None = None  # why the latest attempt failed, until one succeeds
        self._running: asyncio.Task[Monitoring] | None = None
        self._pool: Pool | None = None  # started on the first run: most services are never asked

    def as_of(self) -> date:
        now = datetime.now(UTC) if self.clock is None else self.clock()
        return now.astimezone(BEIJING).date()

    @property
    def running(self) -> bool:
        return self._running is not None and not self._running.done()

    def refresh(self) -> asyncio.Future[Monitoring]:
        """A run up to the record as it is now: the one under way if any (it reads what was there
        when it started; later decisions are the next run's), else a new one.

        The future is shielded: a caller that stops waiting does not stop the run.
        """
        if not self.running:
            self.started_at = time.time()
            self._running = asyncio.create_task(self._run())
        assert self._running is not None
        return asyncio.shield(self._running)

    async def _run(self) -> Monitoring:
        try:
            monitoring = await asyncio.wait_for(self._in_worker(), RUN_LIMIT_S)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._end_worker()
            self.failure = f"the run did not end within {RUN_LIMIT_S:.0f} s: its worker was ended"
            log.error("the monitoring run failed (the previous run's figures stay): %s", self.failure)
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("the monitoring run failed (the previous run's figures stay): %s", self.failure)
            raise
        self.latest, self.finished_at, self.failure = monitoring, time.time(), None
        if self.on_run is not None:
            self.on_run(monitoring)
        return monitoring

    def _in_worker(self) -> asyncio.Future[Monitoring]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Monitoring] = loop.create_future()

        def settle(outcome: Monitoring | BaseException) -> None:
            if done.done():
                return
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

        if self._pool is None:
            # spawned, not forked: the service's threads and open SQLite handles stay behind
            self._pool = multiprocessing.get_context("spawn").Pool(1)
        self._pool.apply_async(
            run_job,
            (self.job, self.as_of()),
            callback=lambda result: loop.call_soon_threadsafe(settle, result),
            error_callback=lambda exc: loop.call_soon_threadsafe(settle, exc),
        )
        return done

    async def on_schedule(self, every_s: float) -> None:
        """Run every ``every_s`` seconds until cancelled (the first after ``every_s``, not at start:
        a service that starts is busy enough); a failed run is logged and the next one tried."""
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await self.refresh()

    def _end_worker(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def stop(self) -> None:
        """End the worker, and a run under way with it: each chunk it counted is committed on its own,
        so the next run carries on from the last."""
        self._end_worker()
        if self._running is not None and not self._running.done():
            self._running.cancel()
