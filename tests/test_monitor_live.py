"""The service's monitoring runs (:class:`duanka.serving.monitor.live.LiveMonitoring`): in a worker
process, one at a time, the latest kept, a failure said and the figures before it kept.

The record is :mod:`tests.monitor_records`' stable one; the registry holds no model, so the PSI and
CSI rows say why they are not computed, which is all these tests need of them.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from datetime import UTC, datetime, time

import pytest

from duanka.serving.monitor import live
from duanka.serving.monitor.live import LiveMonitoring, MonitorJob
from tests import monitor_records as records


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> MonitorJob:
    folder = tmp_path_factory.mktemp("live")
    built = records.build(folder / "decisions.db")
    (folder / "store").mkdir()
    return MonitorJob(
        store=folder / "store",
        record=built.path,
        sidecar=folder / "monitor.db",
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        outcome_window_days=records.OUTCOME_WINDOW_DAYS,
    )


def _monitoring(job: MonitorJob, told: list) -> LiveMonitoring:
    noon = datetime.combine(records.AS_OF, time(4), tzinfo=UTC)
    return LiveMonitoring(job, clock=lambda: noon, on_run=told.append)


def test_views_during_a_run_wait_for_that_run_and_the_next_reads_only_what_is_new(job):
    told: list = []
    monitoring = _monitoring(job, told)

    async def views() -> tuple:
        try:
            first, second = await asyncio.gather(monitoring.refresh(), monitoring.refresh())
            third = await monitoring.refresh()
            return first, second, third
        finally:
            monitoring.stop()

    first, second, third = asyncio.run(views())
    assert first is second  # one run for both views
    assert told == [first, third] and monitoring.latest is third
    assert first.refreshed.read == records.WEEKS * 7 * records.PER_DAY
    assert third.refreshed.read == 0  # the counts were kept: nothing new to read
    assert first.as_of == records.AS_OF and monitoring.failure is None


def test_a_failed_run_is_said_and_the_figures_before_it_stay(job, tmp_path):
    told: list = []
    copied = replace(job, record=tmp_path / "decisions.db", sidecar=tmp_path / "monitor.db")
    shutil.copy(job.record, copied.record)
    monitoring = _monitoring(copied, told)

    async def run_then_fail() -> None:
        try:
            await monitoring.refresh()
            copied.record.write_bytes(b"not a decision record")
            with pytest.raises(Exception, match="database"):
                await monitoring.refresh()
        finally:
            monitoring.stop()

    asyncio.run(run_then_fail())
    assert len(told) == 1 and monitoring.latest is told[0]
    assert monitoring.failure is not None and "database" in monitoring.failure


def test_a_run_past_its_limit_ends_its_worker(job, tmp_path, monkeypatch):
    monkeypatch.setattr(live, "RUN_LIMIT_S", 0.01)
    copied = replace(job, sidecar=tmp_path / "monitor.db")
    monitoring = _monitoring(copied, [])

    async def too_long() -> None:
        with pytest.raises(TimeoutError):
            await monitoring.refresh()

    asyncio.run(too_long())
    assert "did not end within" in monitoring.failure and monitoring.latest is None
    assert monitoring._pool is None  # ended: the next run starts a new worker
