"""Prometheus metrics of the scoring service, in a registry of its own.

A registry per service (not the process-wide default) keeps two apps in one
process, as in tests, from sharing or double-registering counters.
"""

from __future__ import annotations

import gc
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
