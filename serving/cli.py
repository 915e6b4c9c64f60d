"""The ``duanka`` command line: thin verbs over one function of one room each.

Verb and option names are the command-line contract (README, docs); users script against them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from duanka.data.config import SHANGHAI, Settings, get_settings
from duanka.data.reader import Encoding
from duanka.data.store import EventStore
from duanka.data.synthetic.scenarios import ScenarioName
from duanka.training.bands import BLOCKED
from duanka.training.calibration import CalibrationKind
from duanka.training.labels import DEFAULT_HORIZON_DAYS, DEFAULT_POLICY, LabelPolicy
from duanka.training.periods import Every

EXCEL_HELP = "A CSV Excel opens as UTF-8 (with a byte-order mark): reasons_zh stays readable."
# Help is plain text: rich's markup would read "[default: data/store]" as a tag and drop it.
HELP = {"rich_markup_mode": None}
app = typer.Typer(
    **HELP,
    name="duanka",
    help="Money-mule risk scoring for account openings (断卡): ingest, features, train, score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """One-line reason on stderr, non-zero exit (the reason as written: "duanka[tune]" is no markup)."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code=1)


def checked_settings() -> Settings:
    """The settings in force, or exit with one line naming the variable or file line at fault."""
    from pydantic import ValidationError

    from duanka.data.config import ConfigFileError, variable_of

    try:
        return get_settings()
    except ConfigFileError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        # a bad value in the environment (the file's are caught above): the variable and why
        problems = "; ".join(
            f"{variable_of(str(e['loc'][0]).lower()) if e['loc'] else 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise fail(f"invalid setting: {problems}") from None


@app.callback()
def check_configuration(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the libraries' own INFO messages (MLflow, alembic).")
    ] = False,
) -> None:
    """Money-mule risk scoring for account openings (断卡): ingest, features, train, score."""
    if not verbose:
        # MLflow reads this when it is first imported; a user sees duanka's lines and warnings
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # Every verb reads the settings; a bad file or variable is one line here, not a traceback
    # later. Help reads none, and must stay readable while the configuration is being fixed.
    # (click parses a verb's --help after this callback, so the command line is read here)
    if "--help" not in sys.argv[1:]:
        checked_settings()


def invoked_as() -> str:
    """How to type this command again: ``duanka`` when that is on PATH, else the path that ran it
    (``.venv/bin/duanka`` after ``make demo``), so printed hints run as they are printed."""
    ran = Path(sys.argv[0]).resolve()
    found = shutil.which("duanka")
    if found is not None and Path(found).resolve() == ran:
        return "duanka"
    try:
        return str(ran.relative_to(Path.cwd()))
    except ValueError:
        return str(ran)


def parse_instant(value: str) -> pd.Timestamp:
    """``YYYY-MM-DD`` (start of that day, Asia/Shanghai) or a full ISO 8601 timestamp, as UTC."""
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither YYYY-MM-DD nor an ISO 8601 timestamp") from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(SHANGHAI)
    return stamp.tz_convert("UTC")


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@app.command()
def generate(
    out: Annotated[
        Path,
        typer.Option(help="Folder to write applications.csv, labels.csv, watchlist.csv, truth.csv into."),
    ],
    months: Annotated[int, typer.Option(min=1, help="Months of openings to simulate.")] = 12,
    applications: Annotated[int, typer.Option(min=1000, help="Total number of applications.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives identical files.")] = 7,
    start: Annotated[
        str, typer.Option(help="First day of the simulated period (YYYY-MM-DD).")
    ] = "2024-01-01",
    scenario: Annotated[
        ScenarioName,
        typer.Option(
            help="How far the rings have adapted to being watched (docs/synthetic.md): default is "
            "today's world; escorts_hidden, spread_out, insiders_move change one habit each, adapted all."
        ),
    ] = ScenarioName.DEFAULT,
) -> None:
    """Write a synthetic bank in the input-contract format (truth.csv is for evaluation only)."""
    from duanka.data.synthetic import generate_bank

    bank = generate_bank(
        out,
        months=months,
        applications=applications,
        seed=seed,
        start=_parse_date(start),
        progress=True,
        scenario=scenario.value,
    )
    console.print(
        f"scenario {bank.scenario.describe()}\n"
        f"wrote {bank.n_applications:,} applications ({bank.n_mules:,} mules) -> {bank.applications}\n"
        f"wrote {bank.n_labels:,} confirmations -> {bank.labels}\n"
        f"wrote {bank.n_listed:,} joint-punishment listings ({bank.n_reapplications:,} re-applications by "
        f"listed people) -> {bank.watchlist}\n"
        f"wrote evaluation truth (never an input) -> {bank.truth}"
    )


