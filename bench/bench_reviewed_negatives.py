"""Whether cases a reviewer cleared should enter training as reviewed negatives, by rolling backtest.

    .venv/bin/python bench/bench_reviewed_negatives.py --work /tmp/brn/work20 \\
        --worlds default-7 adapted-7 default-8 --applications 120000 --months 20 \\
        --warmup-months 3 --scored-months 4 --tail-months 2

(the docs/model.md table; about 10 minutes a world on two cores). Progress goes to stderr,
the table (terminal and Markdown) and per-period review counts to stdout.

The anti-fraud team reviews the referred applications (bands critical and high) and disposes
of each case: confirmed (a label dated at the disposition, ``source = review``), cleared or
escalated. Under the default label policy (``delay-weighted``, training/labels.py) a young
referred application that was cleared is a negative of low weight, the chance that a mule's
confirmation would have arrived by its age. This bench asks whether giving those clearances
weight 1 (:func:`duanka.training.labels.with_reviewed_negatives`) helps the shipped model.

Per world (a ``duanka generate`` scenario and seed, generated and ingested with
``bench/bench_quality.py``'s helpers, kept under ``--work/<world>`` and reused):

1. Monthly periods ``(T, T']`` from ``--warmup-months`` before the scored months to their end
   (``--tail-months`` of the bank follow, so the scored months' labels have time to come).
   In every period the model trained as of ``T`` on what the store knew then (no review
   information: today's training, variant A) scores the period point in time and bands it
   with the daily refreshed cuts (:func:`duanka.training.backtest.run_period`); its critical
   and high applications are *referred*, as the service refers them.
2. A simulated review team (seeded, ``--review-seed``) disposes of the referrals: each local
   day it gets through ``--capacity-share`` of the mean daily referral count, highest scores
   first (the rest stay open, never disposed); each disposition comes ``--delay-days`` (uniform)
   after the application; a true mule of the generator's ``truth.csv`` is confirmed, except a
   ``--miss-rate`` share wrongly cleared; every other case is cleared.
3. For each scored period three trainings as of ``T``, each scoring the period point in time:

   - A: today's, no review information;
   - B: the review confirmations made by ``T`` as labels at their disposition times;
   - C: B plus the clearances made by ``T`` as reviewed negatives (weight 1 whatever the age;
     a cleared application the world confirmed by ``T`` stays what the policy says).

   Only dispositions made by ``T`` reach the period's training (the label and review cuts of
   training/labels.py). Referrals come from A in every variant, so the three see the same
   review history; the review's own confirmations feed no feature here (the features are the
   store's), which leaves the B/C comparison untouched.

All three are judged on the same rows (the scored months' applications, less those the
watchlist rule refuses) with the same outcome labels: the confirmations the world's store
holds (the backtest's labels), not the reviewers'. Reported per world and pooled (the mean over
worlds): recall at 0.5 / 1 / 2 / 5 % alerts and PR-AUC (:func:`duanka.training.metrics.point_metrics`
over the scored months pooled), with 95 % paired-bootstrap intervals (``--n-boot`` resamples of
rows, the same resample for every variant, so a difference's interval excludes the noise the
variants share; pooled: the world means of each resample). The decision in docs/model.md reads
the C - B row.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, bench/ is on sys.path: bench_quality's world helpers import as a plain module.
from bench_quality import chosen_worlds, prepared_bank, world_key
from rich.console import Console
from rich.table import Table

from duanka.data.config import SHANGHAI, Settings
from duanka.data.store import EventStore
from duanka.features.training_set import build_training_set
from duanka.training.backtest import BacktestConfig, PeriodResult, run_period
from duanka.training.bands import ALERT_BANDS, local_days
from duanka.training.groups import load_truth
from duanka.training.labels import CLEARED
from duanka.training.metrics import ALERT_RATES, point_metrics, recall_key
from duanka.training.periods import Every, period_starts
from duanka.training.run import TrainConfig
from duanka.training.tracking import configure

VARIANTS = ("A", "B", "C")
VARIANT_NAMES = {
    "A": "A: no review information",
    "B": "B: review confirmations as labels",
    "C": "C: B + cleared as reviewed negatives",
}
DIFFERENCES = (("C", "B"), ("B", "A"))
METRICS = (*(recall_key(r) for r in ALERT_RATES), "pr_auc")
CONFIRMED = "confirmed"

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@dataclass(frozen=True)
class ReviewTeam:
    """How the simulated team disposes of referrals."""

    capacity_share: float = 0.8  # of the mean daily referral count, disposed of each day
    delay_days: tuple[float, float] = (3.0, 10.0)  # from the application to the disposition
    miss_rate: float = 0.1  # of true mules wrongly cleared
    seed: int = 0


def dispositions(referred: pd.DataFrame, truth: pd.DataFrame, team: ReviewTeam) -> pd.DataFrame:
    """The team's dispositions of ``referred`` (``application_id``, ``applied_at``, ``score``).

    Returns
    -------
    pandas.DataFrame
        ``application_id``, ``reviewed_at``, ``status`` (confirmed or cleared) and ``is_mule``
        (the truth, for the bench's own counts) of the cases disposed of.
    """
    rng = np.random.default_rng(team.seed)
    cases = referred.sort_values("applied_at", kind="stable").reset_index(drop=True)
    day = local_days(cases["applied_at"])
    per_day = len(cases) / max(len(np.unique(day)), 1)
    capacity = max(1, round(team.capacity_share * per_day))
    # The team takes the day's highest scores first; what it cannot reach stays open.
    rank = cases.assign(day=day).groupby("day")["score"].rank(method="first", ascending=False)
    cases = cases.loc[(rank <= capacity).to_numpy()].reset_index(drop=True)
    # Whole seconds, as the decision record's ISO times are kept (and the store's microseconds hold).
    delay = pd.to_timedelta(rng.uniform(*team.delay_days, size=len(cases)), unit="D").round("s")
    is_mule = cases["application_id"].map(truth.set_index("application_id")["is_mule"]).fillna(0)
    missed = rng.random(len(cases)) < team.miss_rate
    confirmed = (is_mule.to_numpy() == 1) & ~missed
    return pd.DataFrame(
        {
            "application_id": cases["application_id"],
            "reviewed_at": cases["applied_at"] + delay,
            "status": np.where(confirmed, CONFIRMED, CLEARED),
            "is_mule": is_mule.astype(int).to_numpy(),
        }
    )


def with_review_labels(labels: pd.DataFrame, disposed: pd.DataFrame) -> pd.DataFrame:
    """The store's confirmations plus the review's, dated at their disposition (B and C).

    An application confirmed by both keeps both rows: training reads the earliest known.
    """
    review = disposed.loc[disposed["status"] == CONFIRMED, ["application_id", "reviewed_at"]]
    return pd.concat([labels, review.rename(columns={"reviewed_at": "confirmed_at"})], ignore_index=True)


@dataclass
class WorldRun:
    """One world's scored rows per variant and what its review team did."""

    name: str
    y: np.ndarray  # the world's outcome labels of the scored rows
    scores: dict[str, np.ndarray]  # per variant
    disposed: pd.DataFrame
    referred: int
    period_notes: list[str]
    seconds: float


def _pooled(periods: list[PeriodResult]) -> pd.DataFrame:
    return pd.concat([p.scored for p in periods], ignore_index=True)


def run_world(
    scenario: str, seed: int, args: argparse.Namespace, settings: Settings, team: ReviewTeam
) -> WorldRun:
    """Generate (or reuse) the world, run A over every period, simulate the review, run B and C."""
    key = world_key(scenario, seed)
    started = time.perf_counter()
    bank, store_dir, reused = prepared_bank(args.work / key, scenario, seed, args)
    console.log(f"{key}: bank {'reused' if reused else 'generated and ingested'}")
    store = EventStore(store_dir)
    window = settings.outcome_window_days

    local = pd.Timestamp(f"{args.start}T00:00:00+08:00")
    end = (local + pd.DateOffset(months=args.months - args.tail_months)).tz_convert("UTC")
    scored_from = (
        local + pd.DateOffset(months=args.months - args.tail_months - args.scored_months)
    ).tz_convert("UTC")
    review_from = (
        local + pd.DateOffset(months=args.months - args.tail_months - args.scored_months - args.warmup_months)
    ).tz_convert("UTC")
    starts = period_starts(review_from, end, Every.MONTH)
    bounds = [(s, starts[i + 1] if i + 1 < len(starts) else end) for i, s in enumerate(starts)]
    cfg = BacktestConfig(review_from, end, TrainConfig(as_of=review_from, fast=True), n_boot=0)

    console.log(f"{key}: point-in-time features as of {end.tz_convert(SHANGHAI).date()}")
    built = build_training_set(
        store.applications(),
        store.labels(),
        listings=store.watchlist(),
        as_of=end,
        outcome_window_days=window,
        progress=False,
    )
    labels = store.labels(["application_id", "confirmed_at"]).to_pandas()

    def period(
        variant: str,
        start: pd.Timestamp,
        stop: pd.Timestamp,
        known: pd.DataFrame = labels,
        reviewed: pd.DataFrame | None = None,
    ) -> PeriodResult:
        t0 = time.perf_counter()
        result = run_period(built, known, start, stop, cfg, window, reviewed=reviewed)
        console.log(
            f"{key}: {variant} trained as of {start.tz_convert(SHANGHAI).date()}, "
            f"scored {len(result.scored):,} applications in {time.perf_counter() - t0:.0f} s"
        )
        return result

    runs: dict[str, list[PeriodResult]] = {"A": [period("A", s, e) for s, e in bounds]}
    referred = _pooled(runs["A"])
    referred = referred.loc[np.isin(referred["band"], ALERT_BANDS), ["application_id", "applied_at", "score"]]
    disposed = dispositions(referred, load_truth(bank / "truth.csv"), team)
    console.log(
        f"{key}: {len(referred):,} referred, {len(disposed):,} disposed: "
        f"{(disposed['status'] == CONFIRMED).sum():,} confirmed, {(disposed['status'] == CLEARED).sum():,} "
        f"cleared ({int(disposed.loc[disposed['status'] == CLEARED, 'is_mule'].sum())} of them true mules)"
    )
    review_labels = with_review_labels(labels, disposed)
    reviewed = disposed[["application_id", "reviewed_at", "status"]]
    scored_bounds = [(s, e) for s, e in bounds if s >= scored_from]
    runs["A"] = [p for p in runs["A"] if p.start >= scored_from]
    runs["B"] = [period("B", s, e, review_labels) for s, e in scored_bounds]
    runs["C"] = [period("C", s, e, review_labels, reviewed) for s, e in scored_bounds]

    notes = []
    for a, b, c in zip(runs["A"], runs["B"], runs["C"], strict=True):
        known = disposed.loc[disposed["reviewed_at"] <= a.start]
        notes.append(
            f"as of {a.start.tz_convert(SHANGHAI).date()}: {len(known):,} dispositions known "
            f"({(known['status'] == CLEARED).sum():,} cleared); refit weight "
            f"A {a.fitted.refit.weight.sum():,.0f}, B {b.fitted.refit.weight.sum():,.0f}, "
            f"C {c.fitted.refit.weight.sum():,.0f}"
        )
    pooled = {v: _pooled(runs[v]) for v in VARIANTS}
    ids = pooled["A"]["application_id"].to_numpy()
    for v in ("B", "C"):  # the same rows in the same order: a paired comparison
        assert np.array_equal(pooled[v]["application_id"].to_numpy(), ids)
    return WorldRun(
        name=key,
        y=pooled["A"]["label"].to_numpy(),  # the store's outcomes, without the review's own labels
        scores={v: pooled[v]["score"].to_numpy() for v in VARIANTS},
        disposed=disposed,
        referred=len(referred),
        period_notes=notes,
        seconds=time.perf_counter() - started,
    )


def _metrics(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    point = point_metrics(y, score, alert_rates=ALERT_RATES)
    return np.array([point[m] for m in METRICS])


def paired_draws(
    world: WorldRun, n_boot: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Point metrics per variant (``METRICS`` order) and ``(n_boot, len(METRICS))`` bootstrap draws,
    every variant on the same resampled rows."""
    point = {v: _metrics(world.y, s) for v, s in world.scores.items()}
    rng = np.random.default_rng(seed)
    draws = {v: np.full((n_boot, len(METRICS)), np.nan) for v in VARIANTS}
    n = len(world.y)
    for b in range(n_boot):
        rows = rng.integers(0, n, n)
        y = world.y[rows]
        if y.min() == y.max():
            continue  # no mule (or no legitimate row) drawn: nothing to rank
        for v, s in world.scores.items():
            draws[v][b] = _metrics(y, s[rows])
    return point, draws


def _interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)


def table_rows(name: str, point: dict[str, np.ndarray], draws: dict[str, np.ndarray]) -> list[list[str]]:
    """The variants' rows and the paired differences' rows of one world (or of the pool)."""
    rows = []
    for v in VARIANTS:
        low, high = _interval(draws[v])
        rows.append(
            [
                name,
                VARIANT_NAMES[v],
                *(_cell(p, lo, hi) for p, lo, hi in zip(point[v], low, high, strict=True)),
            ]
        )
    for later, earlier in DIFFERENCES:
        low, high = _interval(draws[later] - draws[earlier])
        diff = point[later] - point[earlier]
        rows.append(
            [
                name,
                f"{later} - {earlier}",
                *(_cell(p, lo, hi, signed=True) for p, lo, hi in zip(diff, low, high, strict=True)),
            ]
        )
    return rows


def _cell(point: float, low: float, high: float, *, signed: bool = False) -> str:
    if math.isnan(point):
        return "–"
    sign = "+" if signed else ""
    mark = " *" if signed and (low > 0 or high < 0) else ""  # the interval excludes no difference
    return f"{point:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]{mark}"


HEADER = ["world", "training", *(f"{m}" for m in METRICS)]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, help="banks and stores, one <world>/ each [default: a temp folder]"
    )
    parser.add_argument(
        "--worlds", nargs="+", default=["default-7", "adapted-7", "default-8"], help="as bench_quality.py's"
    )
    parser.add_argument("--applications", type=int, default=80_000)
    parser.add_argument("--months", type=int, default=18, help="of each bank")
    parser.add_argument("--start", default="2024-01-01", help="first day of the banks (YYYY-MM-DD)")
    parser.add_argument("--warmup-months", type=int, default=2, help="review before the first scored month")
    parser.add_argument("--scored-months", type=int, default=3)
    parser.add_argument("--tail-months", type=int, default=2, help="of the bank after the scored months")
    parser.add_argument("--capacity-share", type=float, default=ReviewTeam.capacity_share)
    parser.add_argument("--delay-days", type=float, nargs=2, default=list(ReviewTeam.delay_days))
    parser.add_argument("--miss-rate", type=float, default=ReviewTeam.miss_rate)
    parser.add_argument("--review-seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args()
    if args.warmup_months < 1:
        raise SystemExit("--warmup-months must be at least 1: the first scored month needs earlier reviews")
    team = ReviewTeam(args.capacity_share, tuple(args.delay_days), args.miss_rate, args.review_seed)
    worlds = chosen_worlds(args.worlds)
    command = shlex.join([".venv/bin/python", "bench/bench_reviewed_negatives.py", *sys.argv[1:]])

    started = time.perf_counter()
    temp = None
    if args.work is None:
        temp = tempfile.TemporaryDirectory(prefix="bench-reviewed-")
        args.work = Path(temp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-reviewed-models-") as models:
        settings = Settings(models_dir=Path(models))  # nothing is registered; MLflow stays here
        configure(settings)
        runs = []
        try:
            for i, (scenario, seed) in enumerate(worlds):
                console.log(f"world {i + 1}/{len(worlds)}: {world_key(scenario, seed)}")
                runs.append(run_world(scenario, seed, args, settings, team))
        finally:
            if temp is not None:
                temp.cleanup()

    rows: list[list[str]] = []
    all_draws = []
    for world in runs:
        point, draws = paired_draws(world, args.n_boot, seed=0)
        rows += table_rows(world.name, point, draws)
        all_draws.append((point, draws))
    if len(runs) > 1:  # the mean over worlds, each resample's world means paired likewise
        point = {v: np.mean([p[v] for p, _ in all_draws], axis=0) for v in VARIANTS}
        draws = {v: np.mean([d[v] for _, d in all_draws], axis=0) for v in VARIANTS}
        rows += table_rows("pooled (mean of worlds)", point, draws)

    table = Table(title="reviewed negatives: pooled scored months, 95 % paired-bootstrap intervals")
    for column in HEADER:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(width=250).print(table)
    print(markdown(rows), flush=True)
    for world in runs:
        print(
            f"{world.name}: {len(world.y):,} scored, {int(world.y.sum())} mules; "
            f"{world.referred:,} referred, {len(world.disposed):,} disposed; {world.seconds:.0f} s",
            flush=True,
        )
        for note in world.period_notes:
            print(f"  {note}", flush=True)
    print(f"`{command}`, wall time {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
