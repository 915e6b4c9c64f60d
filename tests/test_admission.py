"""Slow and greedy clients are refused, on a real socket where the transport decides.

Uvicorn alone keeps a half-sent request open for as long as the client likes and answers
overload with a bare 503; these tests run uvicorn with :func:`duanka.serving.admission.http_protocol`
and :class:`duanka.serving.admission.Admission` in front of a small app that reads its body.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from duanka.serving.admission import Admission, AdmissionPolicy, http_protocol
from duanka.serving.api import server_protocol
from duanka.serving.keys import ApiKey
from duanka.serving.metrics import ServiceMetrics
from duanka.serving.middleware import Observe

TOKEN = "dk_test.secret"
KEY = ApiKey(key_id="test", sha256="-", branches=("B1",), admin=False, created_at="2026-01-01T00:00:00Z")


def authenticate(token: str) -> ApiKey | None:
    return KEY if token == TOKEN else None


async def echo_body(scope: dict, receive, send) -> None:
    """Reads the whole body, then answers with its length (or stops if the client left)."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = str(size).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def running(policy: AdmissionPolicy, app=echo_body, protocol: type | None = None) -> Iterator[int]:
    """A uvicorn server on a free port, as ``duanka serve`` runs it."""
    guarded = Admission(app, policy=policy, authenticate=authenticate)
    config = uvicorn.Config(
        guarded,
        host="127.0.0.1",
        port=0,
        http=protocol or http_protocol(policy),
        timeout_keep_alive=policy.keep_alive_s,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):  # 5 s at most: a server that cannot start fails the test, not hangs it
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(5)


def exchange(port: int, data: bytes, *, wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``data``, read until the server closes; what came back and how long it took."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(wait)
        started = time.perf_counter()
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {wait} s: {received[:200]!r}")
        return received, time.perf_counter() - started


FAST = AdmissionPolicy(header_timeout_s=0.3, body_timeout_s=0.3, keep_alive_s=2.0)
HEADERS = f"POST /v1/score HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n".encode()


def test_half_sent_headers_get_408_and_the_connection_closes():
    with running(FAST) as port:
        received, took = exchange(port, HEADERS)
    assert received.startswith(b"HTTP/1.1 408")
    assert 0.25 < took < 2.0


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline():
    with running(FAST) as port:
        received, took = exchange(port, b"")
    assert received.startswith(b"HTTP/1.1 408")
    assert took < 2.0


def test_the_deadline_applies_again_to_the_next_request_on_a_kept_connection():
    first = HEADERS + b"content-length: 2\r\n\r\nok"
    with running(FAST) as port:
        received, took = exchange(port, first + b"POST /v1/score HTTP/1.1\r\nhost: x\r\n")
    assert received.startswith(b"HTTP/1.1 200")
    assert received.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 408" in received
    assert took < 2.0  # not the 2 s keep-alive: the second request's headers were late


def test_a_body_shorter_than_its_content_length_gets_408():
    with running(FAST) as port:
        received, took = exchange(port, HEADERS + b"content-length: 100\r\n\r\n" + b"x" * 10)
    assert received.startswith(b"HTTP/1.1 408")
    assert b"body not received in time" in received
    assert took < 2.0


def test_a_request_sent_in_parts_within_the_deadlines_is_served():
    with running(FAST) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(2.0)
        sock.sendall(HEADERS)
        time.sleep(0.1)  # headers in two parts, both well within the deadline
        sock.sendall(b"content-length: 3\r\n\r\nabc")
        answer = b""
        while not answer.endswith(b"\r\n\r\n3"):  # the answer may come in parts
            chunk = sock.recv(4096)
            assert chunk, f"the server closed the connection after {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n3")


def test_the_key_is_checked_before_the_body_is_read():
    # 1 MB announced and never sent: an unknown key is told so at once, without a body wait.
    request = (
        b"POST /v1/score HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nope\r\ncontent-length: 1000000\r\n\r\n"
    )
    slow_body = AdmissionPolicy(header_timeout_s=5.0, body_timeout_s=5.0)
    with running(slow_body) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(2.0)
        started = time.perf_counter()
        sock.sendall(request)
        answer = sock.recv(4096)
        took = time.perf_counter() - started
    assert answer.startswith(b"HTTP/1.1 401")
    assert took < 1.0