def _keys(demo: bool):
    from duanka.data.pseudonym import MissingPseudonymKey, Pseudonymiser

    try:
        keys = Pseudonymiser.from_settings(get_settings(), demo=demo)
    except (MissingPseudonymKey, ValueError) as exc:
        raise fail(str(exc)) from None
    if keys.is_demo:
        err.print(
            "[bold yellow]DEMO pseudonym key in use[/]: fine for synthetic data, never for real "
            "applicants; set DUANKA_PSEUDONYM_KEY or DUANKA_PSEUDONYM_KEY_FILE."
        )
    return keys


def run_ingest(
    applications: Path | None,
    labels: Path | None,
    data_dir: Path,
    demo: bool,
    watchlist: Path | None = None,
    *,
    encoding: Encoding = Encoding.UTF8,
    max_quarantine_share: float = 1.0,
) -> None:
    from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
    from duanka.data.ingest import ingest_file
    from duanka.data.reader import UnusableFile
    from duanka.data.store import EventStore, StoreKeyMismatch

    keys = _keys(demo)
    store = EventStore(data_dir)
    summary = RichTable(title=f"ingest -> {data_dir}")
    for col in ("file", "read", "stored", "already stored", "duplicates", "quarantined"):
        summary.add_column(col, justify="right" if col != "file" else "left")
    too_bad = []
    for path, table in ((applications, APPLICATIONS), (labels, LABELS), (watchlist, WATCHLIST)):
        if path is None:
            continue
        try:
            with Progress(
                TextColumn(f"ingesting {path.name}"),
                BarColumn(),
                TextColumn("{task.completed:,} rows"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar:
                # the file is parsed before the first slice: the bar has no total until then
                task = bar.add_task("rows", total=None)

                def done(rows: int, total: int, bar: Progress = bar, task: int = task) -> None:
                    bar.update(task, completed=rows, total=total)

                report = ingest_file(path, table, store, keys, encoding=encoding, progress=done)
        except (UnusableFile, StoreKeyMismatch) as exc:
            raise fail(str(exc)) from None
        if report.extra_columns:
            console.print(f"{path.name}: ignored extra columns {', '.join(report.extra_columns)}")
        summary.add_row(
            path.name,
            f"{report.rows_read:,}",
            f"{report.stored:,}",
            f"{report.already_stored:,}",
            f"{report.duplicates_in_file:,}",
            f"{report.quarantined_rows:,}",
        )
        share = report.quarantined_rows / max(1, report.rows_read)
        if share > max_quarantine_share:
            too_bad.append(f"{path.name}: {share:.0%} of its {report.rows_read:,} rows quarantined")
    console.print(summary)
    if store.quarantine_path.exists():
        console.print(f"quarantined rows and reasons -> {store.quarantine_path}")
    if too_bad:
        raise fail(
            "; ".join(too_bad) + f", more than --max-quarantine-share {max_quarantine_share:.0%}: "
            f"read the reasons in {store.quarantine_path} (the rows that passed are stored)"
        )


@app.command()
def ingest(
    applications: Annotated[Path | None, typer.Option(help="Applications file (CSV or Parquet).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Confirmed-mule labels file (CSV or Parquet).")] = None,
    data: Annotated[Path | None, typer.Option(help="Event store folder [default: data/store].")] = None,
    watchlist: Annotated[
        Path | None,
        typer.Option(
            help="Joint-punishment list, or a removal list (earlier expires_at), CSV or Parquet: "
            "listed applicants are refused by rule."
        ),
    ] = None,
    encoding: Annotated[
        Encoding, typer.Option(help="Of CSV files: gb18030 reads GBK and GB18030 exports (Excel in Chinese).")
    ] = Encoding.UTF8,
    max_quarantine_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Exit 1 when a file has more of its rows quarantined than this."),
    ] = 0.5,
) -> None:
    """Validate, quarantine bad rows, pseudonymise and append to the event store (idempotent)."""
    if applications is None and labels is None and watchlist is None:
        raise fail("nothing to ingest: give --applications, --labels and/or --watchlist")
    run_ingest(
        applications,
        labels,
        data or get_settings().data_dir,
        demo=False,
        watchlist=watchlist,
        encoding=encoding,
        max_quarantine_share=max_quarantine_share,
    )


LabelPolicyOption = Annotated[
    LabelPolicy,
    typer.Option(
        help="Rows and labels of the shipped refit: mature (outcome window closed), delay-weighted "
        "(every row; an unconfirmed one weighted by the chance its label has arrived), horizon "
        "(a shorter outcome horizon, --horizon-days)."
    ),
]
HorizonOption = Annotated[
    int, typer.Option(min=1, help="The outcome horizon of --label-policy horizon, in days.")
]


class EngineKind(StrEnum):
    LOCAL = "local"
    DASK = "dask"


class FitWhere(StrEnum):
    LOCAL = "local"
    DASK = "dask"


Engine = Annotated[
    EngineKind, typer.Option(help="local (one machine, DuckDB) or dask (the same builder per partition).")
]
Calibration = Annotated[CalibrationKind, typer.Option(help="How margins become probabilities.")]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="With --engine dask: scheduler address (tcp://HOST:8786) or scheduler file (.json) "
        "[default: a local cluster of this machine]."
    ),
]
Partitions = Annotated[
    int | None, typer.Option(min=1, help="With --engine dask: partitions per stage [default: 2 x workers].")
]


