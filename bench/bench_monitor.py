"""What ``duanka monitor`` costs on a decision record of a million decisions: the first run, and the next.

    .venv/bin/python bench/bench_monitor.py [--decisions 1000000] [--new 10000] [--days 365]
        [--branches 300] [--work /tmp/bench-monitor]
    .venv/bin/python bench/bench_monitor.py --screenshots docs/images --demo data/quickstart/store

Builds a decision record through :class:`duanka.serving.audit.DecisionLog`, as the service writes
one: ``--decisions`` decisions over ``--days`` days at ``--branches`` branches of unequal size, each
answer with its 72-number model feature vector and its prepared application; the model's
reference (:mod:`duanka.training.monitoring_reference`) is another draw of the same features, so
every PSI and CSI bin is counted. Mules (0.5 %) are confirmed 30 days after their application,
and 2,000 referred cases are disposed. Then it times the monitoring in process
(:func:`duanka.serving.monitor.engine.run_monitoring` and the page), as of the record's last day:

- cold: a new sidecar, every decision counted and every figure drawn;
- warm, nothing new: the sidecar up to date;
- warm, ``--new`` new: that many decisions of the next day appended to the record first.

The command adds its interpreter's start to each (``duanka --help`` alone takes seconds).

``--screenshots`` serves the demo store (``make demo`` first) with ``duanka serve``, signs a model
reviewer in through a one-time link in Debian's Chromium (scripts/install-browser), opens the
model versions and ``/monitor`` and saves both as PNG files, and times ``GET /monitor`` over HTTP:
the first (the service's monitoring worker started, the demo record counted from scratch if no
earlier run left its counts) and then the median of repeats (the record unchanged). It prints the
monitoring gauges ``/metrics`` then shows. README.md and docs/serving.md record the figures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo_browser import chromium, median_ms, served_demo

from duanka.data.config import default_of
from duanka.features.registry import MODEL_FEATURES
from duanka.serving.audit import DecisionLog, DecisionRow, iso_utc
from duanka.serving.monitor.baselines import Baseline
from duanka.serving.monitor.engine import MonitorInputs, run_monitoring
from duanka.serving.monitor.render import render_html
from duanka.training.monitoring_reference import reference_of

CHAIN_KEY = b"bench-monitor-chain-key-not-a-secret-00"
START = datetime(2025, 1, 1, 1, tzinfo=UTC)  # 09:00 in Beijing
BOOSTER = "c" * 64
CHUNK = 20_000
MULE_RATE = 0.005
DISPOSED = 2_000
CUTS = (0.995, 0.98, 0.95)  # score quantiles of the budget: critical, high, medium (uniform scores)
CODES = np.asarray(["ESC_VELOCITY", "NIGHT", "BUNDLE", "ADDR_FAR_FROM_BRANCH", "NEW_SIM", "LINKED_GROUP"])
MIB = 1 << 20


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    # two decimals: answers hold counts, flags and shares, not seventeen-digit floats
    X = np.round(rng.normal(size=(n, len(MODEL_FEATURES))), 2)
    X[rng.random((n, len(MODEL_FEATURES))) < 0.03] = np.nan
    return X


def _chunk(rng: np.random.Generator, first: int, n: int, days: np.ndarray, weights: np.ndarray) -> tuple:
    """``n`` decisions numbered from ``first``, on ``days`` (offsets from START): rows and answers."""
    X = _features(rng, n)
    score = rng.uniform(size=n)
    band = np.select(
        [score >= CUTS[0], score >= CUTS[1], score >= CUTS[2]], ["critical", "high", "medium"], "low"
    )
    branch = rng.choice(len(weights), size=n, p=weights)
    minutes = rng.integers(0, 480, size=n)
    rows, answers = [], {}
    for k in range(n):
        application_id = f"A{first + k:09d}"
        applied = START + timedelta(days=int(days[k]), minutes=int(minutes[k]))
        at = iso_utc(applied)
        codes = list(CODES[rng.choice(len(CODES), size=3, replace=False)]) if band[k] != "low" else []
        rows.append(
            DecisionRow(
                f"r{first + k}",
                application_id,
                "k1",
                at,
                "duanka",
                "1",
                BOOSTER,
                float(score[k]),
                str(band[k]),
                "|".join(codes),
                1.0,
                False,
                branch_id=f"B{branch[k]:04d}",
                applied_at=at,
            )
        )
        response = {
            "application_id": application_id,
            "score": float(score[k]),
            "band": str(band[k]),
            "reasons": [{"code": c} for c in codes],
            "features": dict(
                zip(MODEL_FEATURES, [None if v != v else v for v in X[k].tolist()], strict=True)
            ),
        }
        event = {
            "applied_at": applied,
            "branch_province": "44",
            "home_province": "44" if branch[k] % 3 else "51",
            "gender": "FM"[k % 2],
            "channel": "counter",
        }
        answers[application_id] = ("d" * 64, response, event)
    return rows, answers, band, score


def build(path: Path, decisions: int, days: int, branches: int, seed: int = 0) -> pd.DataFrame:
    """The record: ``decisions`` over ``days`` days; returns the mules' confirmations."""
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, branches + 1) ** 0.7  # a few large branches, many small ones
    weights /= weights.sum()
    day_of = np.sort(rng.integers(0, days, size=decisions))
    mules, referred = [], []
    with DecisionLog(path, chain_key=CHAIN_KEY) as log:
        for first in range(0, decisions, CHUNK):
            n = min(CHUNK, decisions - first)
            rows, answers, band, _ = _chunk(rng, first, n, day_of[first : first + n], weights)
            log.record(rows, answers)
            mule = rng.random(n) < np.where(band == "critical", 0.4, np.where(band == "high", 0.1, 0.003))
            mules += [(r.application_id, r.applied_at) for r, m in zip(rows, mule, strict=True) if m]
            referred += [
                (r.application_id, r.applied_at, m)
                for r, m, b in zip(rows, mule, band, strict=True)
                if b in ("critical", "high")
            ]
        for application_id, _, mule in referred[:DISPOSED]:
            log.event(
                "case_disposed",
                {
                    "application_id": application_id,
                    "status": "confirmed" if mule else "cleared",
                    "note": "bench",
                    "label": None,
                    "branch_id": None,
                    "ring_of": None,
                },
                key_id="reviewer",
                request_id=None,
            )
    confirmed = pd.to_datetime([a for _, a in mules], utc=True) + pd.Timedelta(days=30)
    return pd.DataFrame({"application_id": [m for m, _ in mules], "confirmed_at": confirmed})


