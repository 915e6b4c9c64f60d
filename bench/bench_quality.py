"""How well duanka catches mules on generated worlds, beside an independent reference model.

    .venv/bin/python bench/bench_quality.py --write-docs
    .venv/bin/python bench/bench_quality.py --worlds default-7 adapted --applications 50000

For each world (a ``duanka generate`` scenario and seed) it generates the bank, ingests it,
runs duanka's rolling monthly backtest over the last six months (months 12-18 of the default
18: train as of each month's start on what was known then, score the month point in time;
``fast=True``, 200 bootstrap resamples) and the reference model's backtest
(``bench/reference_model.py``) over the same months. Both are judged on exactly the rows
duanka's backtest scored (applications in each ``(start, end]``, less those the watchlist
rule refuses) and with the same outcome labels, so their figures compare like with like.

Per world it reports: scored applications and confirmed mules; pooled recall at 1 % alerts
with its 95 % bootstrap interval for the shipped model, the reference and the evidence model
(fitted on the split's training months only); PR-AUC of the shipped model and the reference;
recall at 1 % alerts (pooled) per mule scheme of ``truth.csv`` (escort rings for both models;
shell companies, insiders and solo sellers for the shipped model); and the share of scored
applications the shipped bands put in critical and in critical + high against the budgets of
0.5 % and 2.0 %, pooled and for the worst month, i.e. the month whose critical share is the
furthest from the budget by ratio (a month at 0.05 % is worse than one at 1.0 %).

The reference model is a yardstick, not the grader: it is a deliberately simple, separately
written LightGBM on about twenty hand-made features. When duanka falls below it, something
in duanka's features or training is worth a look; when duanka is above it, that says nothing
about the truth. The grader is ``truth.csv`` and the confirmed labels.

``--write-docs`` rewrites the section of ``docs/model.md`` between ``<!-- quality:begin -->``
and ``<!-- quality:end -->`` (appended under its own heading when absent). Banks and stores
are kept under ``--work`` and reused when generated with the same parameters.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, bench/ is on sys.path: the reference model imports as a plain module.
from reference_model import backtest_reference
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from duanka.data.config import Settings
from duanka.data.store import EventStore
from duanka.training.backtest import (
    ALERT_BUDGET_HIGH,
    CRITICAL_BUDGET,
    EVIDENCE_ROW,
    BacktestConfig,
    backtest,
    scheme_recall,
)
from duanka.training.fairness import OUT_OF_PROVINCE_LEGIT_WEIGHT
from duanka.training.groups import load_truth
from duanka.training.metrics import evaluate
from duanka.training.monitoring import false_positive_rate_ratio
from duanka.training.periods import Every, period_starts
from duanka.training.run import TrainConfig
from duanka.training.tracking import configure

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "model.md"
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
HEADING = "## Quality on generated worlds (bench/bench_quality.py)"
WORLDS: list[tuple[str, int]] = [
    ("default", 7),
    ("default", 8),
    ("default", 9),
    ("escorts_hidden", 7),
    ("spread_out", 7),
    ("insiders_move", 7),
    ("sent_alone", 7),
    ("adapted", 7),
    ("adapted", 8),
    ("adapted", 9),
]
SCORED_MONTHS = 6
N_BOOT = 200
RECALL = "recall@1.0%"
RECALL_5 = "recall@5.0%"
SCHEMES = ("escort_ring", "shell_company", "insider", "solo_seller")
BANK_FILES = ("applications.csv", "labels.csv", "watchlist.csv", "truth.csv")

# Wide when logging to a file, so the per-period tables do not wrap.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@dataclass
class WorldResult:
    scenario: str
    seed: int
    applications: int
    mules: int
    shipped: tuple[float, float, float]  # recall@1% point, CI low, CI high
    reference: tuple[float, float, float]
    evidence: tuple[float, float, float]
    shipped_recall_5: float  # recall at 5 % alerts, pooled
    shipped_pr_auc: float
    reference_pr_auc: float
    fpr_ratio_top1: float  # legit FPR out-of-province / local among the top 1 % of scores
    shipped_schemes: dict[str, float]
    reference_schemes: dict[str, float]
    scheme_mules: dict[str, int]
    critical_share: float
    alert_share: float
    worst_month: str
    worst_critical: float
    reference_missing: int
    seconds: dict[str, float]

    @property
    def name(self) -> str:
        return f"{self.scenario}-{self.seed}"


def world_key(scenario: str, seed: int) -> str:
    return f"{scenario}-{seed}"


def chosen_worlds(names: list[str] | None) -> list[tuple[str, int]]:
    """The worlds ``--worlds`` names: ``scenario-seed`` picks one, a bare scenario all its seeds."""
    if not names:
        return list(WORLDS)
    chosen = []
    for name in names:
        hits = [w for w in WORLDS if name in (world_key(*w), w[0])]
        if not hits:
            keys = ", ".join(world_key(*w) for w in WORLDS)
            raise SystemExit(f"--worlds {name!r}: not one of {keys} (or a scenario name)")
        chosen += [w for w in hits if w not in chosen]
    return chosen


def duanka_exe() -> str:
    here = Path(sys.executable).parent / "duanka"
    return str(here) if here.exists() else (shutil.which("duanka") or "duanka")


def run_cli(args: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run([duanka_exe(), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        console.print(done.stdout[-4000:], done.stderr[-4000:], markup=False)
        raise SystemExit(f"duanka {args[0]} failed with exit status {done.returncode}")


def prepared_bank(
    folder: Path, scenario: str, seed: int, args: argparse.Namespace
) -> tuple[Path, Path, bool]:
    """Generate and ingest the world's bank unless ``folder`` already holds it; returns
    (bank, store, reused)."""
    bank, store = folder / "bank", folder / "store"
    stamp = folder / "params.json"
    params = {
        "scenario": scenario,
        "seed": seed,
        "months": args.months,
        "applications": args.applications,
        "start": args.start,
    }
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return bank, store, True
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_cli(
        [
            "generate",
            "--out",
            str(bank),
            "--months",
            str(args.months),
            "--applications",
            str(args.applications),
            "--seed",
            str(seed),
            "--start",
            args.start,
            "--scenario",
            scenario,
        ]
    )
    env = dict(os.environ)
    if len(env.get("DUANKA_PSEUDONYM_KEY", "").encode()) < 32 and not env.get("DUANKA_PSEUDONYM_KEY_FILE"):
        env["DUANKA_PSEUDONYM_KEY"] = "k" * 40
    run_cli(
        [
            "ingest",
            "--applications",
            str(bank / "applications.csv"),
            "--labels",
            str(bank / "labels.csv"),
            "--watchlist",
            str(bank / "watchlist.csv"),
            "--data",
            str(store),
        ],
        env=env,
    )
    stamp.write_text(json.dumps(params))
    return bank, store, False


def top_share_fpr_ratio(scored: pd.DataFrame, share: float) -> float:
    """Legitimate out-of-province applicants' false-positive rate over locals' when the top
    ``share`` of scores is alerted (ties at the cut alerted together): the fairness constraint."""
    score = scored["score"].to_numpy(dtype=float)
    cut = np.sort(score)[::-1][max(math.ceil(share * len(score)), 1) - 1]
    outsider = scored["out_of_province"].to_numpy(dtype=bool)
    return false_positive_rate_ratio(scored["label"].to_numpy(), score >= cut, outsider, ~outsider)


def _triple(point: dict, low: dict, high: dict, key: str = RECALL) -> tuple[float, float, float]:
    return float(point[key]), float(low[key]), float(high[key])


def _worst_month(table: pd.DataFrame) -> tuple[str, float]:
    months = table.loc[~table.index.str.startswith("pooled"), "critical_share"]
    # Distance by ratio; an empty month (share 0) counts as infinitely far.
    distance = np.abs(np.log(np.maximum(months.to_numpy(dtype=float), 1e-12) / CRITICAL_BUDGET))
    at = int(np.argmax(distance))
    return str(months.index[at])[:7], float(months.iloc[at])


def run_world(
    scenario: str, seed: int, args: argparse.Namespace, settings: Settings, bar: Progress
) -> WorldResult:
    key = world_key(scenario, seed)
    task = bar.add_task(f"{key}: generate + ingest", total=4)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    bank, store_dir, reused = prepared_bank(args.work / key, scenario, seed, args)
    seconds["generate + ingest"] = time.perf_counter() - t0
    how = "reused" if reused else "generated and ingested"
    console.log(f"{key}: bank {how} in {seconds['generate + ingest']:.0f} s")
    bar.advance(task)

    local = pd.Timestamp(f"{args.start}T00:00:00+08:00")
    start = (local + pd.DateOffset(months=args.months - SCORED_MONTHS)).tz_convert("UTC")
    end = (local + pd.DateOffset(months=args.months)).tz_convert("UTC")
    train = TrainConfig(
        as_of=start, fast=True, n_boot=N_BOOT, out_of_province_legit_weight=args.out_of_province_weight
    )
    cfg = BacktestConfig(start, end, train, n_boot=N_BOOT)

    t0 = time.perf_counter()
    bar.update(task, description=f"{key}: duanka backtest")
    result = backtest(
        EventStore(store_dir),
        cfg,
        settings.outcome_window_days,
        truth_path=bank / "truth.csv",
        progress=lambda text: bar.update(task, description=f"{key}: {text}"),
    )
    seconds["duanka backtest"] = time.perf_counter() - t0
    console.log(f"{key}: duanka backtest in {seconds['duanka backtest']:.0f} s")
    bar.advance(task)

    t0 = time.perf_counter()
    bar.update(task, description=f"{key}: reference backtest")
    starts = period_starts(start, end, Every.MONTH)
    # duanka scores (start, end]; the reference [start, end). One second past the end lets the
    # reference score a row applied at exactly ``end``; rows at exactly ``start`` it scores and
    # duanka does not are dropped by the merge below.
    ref = backtest_reference(
        bank, starts, end + pd.Timedelta(seconds=1), settings.outcome_window_days, seed=0
    )
    seconds["reference backtest"] = time.perf_counter() - t0
    console.log(f"{key}: reference backtest in {seconds['reference backtest']:.0f} s")
    bar.advance(task)

    bar.update(task, description=f"{key}: evaluate")
    scored = pd.concat([p.scored for p in result.periods], ignore_index=True)
    ref_score = scored[["application_id"]].merge(
        ref[["application_id", "score"]].drop_duplicates("application_id"), on="application_id", how="left"
    )["score"]
    missing = int(ref_score.isna().sum())
    if missing:
        console.log(f"[yellow]{key}: {missing} scored rows have no reference score; they rank last")
    ref_rows = scored[["application_id", "label"]].assign(score=ref_score.fillna(-np.inf).to_numpy())
    y = scored["label"].to_numpy()
    ref_ev = evaluate(y, ref_rows["score"].to_numpy(), n_boot=N_BOOT, seed=0)
    truth = load_truth(bank / "truth.csv")
    ref_schemes = scheme_recall(ref_rows[["application_id", "score"]], truth)

    table = result.table
    pooled, evidence = table.loc["pooled"], table.loc[EVIDENCE_ROW]
    shipped_schemes = result.by_scheme["recall"].to_dict() if result.by_scheme is not None else {}
    worst_month, worst_critical = _worst_month(table)
    bar.advance(task)
    bar.update(task, description=f"{key}: done")

    out = WorldResult(
        scenario=scenario,
        seed=seed,
        applications=len(scored),
        mules=int(y.sum()),
        shipped=(pooled[RECALL], pooled[f"{RECALL}_ci_low"], pooled[f"{RECALL}_ci_high"]),
        reference=_triple(ref_ev.point, ref_ev.ci_low, ref_ev.ci_high),
        evidence=(evidence[RECALL], evidence[f"{RECALL}_ci_low"], evidence[f"{RECALL}_ci_high"]),
        shipped_recall_5=float(pooled[RECALL_5]),
        shipped_pr_auc=float(pooled["pr_auc"]),
        reference_pr_auc=float(ref_ev.point["pr_auc"]),
        fpr_ratio_top1=top_share_fpr_ratio(scored, 0.01),
        shipped_schemes={k: float(v) for k, v in shipped_schemes.items()},
        reference_schemes={k: float(v) for k, v in ref_schemes["recall"].to_dict().items()},
        scheme_mules={k: int(v) for k, v in ref_schemes["mules"].to_dict().items()},
        critical_share=float(pooled["critical_share"]),
        alert_share=float(pooled["alert_share"]),
        worst_month=worst_month,
        worst_critical=worst_critical,
        reference_missing=missing,
        seconds=seconds,
    )
    show_world(out, table, result.by_scheme, ref_schemes)
    return out


def show_world(w: WorldResult, table: pd.DataFrame, shipped: pd.DataFrame | None, ref: pd.DataFrame) -> None:
    """The world's per-period table and scheme recalls, for the log."""
    cols = ["applications", "mules", "pr_auc", RECALL, "critical_share", "alert_share", "labels_complete"]
    console.print(f"[bold]{w.name}[/bold] duanka backtest by period:")
    console.print(table[cols].round(4).to_string(), markup=False)
    if shipped is not None:
        both = shipped.join(ref[["caught", "recall"]].add_prefix("reference_"), how="outer")
        console.print(f"{w.name} recall at 1 % alerts (pooled) by scheme, shipped and reference:")
        console.print(both.round(3).to_string(), markup=False)


