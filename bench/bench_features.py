"""Figures for the feature engines: offline build time and memory, online latency.

    .venv/bin/python bench/bench_features.py                  # 1M offline, 1M-event online state
    .venv/bin/python bench/bench_features.py --rows 10000000 --history 0
    .venv/bin/python bench/bench_features.py --engines        # DuckDB against polars

Data comes from tests/factories.py (dense linkage, hubs, rings). The offline
build runs in a fresh process that reads the events from Parquet, as training
does; its peak memory is that process's resident high-water mark (Linux).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from duanka.features.offline import build_features
from duanka.features.online import OnlineFeatureStore
from tests.factories import EventFactory

DAYS = 730


def _peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def offline(rows: int, seed: int, folder: Path) -> None:
    """Generate, write Parquet, then build in a fresh process that reads it, as training does."""
    events = EventFactory(n=rows, seed=seed, days=DAYS).build()
    pq.write_table(events.applications, folder / "applications.parquet")
    pq.write_table(events.labels, folder / "labels.parquet")
    pq.write_table(events.listings, folder / "listings.parquet")
    del events
    subprocess.run([sys.executable, __file__, "--build", str(folder)], check=True)


def build(folder: Path) -> None:
    start = time.perf_counter()
    labels = pq.read_table(folder / "labels.parquet")
    listings = pq.read_table(folder / "listings.parquet")
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    # The applications are handed over (no reference kept here), as training does, so the
    # builder can free their strings once encoded; reading them is inside the build's time.
    frame = build_features(_read_applications(folder), labels, listings=listings)
    seconds = time.perf_counter() - start
    rows = len(frame)
    print(
        f"offline  {rows:>11,} applications  build {seconds:6.1f} s ({rows / seconds:,.0f} rows/s) "
        f"including reading the applications, labels read {read_s:.1f} s, peak RSS of the process "
        f"{_peak_gib():.1f} GiB, {frame.shape[1] - 2} features, {os.cpu_count()} cores"
    )


def _read_applications(folder: Path) -> pa.Table:
    applications = pq.read_table(folder / "applications.parquet")
    pa.default_memory_pool().release_unused()  # as EventStore.read does
    return applications


def engines(rows: int, seed: int) -> None:
    """One entity's 30-day counts (count, flagged, distinct) in DuckDB and in polars."""
    import duckdb
    import polars as pl
    import pyarrow as pa

    apps = EventFactory(n=rows, seed=seed, days=DAYS).build().applications
    table = pa.table(
        {
            "idx": np.arange(apps.num_rows),
            "ts": apps["applied_at"].cast(pa.int64()),
            "k": pc.dictionary_encode(apps["address_key"].combine_chunks()).indices,
            "a": pc.dictionary_encode(apps["applicant_key"].combine_chunks()).indices,
            "f": apps["photo_tampered"],
        }
    )
    w = 30 * 86_400_000_000
    con = duckdb.connect()
    con.register("t", table)
    start = time.perf_counter()
    duck = con.execute(
        f"""SELECT k, ts, COUNT(*) OVER w AS n, COUNT(*) FILTER (WHERE f) OVER w AS flagged,
        COUNT(DISTINCT a) OVER w AS distinct_a FROM t
        WINDOW w AS (PARTITION BY k ORDER BY ts RANGE BETWEEN {w} PRECEDING AND 1 PRECEDING)"""
    ).to_arrow_table()
    duck = pl.from_arrow(duck)
    duck_s = time.perf_counter() - start

    start = time.perf_counter()
    polar = (
        pl.from_arrow(table)
        .sort("ts")
        .rolling(index_column="ts", period=f"{w}i", closed="left", group_by="k")
        .agg(
            pl.len().alias("n"),
            pl.col("f").sum().alias("flagged"),
            pl.col("a").n_unique().alias("distinct_a"),
        )
    )
    polars_s = time.perf_counter() - start
    columns = ["k", "ts", "n", "flagged", "distinct_a"]
    same = (
        duck.select(columns)
        .cast(pl.Int64)
        .sort(columns)
        .equals(polar.select(columns).cast(pl.Int64).sort(columns))
    )
    print(f"engines  {rows:>11,} rows, one entity's 30-day count + flagged + distinct:")
    print(f"         duckdb {duck_s:6.2f} s   polars {polars_s:6.2f} s   same values: {same}")


