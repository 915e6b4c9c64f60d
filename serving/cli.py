"""The ``duanka`` command line: thin verbs over one function of one room each.

Verb and option names follow ``shared/spec/cli.md``; users script against them.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table as RichTable

from data.config import SHANGHAI, get_settings
from data.store import EventStore

app = typer.Typer(
    name="duanka",
    help="Money-mule risk scoring for account openings (断卡): ingest, features, train, score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """One-line reason on stderr, non-zero exit."""
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


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
    out: Annotated[Path, typer.Option(help="Folder to write applications.csv, labels.csv, truth.csv into.")],
    months: Annotated[int, typer.Option(min=1, help="Months of openings to simulate.")] = 12,
    applications: Annotated[int, typer.Option(min=1000, help="Total number of applications.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives identical files.")] = 7,
    start: Annotated[
        str, typer.Option(help="First day of the simulated period (YYYY-MM-DD).")
    ] = "2024-01-01",
) -> None:
    """Write a synthetic bank in the input-contract format (truth.csv is for evaluation only)."""
    from data.synthetic import generate_bank

    bank = generate_bank(
        out,
        months=months,
        applications=applications,
        seed=seed,
        start=_parse_date(start),
        progress=True,
    )
    console.print(
        f"wrote {bank.n_applications:,} applications ({bank.n_mules:,} mules) -> {bank.applications}\n"
        f"wrote {bank.n_labels:,} confirmations -> {bank.labels}\n"
        f"wrote evaluation truth (never an input) -> {bank.truth}"
    )


def _keys(demo: bool):
    from data.pseudonym import MissingPseudonymKey, Pseudonymiser

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


def run_ingest(applications: Path | None, labels: Path | None, data_dir: Path, demo: bool) -> None:
    from data.contract import APPLICATIONS, LABELS
    from data.ingest import ingest_file
    from data.reader import UnusableFile
    from data.store import EventStore, StoreKeyMismatch

    keys = _keys(demo)
    store = EventStore(data_dir)
    summary = RichTable(title=f"ingest -> {data_dir}")
    for col in ("file", "read", "stored", "already stored", "duplicates", "quarantined"):
        summary.add_column(col, justify="right" if col != "file" else "left")
    for path, table in ((applications, APPLICATIONS), (labels, LABELS)):
        if path is None:
            continue
        try:
            with console.status(f"ingesting {path.name} ..."):
                report = ingest_file(path, table, store, keys)
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
    console.print(summary)
    if store.quarantine_path.exists():
        console.print(f"quarantined rows and reasons -> {store.quarantine_path}")


@app.command()
def ingest(
    applications: Annotated[Path | None, typer.Option(help="Applications file (CSV or Parquet).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Confirmed-mule labels file (CSV or Parquet).")] = None,
    data: Annotated[Path | None, typer.Option(help="Event store folder [default: data/store].")] = None,
) -> None:
    """Validate, quarantine bad rows, pseudonymise and append to the event store (idempotent)."""
    if applications is None and labels is None:
        raise fail("nothing to ingest: give --applications and/or --labels")
    run_ingest(applications, labels, data or get_settings().data_dir, demo=False)


@app.command()
def features(
    as_of: Annotated[str, typer.Option(help="Point in time of the training set (YYYY-MM-DD or ISO 8601).")],
    data: Annotated[Path | None, typer.Option(help="Event store folder [default: data/store].")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Parquet file to write [default: DATA/features-AS_OF.parquet].")
    ] = None,
) -> None:
    """Build the point-in-time training set as of a date (features, label, label maturity)."""
    from data.store import EventStore
    from features.training_set import build_training_set, write_training_set

    settings = get_settings()
    cutoff = parse_instant(as_of)
    store = EventStore(data or settings.data_dir)
    if not store.manifest():
        raise fail(f"no ingested events in {store.root}: run duanka ingest first")
    ts = build_training_set(
        store.applications(),
        store.labels(),
        as_of=cutoff,
        outcome_window_days=settings.outcome_window_days,
        progress=True,
    )
    target = out or store.root / f"features-{cutoff.tz_convert(SHANGHAI).date().isoformat()}.parquet"
    write_training_set(ts, target)
    s = ts.summary
    console.print(
        f"{s.rows:,} applications: {s.mature:,} with mature labels ({s.positives:,} confirmed mules), "
        f"{s.immature:,} immature (excluded from training; {s.immature_positives:,} already confirmed)"
    )
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


def run_train(data_dir: Path, as_of: pd.Timestamp, truth: Path | None, **options) -> None:
    from data.store import EventStore
    from training.run import TrainConfig, train
    from training.tracking import configure

    settings = get_settings()
    store = EventStore(data_dir)
    if not store.manifest():
        raise fail(f"no ingested events in {store.root}: run duanka ingest first")
    configure(settings)
    try:
        result = train(store, TrainConfig(as_of=as_of, truth=truth, **options), settings)
    except ValueError as exc:
        raise fail(str(exc)) from None
    print_comparison(result.comparison, "out-of-time test: model vs baselines (95% bootstrap CI)")
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
    calibration: Annotated[str, typer.Option(help="platt or isotonic.")] = "platt",
    negative_rate: Annotated[float, typer.Option(min=0.001, max=1.0, help="Share of negatives kept.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for downsampling, LightGBM and the bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for confidence intervals.")] = 200,
) -> None:
    """Train on an out-of-time split, compare with baselines, log to MLflow, register @challenger."""
    run_train(
        data or get_settings().data_dir,
        parse_instant(as_of),
        truth,
        valid_months=valid_months,
        test_months=test_months,
        train_months=train_months,
        calibration=calibration,
        negative_rate=negative_rate,
        seed=seed,
        n_boot=n_boot,
    )


@app.command()
def promote(
    model: Annotated[str, typer.Option(help="Registered model name.")] = "duanka",
    force: Annotated[bool, typer.Option(help="Promote the challenger whatever the comparison says.")] = False,
    data: Annotated[Path | None, typer.Option(help="Event store to re-score the test months from.")] = None,
) -> None:
    """Move @champion to @challenger when it is better on the same out-of-time months (or --force)."""
    from data.store import EventStore
    from training.bundle import MODEL_NAME, ModelIntegrityError
    from training.promote import promote as run_promote
    from training.tracking import configure

    if model != MODEL_NAME:
        raise fail(f"only the registered model {MODEL_NAME!r} is managed by duanka, not {model!r}")
    settings = get_settings()
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


def resolve_model(model: str | None):
    """``--model`` as given, else ``@champion`` falling back to ``@challenger``; says which it took."""
    from training.bundle import ModelIntegrityError, resolve_model_uri
    from training.tracking import configure

    client = configure(get_settings())
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
    from training.bundle import ModelIntegrityError
    from training.report import build_report

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
    """Generate a demo bank, ingest it (demo key), train, promote, and say where everything is."""
    from data.synthetic import generate_bank
    from training.promote import promote as run_promote
    from training.tracking import configure

    settings = get_settings()
    start = date(2024, 1, 1)
    bank = generate_bank(
        out / "bank", months=months, applications=applications, seed=settings.seed, start=start, progress=True
    )
    console.print(
        f"demo bank: {bank.n_applications:,} applications, {bank.n_labels:,} labels -> {out / 'bank'}"
    )
    store_dir = out / "store"
    run_ingest(bank.applications, bank.labels, store_dir, demo=True)
    as_of = pd.Timestamp(start, tz=SHANGHAI) + pd.DateOffset(months=months)
    console.print(f"training as of {as_of.date()} (the end of the demo period)")
    run_train(store_dir, as_of.tz_convert("UTC"), bank.truth)
    configure(settings)
    decision = run_promote(EventStore(store_dir), settings)
    console.print(
        f"promotion of v{decision.challenger_version}: "
        f"{'promoted' if decision.promoted else 'kept out'} ({decision.reason})"
    )
    console.print(
        "[bold green]quickstart done[/]\n"
        f"  demo bank (contract CSV + truth): {out / 'bank'}\n"
        f"  event store (pseudonymised):     {store_dir}\n"
        f"  MLflow tracking + registry:      {settings.tracking_uri()}  (models:/duanka@champion)"
    )


def main() -> None:
    app()