def _r(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _ci(t: tuple[float, float, float]) -> str:
    return f"{_r(t[0])} [{_r(t[1])}, {_r(t[2])}]"


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


HEADER = [
    "world",
    "seed",
    "scored",
    "mules",
    "shipped recall@1%",
    "reference recall@1%",
    "evidence model recall@1%",
    "shipped recall@5%",
    "shipped PR-AUC",
    "reference PR-AUC",
    "escort rings shipped / ref",
    "shell",
    "insider",
    "solo",
    "FPR ratio out-of-province / local, top 1%",
    "critical",
    "critical + high",
    "worst month critical",
]


def cells(w: WorldResult) -> list[str]:
    s, r = w.shipped_schemes, w.reference_schemes
    nan = float("nan")
    return [
        w.scenario,
        str(w.seed),
        f"{w.applications:,}",
        f"{w.mules:,}",
        _ci(w.shipped),
        _ci(w.reference),
        _ci(w.evidence),
        _r(w.shipped_recall_5),
        _r(w.shipped_pr_auc),
        _r(w.reference_pr_auc),
        f"{_r(s.get('escort_ring', nan))} / {_r(r.get('escort_ring', nan))}",
        _r(s.get("shell_company", nan)),
        _r(s.get("insider", nan)),
        _r(s.get("solo_seller", nan)),
        _r(w.fpr_ratio_top1),
        _pct(w.critical_share),
        _pct(w.alert_share),
        f"{_pct(w.worst_critical)} ({w.worst_month})",
    ]


def markdown(worlds: list[WorldResult], command: str, wall: float, args: argparse.Namespace) -> str:
    lines = [
        f"Last {SCORED_MONTHS} months of {args.months}-month banks of {args.applications:,} applications "
        f"(`duanka generate --scenario ... --seed ...`), monthly rolling backtest (`fast`), pooled over "
        f"the months. Mules: applications confirmed within the outcome window, the labels both models "
        f"are judged on; both models on the same scored rows and labels; 95 % bootstrap intervals "
        f"({N_BOOT} resamples). Scheme columns: recall at 1 % alerts (pooled) over the scheme's "
        f"mules in `truth.csv`. Band shares against budgets of {_pct(CRITICAL_BUDGET)} (critical) and "
        f"{_pct(ALERT_BUDGET_HIGH)} (critical + high); the worst month is the one whose critical share "
        f"is the furthest from its budget by ratio. The reference model is a yardstick, not the grader.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(cells(w)) + " |" for w in worlds]
    lines += [
        "",
        f"`{command}`, {date.today().isoformat()}, wall time {wall / 60:.1f} min ({os.cpu_count()} cores).",
    ]
    return "\n".join(lines)


def write_docs(section: str, path: Path = DOCS) -> None:
    """Replace the text between the markers, appending heading and markers when absent."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}", encoding="utf-8")


def terminal_table(worlds: list[WorldResult]) -> Table:
    table = Table(title="quality on generated worlds")
    for name in HEADER:
        table.add_column(name, overflow="fold")
    for w in worlds:
        table.add_row(*cells(w))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worlds",
        nargs="+",
        metavar="WORLD",
        help="subset: scenario-seed (e.g. default-8) or a scenario name (all its seeds) "
        f"[default: all of {', '.join(world_key(*w) for w in WORLDS)}]",
    )
    parser.add_argument("--applications", type=int, default=150_000)
    parser.add_argument(
        "--out-of-province-weight",
        type=float,
        default=OUT_OF_PROVINCE_LEGIT_WEIGHT,
        help="as duanka backtest's (training/fairness.py)",
    )
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--start", default="2024-01-01", help="first day of the banks (YYYY-MM-DD)")
    parser.add_argument("--work", type=Path, help="where banks and stores go [default: a temp folder]")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"rewrite the quality section of {DOCS.relative_to(ROOT)}"
    )
    args = parser.parse_args()
    if args.months <= SCORED_MONTHS:
        raise SystemExit(f"--months must exceed {SCORED_MONTHS}: the last {SCORED_MONTHS} are scored")
    worlds = chosen_worlds(args.worlds)
    command = shlex.join([".venv/bin/python", "bench/bench_quality.py", *sys.argv[1:]])

    t_all = time.perf_counter()
    temp = None
    if args.work is None:
        temp = tempfile.TemporaryDirectory(prefix="bench-quality-")
        args.work = Path(temp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    settings = Settings(models_dir=args.work / "models")  # MLflow stays in the work folder
    configure(settings)
    console.log(f"worlds {', '.join(world_key(*w) for w in worlds)}; work folder {args.work}")

    results: list[WorldResult] = []
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            overall = bar.add_task("worlds", total=len(worlds))
            for scenario, seed in worlds:
                results.append(run_world(scenario, seed, args, settings, bar))
                bar.advance(overall)
    finally:
        if temp is not None:
            temp.cleanup()
    wall = time.perf_counter() - t_all

    section = markdown(results, command, wall, args)
    Console(width=250).print(terminal_table(results))
    print(section, flush=True)
    for w in results:
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in w.seconds.items())
        mules = ", ".join(f"{k} {v}" for k, v in w.scheme_mules.items())
        print(f"{w.name}: {steps}; truth mules scored: {mules}", flush=True)
    if args.write_docs:
        write_docs(section)
        console.log(f"wrote the quality section of {DOCS}")


if __name__ == "__main__":
    main()
