"""``duanka audit export | verify | anchor | chain``: the service's append-only decision record."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from duanka.cli.options import PLAIN_HELP, ExcelOption, ServiceDataOption
from duanka.cli.output import console, err, fail, invoked_as
from duanka.cli.prerequisites import audit_chain_key, require_registry, store_pseudonymiser
from duanka.data.config import get_settings
from duanka.data.store import EventStore

if TYPE_CHECKING:
    from duanka.serving.anchor import SignedAnchor
    from duanka.serving.chain import Head
    from duanka.serving.provenance import RecordedDecision, RecordedEvent, RegistryEntry

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
    """The decision record of the service on ``data`` and the key of its hash chain (the audit key;
    a demo store may go without, and is then told its chain proves nothing)."""
    from duanka.serving.chain import is_demo_chain

    settings = get_settings()
    store = EventStore(data or settings.data_dir)
    path = decision_record(store.root)
    keys = store_pseudonymiser(store)
    key = audit_chain_key(settings, keys)
    if is_demo_chain(settings, keys):
        err.print(
            "[bold yellow]DEMO chain key[/]: derived from the public demo key, so this record's chain "
            "and anchors prove nothing; set DUANKA_AUDIT_CHAIN_KEY or DUANKA_AUDIT_CHAIN_KEY_FILE."
        )
    return path, key


def require_untampered_record(path: Path, key: bytes) -> None:
    """Exit with one line when the record at ``path`` may not be opened for writing
    (:func:`duanka.serving.chain.open_problem`): before the service loads anything."""
    from duanka.serving.audit import RecordTampered
    from duanka.serving.chain import open_problem

    if not path.exists():
        return
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        problem = open_problem(con, key)
    finally:
        con.close()
    if problem is not None:
        raise fail(str(RecordTampered(path, problem)))


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="CSV, Parquet or Excel (.xlsx) file to write.")],
    data: ServiceDataOption = None,
    table: Annotated[
        str,
        typer.Option(
            help="decisions, or events (model switches, label feeds, case dispositions, page views)."
        ),
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
    written = out.with_suffix(".xlsx") if excel else out
    console.print(f"wrote {rows:,} audit rows ({table}) -> {written}", soft_wrap=True)


@audit_app.command("verify")
def audit_verify(
    data: ServiceDataOption = None,
    anchor: Annotated[
        str | None,
        typer.Option(help="A head to reach: a line `audit anchor` printed, or its bare head (decisions=…)."),
    ] = None,
    anchors: Annotated[
        Path | None,
        typer.Option(
            help="A file of signed anchors (DUANKA_AUDIT_ANCHOR_FILE, or syslog's): reach every one."
        ),
    ] = None,
) -> None:
    """Check the record's hash chain and meta's seals: exit 1 naming the first row changed,
    inserted, moved or removed, or the first anchor no longer reached (or not signed with the
    audit key); exit 0 when intact."""
    from duanka.serving.chain import verify

    path, key = chained_record(data)
    expected: list[Head] = []
    named: list[str] = []  # how the message names each anchor
    try:
        if anchor is not None:
            expected.append(_given_anchor(anchor, key))
            named.append("the anchor given")
        for number, signed in _anchor_file(anchors, key):
            expected.append(signed.head)
            named.append(f"the anchor on line {number} of {anchors} (taken {signed.at})")
    except ValueError as exc:
        raise fail(str(exc)) from None
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        verdict = verify(con, key, anchors=expected)
    finally:
        con.close()
    if verdict.problem is not None:
        if verdict.unreached is not None:
            raise fail(f"{path}: does not reach {named[verdict.unreached]}: {verdict.problem}")
        raise fail(f"{path}: {verdict.problem}")
    reached = {0: "", 1: " and reaches the anchor"}.get(
        len(expected), f" and reaches all {len(expected):,} anchors"
    )
    rows = ", ".join(f"{t} {h.rows:,}" for t, h in sorted(verdict.head.tables.items()))
    console.print(f"{path}: intact{reached} ({rows} rows)")


def _given_anchor(text: str, key: bytes) -> Head:
    """``--anchor``: a signed line (its signature checked) or a bare head."""
    from duanka.serving.anchor import MARKER, SignedAnchor
    from duanka.serving.chain import Head

    if MARKER not in text:
        return Head.parse(text)
    signed = SignedAnchor.parse(text)
    problem = signed.problem(key)
    if problem is not None:
        raise ValueError(f"the anchor given: {problem}")
    return signed.head


def _anchor_file(path: Path | None, key: bytes) -> list[tuple[int, SignedAnchor]]:
    """``--anchors``: every signed anchor in the file, each signature checked."""
    from duanka.serving.anchor import read_anchors

    if path is None:
        return []
    try:
        found = read_anchors(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    for number, signed in found:
        problem = signed.problem(key)
        if problem is not None:
            raise ValueError(f"{path}, line {number}: {problem}")
    return found


@audit_app.command("anchor")
def audit_anchor(data: ServiceDataOption = None) -> None:
    """Print the record's signed head (each table's rows and last chain value, the time, an HMAC
    under the audit key) to keep elsewhere, and append it to DUANKA_AUDIT_ANCHOR_FILE and send it
    to DUANKA_AUDIT_ANCHOR_SYSLOG when set."""
    from duanka.serving.anchor import AnchorOutlet, sign
    from duanka.serving.chain import verify

    path, key = chained_record(data)
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        verdict = verify(con, key)
    finally:
        con.close()
    if verdict.problem is not None:
        raise fail(f"{path}: not anchoring a broken record: {verdict.problem}")
    signed = sign(verdict.head, key)
    settings = get_settings()
    try:
        outlet = AnchorOutlet(settings.audit_anchor_file, settings.audit_anchor_syslog)
    except OSError as exc:
        raise fail(f"cannot reach syslog at {settings.audit_anchor_syslog}: {exc}") from None
    try:
        outlet.emit(signed)
    except OSError as exc:
        raise fail(f"cannot append the anchor to {outlet.file}: {exc.strerror}") from None
    finally:
        outlet.close()
    print(signed.line())
    if outlet.targets:
        err.print(f"anchor sent to {' and '.join(outlet.targets)}")


@audit_app.command("chain")
def audit_chain(
    application_id: Annotated[str, typer.Option(help="The application whose decisions to trace.")],
    data: ServiceDataOption = None,
) -> None:
    """From each decision of an application back to what made it: the model version and its booster
    and bundle hashes (against the registry's), the report's SHA-256, and the approval and
    promotion behind it (the record's chained events, and the version's MLflow tags)."""
    from duanka.serving.provenance import read_record, registry_entry
    from duanka.training.tracking import configure

    path = decision_record(data)
    decisions, events = read_record(path, application_id)
    if not decisions:
        raise fail(f"no decision on application {application_id} in {path}")
    settings = get_settings()
    require_registry(settings)
    client = configure(settings)
    entries = {version: registry_entry(client, version) for version in events}
    for decision in decisions:
        for line in chain_lines(decision, entries[decision.model_version], events[decision.model_version]):
            console.print(line, soft_wrap=True, markup=False, highlight=False)
    console.print(f"the record's own chain: {invoked_as()} audit verify", markup=False, highlight=False)


def chain_lines(decision: RecordedDecision, entry: RegistryEntry, events: list[RecordedEvent]) -> list[str]:
    """What ``audit chain`` prints of one decision, a line per link."""
    from duanka.serving.provenance import before
    from duanka.training.approval import PROMOTED, REVIEWED

    def same(recorded: str | None, registered: str | None) -> str:
        if registered is None:
            return "the registry holds no such value"
        return "as registered" if recorded == registered else f"DIFFERS from the registry's {registered}"

    lines = [
        f"decision {decision.seq} on {decision.decided_at} by key {decision.key_id} "
        f"(request {decision.request_id}): band {decision.band}, score {decision.score:.4f}"
        + (f", rule {decision.rule}" if decision.rule else "")
        + (" (a replay of the stored answer)" if decision.replayed else ""),
        f"  model      duanka v{decision.model_version}"
        + ("" if entry.run_id else " (not in this registry)")
        + (f", run {entry.run_id}" if entry.run_id else ""),
        f"  booster    sha256 {decision.booster_sha256} "
        f"({same(decision.booster_sha256, entry.booster_sha256)})",
        f"  bundle     sha256 {decision.bundle_sha256 or 'not recorded'} "
        f"({same(decision.bundle_sha256, entry.bundle_sha256)})",
        f"  report     sha256 {entry.report_sha256 or 'none: no report was built for the run'} (held now)",
    ]
    reviewed = before(events, REVIEWED, decision.decided_at)
    if reviewed is not None:
        d = reviewed.detail
        covers = "the report held now" if d.get("report_sha256") == entry.report_sha256 else "ANOTHER report"
        lines.append(
            f"  review     event {reviewed.seq}: {d.get('decision')} by key {reviewed.key_id} on "
            f"{reviewed.at} via {d.get('via')}, on report {d.get('report_sha256')} ({covers}): "
            f"{d.get('note')}"
        )
    else:
        lines.append("  review     no model review of this version in the record before this decision")
    if entry.review is not None:
        r = entry.review
        lines.append(
            f"  tagged     {r.decision} by key {r.by} on {r.at} via {r.via}, on report {r.report_sha256} "
            "(the version's latest review in MLflow)"
        )
    promoted = before(events, PROMOTED, decision.decided_at)
    if promoted is not None:
        d = promoted.detail
        how = (
            f"forced by {d['forced_by']}" if d.get("forced_by") else f"approved by key {d.get('approved_by')}"
        )
        lines.append(
            f"  promotion  event {promoted.seq} on {promoted.at}: {how} (champion was v{d.get('previous')})"
        )
    elif entry.forced_by:
        lines.append(f"  promotion  forced by {entry.forced_by} (MLflow tag; not in the record)")
    return lines
