"""Offline features on a local Dask cluster: wall time, per-partition costs, peak memory per worker.

    python bench/bench_distributed.py --rows 1000000 --compare     # also the single-machine build
    python bench/bench_distributed.py --rows 10000000 --partitions 8

Events come from tests/factories.py over two years (as bench_features.py), written as Parquet
parts that the workers read themselves; feature partitions are written back as Parquet by the
workers, as a cluster run would. Printed: wall time of the whole run, compute seconds and rows per
task kind (the per-partition costs docs/scale-out.md projects from), and each worker's peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from features.distributed import feature_partitions
from tests.factories import EventFactory

DAYS = 730
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


def _write(frame, path: str) -> int:
    frame.to_parquet(path, index=False)
    return len(frame)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--memory-limit", default="10GiB", help="per worker")
    parser.add_argument("--compare", action="store_true", help="also build on one machine and compare")
    args = parser.parse_args()

    from distributed import Client, LocalCluster, get_task_stream, wait

    with tempfile.TemporaryDirectory(prefix="duanka-bench-dask-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        events = EventFactory(n=args.rows, seed=args.seed, days=DAYS).build()
        paths = []
        for i, lo in enumerate(range(0, events.applications.num_rows, PART_ROWS)):
            paths.append(folder / f"applications-{i:04d}.parquet")
            pq.write_table(events.applications.slice(lo, PART_ROWS), paths[-1])
        pq.write_table(events.labels, folder / "labels.parquet")
        del events
        seconds = time.perf_counter() - start
        print(f"generated {args.rows:,} applications in {len(paths)} parts: {seconds:.1f} s")

        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=args.memory_limit,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            out = folder / "features"
            out.mkdir()
            start = time.perf_counter()
            with get_task_stream(client) as stream:
                parts = feature_partitions(
                    client, paths, [folder / "labels.parquet"], partitions=args.partitions
                )
                written = [
                    client.submit(_write, p, str(out / f"part-{q:04d}.parquet"), pure=False)
                    for q, p in enumerate(parts)
                ]
                wait(written)
                rows = sum(client.gather(written))
            wall = time.perf_counter() - start
            peaks = client.run(_peak_gib)
            costs: dict[str, list[float]] = defaultdict(list)
            for task in stream.data:
                name = str(task["key"]).split("-")[0].strip("('\"")
                for span in task["startstops"]:
                    if span["action"] == "compute":
                        costs[name].append(span["stop"] - span["start"])
        print(
            f"dask, {args.workers} workers x 1 thread, {len(parts)} partitions: {rows:,} rows of features "
            f"in {wall:.1f} s ({rows / wall:,.0f} rows/s)"
        )
        for name, spans in sorted(costs.items(), key=lambda kv: -sum(kv[1])):
            print(
                f"  {name:16s} tasks {len(spans):4d}  compute {sum(spans):8.1f} s  "
                f"max {max(spans):7.2f} s  mean {sum(spans) / len(spans):6.2f} s"
            )
        for worker, peak in sorted(peaks.items()):
            print(f"  peak RSS {worker}: {peak:.2f} GiB")
        print(f"  peak RSS client: {_peak_gib():.2f} GiB")

        if args.compare:
            import numpy as np
            import pandas as pd

            from features.offline import build_features

            applications = pq.read_table(paths)
            labels = pq.read_table(folder / "labels.parquet")
            start = time.perf_counter()
            want = build_features(applications, labels)
            print(f"single machine build_features: {time.perf_counter() - start:.1f} s")
            got = pd.read_parquet(out).sort_values(["applied_at", "application_id"], ignore_index=True)
            same = np.isclose(
                got.iloc[:, 2:].to_numpy(), want.iloc[:, 2:].to_numpy(), rtol=0, atol=1e-9, equal_nan=True
            )
            ids = (got["application_id"].to_numpy() == want["application_id"].to_numpy()).all()
            print(f"identical: {bool(same.all() and ids)}")


if __name__ == "__main__":
    main()