@contextmanager
def dask_engine(engine: EngineKind, scheduler: str | None) -> Iterator[object | None]:
    """A Dask client for ``--engine dask`` (None for the local engine)."""
    if engine is EngineKind.LOCAL:
        if scheduler is not None:
            raise typer.BadParameter("--scheduler needs --engine dask")
        yield None
        return
    try:
        from duanka.features.distributed import dask_client
    except ImportError:  # pragma: no cover - the extra is not installed
        raise fail("--engine dask needs the dask extra: pip install 'duanka[dask]'") from None
    if scheduler is not None and get_settings().scratch_dir is None:
        raise typer.BadParameter(
            "--scheduler needs DUANKA_SCRATCH_DIR: a folder every worker reaches at the same path "
            "(the run's stages are written there)"
        )
    with dask_client(scheduler) as client:
        yield client


@app.command()
def features(
    as_of: Annotated[str, typer.Option(help="Point in time of the training set (YYYY-MM-DD or ISO 8601).")],
    data: Annotated[Path | None, typer.Option(help="Event store folder [default: data/store].")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Parquet file to write [default: DATA/features-AS_OF.parquet].")
    ] = None,
    engine: Engine = EngineKind.LOCAL,
    scheduler: Scheduler = None,
    partitions: Partitions = None,
) -> None:
    """Build the point-in-time training set as of a date (features, label, label maturity)."""
    from duanka.data.store import EventStore
    from duanka.features.training_set import build_training_set, write_training_set

    settings = get_settings()
    cutoff = parse_instant(as_of)
    store = EventStore(data or settings.data_dir)
    if not store.manifest():
        raise fail(f"no ingested events in {store.root}: run duanka ingest first")
    with dask_engine(engine, scheduler) as client:
        builder = None
        if client is not None:
            from duanka.features.distributed import builder as dask_builder

            builder = dask_builder(client, partitions=partitions, scratch=get_settings().scratch_dir)
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


def print_comparison(comparison: pd.DataFrame, title: str) -> None:
    """Metrics down, models across: four models fit a terminal, ten metrics do not."""
    table = RichTable(title=title)
    table.add_column("metric")
    for model in comparison.index:
        table.add_column(str(model), justify="right")
    for metric in comparison.columns:
        table.add_row(str(metric), *(str(v) for v in comparison[metric]))
    console.print(table)


