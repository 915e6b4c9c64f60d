"""Figures for scoring: per-stage latency, the HTTP service at a fixed rate and flat out,
``mlflow models serve`` side by side, and batch throughput.

    .venv/bin/python bench/bench_serve.py --work /tmp/duanka-bench              # 1M history
    .venv/bin/python bench/bench_serve.py --work /tmp/duanka-bench --history 200000 --skip-batch

The first run generates a bank (``--history`` applications plus ``--requests``
held back as raw requests), ingests it, trains a model and builds the online
state; later runs with the same ``--work`` reuse them. Each HTTP run starts from
a fresh copy of that state and an empty decision record. Everything listens on
loopback; the load generator shares the machine's cores with the server, so
the figures are conservative.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from duanka.data.config import Settings
from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.synthetic import generate_bank
from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.audit import DecisionLog
from duanka.serving.batch import score_features
from duanka.serving.keys import KeyFile
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import prepare_applications
from duanka.serving.scorer import Scorer
from duanka.serving.state import ServingPaths, open_service_state, sync_online_state
from duanka.training.bundle import MODEL_NAME
from duanka.training.run import TrainConfig, train
from duanka.training.tracking import configure
from tests.factories import free_port

SECRET = "bench-secret-" + "0123456789abcdef" * 2
AUDIT_SECRET = "bench-audit-" + "fedcba9876543210" * 2
START = date(2024, 1, 1)
MONTHS = 14
URI = f"models:/{MODEL_NAME}@champion"
# DUANKA_RATE_LIMIT of the service whose speed http() measures: no key's rate applies
UNLIMITED_RATE = "1000000/second"
T = TypeVar("T")


def _settings(work: Path) -> Settings:
    return Settings(models_dir=work / "models", data_dir=work / "store")


def prepare_events(work: Path, history: int, requests: int, seed: int, train_applications: int) -> None:
    """Bank, store and model; each step skipped when already done.

    The model is trained on its own, smaller bank from the same generator (``train_applications``):
    latency depends on the model's shape and the state's size, not on how much it was trained on,
    and a 10M-application training run would only lengthen the bench.
    """
    work.mkdir(parents=True, exist_ok=True)
    keys = Pseudonymiser.from_secret(SECRET.encode())
    if not (work / "requests.csv").exists():
        t0 = time.perf_counter()
        bank = generate_bank(
            work / "bank",
            months=MONTHS,
            applications=history + requests,
            seed=seed,
            start=START,
            progress=True,
        )
        raw = pd.read_csv(bank.applications, dtype=str, keep_default_na=False)
        order = pd.to_datetime(raw["applied_at"], format="ISO8601", utc=True).argsort(kind="stable")
        raw = raw.iloc[order].reset_index(drop=True)
        raw.iloc[:-requests].to_csv(work / "history.csv", index=False)
        raw.iloc[-requests:].to_csv(work / "requests.csv.tmp", index=False)
        os.replace(work / "requests.csv.tmp", work / "requests.csv")
        print(f"generated {history + requests:,} applications in {time.perf_counter() - t0:.0f} s")

    store = EventStore(work / "store")
    if not (work / "store" / ".ingested").exists():
        t0 = time.perf_counter()
        ingest_file(work / "history.csv", APPLICATIONS, store, keys)
        ingest_file(work / "bank" / "labels.csv", LABELS, store, keys)
        if (work / "bank" / "watchlist.csv").exists():
            ingest_file(work / "bank" / "watchlist.csv", WATCHLIST, store, keys)
        (work / "store" / ".ingested").touch()
        print(f"ingested {history:,} applications in {time.perf_counter() - t0:.0f} s")

    settings = _settings(work)
    if not (work / "models" / ".trained").exists():
        t0 = time.perf_counter()
        bank = generate_bank(
            work / "train-bank", months=MONTHS, applications=train_applications, seed=seed + 1, start=START
        )
        train_store = EventStore(work / "train-store")
        ingest_file(bank.applications, APPLICATIONS, train_store, keys)
        ingest_file(bank.labels, LABELS, train_store, keys)
        ingest_file(bank.watchlist, WATCHLIST, train_store, keys)
        client = configure(settings)
        as_of = (pd.Timestamp(START, tz="Asia/Shanghai") + pd.DateOffset(months=MONTHS)).tz_convert("UTC")
        result = train(train_store, TrainConfig(as_of=as_of, n_boot=20), settings, progress=True)
        client.set_registered_model_alias(MODEL_NAME, "champion", result.model_version)
        (work / "models" / ".trained").touch()
        print(f"trained version {result.model_version} in {time.perf_counter() - t0:.0f} s")


def prepare(work: Path, history: int, requests: int, seed: int, train_applications: int) -> None:
    """What :func:`prepare_events` makes, and the synced online-state template."""
    prepare_events(work, history, requests, seed, train_applications)
    store = EventStore(work / "store")
    keys = Pseudonymiser.from_secret(SECRET.encode())
    template = work / "online-template"
    if not (template / "online.sync.json").exists():
        t0 = time.perf_counter()
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir()
        with OnlineFeatureStore(template / "online.db") as online:
            added = sync_online_state(online, store, template / "online.sync.json", keys.key_id)
        print(f"online state: {added:,} applications in {time.perf_counter() - t0:.0f} s")


def fresh_state(work: Path) -> ServingPaths:
    """The service's files under the store, reset to the synced template and an empty audit log."""
    paths = ServingPaths.for_data(work / "store", _settings(work))
    shutil.rmtree(paths.root, ignore_errors=True)
    paths.root.mkdir(parents=True)
    shutil.copy(work / "online-template" / "online.db", paths.online)
    shutil.copy(work / "online-template" / "online.sync.json", paths.sync_marker)
    # A 10M state is a 9 GB copy: flush it now, or its writeback is what the next figures measure.
    os.sync()
    return paths


