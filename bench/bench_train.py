"""How long training takes on a large generated bank, step by step, and in how much memory.

    .venv/bin/python bench/bench_train.py --applications 10000000 --work /tmp/bench-train-10m

Steps: generate (skipped when the work folder has a bank), ingest (skipped when it has
a store), the point-in-time training set, then the model fit with negative
downsampling (LightGBM with early stopping) and calibration. Target: training on 10M
applications in under 10 minutes on 2 cores. Prints seconds per step and the peak
resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import date
from pathlib import Path

import pandas as pd

from data.config import SHANGHAI, Settings
from data.contract import APPLICATIONS, LABELS
from data.ingest import ingest_file
from data.pseudonym import Pseudonymiser
from data.store import EventStore
from data.synthetic import generate_bank
from features.registry import MODEL_FEATURES
from features.training_set import build_training_set
from training.calibration import make_calibrator
from training.run import TrainConfig, _fit_lightgbm, _matrix, _split
from training.split import TRAIN, VALID


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    start = date(2024, 1, 1)
    timings: list[tuple[str, float]] = []

    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        timings.append((name, time.perf_counter() - t0))
        print(f"{name:<28} {timings[-1][1]:8.1f} s   peak RSS {peak_gib():5.1f} GiB", flush=True)
        return out

    bank = args.work / "bank"
    if not (bank / "applications.csv").exists():
        timed(
            "generate",
            lambda: generate_bank(bank, months=args.months, applications=args.applications, start=start),
        )
    store = EventStore(args.work / "store")
    if not store.manifest():
        keys = Pseudonymiser.from_secret(b"bench-secret-" + b"x" * 32)
        timed(
            "ingest applications", lambda: ingest_file(bank / "applications.csv", APPLICATIONS, store, keys)
        )
        timed("ingest labels", lambda: ingest_file(bank / "labels.csv", LABELS, store, keys))
    as_of = (pd.Timestamp(start, tz=SHANGHAI) + pd.DateOffset(months=args.months)).tz_convert("UTC")
    ts = timed(
        "point-in-time training set",
        lambda: build_training_set(
            store.applications(), store.labels(), listings=store.watchlist(), as_of=as_of
        ),
    )
    cfg = TrainConfig(as_of=as_of)
    _, parts = _split(ts, cfg, Settings())
    names = list(MODEL_FEATURES)
    model = timed("LightGBM fit (downsampled)", lambda: _fit_lightgbm(parts, names, cfg))
    timed(
        "calibration",
        lambda: make_calibrator("platt").fit(
            model.decision_function(_matrix(parts[VALID], names)), parts[VALID]["label"].to_numpy()
        ),
    )
    print(
        f"rows: {ts.summary.rows:,} (train {len(parts[TRAIN]):,}, downsampled to {model.training_rows_:,}; "
        f"best iteration {model.booster_.best_iteration})"
    )
    fit = sum(t for name, t in timings if name in ("LightGBM fit (downsampled)", "calibration"))
    features = dict(timings)["point-in-time training set"]
    print(f"training (features + fit + calibration): {features + fit:.1f} s; fit alone {fit:.1f} s")


if __name__ == "__main__":
    main()