def append(path: Path, first: int, n: int, day: int, branches: int, seed: int = 1) -> None:
    """``n`` more decisions, all on day ``day``."""
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, branches + 1) ** 0.7
    weights /= weights.sum()
    with DecisionLog(path, chain_key=CHAIN_KEY) as log:
        for start in range(0, n, CHUNK):
            k = min(CHUNK, n - start)
            rows, answers, _, _ = _chunk(rng, first + start, k, np.full(k, day), weights)
            log.record(rows, answers)


def timed(inputs: MonitorInputs, as_of: datetime) -> tuple[str, float]:
    started = time.perf_counter()
    monitoring = run_monitoring(inputs, as_of=as_of.date())
    ran = time.perf_counter()
    render_html(monitoring)
    page = time.perf_counter() - ran
    total = time.perf_counter() - started
    s = monitoring.seconds
    line = (
        f"count {s['count']:6.2f} s  plan {s['plan']:5.2f} s  page {page:4.2f} s  total {total:6.2f} s  "
        f"({monitoring.refreshed.read:,} decisions read; status {monitoring.status.word})"
    )
    return line, total


def screenshots(demo: Path, out: Path, port: int, repeats: int) -> None:
    """Serve the demo store, sign a model reviewer in, save /models and /monitor, time /monitor."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    with served_demo(demo, port, "--model-reviewer") as served, chromium() as driver:
        driver.get(served.link)
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/models"))
        out.mkdir(parents=True, exist_ok=True)
        driver.set_window_size(1400, 1500)
        driver.save_screenshot(str(out / "models-versions.png"))
        # one session, two cookies: the browser shows this page's (Path=/models) only
        cookie = {"duanka_monitor": driver.get_cookie("duanka_models")["value"]}
        started = time.perf_counter()
        while (first := httpx.get(f"{served.url}/monitor", cookies=cookie, timeout=60)).status_code == 503:
            time.sleep(1)  # the first run is still counting: the page says so
        first.raise_for_status()
        first_s = time.perf_counter() - started
        warm_ms = median_ms(lambda: httpx.get(f"{served.url}/monitor", cookies=cookie, timeout=60), repeats)
        driver.get(f"{served.url}/monitor")
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.plan"))
        rows = len(driver.find_elements(By.CSS_SELECTOR, "table.plan tr")) - 1
        driver.set_window_size(1400, 2200)
        driver.save_screenshot(str(out / "monitor.png"))
        gauges = [
            line
            for line in httpx.get(f"{served.url}/metrics", timeout=30).text.splitlines()
            if line.startswith("duanka_monitor_") and "timestamp" not in line
        ]
        print(f"demo /monitor: {rows} plan rows; first GET {first_s:.2f} s, then {warm_ms:.0f} ms (median)")
        print("\n".join(gauges))
        print(f"screenshots -> {out / 'models-versions.png'}, {out / 'monitor.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--decisions", type=int, default=1_000_000, help="in the record, the new ones included"
    )
    parser.add_argument("--new", type=int, default=10_000, help="appended before the last run")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--branches", type=int, default=300)
    parser.add_argument("--work", type=Path, default=None, help="folder of the record (removed first)")
    parser.add_argument("--screenshots", type=Path, help="save the demo's /models and /monitor here (PNG)")
    parser.add_argument("--demo", type=Path, default=Path("data/quickstart/store"), help="the demo store")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.screenshots is not None:
        screenshots(args.demo, args.screenshots, args.port, args.repeats)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    record, sidecar = work / "decisions.db", work / "monitor.db"
    first = args.decisions - args.new
    started = time.perf_counter()
    labels = build(record, first, args.days, args.branches)
    built = time.perf_counter() - started
    print(
        f"record: {first:,} decisions over {args.days} days at {args.branches} branches, "
        f"{record.stat().st_size / MIB:,.0f} MiB, {len(labels):,} mules (built in {built:.0f} s)"
    )

    rng = np.random.default_rng(7)
    reference = reference_of(
        _features(rng, 50_000),
        rng.uniform(size=50_000),
        MODEL_FEATURES,
        (START.isoformat(), START.isoformat()),
    )
    baseline = Baseline(BOOSTER, "1", reference, {"recall alert": (0.5, 0.4, 0.6)})
    inputs = MonitorInputs(
        record, sidecar, lambda b, v: baseline, default_of("outcome_window_days"), labels=lambda: labels
    )
    as_of = START + timedelta(days=args.days)  # the day the new decisions are appended on
    cold, _ = timed(inputs, as_of)
    print(f"cold                 {cold}")
    warm, _ = timed(inputs, as_of)
    print(f"warm, nothing new    {warm}")
    append(record, first, args.new, args.days, args.branches)
    fresh, _ = timed(inputs, as_of)
    print(f"warm, {args.new:,} new".ljust(21) + fresh)
    print(f"sidecar: {sidecar.stat().st_size / MIB:,.1f} MiB; record: {record.stat().st_size / MIB:,.0f} MiB")
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