def online(history: int, queries: int, seed: int, folder: Path) -> None:
    events = EventFactory(n=history + queries, seed=seed, days=DAYS).build()
    apps, labels = events.applications, events.labels
    path = folder / "state.db"
    with OnlineFeatureStore(path) as store:
        start = time.perf_counter()
        store.load_history(apps.slice(0, history))
        store.add_listings(events.listings)  # applied at query time (listed_at < t): no leak
        first = apps["applied_at"][history].as_py()
        store.add_labels(
            (row["application_id"], row["confirmed_at"], row["source"])
            for row in labels.to_pylist()
            if row["confirmed_at"] < first
        )
        load_s = time.perf_counter() - start
        stream = apps.slice(history, queries).to_pylist()
        # Wall clock, and the thread's own CPU time: on a shared machine the gap is waiting.
        timings: dict[str, list[tuple[float, float]]] = {"features_for": [], "add_application": []}
        calls = (("features_for", store.features_for), ("add_application", store.add_application))
        for event in stream:
            for name, call in calls:
                wall, cpu = time.perf_counter(), time.thread_time()
                call(event)
                timings[name].append((time.perf_counter() - wall, time.thread_time() - cpu))
    size = sum(p.stat().st_size for p in folder.iterdir()) / 2**30
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"online   history {history:,} events (loaded in {load_s:.0f} s, {size:.1f} GiB on disk); "
        f"{len(stream):,} more timed; load average {load} on {os.cpu_count()} cores"
    )
    for name, pairs in timings.items():
        for clock, ms in (("wall", [w * 1e3 for w, _ in pairs]), ("cpu", [c * 1e3 for _, c in pairs])):
            p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
            print(
                f"         {name:<16} {clock:<4} p50 {p50:5.2f} ms  p99 {p99:5.2f} ms  "
                f"p99.9 {p999:6.2f} ms  max {max(ms):6.2f} ms"
            )
    # The factory's university hub (one escort, one dormitory: 3% of all openings) sets the tail.
    escorts = pc.value_counts(apps["escort_key"].drop_null())
    hub = escorts.field("values")[int(np.argmax(escorts.field("counts")))].as_py()
    on_hub = np.array([e["escort_key"] == hub for e in stream])
    ms = np.array([c * 1e3 for _, c in timings["features_for"]])
    print(
        f"         features_for cpu p99: {np.percentile(ms[~on_hub], 99):.2f} ms for the "
        f"{(~on_hub).sum():,} events off the hub, {np.percentile(ms[on_hub], 99):.2f} ms "
        f"for the {on_hub.sum():,} on it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="offline applications (0: skip)")
    parser.add_argument("--history", type=int, default=1_000_000, help="online state (0: skip)")
    parser.add_argument("--queries", type=int, default=5_000, help="online events timed")
    parser.add_argument("--engines", action="store_true", help="compare DuckDB and polars")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the offline child process
    args = parser.parse_args()
    if args.build:
        build(args.build)
        return
    if args.engines:
        engines(args.rows or 1_000_000, args.seed)
    if args.rows:
        with tempfile.TemporaryDirectory(prefix="duanka-bench-") as folder:
            offline(args.rows, args.seed, Path(folder))
    if args.history:
        with tempfile.TemporaryDirectory(prefix="duanka-bench-") as folder:
            online(args.history, args.queries, args.seed, Path(folder))


if __name__ == "__main__":
    main()
