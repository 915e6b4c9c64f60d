"""``duanka generate`` and ``duanka ingest``: a synthetic bank, and a bank's files into the store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from duanka.cli.options import DataOption, EncodingOption, MaxQuarantineShareOption, parse_date
from duanka.cli.output import console, fail
from duanka.cli.prerequisites import pseudonymiser
from duanka.data.config import get_settings
from duanka.data.ingest_job import IngestedFile, RowsDone, contract_files, ingest_files
from duanka.data.reader import Encoding, UnusableFile
from duanka.data.store import EventStore, StoreUnusable
from duanka.data.synthetic.scenarios import ScenarioName


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
            metavar="SCENARIO",
            help="How far the rings have adapted to being watched (docs/synthetic.md): default is "
            "today's world; escorts_hidden, spread_out, insiders_move, sent_alone change one habit "
            "each, adapted all of them.",
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
        start=parse_date(start),
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


def ingest(
    applications: Annotated[Path | None, typer.Option(help="Applications file (CSV or Parquet).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Confirmed-mule labels file (CSV or Parquet).")] = None,
    data: DataOption = None,
    watchlist: Annotated[
        Path | None,
        typer.Option(
            help="Joint-punishment list, or a removal list (earlier expires_at), CSV or Parquet: "
            "listed applicants are refused by rule."
        ),
    ] = None,
    encoding: EncodingOption = Encoding.UTF8,
    max_quarantine_share: MaxQuarantineShareOption = 0.5,
) -> None:
    """Validate, quarantine bad rows, pseudonymise and append to the event store (idempotent)."""
    if applications is None and labels is None and watchlist is None:
        raise fail("nothing to ingest: give --applications, --labels and/or --watchlist")
    keys = pseudonymiser(demo=False)
    store = EventStore(data or get_settings().data_dir)
    shown = IngestTable(store)
    too_quarantined = []
    try:
        for ingested in ingest_files(
            contract_files(applications, labels, watchlist),
            store,
            keys,
            encoding=encoding,
            progress=ingest_bar,
        ):
            shown.add(ingested)
            if ingested.quarantined_share > max_quarantine_share:
                too_quarantined.append(
                    f"{ingested.path.name}: {ingested.quarantined_share:.0%} of its "
                    f"{ingested.report.rows_read:,} rows quarantined"
                )
    except (UnusableFile, StoreUnusable) as exc:
        raise fail(str(exc)) from None
    shown.show()
    if too_quarantined:
        raise fail(
            "; ".join(too_quarantined) + f", more than --max-quarantine-share {max_quarantine_share:.0%}: "
            f"read the reasons in {store.quarantine_path} (the rows that passed are stored)"
        )


@contextmanager
def ingest_bar(path: Path) -> Iterator[RowsDone]:
    """A transient bar of the rows of ``path`` ingested so far."""
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

        def rows_done(rows: int, total: int) -> None:
            bar.update(task, completed=rows, total=total)

        yield rows_done


class IngestTable:
    """The counts of each file of an ingest run, shown as one table once the run is done."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.quarantined = 0
        self.awaiting = 0
        self.table = RichTable(title=f"ingest -> {store.root}")
        for column in ("file", "read", "stored", "already stored", "duplicates", "quarantined"):
            # numbers and file names fold onto the next line in a narrow terminal, never cut short
            self.table.add_column(column, justify="right" if column != "file" else "left", overflow="fold")

    def add(self, ingested: IngestedFile) -> None:
        """Count one file in; its ignored extra columns are said at once."""
        report = ingested.report
        self.quarantined += report.quarantined_rows
        self.awaiting += report.awaiting_application
        if report.extra_columns:
            console.print(f"{ingested.path.name}: ignored extra columns {', '.join(report.extra_columns)}")
        self.table.add_row(
            ingested.path.name,
            f"{report.rows_read:,}",
            f"{report.stored:,}",
            f"{report.already_stored:,}",
            f"{report.duplicates_in_file:,}",
            f"{report.quarantined_rows:,}",
        )

    def show(self) -> None:
        """The table, and where this run's quarantined rows and their reasons are, if it had any."""
        console.print(self.table)
        if self.awaiting:
            console.print(
                f"{self.awaiting:,} labels are for applications the store does not hold yet: stored, "
                "they apply once those applications are ingested",
                soft_wrap=True,
            )
        if self.quarantined:
            console.print(
                f"{self.quarantined:,} rows quarantined: rows and reasons -> {self.store.quarantine_path}",
                soft_wrap=True,
            )
