"""Prometheus metrics of the scoring service, in a registry of its own.

A registry per service (not the process-wide default) keeps two apps in one
process, as in tests, from sharing or double-registering counters.
"""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from duanka.serving.monitor.engine import Monitoring

# Milliseconds matter here: the latency target is p50 < 5 ms, p99 < 20 ms.
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class ServiceMetrics:
    """Request counts and latencies, decisions by band, errors, the model in use."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "duanka_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "duanka_http_request_duration_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "duanka_decisions",
            "Applications newly scored, by band (replayed answers are not counted).",
            ["band"],
            registry=self.registry,
        )
        self.replays = Counter(
            "duanka_replayed_decisions", "Retries answered from the stored response.", registry=self.registry
        )
        self.scores = Histogram(
            "duanka_score",
            "Calibrated scores of newly scored applications.",
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "duanka_errors",
            "Requests answered with an error, by route and kind.",
            ["route", "kind"],
            registry=self.registry,
        )
        self.model = Gauge(
            "duanka_model_info",
            "The model in use (value 1) by version and booster hash.",
            ["version", "booster_sha256"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "duanka_model_reloads", "Model reload attempts by outcome.", ["outcome"], registry=self.registry
        )
        self.gc_pauses = Histogram(
            "duanka_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation: every request waits them out.",
            ["generation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.monitor_band_share = Gauge(
            "duanka_monitor_band_share",
            "Each band's share of all openings over the monitoring's last 7 days of decisions (alert: "
            "critical and high), from its latest run; overall only, no branch.",
            ["band"],
            registry=self.registry,
        )
        self.monitor_largest_psi = Gauge(
            "duanka_monitor_largest_psi",
            "The largest PSI on the latest judged week and month against the model's reference: of the "
            "score, and of any model feature (its CSI).",
            ["of"],
            registry=self.registry,
        )
        self.monitor_act_triggers = Gauge(
            "duanka_monitor_act_triggers",
            "Rows of the monitoring plan whose trigger says act, in its latest run.",
            registry=self.registry,
        )
        self.monitor_status = Gauge(
            "duanka_monitor_status",
            "The latest monitoring run's worst status: 0 ok, 1 watch, 2 act (duanka monitor's exit status).",
            registry=self.registry,
        )
        self.monitor_run = Gauge(
            "duanka_monitor_last_run_timestamp_seconds",
            "When the latest monitoring run finished (Unix time): the gauges above are as of it.",
            registry=self.registry,
        )
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.labels(str(info["generation"])).observe(time.perf_counter() - self._gc_started)

    def watch_gc(self) -> None:
        """Time the collector's pauses (``gc.callbacks``) until :meth:`unwatch_gc`."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def model_in_use(self, version: str, booster_sha256: str) -> None:
        self.model.clear()
        self.model.labels(version, booster_sha256).set(1)

    def monitoring(self, monitoring: Monitoring) -> None:
        """Set the monitoring gauges from a run; a figure the run could not compute leaves no series."""
        gauges = monitoring.gauges
        self.monitor_band_share.clear()
        self.monitor_largest_psi.clear()
        for name, value in gauges.items():
            kind, _, label = name.partition(":")
            if kind == "band_share":
                self.monitor_band_share.labels(label).set(value)
            elif kind == "psi":
                self.monitor_largest_psi.labels(label).set(value)
        self.monitor_act_triggers.set(monitoring.act_triggers)
        self.monitor_status.set(monitoring.exit_code)
        self.monitor_run.set_to_current_time()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
