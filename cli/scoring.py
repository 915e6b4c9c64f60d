"""``duanka score`` and ``duanka serve``: batch scores, and the HTTP scoring service."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer
from rich.table import Table as RichTable

from duanka.cli.engine import EngineKind, EngineOption, PartitionsOption, SchedulerOption, dask_engine
from duanka.cli.options import (
    DataOption,
    EncodingOption,
    ExcelOption,
    MaxQuarantineShareOption,
    ModelOption,
    parse_instant,
)
from duanka.cli.output import console, err, fail, invoked_as
from duanka.cli.prerequisites import (
    audit_chain_key,
    load_model,
    model_source,
    require_state_key,
    require_store,
    store_pseudonymiser,
    verified,
)
from duanka.data.config import get_settings
from duanka.data.reader import Encoding
from duanka.training.bands import BLOCKED

if TYPE_CHECKING:
    from duanka.data.store import EventStore
    from duanka.serving.batch_job import Recorded
    from duanka.serving.model_source import LoadedModel


def score(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="CSV, Parquet or Excel (.xlsx) file to write.")],
    data: DataOption = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First applied_at to score (YYYY-MM-DD or ISO 8601).")
    ] = None,
    to: Annotated[str | None, typer.Option(help="Score applications applied before this instant.")] = None,
    applications: Annotated[
        Path | None, typer.Option(help="Contract file to score instead of a stored date range.")
    ] = None,
    model: ModelOption = None,
    explain_all: Annotated[
        bool, typer.Option(help="Reasons for every band, not only medium and above.")
    ] = False,
    engine: EngineOption = EngineKind.LOCAL,
    scheduler: SchedulerOption = None,
    partitions: PartitionsOption = None,
    excel: ExcelOption = False,
    encoding: EncodingOption = Encoding.UTF8,
    max_quarantine_share: MaxQuarantineShareOption = 0.5,
    record: Annotated[
        bool,
        typer.Option(
            help="Also append each decision of the date range to the store's decision record "
            "(as the service records its own; not those recorded already). On this machine, "
            "with the service stopped."
        ),
    ] = False,
) -> None:
    """Point-in-time batch scores: each application with the state as it was when it applied.

    Exits 1 when more of an --applications file's rows break the contract than
    --max-quarantine-share (all of them, say); the rows that passed are still scored and written."""
    from duanka.data.reader import UnusableFile
    from duanka.data.store import StoreUnusable
    from duanka.serving.batch import score_file
    from duanka.serving.batch_job import NothingToScore, score_stored_period, write_rejections

    if applications is None and (from_ is None or to is None):
        raise fail("say what to score: --from DATE --to DATE (stored events) or --applications FILE")
    if applications is not None and (from_ is not None or to is not None):
        raise fail("give either --applications or --from/--to, not both")
    if record and applications is not None:
        # the service takes the event store's applications into its state; a recorded answer to
        # any other it would replay without ever taking that application in
        raise fail(
            "--record records a stored date range (--from/--to) only: a file's applications are not in "
            "the event store, so the service would answer them again from the record without ever "
            "taking them into its state"
        )
    if record and engine != "local":
        raise fail("--record scores on this machine: the cluster's scores keep no reasons to record")
    data_dir = data or get_settings().data_dir
    # a file is scored against the stored history, which may be empty
    store = require_store(data_dir, empty_ok=True)
    record_key = None
    if record:
        require_store(data_dir)  # a stored period needs something ingested
        record_key = _record_key(ctx, store)  # before the model loads: a refusal comes at once
    loaded = load_model(model)
    if applications is None:
        start, end = parse_instant(from_), parse_instant(to)
        if start >= end:
            raise fail(f"--from {from_} is not before --to {to}")
        require_store(data_dir)  # a stored period needs something ingested
        if record_key is not None:
            _score_and_record(
                store, start, end, loaded, out, record_key, explain_all=explain_all, excel=excel
            )
            return
        with dask_engine(engine, scheduler) as client:
            try:
                scores = score_stored_period(
                    store,
                    start,
                    end,
                    loaded,
                    explain_all=explain_all,
                    client=client,
                    partitions=partitions,
                    scratch=get_settings().scratch_dir,
                )
            except NothingToScore as exc:
                raise fail(str(exc)) from None
            write_and_show_scores(scores, out, loaded, excel=excel)
        return
    if engine != "local":
        raise fail("--engine dask scores a stored date range (--from/--to); a file is scored locally")
    try:
        result = score_file(
            applications,
            store,
            store_pseudonymiser(store),
            loaded,
            explain_all=explain_all,
            progress=True,
            encoding=encoding,
        )
    except (UnusableFile, StoreUnusable) as exc:
        raise fail(str(exc)) from None
    write_and_show_scores(result.scores, out, loaded, excel=excel, rejections=result.rejections)
    if result.rejections.empty:
        return
    rejected = write_rejections(result.rejections, out)
    console.print(
        f"{result.rejections['row'].nunique():,} rows break the contract and were not scored: "
        f"reasons -> {rejected}"
    )
    if result.rejected_share > max_quarantine_share:
        raise fail(
            f"{applications.name}: {result.rejected_share:.0%} of its {result.rows_read:,} rows break the "
            f"contract, more than --max-quarantine-share {max_quarantine_share:.0%}: read the reasons "
            f"in {rejected} (the rows that passed are scored in {out})"
        )


def _record_key(ctx: typer.Context, store: EventStore) -> bytes:
    """Hold ``store`` for the command (as ``duanka serve`` does) and return the chain key of its decision
    record, exiting with one line while the service holds the store, when no audit key can be had, or
    when the record was tampered with (as ``duanka serve`` refuses it)."""
    from duanka.cli.audit import require_untampered_record
    from duanka.data.store_lock import StoreHeld
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    try:
        hold = store.hold("score --record")
    except StoreHeld as exc:
        # the service appends to the same record: two writers would each extend its chain from the
        # same head and fork it
        raise fail(f"{exc} (--record appends to the decision record that service writes)") from None
    ctx.with_resource(hold)
    key = audit_chain_key(settings, store_pseudonymiser(store))
    require_untampered_record(ServingPaths.for_data(store.root, settings).decisions, key)
    return key


def _score_and_record(
    store: EventStore,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model: LoadedModel,
    out: Path,
    chain_key: bytes,
    *,
    explain_all: bool,
    excel: bool,
) -> None:
    """Score the stored period on this machine, write and show the scores, then append each decision
    the record lacks to it (:func:`duanka.serving.batch_job.record_decisions`)."""
    from duanka.serving.audit import DecisionLog, RecordTampered
    from duanka.serving.batch_job import NothingToScore, decide_stored_period, record_decisions
    from duanka.serving.state import ServingPaths

    try:
        decided = decide_stored_period(store, start, end, model, explain_all=explain_all)
    except NothingToScore as exc:
        raise fail(str(exc)) from None
    write_and_show_scores(decided.scores, out, model, excel=excel)
    path = ServingPaths.for_data(store.root, get_settings()).decisions
    try:
        with DecisionLog(path, chain_key=chain_key) as log:
            recorded = record_decisions(log, decided, model)
    except RecordTampered as exc:
        raise fail(str(exc)) from None
    show_recorded(recorded, path)


def show_recorded(recorded: Recorded, path: Path) -> None:
    """How many decisions were appended to the record at ``path``, and how many it held already."""
    console.print(
        f"recorded {recorded.recorded:,} decisions (request {recorded.request_id}) -> {path}; "
        f"{recorded.already:,} were there already",
        soft_wrap=True,
    )
    if recorded.differing:
        err.print(
            f"[bold yellow]{recorded.differing:,} of them[/] were answered for other content than the "
            "event store holds under their ids (the row digests differ): left as they were",
            soft_wrap=True,
        )


def write_and_show_scores(
    scores: pd.DataFrame,
    out: Path,
    model: LoadedModel,
    *,
    excel: bool = False,
    rejections: pd.DataFrame | None = None,
) -> None:
    """Write ``scores`` to ``out`` (CSV, Parquet or .xlsx by its suffix or ``excel``), then show
    them by band; a workbook holds ``rejections`` on a sheet of their own."""
    from duanka.serving.batch import write_scores

    try:
        written = write_scores(scores, out, excel=excel, rejections=rejections)
    except ValueError as exc:
        raise fail(str(exc)) from None
    show_scores(scores, written, model)


def show_scores(scores: pd.DataFrame, written: Path, model: LoadedModel) -> None:
    """Scores by band, and where they were written."""
    table = RichTable(title="scores by band")
    table.add_column("band")
    table.add_column("applications", justify="right", overflow="fold")
    table.add_column("share", justify="right", overflow="fold")
    counts = scores["band"].value_counts()
    for band in (BLOCKED, "critical", "high", "medium", "low"):
        n = int(counts.get(band, 0))
        table.add_row(band, f"{n:,}", f"{n / max(1, len(scores)):.2%}")
    console.print(table)
    console.print(
        f"wrote {len(scores):,} scores (model version {model.version}) -> {written}", soft_wrap=True
    )


def serve(
    ctx: typer.Context,
    model: ModelOption = None,
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    poll_seconds: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Follow the alias every N seconds; 0 disables "
            "[default: $DUANKA_MODEL_POLL_SECONDS, else 30].",
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(help="Serve a store pseudonymised with the public demo key (synthetic data only)."),
    ] = False,
) -> None:
    """The HTTP scoring service on that state (one worker; see docs/serving.md)."""
    import uvicorn

    from duanka.cli.audit import require_untampered_record
    from duanka.serving.admission import AdmissionPolicy
    from duanka.serving.api import create_app, server_protocol
    from duanka.serving.keys import KeyFile
    from duanka.serving.lifecycle import ServiceConfig
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    # the service starts on a store nothing has been ingested into yet as well
    store = require_store(data or settings.data_dir, empty_ok=True)
    hold_while_running(ctx, store, "serve")  # before the model loads: a second service fails at once
    keys = store_pseudonymiser(store)
    if keys.is_demo and not demo:
        raise fail(
            f"{store.root} was pseudonymised with the public demo key: anyone can link its pseudonyms "
            "back to people, so it is served only with --demo (synthetic data). Real data: ingest "
            "it with DUANKA_PSEUDONYM_KEY or DUANKA_PSEUDONYM_KEY_FILE set (docs/pseudonymisation.md)"
        )
    paths = ServingPaths.for_data(store.root, settings)
    require_state_key(store, paths, keys)  # one line, not the service's traceback at start
    chain_key = audit_chain_key(settings, keys)
    require_untampered_record(paths.decisions, chain_key)  # one line, before the model loads
    source = model_source(model)
    loaded = verified(source)
    if not any(k.active for k in KeyFile(paths.keys).records()):
        err.print(
            f"[bold yellow]no active API keys[/] in {paths.keys}: every request gets 401 until "
            f"`{invoked_as()} keys create --data {store.root}`",
            soft_wrap=True,
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
        chain_key=chain_key,
        anchor_every_s=settings.audit_anchor_every_s,
        anchor_file=settings.audit_anchor_file,
        anchor_syslog=settings.audit_anchor_syslog,
        tolerance=timedelta(seconds=settings.backdating_tolerance_s),
        future_tolerance=timedelta(seconds=settings.future_tolerance_s),
        admission=admission,
        prune_every_s=settings.prune_every_s,
        monitor_every_s=settings.monitor_every_s,
        outcome_window_days=settings.outcome_window_days,
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
    served = create_app(config)
    uvicorn.run(
        served,
        host=host,
        port=port,
        workers=1,
        access_log=False,
        log_level="info",
        http=server_protocol(served, admission),
        # libuv's loop where installed (not on Windows): less CPU per request than asyncio's own
        loop="auto",
        timeout_keep_alive=admission.keep_alive_s,
    )


def hold_while_running(ctx: typer.Context, store: EventStore, verb: str) -> None:
    """Hold ``store`` until the command of ``ctx`` ends, however it ends, or exit naming its holder.

    The command's context is closed when the command returns or raises, and releases the hold
    with it; a killed process's hold the kernel drops (:mod:`duanka.data.store_lock`).
    """
    from duanka.data.store_lock import StoreHeld

    try:
        hold = store.hold(verb)
    except StoreHeld as exc:
        raise fail(str(exc)) from None
    ctx.with_resource(hold)
