"""``duanka audit export | verify | anchor``: the service's append-only decision record."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from duanka.cli.options import PLAIN_HELP, ExcelOption, ServiceDataOption
from duanka.cli.output import console, fail
from duanka.cli.prerequisites import audit_chain_key, store_pseudonymiser
from duanka.data.config import get_settings
from duanka.data.store import EventStore

audit_app = typer.Typer(
    **PLAIN_HELP, help="The service's append-only decision audit log.", no_args_is_help=True
)


def decision_record(data: Path | None) -> Path:
    """The decision record of the service on ``data``, or exit when the service never ran there."""
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    path = ServingPaths.for_data(data or settings.data_dir, settings).decisions
    if not path.exists():
        raise fail(f"no audit log at {path}: the service has not run on this state")
    return path


def chained_record(data: Path | None) -> tuple[Path, bytes]:
    """The decision record of the service on ``data`` and the key of its hash chain."""
    store = EventStore(data or get_settings().data_dir)
    path = decision_record(store.root)
    return path, audit_chain_key(get_settings(), store_pseudonymiser(store))


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="CSV or Parquet file to write.")],
    data: ServiceDataOption = None,
    table: Annotated[
        str, typer.Option(help="decisions, or events (model switches, label feeds).")
    ] = "decisions",
    excel: ExcelOption = False,
) -> None:
    """Export the audit log (no raw personal information is ever in it)."""
    from duanka.serving.audit import export

    path = decision_record(data)
    try:
        rows = export(path, out, table, excel=excel)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {rows:,} audit rows ({table}) -> {out}")


@audit_app.command("verify")
def audit_verify(
    data: ServiceDataOption = None,
    anchor: Annotated[
        str | None,
        typer.Option(help="A head printed earlier by `audit anchor` (or logged by the service) to reach."),
    ] = None,
) -> None:
    """Check the record's hash chain: exit 1 naming the first row changed, inserted, moved or
    removed, or the anchor no longer reached; exit 0 when intact."""
    from duanka.serving.chain import Head, verify

    path, key = chained_record(data)
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
def audit_anchor(data: ServiceDataOption = None) -> None:
    """Print the record's head (each table's rows and last chain value) to keep elsewhere."""
    from duanka.serving.chain import verify

    path, key = chained_record(data)
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        verdict = verify(con, key)
    finally:
        con.close()
    if verdict.problem is not None:
        raise fail(f"{path}: not anchoring a broken record: {verdict.problem}")
    print(verdict.head.text())
