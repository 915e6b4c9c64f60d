"""``duanka keys create | revoke | list``: the service's API keys, printed once and stored hashed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table as RichTable

from duanka.cli.options import PLAIN_HELP, ServiceDataOption
from duanka.cli.output import console, fail, invoked_as
from duanka.cli.prerequisites import require_store
from duanka.data.config import get_settings

if TYPE_CHECKING:
    from duanka.serving.keys import ApiKey, KeyFile

keys_app = typer.Typer(
    **PLAIN_HELP, help="API keys for the service: printed once, stored hashed.", no_args_is_help=True
)


def key_file(data: Path | None) -> KeyFile:
    """The key file of the service that runs on the event store ``data``, or exit saying how to make one.

    A folder that holds no store is refused rather than given a key: a typo in ``--data`` would
    otherwise make a new folder whose key no service reads (and, without ``--data``, one in
    whatever folder the command runs from). ``DUANKA_API_KEYS_FILE`` without ``--data`` names
    the file itself.
    """
    from duanka.serving.keys import KeyFile
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    if data is None and settings.api_keys_file is not None:
        return KeyFile(settings.api_keys_file)
    store = require_store(data or settings.data_dir)
    return KeyFile(ServingPaths.for_data(store.root, settings).keys)


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
    reviewer: Annotated[
        bool,
        typer.Option(
            help="A case reviewer's key: signs in to /review (duanka review link) for its branches' "
            "cases and does nothing else."
        ),
    ] = False,
    model_reviewer: Annotated[
        bool,
        typer.Option(
            help="A model reviewer's key: approves or rejects model versions on /models (duanka review "
            "link) or with duanka models approve, and does nothing else."
        ),
    ] = False,
    data: ServiceDataOption = None,
) -> None:
    """Create a key and print it once (a case reviewer's never: they sign in by link); only its hash is
    kept."""
    scope = tuple(b.strip() for b in branches.split(",") if b.strip()) if branches else None
    if branches is not None and not scope:
        raise fail("--branches names no branch")
    if reviewer and (admin or labels):
        raise fail("--reviewer keys have no other power: make --admin or --labels keys apart")
    if model_reviewer and (admin or labels or reviewer):
        raise fail(
            "--model-reviewer keys have no other power: make --admin, --labels or --reviewer keys apart"
        )
    if model_reviewer and scope:
        raise fail("--model-reviewer keys are not scoped to branches: a model serves every branch")
    keyfile = key_file(data)
    record, token = keyfile.create(
        scope, admin=admin, labels=labels, reviewer=reviewer, model_reviewer=model_reviewer
    )
    granted = (
        ("admin", admin),
        ("labels", labels),
        ("reviewer", reviewer),
        ("model reviewer", model_reviewer),
    )
    rights = [name for name, given in granted if given]
    console.print(
        f"created key {record.key_id} for {'branches ' + ', '.join(scope) if scope else 'all branches'}"
        f"{' (' + ', '.join(rights) + ')' if rights else ''} -> {keyfile.path}",
        soft_wrap=True,
    )
    if reviewer or model_reviewer:
        console.print(
            f"sign the reviewer in: {invoked_as()} review link --key-id {record.key_id}"
            f"{' --data ' + str(data) if data else ''}",
            soft_wrap=True,
            markup=False,
        )
    if reviewer:
        # a case reviewer never holds the key: the operator signs them in with one-time links
        return
    if model_reviewer:
        # a bank that reviews offline approves from the command line, which needs the key itself
        console.print(
            f"for {invoked_as()} models approve | reject, set DUANKA_API_KEY to the key or pass --key-file",
            soft_wrap=True,
            markup=False,
        )
    console.print("the key (shown once, store it now):")
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (duanka keys list).")],
    data: ServiceDataOption = None,
) -> None:
    """Revoke a key; the running service refuses it from its next request."""
    from duanka.serving.keys import UnknownKey

    keyfile = key_file(data)
    try:
        record = keyfile.revoke(key_id)
    except UnknownKey:
        raise fail(f"no key {key_id} in {keyfile.path}") from None
    console.print(f"revoked key {record.key_id} at {record.revoked_at} -> {keyfile.path}", soft_wrap=True)


@keys_app.command("list")
def keys_list(data: ServiceDataOption = None) -> None:
    """Every key: id, scope, powers (admin, labels, reviewer, model reviewer), created, revoked (never
    the key itself)."""
    keyfile = key_file(data)
    table = RichTable(title=f"API keys ({keyfile.path})")
    # one column for the powers: a column each no longer fits an 80-column terminal
    for column in ("key id", "branches", "powers", "created", "revoked"):
        table.add_column(column, overflow="fold")
    for k in keyfile.records():
        table.add_row(
            k.key_id,
            ", ".join(k.branches) if k.branches else "all",
            ", ".join(_powers(k)) or "scores",
            k.created_at,
            k.revoked_at or "",
        )
    console.print(table)


def _powers(key: ApiKey) -> list[str]:
    """What a key may do besides scoring, or instead of it (a reviewer's)."""
    granted = (
        ("admin", key.admin),
        ("labels", key.labels),
        ("reviewer", key.reviewer),
        ("model reviewer", key.model_reviewer),
    )
    return [name for name, given in granted if given]
