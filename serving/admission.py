"""Admission: who is let in, how many at once, how often, and how long they may take to send.

Uvicorn reads a request's headers and body without a deadline (a half-sent request holds
its connection for as long as the client likes) and sheds load with a bare 503 that tells
no one when to come back. Measured against a running service (docs/serving.md, "Slow and
greedy clients"), so:

- :func:`http_protocol` is uvicorn's own h11 protocol with a deadline on each request's
  headers, counted from the connection's first byte (or from its opening): a client that
  has not finished them in time gets 408 and the connection is closed. Only the transport
  knows when headers are complete, so this cannot be ASGI middleware.
- :class:`Admission` is ASGI middleware for the ``/v1/`` routes. It authenticates the API
  key from the headers before a byte of the body is read, takes one request from the key's
  rate (:mod:`limits`, sliding window counter: 429 with Retry-After), bounds the requests in flight
  (503 with Retry-After), and gives the body a deadline (408) so a body shorter than its
  Content-Length cannot hang a request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from duanka.data.config import default_of
from duanka.serving.keys import ApiKey

GUARDED_PREFIX = "/v1/"
UNAUTHENTICATED = "a valid API key is required: Authorization: Bearer <key>"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 52\r\n\r\n{"detail": "request headers not received in time"}\r\n'
)


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """The service's limits on clients (Settings: ``DUANKA_RATE_LIMIT`` and the others).

    Attributes
    ----------
    rate_limit : str
        Requests per API key, in the :mod:`limits` notation; several separated by ``;``
        all apply (``"50/second;2000/minute"``).
    max_in_flight : int
        Requests of the ``/v1/`` routes being served at once; one more is 503.
    header_timeout_s, body_timeout_s : float
        How long a request's headers, then its body, may take to arrive (408 after).
    keep_alive_s : float
        How long an idle connection is kept open between requests.
    retry_after_s : int
        The Retry-After of a 503.
    """

    rate_limit: str = default_of("rate_limit")
    max_in_flight: int = default_of("max_in_flight")
    header_timeout_s: float = default_of("header_timeout_s")
    body_timeout_s: float = default_of("body_timeout_s")
    keep_alive_s: float = default_of("keep_alive_s")
    retry_after_s: int = 1
    rates: tuple[RateLimitItem, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            rates = tuple(parse_many(self.rate_limit))
        except ValueError as error:
            raise ValueError(f"rate_limit {self.rate_limit!r}: {error}") from None
        if not rates:
            raise ValueError(f"rate_limit {self.rate_limit!r}: no rate given")
        for name in ("max_in_flight", "header_timeout_s", "body_timeout_s", "keep_alive_s", "retry_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        object.__setattr__(self, "rates", rates)


def http_protocol(
    policy: AdmissionPolicy, on_headers_late: Callable[[], None] | None = None
) -> type[H11Protocol]:
    """Uvicorn's h11 protocol with ``policy.header_timeout_s`` on every request's headers.

    Parameters
    ----------
    policy : AdmissionPolicy
    on_headers_late : callable, optional
        Called on the event loop for each 408 the deadline gives (to count it: no middleware sees
        a request whose headers never completed).
    """

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.trailing_data[0]:  # the next request began while this one was answered
                self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_watching()
            super().connection_lost(exc)

        def _awaiting_headers(self) -> bool:
            # h11 is IDLE from a request's first byte until its headers are complete; a request
            # whose response is still being written is not waiting for anything from the client.
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def _watch_headers(self) -> None:
            if not self._awaiting_headers():
                self._stop_watching()
            elif self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(policy.header_timeout_s, self._headers_late)

        def _stop_watching(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if self._awaiting_headers() and not self.transport.is_closing():
                self.transport.write(_TIMED_OUT)
                self.transport.close()
                if on_headers_late is not None:
                    on_headers_late()

    return HeaderDeadlineProtocol


def _bearer_token(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class Admission:
    """ASGI middleware that admits ``/v1/`` requests under an :class:`AdmissionPolicy`.

    The API key it authenticated is left in ``scope["duanka.key"]`` for the routes.

    Parameters
    ----------
    app : ASGI application
    policy : AdmissionPolicy
    authenticate : callable
        The active :class:`duanka.serving.keys.ApiKey` that a bearer token is, or None.
    """

    def __init__(
        self, app: Callable, *, policy: AdmissionPolicy, authenticate: Callable[[str], ApiKey | None]
    ) -> None:
        self.app = app
        self.policy = policy
        self.authenticate = authenticate
        # A sliding window counter: two counters per key and no log of every request (the moving
        # window's in-memory expiry hops to a thread per request, on the loop the scores share).
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._in_flight = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        key = None if token is None else self.authenticate(token)
        if key is None:
            await _refuse(401, UNAUTHENTICATED, scope, receive, send)
            return
        for rate in self.policy.rates:
            if not await self._limiter.hit(rate, key.key_id):
                stats = await self._limiter.get_window_stats(rate, key.key_id)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                await _refuse(429, f"over the key's rate of {rate}", scope, receive, send, retry_after=wait)
                return
        if self._in_flight >= self.policy.max_in_flight:
            await _refuse(
                503,
                f"{self.policy.max_in_flight} requests in flight; try again shortly",
                scope,
                receive,
                send,
                retry_after=self.policy.retry_after_s,
            )
            return
        scope["duanka.key"] = key
        self._in_flight += 1
        try:
            await self._with_body_deadline(scope, receive, send)
        finally:
            self._in_flight -= 1

    async def _with_body_deadline(self, scope: dict, receive: Callable, send: Callable) -> None:
        deadline = asyncio.get_running_loop().time() + self.policy.body_timeout_s
        body_done = False
        timed_out = False

        async def receive_in_time() -> dict:
            nonlocal body_done, timed_out
            if body_done or timed_out:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                await _refuse(408, "request body not received in time", scope, receive, send)
                return {"type": "http.disconnect"}
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_unless_timed_out(message: dict) -> None:
            if not timed_out:
                await send(message)

        await self.app(scope, receive_in_time, send_unless_timed_out)


async def _refuse(
    status: int,
    detail: str,
    scope: dict,
    receive: Callable,
    send: Callable,
    *,
    retry_after: int | None = None,
) -> None:
    # Refused before its body was read (or with the body late): the connection cannot carry
    # another request, so it is closed now rather than at the keep-alive timeout.
    headers = {"Connection": "close"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)
