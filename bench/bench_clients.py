"""Slow and greedy clients against `duanka serve` on loopback: how long each holds the service.

    .venv/bin/python bench/bench_clients.py --work /tmp/duanka-clients

Against the service as `duanka serve` runs it, with the settings' admission limits
(``DUANKA_HEADER_TIMEOUT_S``, ``DUANKA_BODY_TIMEOUT_S``, ``DUANKA_MAX_IN_FLIGHT``,
``DUANKA_RATE_LIMIT``; docs/serving.md):

1. connections that send half their headers and then nothing: when the server closes them;
2. requests whose body is shorter than their Content-Length: when they are answered;
3. an unknown key announcing a 1 MB body it never sends: when it is refused;
4. while 1-3 hold their sockets, one honest request: is it served, and how fast;
5. 200 scores sent at once on one key: how many are served, how many shed with 503, and how
   fast each kind is answered;
6. one key sending as fast as 8 connections allow for 3 s: how many are over its rate (429).

The bank, store, model and online state come from ``bench_serve.prepare``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import URI, _env, _wait, fresh_state, prepare, request_bodies, request_rows

from duanka.serving.keys import KeyFile
from tests.factories import free_port


async def held_open(port: int, data: bytes, limit_s: float) -> tuple[float, bytes]:
    """Send ``data`` and wait: seconds until the server answered and closed, and its status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(data)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), limit_s)
    except TimeoutError:
        answer = b"(still open)"
    took = time.perf_counter() - started
    writer.close()
    return took, answer.split(b"\r\n", 1)[0]


def summary(name: str, results: list[tuple[float, bytes]]) -> None:
    took = np.asarray([t for t, _ in results])
    statuses = Counter(line.decode("latin-1") for _, line in results)
    print(
        f"  {name}: {len(results)} connections, closed after median {np.median(took):.2f} s, "
        f"max {took.max():.2f} s; {dict(statuses)}"
    )


async def slow_clients(port: int, token: str, body: bytes, limit_s: float) -> None:
    half = b"POST /v1/score HTTP/1.1\r\nhost: duanka\r\nauthorization: Bearer " + token.encode() + b"\r\n"
    short = half + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body[:20]
    unknown = b"POST /v1/score HTTP/1.1\r\nhost: duanka\r\nauthorization: Bearer dk_nobody.x\r\n"
    unknown += b"content-length: 1000000\r\n\r\n"
    attacks = {
        "half-sent headers": [held_open(port, half, limit_s) for _ in range(20)],
        "body shorter than Content-Length": [held_open(port, short, limit_s) for _ in range(20)],
        "unknown key, 1 MB announced, none sent": [held_open(port, unknown, limit_s) for _ in range(20)],
    }
    tasks = {name: asyncio.gather(*runs) for name, runs in attacks.items()}
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=limit_s) as client:
        started = time.perf_counter()
        honest = await client.post(
            f"http://127.0.0.1:{port}/v1/score",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        took_ms = (time.perf_counter() - started) * 1000
    print(f"  an honest score while 60 slow connections are open: {honest.status_code} in {took_ms:.1f} ms")
    for name, task in tasks.items():
        summary(name, await task)


async def at_once(port: int, bodies: list[bytes], token: str) -> list[tuple[int, float]]:
    """Open a connection per body, then send every request at once: (status, ms) of each.

    Raw sockets, not an HTTP client: 200 httpx requests at once cost this process more than
    the server needs to answer them, and the figures would be the client's.
    """
    head = f"POST /v1/score HTTP/1.1\r\nhost: duanka\r\nauthorization: Bearer {token}\r\n"
    head += "content-type: application/json\r\nconnection: close\r\n"
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in bodies]

    async def one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> tuple[int, float]:
        started = time.perf_counter()
        writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return int(answer.split(b" ", 2)[1]), (time.perf_counter() - started) * 1000

    return await asyncio.gather(*(one(r, w, b) for (r, w), b in zip(connections, bodies, strict=True)))


async def flat_out(url: str, bodies: list[bytes], headers: dict, seconds: float) -> Counter[int]:
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + seconds
    queue = iter(bodies)
    async with httpx.AsyncClient(timeout=30) as client:

        async def worker() -> None:
            while time.perf_counter() < stop:
                statuses[(await client.post(url, content=next(queue), headers=headers)).status_code] += 1

        await asyncio.gather(*(worker() for _ in range(8)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the bank, store and model")
    parser.add_argument("--history", type=int, default=30_000, help="applications in the state")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--train-applications", type=int, default=100_000, help="the model's own bank")
    parser.add_argument("--limit-s", type=float, default=60.0, help="give up on a connection after this")
    parser.add_argument("--rate-limit", help="DUANKA_RATE_LIMIT for the server [default: the settings']")
    args = parser.parse_args()

    prepare(args.work, args.history, 2_000, args.seed, args.train_applications)
    paths = fresh_state(args.work)
    token = KeyFile(paths.keys).create()[1]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = iter(request_bodies(request_rows(args.work), 5_000, "C"))
    port = free_port()
    duanka = str(Path(sys.executable).parent / "duanka")
    server = subprocess.Popen(
        [duanka, "serve", "--data", str(args.work / "store"), "--model", URI, "--port", str(port)],
        env={
            **_env(args.work),
            **({"DUANKA_RATE_LIMIT": args.rate_limit} if args.rate_limit else {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/score"
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", server)
        limit = args.rate_limit or "the settings' default"
        print(f"duanka serve with the default admission limits, rate limit {limit}:")
        asyncio.run(slow_clients(port, token, next(bodies), args.limit_s))
        answers = asyncio.run(at_once(port, [next(bodies) for _ in range(200)], token))
        for status in sorted({s for s, _ in answers}):
            ms = np.asarray([t for s, t in answers if s == status])
            print(
                f"  200 scores at once: {ms.size} answered {status}, "
                f"p50 {np.median(ms):.0f} ms, max {ms.max():.0f} ms"
            )
        statuses = asyncio.run(flat_out(url, list(bodies), headers, 3.0))
        print(f"  one key, 8 connections flat out for 3 s: {dict(sorted(statuses.items()))}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