def request_rows(work: Path) -> list[dict]:
    raw = pd.read_csv(work / "requests.csv", dtype=str, keep_default_na=False)
    return [{k: (v if v != "" else None) for k, v in row.items()} for row in raw.to_dict("records")]


def request_bodies(rows: list[dict], n: int, prefix: str) -> list[bytes]:
    """``n`` request bodies in time order, cycling over ``rows`` (held back, in time order).

    Each new pass over the rows moves their ``applied_at`` on by the span they cover, so
    the service sees what a branch sends: applications as they are opened, later and later,
    with the same escorts and addresses coming back. Sending a pass again at its old times
    would be a stream of late events, each of which moves the running totals of every later
    application of its keys (a cost that grows with each pass, and one that live scoring
    does not have).
    """
    times = [datetime.fromisoformat(str(row["applied_at"])) for row in rows]
    span = max(times) - min(times) + timedelta(seconds=1)
    bodies = []
    for i in range(n):
        cycle, j = divmod(i, len(rows))
        at = (times[j] + cycle * span).isoformat()
        bodies.append(
            json.dumps({**rows[j], "application_id": f"{prefix}{i:07d}", "applied_at": at}).encode()
        )
    return bodies


def _percentiles(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"p50 {np.percentile(a, 50):6.2f} ms  p99 {np.percentile(a, 99):6.2f} ms  max {a.max():7.2f} ms"


def stages(work: Path, rows: list[dict], n: int) -> None:
    """In-process: the cost of each stage of one decision, and the whole of it."""
    source = ModelSource(URI, configure(_settings(work)))
    model = source.load()
    keys = Pseudonymiser.from_secret(SECRET.encode())
    paths = fresh_state(work)
    timings: dict[str, list[float]] = {
        k: [] for k in ("prepare", "features", "score", "reasons", "record", "audit")
    }
    with (
        open_service_state(paths.online) as online,
        DecisionLog(paths.decisions, chain_key=keys.audit_chain_key(), checkpoint_every_s=0.5) as log,
    ):
        online.warm()  # as the service does before it says it is ready
        bundle = model.registered.bundle
        synced_at = time.perf_counter()
        for row in rows[:n]:
            t = [time.perf_counter()]
            (event,) = prepare_applications([row], keys)
            t.append(time.perf_counter())
            x = online.features_for(event)[None]
            t.append(time.perf_counter())
            # as the scorer does it: one thread for one row
            bundle.calibrator.predict(bundle.booster.predict(x, raw_score=True, num_threads=1))
            t.append(time.perf_counter())
            model.explainer.reasons_from_contributions(
                x, bundle.booster.predict(x, pred_contrib=True, num_threads=1)
            )
            t.append(time.perf_counter())
            online.add_application(event)
            if t[-1] - synced_at >= 1.0:  # as the scorer does: the state is synced once a second
                online.sync()
                synced_at = t[-1]
            t.append(time.perf_counter())
            # one durable transaction, as the decision's audit row and stored answer are
            log.event("bench", {"application_id": event["application_id"]}, key_id=None, request_id=None)
            t.append(time.perf_counter())
            for name, a, b in zip(timings, t, t[1:], strict=False):
                timings[name].append((b - a) * 1000)
    print(f"stages of one decision, in process, {n:,} applications:")
    for name, ms in timings.items():
        print(f"  {name:9s} {_percentiles(ms)}")
    paths = fresh_state(work)
    with (
        open_service_state(paths.online) as online,
        DecisionLog(paths.decisions, chain_key=keys.audit_chain_key(), checkpoint_every_s=0.5) as log,
    ):
        online.warm()
        # the rows are of the bank's last weeks: the scorer's clock reads the end of them
        times = [datetime.fromisoformat(str(row["applied_at"])) for row in rows[n : 2 * n]]
        end = max(times)
        scorer = Scorer(model, online, log, keys, clock=lambda: end, tolerance=end - min(times))
        whole = []
        cpu_before = time.process_time()
        for row in rows[n : 2 * n]:
            t0 = time.perf_counter()
            scorer.score_application(row)
            whole.append((time.perf_counter() - t0) * 1000)
        cpu_ms = (time.process_time() - cpu_before) * 1000 / n
    print(f"  {'whole':9s} {_percentiles(whole)}  (Scorer.score_application)")
    # every thread of the process: the scoring one, the checkpointers and the state's fsync
    print(f"  CPU per decision: {cpu_ms:.2f} ms (target 2 ms; process CPU time over {n:,} decisions)")


def measured(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a load generator with its own garbage collector off.

    A collection in the client pauses its event loop, and every request in flight then looks
    that much slower: the server's tail would be the client's. The runs are bounded, so what
    the client allocates meanwhile is too.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return asyncio.run(coroutine)
    finally:
        gc.enable()
        gc.unfreeze()


def _wait(url: str, proc: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not up in {seconds} s") from None
            time.sleep(0.25)


def _env(work: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "DUANKA_MODELS_DIR": str(work / "models"),
        "DUANKA_PSEUDONYM_KEY": SECRET,
        # outside a demo store the record's chain needs a key of its own (SECURITY.md)
        "DUANKA_AUDIT_CHAIN_KEY": AUDIT_SECRET,
        "MLFLOW_TRACKING_URI": _settings(work).tracking_uri(),
        "DUANKA_MODEL_POLL_SECONDS": "0",
        # the service reads the real clock; the bank's requests are of START + MONTHS
        "DUANKA_BACKDATING_TOLERANCE_S": str(
            int((datetime.now(UTC) - datetime.combine(START, datetime.min.time(), UTC)).total_seconds())
        ),
    }


async def _fixed_rate(
    url: str, bodies: list[bytes], headers: dict, rate: float
) -> tuple[list[float], Counter[str]]:
    """Open loop: one request every 1/rate seconds whatever the answers do.

    Returns the latencies (ms) of the answered requests and the failures by kind: an HTTP status
    or the transport error's class (an overloaded server drops connections: count, do not stop).
    """
    import httpx

    latencies: list[float] = []
    failures: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=256)) as client:

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as error:
                failures[type(error).__name__] += 1
                return
            if response.status_code != 200:
                failures[f"HTTP {response.status_code}"] += 1
                return
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return latencies, failures


async def _sequential(url: str, bodies: list[bytes], headers: dict) -> list[float]:
    """One request at a time: the latency of a request on an idle server, in ms."""
    import httpx

    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for body in bodies:
            t0 = time.perf_counter()
            (await client.post(url, content=body, headers=headers)).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


async def _flat_out(
    url: str, bodies: list[bytes], headers: dict | list[dict], concurrency: int, seconds: float
) -> tuple[int, float]:
    """Closed loop with ``concurrency`` callers for ``seconds``; (answered, seconds taken).

    ``headers`` is every caller's, or one per caller (each branch with its own key, whose rate
    limit is its own)."""
    import httpx

    each = headers if isinstance(headers, list) else [headers] * concurrency
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        start = time.perf_counter()

        async def caller(own: dict) -> int:
            done = 0
            while queue and time.perf_counter() - start < seconds:
                (await client.post(url, content=queue.pop(), headers=own)).raise_for_status()
                done += 1
            return done

        answered = sum(await asyncio.gather(*(caller(each[i]) for i in range(concurrency))))
    return answered, time.perf_counter() - start


def http(work: Path, rows: list[dict], rate: float, seconds: float, concurrency: int) -> dict[str, float]:
    """``duanka serve`` at a fixed rate, then flat out; then ``mlflow models serve`` at the same rate."""
    paths = fresh_state(work)
    _, token = KeyFile(paths.keys).create()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    n = int(rate * seconds)
    in_order = request_bodies(rows, 3 * n, "R")
    bodies, flat = in_order[:n], in_order[n:]
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "duanka"),
            "serve",
            "--data",
            str(work / "store"),
            "--model",
            URI,
            "--port",
            str(port),
        ],
        # What is measured is the decision path and its throughput, not admission (that is
        # bench_clients.py): one key sending one at a time to a small state, or flat out, goes
        # past the settings' per-key rate (200/second), and every phase here stops at a 429.
        env={**_env(work), "DUANKA_RATE_LIMIT": UNLIMITED_RATE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, float] = {}
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", server)
        url = f"http://127.0.0.1:{port}/v1/score"
        measured(_sequential(url, bodies[:200], headers))  # warm-up, not counted
        latencies = measured(_sequential(url, bodies[200:700], headers))
        print(f"duanka serve, /v1/score one at a time, 500 requests: {_percentiles(latencies)}")
        figures["duanka_p50"] = float(np.percentile(latencies, 50))
        latencies, failures = measured(_fixed_rate(url, bodies[700:], headers, rate))
        print(
            f"duanka serve, /v1/score at {rate:.0f} requests/s, {len(bodies) - 700:,} requests: "
            f"{_percentiles(latencies) if latencies else 'none answered'}; "
            f"{failures.total():,} failed {dict(failures) if failures else ''}"
        )
        answered, took = measured(_flat_out(url, flat, headers, concurrency, seconds / 2))
        print(f"duanka serve, flat out with {concurrency} callers: {answered / took:,.0f} requests/s")
        features = [list(json.loads(_post(url, body, headers))["features"].values()) for body in bodies[:200]]
    finally:
        server.terminate()
        server.wait(timeout=60)

    port = free_port()
    mlflow_server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            URI,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=_env(work),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/ping", mlflow_server)
        url = f"http://127.0.0.1:{port}/invocations"
        plain = {"Content-Type": "application/json"}
        split = [
            json.dumps(
                {"dataframe_split": {"columns": list(MODEL_FEATURES), "data": [features[i % len(features)]]}}
            ).encode()
            for i in range(n)
        ]
        measured(_sequential(url, split[:100], plain))
        latencies = measured(_sequential(url, split[100:600], plain))
        print(
            f"mlflow models serve, precomputed features (dataframe_split), one at a time, 500 requests: "
            f"{_percentiles(latencies)}"
        )
        figures["mlflow_p50"] = float(np.percentile(latencies, 50))
    finally:
        mlflow_server.terminate()
        mlflow_server.wait(timeout=60)
    print(
        f"latency ratio (p50): duanka serve (raw application: validate, pseudonymise, features, score, "
        f"reasons, audit) / mlflow models serve (precomputed features, score only) = "
        f"{figures['duanka_p50'] / figures['mlflow_p50']:.2f}"
    )
    return figures


