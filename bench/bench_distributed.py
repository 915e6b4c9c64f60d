"""Offline features on a local Dask cluster: wall time, per-partition costs, peak memory per worker.

    python bench/bench_distributed.py --rows 1000000 --compare     # also the single-machine build
    python bench/bench_distributed.py --rows 50000000 --slices 10 --partitions 32 --data /tmp/bank50m

Events come from tests/factories.py over two years (as bench_features.py), written as Parquet
parts that the workers read themselves. ``--slices K`` makes the bank as K consecutive periods,
each generated in a child process and written before the next (unique application ids; people,
escorts and the other keys recur across periods), so a bank larger than this machine's memory
can be made. ``--data`` keeps the parts for a rerun. Printed: wall time of the whole run, compute
seconds and rows per task kind (the per-partition costs docs/scale-out.md projects from), each
worker's peak RSS and the stage folder's peak size on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from duanka.features.distributed import BuildOptions, feature_partitions, scratch_folder
from tests.factories import EventFactory

DAYS = 730
START = "2024-01-01"
PART_ROWS = 500_000


def _peak_gib() -> float:
    """This process's peak resident memory since it started, GiB (Linux ``VmHWM``).

    Not ``getrusage``: a worker forked from the client inherits the client's high-water mark
    there, and reported the client's peak as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def _generate_slice(folder: str, k: int, slices: int, rows: int, seed: int) -> tuple[int, int]:
    """Period ``k`` of ``slices``: its applications as parts, its confirmations as one file."""
    n = rows // slices + (1 if k < rows % slices else 0)
    first_id = k * (rows // slices) + min(k, rows % slices)
    days = DAYS // slices
    start = (pd.Timestamp(START) + pd.Timedelta(days=k * days)).date().isoformat()
    events = EventFactory(n=n, seed=seed + k, days=days, start=start, first_id=first_id).build()
    apps = events.applications
    for i, lo in enumerate(range(0, apps.num_rows, PART_ROWS)):
        pq.write_table(apps.slice(lo, PART_ROWS), f"{folder}/applications-{k:03d}-{i:04d}.parquet")
    pq.write_table(events.labels, f"{folder}/labels-{k:03d}.parquet")
    return apps.num_rows, events.labels.num_rows


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # removed by a worker meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


class DiskPeak(threading.Thread):
    """The largest size a folder reaches while the run goes on, sampled every ``every`` seconds."""

    def __init__(self, folder: Path, every: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.folder, self.every, self.peak = folder, every, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, _folder_bytes(self.folder))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=1, help="consecutive periods, generated one at a time")
    parser.add_argument("--data", type=Path, default=None, help="keep the generated parts here (reused)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--memory-limit", default="10GiB", help="per worker")
    parser.add_argument("--compare", action="store_true", help="also build on one machine and compare")
    args = parser.parse_args()

    from distributed import Client, LocalCluster, get_task_stream

    with tempfile.TemporaryDirectory(prefix="duanka-bench-dask-") as tmp:
        folder = args.data or Path(tmp) / "events"
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if not sorted(folder.glob("applications-*.parquet")):
            with ProcessPoolExecutor(max_workers=1) as pool:  # a child per period: its memory goes back
                made = [
                    pool.submit(_generate_slice, str(folder), k, args.slices, args.rows, args.seed).result()
                    for k in range(args.slices)
                ]
            print(
                f"generated {sum(a for a, _ in made):,} applications, {sum(b for _, b in made):,} "
                f"confirmations in {args.slices} periods: {time.perf_counter() - start:.1f} s"
            )
        paths = sorted(folder.glob("applications-*.parquet"))
        labels = sorted(folder.glob("labels-*.parquet"))
        print(f"events: {len(paths)} parts, {sum(p.stat().st_size for p in paths) / 2**30:.2f} GiB on disk")

        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=args.memory_limit,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
            scratch_folder(client, tmp) as scratch,
        ):
            disk = DiskPeak(Path(scratch))
            disk.start()
            start = time.perf_counter()
            with get_task_stream(client) as stream:
                parts = feature_partitions(
                    client, paths, labels, scratch=scratch, options=BuildOptions(partitions=args.partitions)
                )
            wall = time.perf_counter() - start
            disk.done.set()
            rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
            features_gib = sum(Path(p).stat().st_size for p in parts) / 2**30
            peaks = client.run(_peak_gib)
            costs: dict[str, list[float]] = defaultdict(list)
            for task in stream.data:
                name = str(task["key"]).split("-")[0].strip("('\"")
                for span in task["startstops"]:
                    if span["action"] == "compute":
                        costs[name].append(span["stop"] - span["start"])
            print(
                f"dask, {args.workers} workers x 1 thread, {len(parts)} partitions: {rows:,} rows of "
                f"features in {wall:.1f} s ({rows / wall:,.0f} rows/s)"
            )
            for name, spans in sorted(costs.items(), key=lambda kv: -sum(kv[1])):
                print(
                    f"  {name:16s} tasks {len(spans):5d}  compute {sum(spans):8.1f} s  "
                    f"max {max(spans):7.2f} s  mean {sum(spans) / len(spans):6.2f} s"
                )
            total = sum(sum(s) for s in costs.values())
            print(f"  worker compute in all: {total:,.0f} s, {total / (rows / 1e6):.1f} s per million")
            for worker, peak in sorted(peaks.items()):
                print(f"  peak RSS {worker}: {peak:.2f} GiB")
            print(f"  peak RSS client: {_peak_gib():.2f} GiB")
            print(
                f"  stage folder peak on disk (sampled every 10 s): {disk.peak / 2**30:.2f} GiB; "
                f"features written {features_gib:.2f} GiB"
            )

            if args.compare:
                import numpy as np

                from duanka.features.offline import build_features

                applications = pq.read_table(paths)
                confirmations = pa.concat_tables([pq.read_table(p) for p in labels])
                start = time.perf_counter()
                want = build_features(applications, confirmations)
                print(f"single machine build_features: {time.perf_counter() - start:.1f} s")
                got = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
                got = got.sort_values(["applied_at", "application_id"], ignore_index=True)
                same = np.isclose(
                    got.iloc[:, 2:].to_numpy(), want.iloc[:, 2:].to_numpy(), rtol=0, atol=1e-9, equal_nan=True
                )
                ids = (got["application_id"].to_numpy() == want["application_id"].to_numpy()).all()
                print(f"identical: {bool(same.all() and ids)}")


if __name__ == "__main__":
    main()
