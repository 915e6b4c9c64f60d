"""``duanka monitor``: every row of the model report's monitoring plan, from the decision record.

Exits 0 when every computed row is ok, 1 when one says watch, 2 when one says act, so that a
scheduler can alert on it; :data:`NOT_MONITORED` (3) when it could not monitor at all.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from duanka.cli.options import ServiceDataOption, parse_date
from duanka.cli.output import console, fail
from duanka.cli.prerequisites import require_store
from duanka.data.config import Settings, get_settings

if TYPE_CHECKING:
    from duanka.serving.monitor.baselines import Baseline, BaselineResolver
    from duanka.serving.monitor.engine import Monitoring

NOT_MONITORED = 3  # apart from 1 and 2, which say watch and act
_STYLES = {"ok": "green", "watch": "yellow", "act": "bold red"}


def registry_baselines(settings: Settings) -> BaselineResolver:
    """Baselines from the configured registry, MLflow imported only if a model is not yet known.

    Without a registry every model is without reference for now, and asked again next run.
    """
    from duanka.serving.monitor.baselines import Baseline, registry_resolver

    registry = settings.models_dir / "mlflow.db"
    if not settings.mlflow_tracking_uri and not registry.exists():

        def unreachable(booster_sha256: str, model_version: str) -> Baseline:
            note = f"no model registry at {registry}: the model's reference could not be read"
            return Baseline(booster_sha256, model_version, settled=False, note=note)

        return unreachable
    resolver: list[BaselineResolver] = []

    def resolve(booster_sha256: str, model_version: str) -> Baseline:
        if not resolver:
            from duanka.training.tracking import configure

            resolver.append(registry_resolver(configure(settings)))
        return resolver[0](booster_sha256, model_version)

    return resolve


def _summary(monitoring: Monitoring) -> Table:
    table = Table(title=f"monitoring as of {monitoring.as_of}", title_justify="left")
    for column in ("row", "figure", "status", "why"):
        table.add_column(column, overflow="fold")
    for row in monitoring.rows:
        word = row.status.word
        shown = f"[{_STYLES[word]}]{word}[/]" + ("" if row.computed else " (not computed)")
        table.add_row(row.what, row.value, shown, row.finding)
    return table


def monitor(
    out: Annotated[Path, typer.Option(help="HTML page to write (self-contained).")],
    data: ServiceDataOption = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="DATE",
            help="Monitor as of this Beijing day (YYYY-MM-DD): decisions up to its end, labels and "
            "dispositions known by then [default: today].",
        ),
    ] = None,
) -> None:
    """Every row of the model report's monitoring plan, from the decision record and the labels; exit 0
    ok, 1 watch, 2 act (3: could not monitor)."""
    day: date | None = None if as_of is None else parse_date(as_of)
    try:
        from duanka.serving.monitor.engine import MonitorInputs, run_monitoring
        from duanka.serving.monitor.render import write_html

        settings = get_settings()
        store = require_store(data or settings.data_dir, empty_ok=True)
        inputs = MonitorInputs.for_store(store, settings, registry_baselines(settings))
        if not inputs.record.exists():
            raise fail(
                f"no decision record at {inputs.record}: nothing was decided on this store yet "
                "(duanka serve, or duanka score --record)"
            )
    except typer.Exit as exc:
        raise typer.Exit(NOT_MONITORED if exc.exit_code else 0) from None
    with Progress(
        TextColumn("[bold]monitor[/] reading new decisions"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("read", total=None)

        def told(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        monitoring = run_monitoring(inputs, as_of=day, progress=told)
    written = write_html(monitoring, out)
    console.print(_summary(monitoring))
    refreshed = monitoring.refreshed
    console.print(
        f"read {refreshed.read:,} new decisions (counted through seq {refreshed.watermark:,}"
        + (f"; counts started over: {refreshed.restarted}" if refreshed.restarted else "")
        + f"); wrote {written}",
        soft_wrap=True,
    )
    console.print(f"status: {monitoring.status.word} (exit {monitoring.exit_code})")
    raise typer.Exit(monitoring.exit_code)