def run_train(data_dir: Path, as_of: pd.Timestamp, truth: Path | None, cluster=None, **options) -> None:
    from duanka.data.store import EventStore
    from duanka.training.run import TrainConfig, train
    from duanka.training.tracking import configure

    settings = get_settings()
    store = EventStore(data_dir)
    if not store.manifest():
        raise fail(f"no ingested events in {store.root}: run duanka ingest first")
    configure(settings)
    try:
        result = train(
            store,
            TrainConfig(as_of=as_of, truth=truth, **options),
            settings,
            cluster=cluster,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
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
            f"label policy {options.get('label_policy', 'delay-weighted')}, "
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


@app.command()
def train(
    as_of: Annotated[
        str, typer.Option(help="Training date: nothing after it is used (YYYY-MM-DD or ISO 8601).")
    ],
    data: Annotated[Path | None, typer.Option(help="Event store folder [default: data/store].")] = None,
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
    calibration: Calibration = CalibrationKind.PLATT,
    negative_rate: Annotated[float, typer.Option(min=0.001, max=1.0, help="Share of negatives kept.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for downsampling, LightGBM and the bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for confidence intervals.")] = 200,
    tune_trials: Annotated[
        int, typer.Option(min=0, help="Optuna trials of a bounded search on the validation months (0: off).")
    ] = 0,
    engine: Engine = EngineKind.LOCAL,
    scheduler: Scheduler = None,
    partitions: Partitions = None,
    fit: Annotated[
        FitWhere,
        typer.Option(
            help="local: fit LightGBM here; dask (with --engine dask): fit across the cluster with "
            "lightgbm.dask, for a training set this machine cannot fit."
        ),
    ] = FitWhere.LOCAL,
    label_policy: LabelPolicyOption = DEFAULT_POLICY,
    horizon_days: HorizonOption = DEFAULT_HORIZON_DAYS,
) -> None:
    """Train on an out-of-time split, compare with baselines, log to MLflow, register @challenger.

    The split's evidence model is what the comparison reports; the registered model is refit
    on all labelled history up to --as-of with the rounds and calibration the split chose.

    With --engine dask the training set is built and downsampled on the cluster and the
    model is fitted here, or with --fit dask on the cluster too (docs/scale-out.md).
    """
    if fit is FitWhere.DASK and engine is not EngineKind.DASK:
        raise typer.BadParameter("--fit dask needs --engine dask")
    if tune_trials and importlib.util.find_spec("optuna") is None:
        raise fail("--tune-trials needs optuna, in the tune extra: pip install 'duanka[tune]'")
    _signing_key()  # an unreadable signing key fails now, not after the fit
    with dask_engine(engine, scheduler) as client:
        cluster = None
        if client is not None:
            from duanka.training.run import Cluster

            cluster = Cluster(client, partitions, get_settings().scratch_dir, fit=fit is FitWhere.DASK)
        run_train(
            data or get_settings().data_dir,
            parse_instant(as_of),
            truth,
            cluster=cluster,
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
        )


@app.command()
def backtest(
    from_: Annotated[str, typer.Option("--from", help="Start of the first period (YYYY-MM-DD or ISO 8601).")],
    to: Annotated[str, typer.Option(help="End of the last period.")],
    data: Annotated[
        Path | None, typer.Option(help="Event store folder (default: $DUANKA_DATA_DIR, else data/store).")
    ] = None,
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
    calibration: Calibration = CalibrationKind.PLATT,
    negative_rate: Annotated[float, typer.Option(min=0.001, max=1.0, help="As in train.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for downsampling, LightGBM and the bootstrap.")] = 0,
    n_boot: Annotated[
        int, typer.Option(min=10, help="Bootstrap resamples of the pooled and period figures.")
    ] = 200,
    label_policy: LabelPolicyOption = DEFAULT_POLICY,
    horizon_days: HorizonOption = DEFAULT_HORIZON_DAYS,
) -> None:
    """Rolling-origin backtest: for each period, train as of its start on what was known then
    (as train --as-of would) and score the period point in time. Registers nothing."""
    from duanka.training.backtest import BacktestConfig, StoreTooYoung
    from duanka.training.backtest import backtest as run_backtest
    from duanka.training.backtest_report import html_page, interval_lines, log_backtest, terminal_table
    from duanka.training.run import TrainConfig
    from duanka.training.tracking import configure

    settings = get_settings()
    store = EventStore(data or settings.data_dir)
    if not store.manifest():
        raise fail(f"no ingested events in {store.root}: run duanka ingest first")
    start, end = parse_instant(from_), parse_instant(to)
    train_cfg = TrainConfig(
        as_of=start,
        valid_months=valid_months,
        test_months=test_months,
        calibration=calibration,
        negative_rate=negative_rate,
        seed=seed,
        n_boot=n_boot,
        label_policy=label_policy,
        horizon_days=horizon_days,
        fast=fast,
    )
    cfg = BacktestConfig(start=start, end=end, train=train_cfg, every=every, n_boot=n_boot)
    configure(settings)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("backtest", total=None)
        try:
            result = run_backtest(
                store,
                cfg,
                settings.outcome_window_days,
                truth_path=truth,
                progress=lambda text: bar.update(task, description=text),
            )
        except (StoreTooYoung, ValueError) as exc:
            raise fail(str(exc)) from None
    console.print(terminal_table(result))
    for line in interval_lines(result):
        console.print(line)
    if result.by_scheme is not None:
        console.print("recall at 1% alerts (pooled) by scheme:")
        console.print(result.by_scheme.round(3).to_string())
    page = html_page(result, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    run_id = log_backtest(result, cfg, page, settings.outcome_window_days, settings)
    console.print(f"wrote {out}; MLflow run {run_id} in experiment duanka-backtest (nothing registered)")


@app.command()
def promote(
    model: Annotated[str, typer.Option(help="Registered model name.")] = "duanka",
    force: Annotated[bool, typer.Option(help="Promote the challenger whatever the comparison says.")] = False,
    data: Annotated[Path | None, typer.Option(help="Event store to re-score the test months from.")] = None,
) -> None:
    """Move @champion to @challenger when it is better on the same out-of-time months (or --force)."""
    from duanka.data.store import EventStore
    from duanka.training.bundle import MODEL_NAME, ModelIntegrityError
    from duanka.training.promote import promote as run_promote
    from duanka.training.tracking import configure

    if model != MODEL_NAME:
        raise fail(f"only the registered model {MODEL_NAME!r} is managed by duanka, not {model!r}")
    settings = get_settings()
    require_registry(settings)
    configure(settings)
    try:
        decision = run_promote(EventStore(data or settings.data_dir), settings, force=force)
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None
    verdict = "[bold green]promoted[/]" if decision.promoted else "[bold yellow]not promoted[/]"
    console.print(
        f"{verdict}: challenger v{decision.challenger_version} "
        f"(champion was {'v' + decision.champion_version if decision.champion_version else 'none'}): "
        f"{decision.reason}"
    )


def require_registry(settings: Settings) -> None:
    """Say "train first" before MLflow would create an empty registry where none was meant to be."""
    if settings.mlflow_tracking_uri:
        return
    registry = settings.models_dir / "mlflow.db"
    if not registry.exists():
        raise fail(
            f"no model registry at {registry}: train a model first ({invoked_as()} train --data DIR "
            "--as-of DATE), or point DUANKA_MODELS_DIR or MLFLOW_TRACKING_URI at the registry"
        )


def require_store(data_dir: Path) -> None:
    """Say "ingest first" before any work when the event store folder is not there."""
    if not data_dir.is_dir():
        raise fail(
            f"no event store at {data_dir}: ingest the bank's files first ({invoked_as()} ingest "
            f"--applications FILE --labels FILE --data {data_dir}), or pass --data or set DUANKA_DATA_DIR"
        )


def resolve_model(model: str | None):
    """``--model`` as given, else ``@champion`` falling back to ``@challenger``; says which it took."""
    from duanka.training.bundle import ModelIntegrityError, resolve_model_uri
    from duanka.training.tracking import configure

    settings = get_settings()
    if model is None or model.startswith("models:/"):
        require_registry(settings)
    client = configure(settings)
    try:
        uri = resolve_model_uri(model, client)
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None
    if model is None:
        console.print(f"model: {uri}")
    return uri, client


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="HTML file to write.")],
    model: Annotated[
        str | None,
        typer.Option(help="Registered model URI [default: models:/duanka@champion, else @challenger]."),
    ] = None,
) -> None:
    """The model report (self-contained HTML) of that model's training run; also logged to MLflow."""
    from duanka.training.bundle import ModelIntegrityError
    from duanka.training.report import build_report

    uri, client = resolve_model(model)
    try:
        written = build_report(uri, out, client)
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote model report -> {written}")


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the demo bank and its event store.")] = Path(
        "data/quickstart"
    ),
    applications: Annotated[int, typer.Option(min=20_000, help="Size of the demo bank.")] = 150_000,
    months: Annotated[int, typer.Option(min=12, help="Months of the demo bank.")] = 18,
) -> None:
    """Generate a demo bank, ingest it (demo key), train, promote, report, score its last month."""
    from duanka.data.synthetic import generate_bank
    from duanka.training.bundle import ModelIntegrityError
    from duanka.training.promote import promote as run_promote
    from duanka.training.report import build_report
    from duanka.training.tracking import configure

    settings = get_settings()
    start = date(2024, 1, 1)
    bank = generate_bank(
        out / "bank", months=months, applications=applications, seed=settings.seed, start=start, progress=True
    )
    console.print(
        f"demo bank: {bank.n_applications:,} applications, {bank.n_labels:,} labels, "
        f"{bank.n_listed:,} watchlist listings -> {out / 'bank'}"
    )
    store_dir = out / "store"
    run_ingest(bank.applications, bank.labels, store_dir, demo=True, watchlist=bank.watchlist)
    as_of = pd.Timestamp(start, tz=SHANGHAI) + pd.DateOffset(months=months)
    console.print(f"training as of {as_of.date()} (the end of the demo period)")
    run_train(store_dir, as_of.tz_convert("UTC"), bank.truth)
    configure(settings)
    decision = run_promote(EventStore(store_dir), settings)
    console.print(
        f"promotion of v{decision.challenger_version}: "
        f"{'promoted' if decision.promoted else 'kept out'} ({decision.reason})"
    )
    champion = "models:/duanka@champion"
    try:
        report_path = build_report(champion, out / "report.html", configure(settings))
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote model report -> {report_path}")
    scores_path = out / "scores.csv"
    month_start = as_of - pd.DateOffset(months=1)
    console.print(f"scoring the last month ({month_start.date()} to {as_of.date()}) with the champion")
    scored = run_score_period(
        store_dir,
        month_start.tz_convert("UTC"),
        as_of.tz_convert("UTC"),
        load_model(champion),
        scores_path,
        explain_all=False,
    )
    refused = int((scored["band"] == BLOCKED).sum())
    alerts = int(scored["band"].isin(("high", "critical")).sum())
    console.print(
        f"refused by rule (applicant on the joint-punishment list): {refused:,} of {len(scored):,} "
        f"applications; model alerts (high or critical): {alerts:,}"
    )
    me = invoked_as()
    console.print(
        "[bold green]quickstart done[/]\n"
        f"  demo bank (contract CSV + truth): {out / 'bank'}\n"
        f"  event store (pseudonymised):     {store_dir}\n"
        f"  MLflow tracking + registry:      {settings.tracking_uri()}  (models:/duanka@champion)\n"
        f"  model report:                    {report_path}\n"
        f"  last month's scores:             {scores_path}\n"
        f"  serve it:                        {me} keys create --data {store_dir} && "
        f"{me} serve --data {store_dir} --demo"
    )


