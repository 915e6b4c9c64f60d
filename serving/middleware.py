"""What every HTTP request passes through before the routes: its id, the body-size limit, and the
request metrics (:class:`Observe`). Who may call, how often and how long they may take to send is
:mod:`duanka.serving.admission`; how errors become answers is :mod:`duanka.serving.errors`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from fastapi.responses import JSONResponse

from duanka.serving.metrics import ServiceMetrics
from duanka.serving.schemas import MAX_BATCH

# A full batch of 1,000 applications is about 0.6 MB of JSON; anything far larger is a mistake.
MAX_BODY_BYTES = 4 * 1024 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Label values a client cannot grow: any other method is counted as "other".
_METHODS = frozenset({"GET", "POST"})
_ROUTES = (
    "/v1/score",
    "/v1/score/batch",
    "/v1/labels",
    "/v1/watchlist",
    "/v1/admin/reload",
    "/healthz",
    "/readyz",
    "/metrics",
)
# The error kinds of duanka_errors_total; a status not named here is counted as "internal".
ERROR_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
}


def _client_request_id(scope: dict) -> str | None:
    """The caller's ``X-Request-ID`` when it is well formed; kept beside the server's own id."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
    return None


class Observe:
    """ASGI middleware: request id, body-size limit, and the request metrics.

    Plain ASGI rather than ``BaseHTTPMiddleware``: it adds microseconds, not a task per request.
    """

    def __init__(self, app: Callable, metrics: Callable[[], ServiceMetrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # the audit's request id is the server's own: a caller cannot make two requests share one
        request_id = uuid.uuid4().hex
        client_request_id = _client_request_id(scope)
        scope["duanka.started"] = started
        scope["duanka.request_id"] = request_id
        scope["duanka.client_request_id"] = client_request_id
        echoed = [(b"x-request-id", request_id.encode("ascii"))]
        if client_request_id is not None:
            echoed.append((b"x-client-request-id", client_request_id.encode("ascii")))
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *echoed]
            await send(message)

        received = 0
        refused = False

        async def receive_limited() -> dict:
            # A chunked body has no Content-Length: count what arrives, or it could be any size.
            # Past the limit, answer 413 now and tell the app the client left, so it stops reading.
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    refused = True
                    await too_large(scope, receive, send_with_id)
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: dict) -> None:
            if not refused:
                await send_with_id(message)

        too_large = JSONResponse(
            {
                "detail": f"request body over {MAX_BODY_BYTES} bytes; "
                f"send at most {MAX_BATCH} applications per batch"
            },
            status_code=413,
        )
        try:
            length = dict(scope.get("headers", ())).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                await too_large(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_limited, send_unless_refused)
        finally:
            path = scope["path"]
            route = path if path in _ROUTES else "other"
            metrics = self.metrics()
            method = scope["method"] if scope["method"] in _METHODS else "other"
            metrics.requests.labels(route, method, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)
            if status >= 400:
                metrics.errors.labels(route, ERROR_KINDS.get(status, "internal")).inc()


def count_late_headers(metrics: ServiceMetrics) -> None:
    """Count a request whose headers missed their deadline in ``metrics``.

    The transport answers it 408 (:func:`duanka.serving.admission.http_protocol`) before any middleware
    sees it, so neither its route nor its method is known.
    """
    metrics.requests.labels("other", "other", "408").inc()
    metrics.errors.labels("other", ERROR_KINDS[408]).inc()
