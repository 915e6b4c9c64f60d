"""The HTTP service: FastAPI over one :class:`duanka.serving.scorer.Scorer`, for one uvicorn worker.

This module only assembles; each part has its own:

- :mod:`~duanka.serving.schemas`: request and response bodies (the OpenAPI document);
- :mod:`~duanka.serving.lifecycle`: the running :class:`~duanka.serving.lifecycle.Service`: open,
  close, model reload and polling, audit anchor, pruning, GC tuning;
- :mod:`~duanka.serving.scoring_thread`: the one thread that owns the scorer's SQLite;
- :mod:`~duanka.serving.admission`: who is let in, how many at once, how often, how long to send;
- :mod:`~duanka.serving.middleware`: request id, body-size limit, request metrics;
- :mod:`~duanka.serving.errors`: exceptions mapped to statuses and bodies;
- :mod:`~duanka.serving.routes`: the routes, one router per concern.

The running service lives in ``app.state.service`` only; routes reach it through the
:data:`duanka.serving.routes.deps.RunningService` dependency.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from uvicorn.protocols.http.h11_impl import H11Protocol

from duanka.data.config import SHANGHAI
from duanka.serving.admission import Admission, AdmissionPolicy, http_protocol
from duanka.serving.errors import install_error_handlers
from duanka.serving.lifecycle import Service, ServiceConfig
from duanka.serving.middleware import Observe, count_late_headers
from duanka.serving.review import models as model_pages
from duanka.serving.review import monitor_page
from duanka.serving.review import pages as review_pages
from duanka.serving.review import web as review_web
from duanka.serving.routes import admin, operations, scoring, state


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application for one model, one state folder and one key file."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = app.state.service = Service(config)
        try:
            await service.start()
            yield
        finally:
            await service.stop()

    # Swagger UI's assets from the installed package: a bank intranet reaches no CDN. Its
    # validator is off: on a host name other than localhost the page would send the internal
    # OpenAPI document's address to validator.swagger.io, outside the bank.
    app = FastAPIOffline(
        title="duanka scoring service",
        summary="Money-mule risk scores for account openings (断卡), with reasons in Chinese and English.",
        version="1",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
    )
    # Added last, Observe runs first: every answer, Admission's refusals included, is counted.
    app.add_middleware(
        Admission,
        policy=config.admission,
        authenticate=lambda token: app.state.service.keyfile.authenticate(token),
    )
    app.add_middleware(Observe, metrics=lambda: app.state.service.metrics)
    install_error_handlers(app)
    for routes in (scoring, state, admin, operations, review_pages, model_pages, monitor_page):
        app.include_router(routes.router)
    review_web.install_handlers(app)
    clock = config.clock or partial(datetime.now, UTC)
    app.openapi = partial(_with_the_time_now, app.openapi, clock)  # type: ignore[method-assign]
    return app


def _with_the_time_now(document: Callable[[], dict], clock: Callable[[], datetime]) -> dict:
    """The OpenAPI document with every example's ``applied_at`` the service's time now, in Beijing
    time.

    The service takes an application only within minutes of its clock, so a fixed date in an
    example would make "Try it out" on ``/docs`` a 422 a day after it was written.
    """
    now = clock().astimezone(ZoneInfo(SHANGHAI)).isoformat(timespec="seconds")
    stamped = copy.deepcopy(document())  # FastAPI caches the document: never change its copy

    def stamp(node: object) -> None:
        if isinstance(node, dict):
            if "applied_at" in node and isinstance(node["applied_at"], str):
                node["applied_at"] = now
            for value in node.values():
                stamp(value)
        elif isinstance(node, list):
            for value in node:
                stamp(value)

    for schema in stamped.get("components", {}).get("schemas", {}).values():
        stamp(schema.get("examples", []))
    return stamped


def server_protocol(app: FastAPI, policy: AdmissionPolicy) -> type[H11Protocol]:
    """Uvicorn's HTTP protocol for ``app``: ``policy``'s header deadline
    (:func:`duanka.serving.admission.http_protocol`), each 408 it gives counted in the service's metrics."""
    return http_protocol(policy, on_headers_late=lambda: count_late_headers(app.state.service.metrics))