def _post(url: str, body: bytes, headers: dict) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers)
    return urllib.request.urlopen(request, timeout=30).read()


def batch(work: Path, rows: int) -> None:
    """Offline features for the whole store, then plain scores and scores with reasons."""
    model = ModelSource(URI, configure(_settings(work))).load()
    store = EventStore(work / "store")
    t0 = time.perf_counter()
    features = build_features(store.applications(), store.labels(), listings=store.watchlist())
    took = time.perf_counter() - t0
    print(f"batch: point-in-time features for {len(features):,} applications in {took:.1f} s")
    if len(features) < rows:
        reps = -(-rows // len(features))
        features = pd.concat([features] * reps, ignore_index=True).head(rows)
    features = features.head(rows)
    X = features.loc[:, list(MODEL_FEATURES)].to_numpy(dtype=np.float64)
    bundle = model.registered.bundle
    t0 = time.perf_counter()
    bands = bundle.bands.assign(bundle.score(X))
    took = time.perf_counter() - t0
    print(f"batch: plain scores and bands, {len(X):,} rows: {took:.2f} s = {len(X) / took:,.0f} rows/s")
    t0 = time.perf_counter()
    scores = score_features(features, model)
    took = time.perf_counter() - t0
    flagged = int((bands != "low").sum())
    print(
        f"batch: scores with reasons for medium or higher ({flagged:,} rows), {len(scores):,} rows: "
        f"{took:.1f} s = {len(scores) / took:,.0f} rows/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "duanka-bench")
    parser.add_argument("--history", type=int, default=1_000_000, help="applications in the state")
    parser.add_argument("--requests", type=int, default=4_000, help="raw applications held back as requests")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--train-applications", type=int, default=1_000_000, help="the model's own bank")
    parser.add_argument("--prepare-only", action="store_true", help="stop before the online state")
    parser.add_argument("--stage-samples", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()

    if args.prepare_only:
        prepare_events(args.work, args.history, args.requests, args.seed, args.train_applications)
        return
    prepare(args.work, args.history, args.requests, args.seed, args.train_applications)
    rows = request_rows(args.work)
    print(f"state: {args.history:,} applications of history; {os.cpu_count()} cores visible")
    stages(args.work, rows, min(args.stage_samples, len(rows) // 2))
    if not args.skip_http:
        http(args.work, rows, args.rate, args.seconds, args.concurrency)
    if not args.skip_batch:
        batch(args.work, args.batch_rows)


if __name__ == "__main__":
    main()
