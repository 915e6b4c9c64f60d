"""A bounded load test: `duanka serve` on loopback at a fixed request rate; errors, latency, memory.

    .venv/bin/python bench/bench_load.py --work /tmp/duanka-load                 # 100/s for 3 min
    .venv/bin/python bench/bench_load.py --work /tmp/duanka-load --rate 50 --seconds 60

Open loop: one ``POST /v1/score`` (a new application each) every ``1/rate`` seconds whatever
the answers do, so a server that falls behind shows as latency and errors, not as a slower
client. Bounded: ``rate * seconds`` requests, each with a timeout, and a hard stop at
``seconds + 60`` after the first; then the server is stopped. The server's resident memory is
sampled every 10 s from ``/proc``: flat means no leak over the run. Then ``--flat-seconds`` flat
out, ``--callers`` closed-loop callers each with a key of its own (a branch each: one key's rate
limit would measure admission, which ``bench_clients.py`` does): the most the replica answers.

The bank, store, model and online state come from ``bench_serve.prepare`` (reused when ``--work``
already holds them); each run starts from a fresh copy of the state and an empty audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import (
    URI,
    _env,
    _flat_out,
    _wait,
    fresh_state,
    measured,
    prepare,
    request_bodies,
    request_rows,
)

from duanka.serving.keys import KeyFile
from tests.factories import free_port

TIMEOUT_S = 10.0


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def fixed_rate(
    url: str, bodies: list[bytes], headers: dict, rate: float, pid: int, hard_stop: float
) -> tuple[list[tuple[float, float]], dict[str, int], list[tuple[float, float]]]:
    """Send ``bodies`` at ``rate``.

    Returns (when each answered request was sent, s, and its latency, ms), errors by kind, and
    RSS samples.
    """
    latencies: list[tuple[float, float]] = []
    errors: dict[str, int] = {}
    memory: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=512)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            if response.status_code != 200:
                errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                return
            latencies.append((t0 - start, (time.perf_counter() - t0) * 1000))

        async def sample() -> None:
            while True:
                memory.append((time.perf_counter() - start, rss_mib(pid)))
                await asyncio.sleep(10)

        start = time.perf_counter()
        sampler = asyncio.create_task(sample())
        tasks = []
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        _, late = await asyncio.wait(tasks, timeout=max(0.0, hard_stop - time.perf_counter()))
        for task in late:  # past the hard stop: count them, do not wait
            task.cancel()
        errors["unfinished"] = len(late)
        sampler.cancel()
        memory.append((time.perf_counter() - start, rss_mib(pid)))
    return latencies, errors, memory


def print_slow_seconds(latencies: list[tuple[float, float]], budget_ms: float) -> None:
    """How the requests over budget spread in time: a few clustered seconds mean stalls, not load."""
    over = [(int(sent), ms) for sent, ms in latencies if ms > budget_ms]
    seconds = len({second for second, _ in over})
    print(f"  over {budget_ms:.0f} ms: {len(over):,} requests in {seconds:,} distinct seconds")
    per_ten = Counter(second // 10 * 10 for second, _ in over)
    print("  over budget by 10 s of sending: " + ", ".join(f"{s}s {n}" for s, n in sorted(per_ten.items())))
    worst: dict[int, float] = {}
    for second, ms in over:
        worst[second] = max(worst.get(second, 0.0), ms)
    slowest = sorted(worst.items(), key=lambda item: -item[1])[:10]
    if slowest:
        print("  slowest seconds (sent at, worst ms): " + ", ".join(f"{s}s {ms:.0f}" for s, ms in slowest))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, seconds (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_server_view(exposition: str, budget_s: float) -> None:
    """The server's own latency histogram and garbage-collector pauses, from ``/metrics``.

    Requests the server finished within budget but the client saw late were delayed outside
    the handler: in the socket queue, the event loop, or the client itself.
    """
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    buckets = {
        (s.labels["le"]): s.value
        for s in families["duanka_http_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["route"] == "/v1/score"
    }
    total = buckets["+Inf"]
    within = buckets[repr(budget_s)]
    print(f"  server-side /v1/score: {total - within:,.0f} of {total:,.0f} over {budget_s * 1000:.0f} ms")
    for le in ("0.003", "0.005", "0.0075", "0.01"):
        print(f"    within {float(le) * 1000:g} ms: {buckets[le] / total:.1%}")
    pauses = [
        (s.labels["generation"], s.value)
        for s in families["duanka_gc_pause_seconds"].samples
        if s.name.endswith("_count") or s.name.endswith("_sum")
    ]
    print("  server GC pauses (generation: count, seconds): " + ", ".join(f"{g} {v:g}" for g, v in pauses))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the bank, store and model")
    parser.add_argument("--history", type=int, default=30_000, help="applications in the state")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to send for")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--train-applications", type=int, default=300_000, help="the model's own bank")
    parser.add_argument("--flat-seconds", type=float, default=20.0, help="then flat out for this long")
    parser.add_argument("--callers", type=int, default=8, help="flat out: callers, one key each")
    args = parser.parse_args()

    n = int(args.rate * args.seconds)
    prepare(args.work, args.history, 2_000, args.seed, args.train_applications)
    rows = request_rows(args.work)
    paths = fresh_state(args.work)
    keyfile = KeyFile(paths.keys)
    headers = {"Authorization": f"Bearer {keyfile.create()[1]}", "Content-Type": "application/json"}
    # flat out, each caller a branch with its own key: one key's rate limit would measure admission
    callers = [
        {"Authorization": f"Bearer {keyfile.create()[1]}", "Content-Type": "application/json"}
        for _ in range(args.callers)
    ]
    # later applications for the flat-out phase, at most 500 a second
    bodies = request_bodies(rows, n + int(500 * args.flat_seconds), "L")
    bodies, flat = bodies[:n], bodies[n:]
    port = free_port()
    duanka = str(Path(sys.executable).parent / "duanka")
    server = subprocess.Popen(
        [duanka, "serve", "--data", str(args.work / "store"), "--model", URI, "--port", str(port)],
        env=_env(args.work),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", server)
        url = f"http://127.0.0.1:{port}/v1/score"
        hard_stop = time.perf_counter() + args.seconds + 60
        cpu_before = cpu_seconds(server.pid)
        load = fixed_rate(url, bodies, headers, args.rate, server.pid, hard_stop)
        latencies, errors, memory = measured(load)
        server_cpu = cpu_seconds(server.pid) - cpu_before
        server_view = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S).text
        flat_answered, flat_took = measured(_flat_out(url, flat, callers, args.callers, args.flat_seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)

    answered = np.asarray([ms for _, ms in latencies])
    failed = sum(errors.values())
    print(f"duanka serve, POST /v1/score at {args.rate:.0f}/s for {args.seconds:.0f} s: {n:,} requests")
    print(f"  answered 200: {answered.size:,}; errors: {failed:,} {dict(sorted(errors.items()))}")
    if answered.size:
        p50, p99 = np.percentile(answered, [50, 99])
        print(f"  latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {answered.max():.1f} ms")
    if answered.size:
        print_slow_seconds(latencies, budget_ms=20.0)
    print_server_view(server_view, budget_s=0.02)
    print(f"  server CPU: {server_cpu:.1f} s, {server_cpu / n * 1000:.2f} ms per request")
    print("  server RSS (MiB) over time: " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in memory))
    print(f"  RSS start {memory[0][1]:.0f} MiB, end {memory[-1][1]:.0f} MiB")
    print(
        f"  flat out with {args.callers} callers, one key each: {flat_answered / flat_took:,.0f} requests/s "
        f"({flat_answered:,} in {flat_took:.1f} s)"
    )


if __name__ == "__main__":
    main()