def test_routes_outside_v1_are_not_guarded():
    with running(FAST) as port:
        answer = httpx.post(f"http://127.0.0.1:{port}/healthz", content=b"abc")
    assert answer.status_code == 200


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://duanka")


def test_over_the_keys_rate_is_429_with_retry_after():
    guarded = Admission(echo_body, policy=AdmissionPolicy(rate_limit="3/minute"), authenticate=authenticate)

    async def send_five() -> list[httpx.Response]:
        async with asgi_client(guarded) as client:
            auth = {"authorization": f"Bearer {TOKEN}"}
            return [await client.post("/v1/score", content=b"{}", headers=auth) for _ in range(5)]

    answers = asyncio.run(send_five())
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60
    assert "3 per 1 minute" in answers[3].json()["detail"]


def test_over_the_in_flight_limit_is_503_with_retry_after():
    release = asyncio.Event()
    both_in = asyncio.Event()
    entered = 0

    async def held(scope, receive, send) -> None:
        nonlocal entered
        entered += 1
        if entered == 2:
            both_in.set()
        await release.wait()
        await echo_body(scope, receive, send)

    guarded = Admission(
        held, policy=AdmissionPolicy(max_in_flight=2, retry_after_s=3), authenticate=authenticate
    )

    async def three_at_once() -> list[httpx.Response]:
        async with asgi_client(guarded) as client:
            auth = {"authorization": f"Bearer {TOKEN}"}
            first = [
                asyncio.create_task(client.post("/v1/score", content=b"{}", headers=auth)) for _ in range(2)
            ]
            async with asyncio.timeout(5):
                await both_in.wait()
            third = await client.post("/v1/score", content=b"{}", headers=auth)
            release.set()
            return [*(await asyncio.gather(*first)), third]

    answers = asyncio.run(three_at_once())
    assert [a.status_code for a in answers] == [200, 200, 503]
    assert answers[2].headers["retry-after"] == "3"


def counted(metrics: ServiceMetrics, name: str, label: str) -> dict[str, float]:
    """The samples of the counter ``name`` by the value of one of their labels."""
    return {
        sample.labels[label]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == f"{name}_total"
    }


async def post_score(app, *, body_arrives: bool) -> int:
    """POST /v1/score straight to the ASGI ``app``; the status it answers."""
    statuses = []

    async def receive() -> dict:
        if not body_arrives:
            await asyncio.Event().wait()  # a body that never comes
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    await app({"type": "http", "method": "POST", "path": "/v1/score", "headers": headers}, receive, send)
    return statuses[0]


def test_late_and_over_the_rate_requests_are_counted_by_kind_not_as_internal_errors():
    metrics = ServiceMetrics()
    policy = AdmissionPolicy(rate_limit="1/minute", body_timeout_s=0.05)
    guarded = Admission(echo_body, policy=policy, authenticate=authenticate)
    observed = Observe(guarded, metrics=lambda: metrics)

    async def late_then_over_the_rate() -> list[int]:
        return [await post_score(observed, body_arrives=arrives) for arrives in (False, True)]

    assert asyncio.run(late_then_over_the_rate()) == [408, 429]
    assert counted(metrics, "duanka_errors", "kind") == {"timeout": 1.0, "rate_limited": 1.0}


def test_headers_late_are_counted_in_the_service_metrics():
    """The transport answers them, before any middleware: the protocol counts them itself."""
    metrics = ServiceMetrics()
    app = SimpleNamespace(state=SimpleNamespace(service=SimpleNamespace(metrics=metrics)))
    with running(FAST, protocol=server_protocol(app, FAST)) as port:
        received, _ = exchange(port, HEADERS)
    assert received.startswith(b"HTTP/1.1 408")
    assert counted(metrics, "duanka_errors", "kind") == {"timeout": 1.0}
    assert counted(metrics, "duanka_http_requests", "status") == {"408": 1.0}


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"rate_limit": "lots"}, "rate_limit"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"body_timeout_s": 0}, "body"),
    ],
)
def test_a_policy_that_cannot_work_is_refused_when_made(options, reason):
    with pytest.raises(ValueError, match=reason):
        AdmissionPolicy(**options)