def verified(source):
    """The model ``source`` points at, verified and compatible (fail closed: exit on any mismatch)."""
    from duanka.training.bundle import ModelIntegrityError

    try:
        return source.load()
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None


def load_model(model: str | None):
    """The verified, compatible model ``--model`` names."""
    from duanka.serving.scorer import ModelSource

    return verified(ModelSource(*resolve_model(model), signing_key=_signing_key()))


def _signing_key() -> bytes | None:
    """The model signing key of the settings (None when unset), or a clear failure."""
    from duanka.training.signing import SigningKeyError, signing_key

    try:
        return signing_key(get_settings())
    except SigningKeyError as exc:
        raise fail(str(exc)) from None


def _chain_key(settings, keys) -> bytes:
    """The decision record's chain key, or a clear failure naming the setting."""
    from duanka.serving.chain import MissingChainKey, chain_key

    try:
        return chain_key(settings, keys)
    except MissingChainKey as exc:
        raise fail(f"{exc}: set DUANKA_AUDIT_CHAIN_KEY or DUANKA_AUDIT_CHAIN_KEY_FILE") from None


def _store_keys(store: EventStore):
    """The pseudonymiser of ``store``: the configured key, or the demo key for a demo store."""
    return _keys(demo=str(store.manifest().get("key_id", "")).startswith("demo-"))


