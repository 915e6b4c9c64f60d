"""The running service: what it is configured with, how it opens and closes, and what it does on
its own schedule (follow the model alias, emit the record's signed head, prune the online state).

Everything that touches SQLite runs on the scoring thread
(:class:`~duanka.serving.scoring_thread.ScoringThread`).
Loading a new model runs on another thread and only the swap goes through the scoring thread,
so a reload never stalls a request for longer than one decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

from duanka.data.config import default_of
from duanka.data.private import private_folder
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.watchlist import StoredWatchlist
from duanka.serving.admission import AdmissionPolicy
from duanka.serving.anchor import AnchorOutlet, SignedAnchor, sign
from duanka.serving.audit import DecisionLog
from duanka.serving.keys import KeyFile
from duanka.serving.metrics import ServiceMetrics
from duanka.serving.model_source import LoadedModel, ModelSource
from duanka.serving.monitor.live import LiveMonitoring, MonitorJob
from duanka.serving.review.desk import ReviewDesk
from duanka.serving.review.model_desk import ModelDesk
from duanka.serving.scorer import DEFAULT_FUTURE_TOLERANCE, DEFAULT_TOLERANCE, Scorer
from duanka.serving.scoring_thread import ScoringThread
from duanka.serving.state import ServingPaths, open_service_state, sync_online_state
from duanka.training.bundle import ModelIntegrityError

log = logging.getLogger("duanka.serve")


@dataclass
class ServiceConfig:
    """What the service runs on.

    Attributes
    ----------
    source : ModelSource
        Where the model comes from; an alias URI is followed on reload.
    model : LoadedModel
        The model to start with, already verified (fail closed before binding a port).
    keys : Pseudonymiser
        The pseudonym key the event store was ingested with.
    store : EventStore
        The ingested events the online state starts from.
    paths : ServingPaths
        The service's files.
    poll_seconds : float
        How often to check whether the alias moved; 0 disables polling.
    chain_key : bytes, optional
        The decision record's chain key (:func:`duanka.serving.chain.chain_key`), which also signs
        the anchors; derived from ``keys`` when not given (tests and benches: ``duanka serve``
        always passes the audit key, required outside a demo store).
    anchor_every_s : float
        How often the record's signed head (:mod:`duanka.serving.anchor`) is emitted; once more
        at stop.
    anchor_file, anchor_syslog : Path, str, optional
        Where each anchor goes to leave the host, besides the service's log
        (:class:`duanka.serving.anchor.AnchorOutlet`).
    tolerance, future_tolerance : timedelta
        How far before, and after, the server's clock an application may be dated
        (:class:`duanka.serving.scorer.Scorer`).
    clock : callable, optional
        The time now (UTC); the system's clock when not given. Tests replaying a past period
        set it there.
    admission : AdmissionPolicy
        Rate, concurrency and read-time limits on clients (:mod:`duanka.serving.admission`).
    prune_every_s : float
        How often the online state forgets what no feature window of an application the
        service still takes can reach (:meth:`Service.prune_state`).
    monitor_every_s : float
        How often the monitoring plan runs over the decisions recorded since its last run
        (:mod:`duanka.serving.monitor.live`): what ``/metrics``' monitoring gauges are as of.
    outcome_window_days : int
        How long after opening a confirmation counts (the monitoring's matured months).
    """

    source: ModelSource
    model: LoadedModel
    keys: Pseudonymiser
    store: EventStore
    paths: ServingPaths
    poll_seconds: float = 0.0
    chain_key: bytes | None = None
    anchor_every_s: float = default_of("audit_anchor_every_s")
    anchor_file: Path | None = None
    anchor_syslog: str | None = None
    tolerance: timedelta = DEFAULT_TOLERANCE
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE
    clock: Callable[[], datetime] | None = None
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    prune_every_s: float = default_of("prune_every_s")
    monitor_every_s: float = default_of("monitor_every_s")
    outcome_window_days: int = default_of("outcome_window_days")


def settle_heap() -> None:
    """Put what the service loaded (libraries, model, explainer) out of the collector's sight.

    A full collection walks every tracked object: with the libraries and a model loaded,
    about 240,000 of them and 100+ ms here, paid by whichever requests are in flight. Frozen
    (``gc.freeze``), they are skipped. After a model switch, the old model is unfrozen and
    collected once, and what remains is frozen again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Service:
    """The running service's parts; built, started and stopped by the app's lifespan.

    Parameters
    ----------
    config : ServiceConfig
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.metrics = ServiceMetrics()
        self.keyfile = KeyFile(config.paths.keys)
        self.scoring = ScoringThread()
        self.reload_lock = asyncio.Lock()
        # one writer to the event store at a time: a watchlist feed or a reviewer's confirmations
        self.store_lock = asyncio.Lock()
        self.refused_version: str | None = None
        self.chain_key = config.chain_key or config.keys.audit_chain_key()
        self.anchors = AnchorOutlet(config.anchor_file, config.anchor_syslog)
        self.review = ReviewDesk(
            config.paths.root,
            config.paths.decisions,
            config.paths.online,
            self.keyfile.active_key,
            config.clock,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @cached_property
    def monitoring(self) -> LiveMonitoring:
        """The monitoring plan's runs on this service's record (``/monitor``, ``/metrics``)."""
        config = self.config
        job = MonitorJob(
            store=config.store.root,
            record=config.paths.decisions,
            sidecar=config.paths.monitor,
            tracking_uri=config.source.client.tracking_uri,
            outcome_window_days=config.outcome_window_days,
        )
        return LiveMonitoring(job, config.clock, self.metrics.monitoring)

    @cached_property
    def models(self) -> ModelDesk:
        """What ``/models`` reads: the registry the service loads its model from."""
        return ModelDesk(self.config.source.client)

    async def start(self) -> None:
        """Open the scorer on its thread, then start what runs on a schedule."""
        config = self.config
        await self.scoring.start(self._open)
        self.metrics.model_in_use(config.model.version, config.model.booster_sha256)
        settle_heap()
        self.metrics.watch_gc()
        self._tasks = [asyncio.create_task(self.log_anchor())]
        if config.poll_seconds > 0 and config.source.alias is not None:
            self._tasks.append(asyncio.create_task(self.poll()))
        self._tasks.append(asyncio.create_task(self.prune_on_schedule()))
        self._tasks.append(asyncio.create_task(self.monitoring.on_schedule(config.monitor_every_s)))

    async def stop(self) -> None:
        """Stop the schedules, emit the last anchor (after every request queued), close the scorer,
        end its thread."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if "monitoring" in self.__dict__:  # made only when asked for
            self.monitoring.stop()
        if self.scoring.started:
            await self.emit_anchor()
        self.anchors.close()
        await self.scoring.stop(_close)
        self.metrics.unwatch_gc()

    def _open(self) -> Scorer:
        """On the scoring thread: open the state, bring it up to the event store, audit the start."""
        config = self.config
        private_folder(config.paths.root)
        # Committed some applications at a time and fsynced about once a second off the scoring
        # thread: the decision record is the Scorer's redo log.
        online = open_service_state(config.paths.online)
        added = sync_online_state(online, config.store, config.paths.sync_marker, config.keys.key_id)
        decisions = DecisionLog(config.paths.decisions, chain_key=self.chain_key, checkpoint_every_s=0.5)
        watchlist = StoredWatchlist(config.store)
        listings = len(watchlist.current())  # read now, not on the first request
        scorer = Scorer(
            config.model,
            online,
            decisions,
            config.keys,
            watchlist,
            clock=config.clock,
            tolerance=config.tolerance,
            future_tolerance=config.future_tolerance,
        )
        redone = scorer.redo()
        online.warm()
        decisions.event(
            "model_loaded",
            {
                **config.model.describe(),
                "uri": config.source.uri,
                "state_added": added,
                "state_redone": redone,
                "watchlist": listings,
            },
            key_id=None,
            request_id=None,
        )
        return scorer

    async def reload(
        self, *, trigger: str, key_id: str | None, request_id: str | None
    ) -> tuple[bool, LoadedModel]:
        """Load what the source points at now and switch to it; the old model serves meanwhile.

        Raises
        ------
        ModelIntegrityError
            The new model fails verification; the current one stays, and the refusal is audited.
        """
        async with self.reload_lock:
            try:
                model = await asyncio.to_thread(self.config.source.load)
            except ModelIntegrityError as exc:
                self.metrics.reloads.labels("refused").inc()
                reason = str(exc)
                await self.scoring.run(
                    lambda scorer: scorer.log.event(
                        "model_reload_refused",
                        {"trigger": trigger, "reason": reason, "kept_version": scorer.model.version},
                        key_id=key_id,
                        request_id=request_id,
                    )
                )
                raise
            switched = await self.scoring.run(
                lambda scorer: scorer.switch(model, trigger=trigger, key_id=key_id, request_id=request_id)
            )
        self.metrics.reloads.labels("switched" if switched else "unchanged").inc()
        self.metrics.model_in_use(model.version, model.booster_sha256)
        if switched:
            settle_heap()
        return switched, model

    async def poll(self) -> None:
        """Follow the alias: reload whenever it points at another version."""
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            in_use = await self.scoring.run(lambda scorer: scorer.model.version)
            try:
                version = await asyncio.to_thread(self.config.source.current_version)
                # a version refused once is not retried (and audited) every poll: an admin reload still can
                if version not in (in_use, self.refused_version):
                    await self.reload(trigger="poll", key_id=None, request_id=None)
            except ModelIntegrityError:
                self.refused_version = version
            except Exception:  # a registry hiccup must not stop polling or serving
                log.exception("model poll failed; keeping version %s", in_use)

    async def log_anchor(self) -> None:
        """:meth:`emit_anchor` now and every ``anchor_every_s``."""
        while True:
            await self.emit_anchor()
            await asyncio.sleep(self.config.anchor_every_s)

    async def emit_anchor(self) -> SignedAnchor:
        """Sign the decision record's head and send it to the log and the anchor outlet: the anchor
        kept off the host (``duanka audit verify --anchors``), since a chain alone cannot see its
        tail cut or the whole file rolled back."""
        signed = sign(await self.scoring.run(lambda scorer: scorer.log.head()), self.chain_key)
        log.info("audit anchor %s", signed.line())
        try:
            await asyncio.to_thread(self.anchors.emit, signed)  # an fsync: off the event loop
        except OSError:  # serving goes on; the log holds this anchor, the next one tries again
            log.exception("the audit anchor could not be appended to %s", self.anchors.file)
        return signed

    async def prune_state(self) -> int:
        """Forget the applications (and their confirmations) that no feature window reaches.

        The earliest application the service still takes is dated ``tolerance`` before its
        clock (:class:`duanka.serving.scorer.Scorer`); what is older than that, less the longest
        window, can change no answer (:meth:`duanka.features.online.OnlineFeatureStore.prune`).
        The newest application held bounds it too: a clock that jumps ahead (set wrong, then
        put right) must not make the state forget, for good, what the next applications need.

        Returns
        -------
        int
            Applications removed.
        """
        tolerance = self.config.tolerance

        def prune(scorer: Scorer) -> int:
            newest = scorer.online.newest_applied_at()
            return 0 if newest is None else scorer.online.prune(min(newest, scorer.clock()) - tolerance)

        removed = await self.scoring.run(prune)
        log.info("online state pruned: %d applications no feature window reaches", removed)
        return removed

    async def prune_on_schedule(self) -> None:
        """:meth:`prune_state` every ``prune_every_s``, the first time that long after the start."""
        while True:
            await asyncio.sleep(self.config.prune_every_s)
            try:
                await self.prune_state()
            except Exception:  # a failed prune must not stop the next one, or the service
                log.exception(
                    "pruning the online state failed; the next try is in %g s", self.config.prune_every_s
                )


def _close(scorer: Scorer) -> None:
    """On the scoring thread: sync and close the state, then the decision record."""
    scorer.close()
    scorer.online.close()
    scorer.log.close()
