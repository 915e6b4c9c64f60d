"""``duanka review link``: a one-time sign-in link for a reviewer key: to the case queue (``/review``)
for a reviewer of cases, to ``/models`` for a reviewer of models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from duanka.cli.keys import key_file
from duanka.cli.options import PLAIN_HELP, ServiceDataOption
from duanka.cli.output import console, fail
from duanka.cli.prerequisites import require_store
from duanka.data.config import get_settings

review_app = typer.Typer(
    **PLAIN_HELP,
    help="Reviewers' pages on the service: the case queue (/review) and model review (/models).",
    no_args_is_help=True,
)


@review_app.command("link")
def review_link(
    key_id: Annotated[
        str,
        typer.Option(help="The reviewer key to sign in (duanka keys create --reviewer or --model-reviewer)."),
    ],
    data: ServiceDataOption = None,
    url: Annotated[
        str, typer.Option(help="Where reviewers reach the service (its scheme, host and port).")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Print a sign-in link for the reviewer: valid 10 minutes, exchanged once for a session on the
    pages of what the key reviews (cases or models)."""
    from duanka.serving.review.sessions import HOMES, LINK_MINUTES, LinkRefused, ReviewSessions, role_of
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    keys = key_file(data)
    root = ServingPaths.for_data(require_store(data or settings.data_dir).root, settings).root
    try:
        token = ReviewSessions(Path(root) / "review.db", keys.active_key).issue_link(key_id)
    except LinkRefused as exc:
        raise fail(str(exc)) from None
    key = keys.active_key(key_id)
    role = role_of(key) if key is not None else None
    if role is None:  # revoked between the link and now: the link is refused at sign-in anyway
        raise fail(f"key {key_id} is no longer an active reviewer key")
    console.print(
        f"sign-in link for reviewer key {key_id} to the {role} pages (once, within {LINK_MINUTES} "
        "minutes; open it in the reviewer's browser):",
        soft_wrap=True,
    )
    console.print(
        f"{url.rstrip('/')}{HOMES[role]}/sign-in?token={token}", markup=False, highlight=False, soft_wrap=True
    )