def print_bands(scores: pd.DataFrame) -> None:
    table = RichTable(title="scores by band")
    table.add_column("band")
    table.add_column("applications", justify="right")
    table.add_column("share", justify="right")
    counts = scores["band"].value_counts()
    for band in (BLOCKED, "critical", "high", "medium", "low"):
        n = int(counts.get(band, 0))
        table.add_row(band, f"{n:,}", f"{n / max(1, len(scores)):.2%}")
    console.print(table)


def run_score_period(
    data_dir: Path,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model,
    out: Path,
    *,
    explain_all: bool,
    client=None,
    partitions: int | None = None,
    excel: bool = False,
) -> pd.DataFrame:
    """Score a stored period, write the scores, print them by band; the scores written."""
    from duanka.serving.batch import score_period, score_period_distributed

    store = EventStore(data_dir)
    if not store.manifest():
        raise fail(f"no ingested events in {store.root}: run duanka ingest first")
    if client is None:
        scores = score_period(store, start, end, model, explain_all=explain_all, progress=True)
    else:
        scores = score_period_distributed(
            store,
            start,
            end,
            model,
            client=client,
            explain_all=explain_all,
            partitions=partitions,
            scratch=get_settings().scratch_dir,
        )
    if scores.empty:
        raise fail(f"no stored applications between {start} and {end}")
    _write(scores, out, model, excel=excel)
    return scores


def _write(scores: pd.DataFrame, out: Path, model, *, excel: bool = False) -> None:
    from duanka.serving.batch import write_scores

    try:
        written = write_scores(scores, out, excel=excel)
    except ValueError as exc:
        raise fail(str(exc)) from None
    print_bands(scores)
    console.print(f"wrote {len(scores):,} scores (model version {model.version}) -> {written}")


