"""How long training takes on a large generated bank, stage by stage, and in how much memory.

    .venv/bin/python bench/bench_train.py --applications 10000000 --work /tmp/bench-train-10m

Stages: generate (skipped when the work folder has a bank), ingest (skipped when it has
a store), the point-in-time training set (``build_training_set``), then the three steps
of :func:`duanka.training.fit.fit_models`, timed one by one: the *evidence* fit (LightGBM on
the split's training months, downsampled, stopped early on the validation months), the
*refit* of the shipped model on all labelled history with the evidence's number of
rounds (the label policy's rows and weights, downsampled), and calibration + bands
(the evidence's calibrator and bands on the validation months; the shipped model's
calibrator on the latest mature months and its band cuts on the latest 61 days).

The fit steps are the lines of ``fit_models`` for a training set built on this machine,
repeated here with its public helpers so each can be timed apart; change them together.

Target: evidence fit + refit + calibration under 5 minutes at 10M applications on 2
cores; the feature build as before. Prints seconds and peak resident memory per stage
(the stage's own peak where Linux lets the high-water mark be reset, and the process's
peak so far), then the row counts.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI, Settings
from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
from duanka.data.ingest import ingest_file
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.synthetic import generate_bank
from duanka.features.registry import MODEL_FEATURES
from duanka.features.training_set import build_training_set
from duanka.training.bands import Bands
from duanka.training.calibration import make_calibrator
from duanka.training.fit import classifier, fit_evidence, matrix
from duanka.training.labels import LabelPolicy, confirmed_us, refit_rows
from duanka.training.model import downsample
from duanka.training.run import TrainConfig, known_labels, out_of_time_parts, time_split
from duanka.training.split import TEST, TRAIN, VALID

T = TypeVar("T")
FIT_TARGET_S = 300.0  # evidence fit + refit + calibration at 10M applications
FIT_STAGES = ("evidence fit", "refit", "calibration + bands")


def _reset_stage_peak() -> bool:
    """Reset the process's resident high-water mark (Linux >= 4.0); False where it cannot be."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _stage_peak_gib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _ru_maxrss_gib() -> float:
    """ru_maxrss: kB on Linux, bytes on macOS; on Linux it follows the reset high-water mark."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class Stages:
    """Times stages one after another and prints each as it ends.

    Wall seconds, the process's CPU seconds (all threads: on a shared machine wall time
    alone overstates a stage), the stage's peak resident memory and the process's so far.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.process_peak = 0.0
        print(
            f"{'stage':<26} {'wall s':>8} {'CPU s':>8}  {'stage peak':>10}  {'process peak':>12}", flush=True
        )

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        resettable = _reset_stage_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.seconds[name] = time.perf_counter() - t0
        cpu = time.process_time() - c0
        peak = _stage_peak_gib() if resettable else None
        self.process_peak = max(self.process_peak, peak if peak is not None else _ru_maxrss_gib())
        stage = f"{peak:6.2f} GiB" if peak is not None else "n/a"
        print(
            f"{name:<26} {self.seconds[name]:8.1f} {cpu:8.1f}  {stage:>10}  {self.process_peak:8.2f} GiB",
            flush=True,
        )
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument(
        "--label-policy",
        type=LabelPolicy,
        choices=list(LabelPolicy),
        default=TrainConfig.label_policy,
        help="rows and label weights of the refit (default: %(default)s)",
    )
    parser.add_argument("--negative-rate", type=float, default=TrainConfig.negative_rate)
    args = parser.parse_args()
    start = date(2024, 1, 1)
    settings = Settings()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    timed = Stages()

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
        if (bank / "watchlist.csv").exists():
            timed("ingest watchlist", lambda: ingest_file(bank / "watchlist.csv", WATCHLIST, store, keys))

    as_of = (pd.Timestamp(start, tz=SHANGHAI) + pd.DateOffset(months=args.months)).tz_convert("UTC")
    cfg = TrainConfig(
        as_of=as_of, label_policy=args.label_policy, negative_rate=args.negative_rate, fast=True
    )
    options = cfg.fit_options()
    names = list(MODEL_FEATURES)
    ts = timed(
        "point-in-time features",
        lambda: build_training_set(
            store.applications(),
            store.labels(),
            listings=store.watchlist(),
            as_of=as_of,
            outcome_window_days=settings.outcome_window_days,
        ),
    )
    frame = ts.frame
    if "weight" in frame.columns:
        raise SystemExit("a sampled training set (a cluster's): the bench times this machine's build only")

    # What fit_as_of hands fit_models: the split's parts and each row's known confirmation.
    def prepare():
        split = time_split(cfg, settings)
        confirmed = confirmed_us(frame, known_labels(store, ts.as_of), ts.as_of)
        return split, out_of_time_parts(ts, split), confirmed

    split, parts, confirmed = timed("split + known labels", prepare)

    # fit_models, step by step.
    evidence = timed("evidence fit", lambda: fit_evidence(parts, names, options))
    rounds = max(1, int(evidence.booster_.best_iteration or evidence.booster_.current_iteration()))

    def refit():
        rows = refit_rows(
            frame,
            confirmed,
            ts.as_of,
            policy=options.label_policy,
            outcome_window_days=ts.outcome_window_days,
            horizon_days=options.horizon_days,
        )
        kept, weight = downsample(rows.label, options.negative_rate, options.seed, rows.weight)
        shipped = classifier(options, n_estimators=rounds).fit(
            matrix(frame.iloc[rows.rows[kept]], names),
            rows.label[kept],
            feature_names=names,
            sample_weight=weight,
        )
        return rows, kept, weight, shipped

    refit_set, kept, kept_weight, shipped = timed("refit", refit)

    def calibrate_and_band():
        t0 = time.perf_counter()
        valid_y = parts[VALID]["label"].to_numpy()
        valid_margin = evidence.decision_function(matrix(parts[VALID], names))
        evidence_calibrator = make_calibrator(options.calibration).fit(valid_margin, valid_y)
        Bands.from_budget(evidence_calibrator.predict(valid_margin))
        t1 = time.perf_counter()
        recent = pd.concat([parts[VALID], parts[TEST]])
        calibrator = make_calibrator(options.calibration).fit(
            shipped.decision_function(matrix(recent, names)), recent["label"].to_numpy()
        )
        latest = frame.loc[frame["applied_at"].to_numpy() >= ts.as_of - pd.Timedelta(days=options.band_days)]
        bands = Bands.from_budget(calibrator.predict(shipped.decision_function(matrix(latest, names))))
        return len(recent), len(latest), bands, t1 - t0, time.perf_counter() - t1

    calibration_rows, band_rows, bands, evidence_cal_s, shipped_cal_s = timed(
        "calibration + bands", calibrate_and_band
    )

    train = parts[TRAIN]
    s = ts.summary
    print()
    print(
        f"training set: {s.rows:,} rows ({s.mature:,} mature, {s.positives:,} mature mules; "
        f"{s.rule_refused:,} refused by the watchlist rule)"
    )
    print(f"split: {split.describe()}")
    print(
        f"evidence: train {len(train):,} rows ({int(train['label'].sum()):,} mules), downsampled to "
        f"{evidence.training_rows_:,}; validation {len(parts[VALID]):,}; best iteration "
        f"{evidence.booster_.best_iteration}"
    )
    print(
        f"refit ({options.label_policy}): {len(refit_set.rows):,} rows "
        f"({int(refit_set.label.sum()):,} mules), weight sum {float(refit_set.weight.sum()):,.1f}; "
        f"downsampled to {len(kept):,} (weight sum {float(np.sum(kept_weight)):,.1f}); "
        f"{shipped.booster_.current_iteration()} rounds"
    )
    print(
        f"calibration: {calibration_rows:,} rows (evidence {evidence_cal_s:.1f} s, shipped "
        f"{shipped_cal_s:.1f} s); bands on {band_rows:,} rows of the last {options.band_days} days: "
        f"{bands.to_dict()}"
    )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    fit = sum(timed.seconds[name] for name in FIT_STAGES)
    features = timed.seconds["point-in-time features"]
    print(
        f"fit (evidence + refit + calibration): {fit:.1f} s (target at 10M: < {FIT_TARGET_S:.0f} s); "
        f"features {features:.1f} s; features + fit {features + fit:.1f} s"
    )


if __name__ == "__main__":
    main()
