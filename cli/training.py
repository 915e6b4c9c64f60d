"""``duanka features``, ``train``, ``backtest``, ``promote`` and ``report``: the training room's verbs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from duanka.cli.engine import (
    EngineKind,
    EngineOption,
    FitWhere,
    PartitionsOption,
    SchedulerOption,
    dask_engine,
)
from duanka.cli.options import (
    DATA_DEFAULT,
    CalibrationOption,
    DataOption,
    HorizonOption,
    LabelPolicyOption,
    ModelOption,
    OutOfProvinceWeightOption,
    RegisteredModelOption,
    parse_instant,
)
from duanka.cli.output import console, err, fail
from duanka.cli.prerequisites import model_signing_key, require_registry, require_store, resolve_model
from duanka.data.config import SHANGHAI, Settings, get_settings
from duanka.training.calibration import CalibrationKind
from duanka.training.fairness import OUT_OF_PROVINCE_LEGIT_WEIGHT
from duanka.training.labels import DEFAULT_HORIZON_DAYS, DEFAULT_POLICY, LabelPolicy
from duanka.training.periods import Every

if TYPE_CHECKING:
    from duanka.training.promote import Decision
    from duanka.training.run import TrainResult


def features(
    as_of: Annotated[str, typer.Option(help="Point in time of the training set (YYYY-MM-DD or ISO 8601).")],
    data: DataOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Parquet file to write [default: DATA/features-AS_OF.parquet].")
    ] = None,
    engine: EngineOption = EngineKind.LOCAL,
    scheduler: SchedulerOption = None,
    partitions: PartitionsOption = None,
) -> None:
    """Build the point-in-time training set as of a date (features, label, label maturity)."""
    from duanka.features.training_set import build_training_set, write_training_set

    settings = get_settings()
    cutoff = parse_instant(as_of)
    store = require_store(data or settings.data_dir)
    with dask_engine(engine, scheduler) as client:
        builder = None
        if client is not None:
            from duanka.features.distributed import BuildOptions
            from duanka.features.distributed import builder as dask_builder

            builder = dask_builder(client, BuildOptions(partitions=partitions), scratch=settings.scratch_dir)
        ts = build_training_set(
            store.applications(),
            store.labels(),
            listings=store.watchlist(),
            as_of=cutoff,
            outcome_window_days=settings.outcome_window_days,
            progress=True,
            builder=builder,
        )
    target = out or store.root / f"features-{cutoff.tz_convert(SHANGHAI).date().isoformat()}.parquet"
    write_training_set(ts, target)
    s = ts.summary
    console.print(
        f"{s.rows:,} applications: {s.mature:,} with mature labels ({s.positives:,} confirmed mules), "
        f"{s.immature:,} immature (excluded from training; {s.immature_positives:,} already confirmed)"
    )
    console.print(f"{s.rule_refused:,} refused by the watchlist rule at applied_at (left out of the set)")
    console.print(
        f"wrote training set -> {target}\n"
        f"wrote fingerprint -> {target.with_name(target.stem + '.fingerprint.json')}"
    )


def train(
    as_of: Annotated[
        str, typer.Option(help="Training date: nothing after it is used (YYYY-MM-DD or ISO 8601).")
    ],
    data: DataOption = None,
    truth: Annotated[
        Path | None, typer.Option(help="truth.csv of a generated bank: ring catch rates.")
    ] = None,
    valid_months: Annotated[
        int, typer.Option(min=1, help="Validation months (early stopping, calibration, bands).")
    ] = 2,
    test_months: Annotated[
        int, typer.Option(min=1, help="Out-of-time test months (the latest mature ones).")
    ] = 2,
    train_months: Annotated[
        int | None, typer.Option(min=1, help="Training months [default: all earlier].")
    ] = None,
    calibration: CalibrationOption = CalibrationKind.PLATT,
    negative_rate: Annotated[float, typer.Option(min=0.001, max=1.0, help="Share of negatives kept.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for downsampling, LightGBM and the bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for confidence intervals.")] = 200,
    tune_trials: Annotated[
        int, typer.Option(min=0, help="Optuna trials of a bounded search on the validation months (0: off).")
    ] = 0,
    engine: EngineOption = EngineKind.LOCAL,
    scheduler: SchedulerOption = None,
    partitions: PartitionsOption = None,
    fit: Annotated[
        FitWhere,
        typer.Option(
            help="local: fit LightGBM here; dask (with --engine dask): fit across the cluster with "
            "lightgbm.dask, for a training set this machine cannot fit."
        ),
    ] = FitWhere.LOCAL,
    label_policy: LabelPolicyOption = DEFAULT_POLICY,
    horizon_days: HorizonOption = DEFAULT_HORIZON_DAYS,
    out_of_province_weight: OutOfProvinceWeightOption = OUT_OF_PROVINCE_LEGIT_WEIGHT,
) -> None:
    """Train on an out-of-time split, compare with baselines, log to MLflow, register @challenger.

    The split's evidence model is what the comparison reports; the registered model is refit
    on all labelled history up to --as-of with the rounds and calibration the split chose.

    With --engine dask the training set is built and downsampled on the cluster and the
    model is fitted here, or with --fit dask on the cluster too (docs/scale-out.md).
    """
    from duanka.training.jobs import train_challenger
    from duanka.training.run import Cluster, TrainConfig

    if fit is FitWhere.DASK and engine is not EngineKind.DASK:
        raise typer.BadParameter("--fit dask needs --engine dask")
    if tune_trials and importlib.util.find_spec("optuna") is None:
        raise fail("--tune-trials needs optuna, in the tune extra: pip install 'duanka[tune]'")
    model_signing_key()  # an unreadable signing key fails now, not after the fit
    settings = get_settings()
    config = TrainConfig(
        as_of=parse_instant(as_of),
        truth=truth,
        valid_months=valid_months,
        test_months=test_months,
        train_months=train_months,
        calibration=calibration,
        negative_rate=negative_rate,
        seed=seed,
        n_boot=n_boot,
        tune_trials=tune_trials,
        label_policy=label_policy,
        horizon_days=horizon_days,
        out_of_province_legit_weight=out_of_province_weight,
    )
    store = require_store(data or settings.data_dir)
    with dask_engine(engine, scheduler) as client:
        cluster = None
        if client is not None:
            cluster = Cluster(client, partitions, settings.scratch_dir, fit=fit is FitWhere.DASK)
        try:
            result = train_challenger(store, config, settings, cluster=cluster)
        except ValueError as exc:
            raise fail(str(exc)) from None
    show_training(result, label_policy, settings)


def show_training(result: TrainResult, label_policy: LabelPolicy, settings: Settings) -> None:
    """What a training run found and registered."""
    s = result.summary
    console.print(
        f"training set: {s.rows:,} applications ({s.mature:,} mature, {s.positives:,} confirmed mules); "
        f"{s.rule_refused:,} refused by the watchlist rule at applied_at left out (the rule decides them)"
    )
    print_comparison(
        result.comparison, "out-of-time test: the evidence model vs baselines (95% bootstrap CI)"
    )
    if result.fitted is not None:
        refit, bands = result.fitted.refit_window, result.fitted.band_window
        console.print(
            f"shipped model: refit on {refit.rows:,} applications ({refit.positives:,} confirmed mules) "
            f"applied {refit.start.tz_convert(SHANGHAI).date()} to {refit.end.tz_convert(SHANGHAI).date()}, "
            f"label policy {label_policy}, "
            f"{result.fitted.shipped.booster_.current_iteration()} rounds; band cuts from the "
            f"{bands.rows:,} openings of the last {(bands.end - bands.start).days} days"
        )
    if result.groups is not None:
        console.print("ring catch rates on the test months (flagged = band medium or above):")
        console.print(result.groups.to_frame().round(3).to_string())
    console.print(
        f"registered duanka version {result.model_version} as @challenger "
        f"(run {result.run_id}, tracking {settings.tracking_uri()})"
    )


def print_comparison(comparison: pd.DataFrame, title: str) -> None:
    """Metrics down, models across: four models fit a terminal, ten metrics do not."""
    table = RichTable(title=title)
    table.add_column("metric", overflow="fold")
    for model in comparison.index:
        table.add_column(str(model), justify="right", overflow="fold")
    for metric in comparison.columns:
        table.add_row(str(metric), *(str(v) for v in comparison[metric]))
    console.print(table)


def backtest(
    from_: Annotated[str, typer.Option("--from", help="Start of the first period (YYYY-MM-DD or ISO 8601).")],
    to: Annotated[str, typer.Option(help="End of the last period.")],
    data: Annotated[Path | None, typer.Option(help=f"Event store folder {DATA_DEFAULT}.")] = None,
    every: Annotated[Every, typer.Option(help="Period length.")] = Every.MONTH,
    truth: Annotated[
        Path | None, typer.Option(help="truth.csv of a generated bank: recall by scheme.")
    ] = None,
    out: Annotated[Path, typer.Option(help="The HTML page with the plots.")] = Path("backtest.html"),
    fast: Annotated[
        bool, typer.Option(help="Skip the baselines and the bootstrap inside each period's training.")
    ] = False,
    valid_months: Annotated[int, typer.Option(min=1, help="As in train.")] = 2,
    test_months: Annotated[int, typer.Option(min=1, help="As in train.")] = 2,
    calibration: CalibrationOption = CalibrationKind.PLATT,
    negative_rate: Annotated[float, typer.Option(min=0.001, max=1.0, help="As in train.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for downsampling, LightGBM and the bootstrap.")] = 0,
    n_boot: Annotated[
        int, typer.Option(min=10, help="Bootstrap resamples of the pooled and period figures.")
    ] = 200,
    label_policy: LabelPolicyOption = DEFAULT_POLICY,
    horizon_days: HorizonOption = DEFAULT_HORIZON_DAYS,
    out_of_province_weight: OutOfProvinceWeightOption = OUT_OF_PROVINCE_LEGIT_WEIGHT,
) -> None:
    """Rolling-origin backtest: for each period, train as of its start on what was known then
    (as train --as-of would) and score the period point in time. Registers nothing."""
    from duanka.training.backtest import BacktestConfig, StoreTooYoung
    from duanka.training.backtest_report import interval_lines, terminal_table
    from duanka.training.jobs import publish_backtest, run_backtest
    from duanka.training.run import TrainConfig

    settings = get_settings()
    store = require_store(data or settings.data_dir)
    start, end = parse_instant(from_), parse_instant(to)
    train_config = TrainConfig(
        as_of=start,
        valid_months=valid_months,
        test_months=test_months,
        calibration=calibration,
        negative_rate=negative_rate,
        seed=seed,
        n_boot=n_boot,
        label_policy=label_policy,
        horizon_days=horizon_days,
        out_of_province_legit_weight=out_of_province_weight,
        fast=fast,
    )
    config = BacktestConfig(start=start, end=end, train=train_config, every=every, n_boot=n_boot)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("backtest", total=None)
        try:
            result = run_backtest(
                store, config, settings, truth=truth, progress=lambda text: bar.update(task, description=text)
            )
        except (StoreTooYoung, ValueError) as exc:
            raise fail(str(exc)) from None
    console.print(terminal_table(result))
    for line in interval_lines(result):
        console.print(line)
    if result.by_scheme is not None:
        console.print("recall at 1% alerts (pooled) by scheme:")
        console.print(result.by_scheme.round(3).to_string())
    run_id = publish_backtest(result, config, out, settings)
    console.print(f"wrote {out}; MLflow run {run_id} in experiment duanka-backtest (nothing registered)")


def promote(
    model: RegisteredModelOption = "duanka",
    force: Annotated[
        bool,
        typer.Option(
            help="Promote the challenger without a reviewer's approval and whatever the comparison "
            "says; who forced it is tagged on the version (and recorded)."
        ),
    ] = False,
    by: Annotated[
        str | None,
        typer.Option(help="Who forces it (with --force) [default: the operating system's user name]."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help=f"Event store to re-score the test months from {DATA_DEFAULT}.")
    ] = None,
) -> None:
    """Move @champion to @challenger when a model reviewer approved its current report and it is better
    on the same out-of-time months (or --force)."""
    from duanka.data.store import EventStore
    from duanka.training.bundle import MODEL_NAME, ModelIntegrityError
    from duanka.training.jobs import promote_challenger

    name = model.removeprefix("models:/").split("@")[0].split("/")[0]
    if name != MODEL_NAME:
        raise fail(f"only the registered model {MODEL_NAME!r} is managed by duanka, not {model!r}")
    if by is not None and not force:
        raise typer.BadParameter("--by names who forces a promotion: it goes with --force")
    settings = get_settings()
    require_registry(settings)
    store = EventStore(data or settings.data_dir)
    try:
        decision = promote_challenger(store, settings, force=force, forced_by=by)
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None
    verdict = "[bold green]promoted[/]" if decision.promoted else "[bold yellow]not promoted[/]"
    console.print(
        f"{verdict}: challenger v{decision.challenger_version} "
        f"(champion was {'v' + decision.champion_version if decision.champion_version else 'none'}): "
        f"{decision.reason}"
    )
    if decision.promoted:
        _record_promotion(decision, store.root)


def _record_promotion(decision: Decision, data: Path) -> None:
    """Append the promotion to the store's decision record, or say why it was not (MLflow keeps it)."""
    from duanka.cli.record import append_event, say_recorded
    from duanka.training.approval import PROMOTED

    written, why = append_event(data, "promote", PROMOTED, decision.record_detail(), key_id=None)
    say_recorded(written, why, f"the promotion ({PROMOTED})", "the version's MLflow tags keep it")


def report(
    out: Annotated[Path, typer.Option(help="HTML file to write.")],
    model: ModelOption = None,
) -> None:
    """The model report (self-contained HTML) of that model's training run; also logged to MLflow."""
    from duanka.training.bundle import ModelIntegrityError
    from duanka.training.report import build_report

    uri, client = resolve_model(model)
    try:
        written = build_report(uri, out, client)
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote model report -> {written}", soft_wrap=True)