@app.command()
def score(
    out: Annotated[Path, typer.Option(help="CSV or Parquet file to write.")],
    data: Annotated[Path | None, typer.Option(help="Event store folder [default: data/store].")] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First applied_at to score (YYYY-MM-DD or ISO 8601).")
    ] = None,
    to: Annotated[str | None, typer.Option(help="Score applications applied before this instant.")] = None,
    applications: Annotated[
        Path | None, typer.Option(help="Contract file to score instead of a stored date range.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Registered model URI [default: models:/duanka@champion, else @challenger]."),
    ] = None,
    explain_all: Annotated[
        bool, typer.Option(help="Reasons for every band, not only medium and above.")
    ] = False,
    engine: Engine = EngineKind.LOCAL,
    scheduler: Scheduler = None,
    partitions: Partitions = None,
    excel: Annotated[bool, typer.Option(help=EXCEL_HELP)] = False,
) -> None:
    """Point-in-time batch scores: each application with the state as it was when it applied."""
    from duanka.data.reader import UnusableFile
    from duanka.data.store import StoreKeyMismatch
    from duanka.serving.batch import score_file

    if applications is None and (from_ is None or to is None):
        raise fail("say what to score: --from DATE --to DATE (stored events) or --applications FILE")
    if applications is not None and (from_ is not None or to is not None):
        raise fail("give either --applications or --from/--to, not both")
    data_dir = data or get_settings().data_dir
    require_store(data_dir)
    loaded = load_model(model)
    if applications is None:
        start, end = parse_instant(from_), parse_instant(to)
        if start >= end:
            raise fail(f"--from {from_} is not before --to {to}")
        with dask_engine(engine, scheduler) as client:
            run_score_period(
                data_dir,
                start,
                end,
                loaded,
                out,
                explain_all=explain_all,
                client=client,
                partitions=partitions,
                excel=excel,
            )
        return
    if engine != "local":
        raise fail("--engine dask scores a stored date range (--from/--to); a file is scored locally")
    store = EventStore(data_dir)
    try:
        result = score_file(
            applications, store, _store_keys(store), loaded, explain_all=explain_all, progress=True
        )
    except (UnusableFile, StoreKeyMismatch) as exc:
        raise fail(str(exc)) from None
    _write(result.scores, out, loaded, excel=excel)
    if not result.rejections.empty:
        rejected = out.with_name(out.stem + ".rejected.csv")
        result.rejections.to_csv(rejected, index=False)
        console.print(
            f"{result.rejections['row'].nunique():,} rows break the contract and were not scored: "
            f"reasons -> {rejected}"
        )


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(help="Registered model URI [default: models:/duanka@champion, else @challenger]."),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Event store folder [default: data/store].")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    poll_seconds: Annotated[
        float | None,
        typer.Option(min=0, help="Follow the alias every N seconds; 0 disables [default: settings]."),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(help="Serve a store pseudonymised with the public demo key (synthetic data only)."),
    ] = False,
) -> None:
    """The HTTP scoring service on that state (one worker; see docs/serving.md)."""
    import uvicorn

    from duanka.serving.admission import AdmissionPolicy, http_protocol
    from duanka.serving.api import ServiceConfig, create_app
    from duanka.serving.keys import KeyFile
    from duanka.serving.scorer import ModelSource
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    require_store(data or settings.data_dir)
    store = EventStore(data or settings.data_dir)
    keys = _store_keys(store)
    if keys.is_demo and not demo:
        raise fail(
            f"{store.root} was pseudonymised with the public demo key: anyone can link its pseudonyms "
            "back to people, so it is served only with --demo (synthetic data). Real data: ingest "
            "it with DUANKA_PSEUDONYM_KEY or DUANKA_PSEUDONYM_KEY_FILE set (docs/pseudonymisation.md)"
        )
    source = ModelSource(*resolve_model(model), signing_key=_signing_key())
    loaded = verified(source)
    paths = ServingPaths.for_data(store.root, settings)
    if not any(k.active for k in KeyFile(paths.keys).records()):
        err.print(
            f"[bold yellow]no active API keys[/] in {paths.keys}: every request gets 401 until "
            f"`{invoked_as()} keys create --data {store.root}`"
        )
    admission = AdmissionPolicy(
        rate_limit=settings.rate_limit,
        max_in_flight=settings.max_in_flight,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        keep_alive_s=settings.keep_alive_s,
    )
    config = ServiceConfig(
        source=source,
        model=loaded,
        keys=keys,
        store=store,
        paths=paths,
        poll_seconds=settings.model_poll_seconds if poll_seconds is None else poll_seconds,
        chain_key=_chain_key(settings, keys),
        anchor_every_s=settings.audit_anchor_every_s,
        tolerance=timedelta(seconds=settings.backdating_tolerance_s),
        admission=admission,
    )
    console.print(
        f"serving {loaded.registered.uri} (version {loaded.version}) on http://{host}:{port} "
        f"with state {paths.root}; OpenAPI docs at /docs"
    )
    # the service's own lines (the audit anchor, model polls) beside uvicorn's, on stderr
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    service_log = logging.getLogger("duanka")
    service_log.addHandler(handler)
    service_log.setLevel(logging.INFO)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        workers=1,
        access_log=False,
        log_level="info",
        http=http_protocol(admission),
        timeout_keep_alive=admission.keep_alive_s,
    )


keys_app = typer.Typer(
    **HELP, help="API keys for the service: printed once, stored hashed.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


def _key_file(data: Path | None):
    from duanka.serving.keys import KeyFile
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    return KeyFile(ServingPaths.for_data(data or settings.data_dir, settings).keys)


@keys_app.command("create")
def keys_create(
    branches: Annotated[
        str | None, typer.Option(help="Comma-separated branch ids the key may score for [default: all].")
    ] = None,
    admin: Annotated[
        bool,
        typer.Option(
            help="May reload the model (POST /v1/admin/reload) and feed the watchlist (POST /v1/watchlist)."
        ),
    ] = False,
    labels: Annotated[
        bool,
        typer.Option(help="May confirm mule accounts (POST /v1/labels), of its branches when scoped."),
    ] = False,
    data: Annotated[Path | None, typer.Option(help="Event store folder the service runs on.")] = None,
) -> None:
    """Create a key and print it once; only its SHA-256 is stored."""
    scope = tuple(b.strip() for b in branches.split(",") if b.strip()) if branches else None
    if branches is not None and not scope:
        raise fail("--branches names no branch")
    keyfile = _key_file(data)
    record, token = keyfile.create(scope, admin=admin, labels=labels)
    rights = [name for name, granted in (("admin", admin), ("labels", labels)) if granted]
    console.print(
        f"created key {record.key_id} for {'branches ' + ', '.join(scope) if scope else 'all branches'}"
        f"{' (' + ', '.join(rights) + ')' if rights else ''} -> {keyfile.path}\n"
        "the key (shown once, store it now):"
    )
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (duanka keys list).")],
    data: Annotated[Path | None, typer.Option(help="Event store folder the service runs on.")] = None,
) -> None:
    """Revoke a key; the running service refuses it from its next request."""
    from duanka.serving.keys import UnknownKey

    keyfile = _key_file(data)
    try:
        record = keyfile.revoke(key_id)
    except UnknownKey:
        raise fail(f"no key {key_id} in {keyfile.path}") from None
    console.print(f"revoked key {record.key_id} at {record.revoked_at} -> {keyfile.path}")


@keys_app.command("list")
def keys_list(
    data: Annotated[Path | None, typer.Option(help="Event store folder the service runs on.")] = None,
) -> None:
    """Every key: id, scope, admin, labels, created, revoked (never the key itself)."""
    keyfile = _key_file(data)
    table = RichTable(title=f"API keys ({keyfile.path})")
    for column in ("key id", "branches", "admin", "labels", "created", "revoked"):
        table.add_column(column)
    for k in keyfile.records():
        table.add_row(
            k.key_id,
            ", ".join(k.branches) if k.branches else "all",
            "yes" if k.admin else "",
            "yes" if k.labels else "",
            k.created_at,
            k.revoked_at or "",
        )
    console.print(table)


audit_app = typer.Typer(**HELP, help="The service's append-only decision audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="CSV or Parquet file to write.")],
    data: Annotated[Path | None, typer.Option(help="Event store folder the service runs on.")] = None,
    table: Annotated[
        str, typer.Option(help="decisions, or events (model switches, label feeds).")
    ] = "decisions",
    excel: Annotated[bool, typer.Option(help=EXCEL_HELP)] = False,
) -> None:
    """Export the audit log (no raw personal information is ever in it)."""
    from duanka.serving.audit import export
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    path = ServingPaths.for_data(data or settings.data_dir, settings).decisions
    if not path.exists():
        raise fail(f"no audit log at {path}: the service has not run on this state")
    try:
        rows = export(path, out, table, excel=excel)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {rows:,} audit rows ({table}) -> {out}")


def _record(data: Path | None) -> tuple[Path, bytes]:
    """The decision record of the service on ``data`` and its chain key, or a clear failure."""
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    store = EventStore(data or settings.data_dir)
    path = ServingPaths.for_data(store.root, settings).decisions
    if not path.exists():
        raise fail(f"no audit log at {path}: the service has not run on this state")
    return path, _chain_key(settings, _store_keys(store))


@audit_app.command("verify")
def audit_verify(
    data: Annotated[Path | None, typer.Option(help="Event store folder the service runs on.")] = None,
    anchor: Annotated[
        str | None,
        typer.Option(help="A head printed earlier by `audit anchor` (or logged by the service) to reach."),
    ] = None,
) -> None:
    """Check the record's hash chain: exit 1 naming the first row changed, inserted, moved or
    removed, or the anchor no longer reached; exit 0 when intact."""
    import sqlite3

    from duanka.serving.chain import Head, verify

    path, key = _record(data)
    try:
        expected = Head.parse(anchor) if anchor is not None else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        verdict = verify(con, key, expected)
    finally:
        con.close()
    if verdict.problem is not None:
        raise fail(f"{path}: {verdict.problem}")
    reached = " and reaches the anchor" if expected is not None else ""
    rows = ", ".join(f"{t} {h.rows:,}" for t, h in sorted(verdict.head.tables.items()))
    console.print(f"{path}: intact{reached} ({rows} rows)")


@audit_app.command("anchor")
def audit_anchor(
    data: Annotated[Path | None, typer.Option(help="Event store folder the service runs on.")] = None,
) -> None:
    """Print the record's head (each table's rows and last chain value) to keep elsewhere."""
    import sqlite3

    from duanka.serving.chain import verify

    path, key = _record(data)
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        verdict = verify(con, key)
    finally:
        con.close()
    if verdict.problem is not None:
        raise fail(f"{path}: not anchoring a broken record: {verdict.problem}")
    print(verdict.head.text())


def main() -> None:
    app()


config_app = typer.Typer(
    **HELP, help="The configuration in force (docs/configuration.md).", no_args_is_help=True
)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show() -> None:
    """Every setting's value in force and where it came from (environment, the DUANKA_CONFIG_FILE
    file, or the default); secrets only as set or not."""
    from duanka.data.config import effective_settings

    settings = checked_settings()
    table = RichTable(title="duanka settings (docs/configuration.md)")
    table.add_column("variable")
    table.add_column("value", overflow="fold")  # a long path folds onto the next line, never cut short
    table.add_column("from")
    for shown in effective_settings(settings):
        table.add_row(shown.variable, escape(shown.value), shown.source)
    console.print(table)
