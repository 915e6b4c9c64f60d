"""``duanka models approve | reject``: a model reviewer's decision on a registered version, offline.

What ``/models`` does on the service, for a bank whose reviewers read the report away from it:
the model reviewer's key (``duanka keys create --model-reviewer``) from ``DUANKA_API_KEY`` or
``--key-file``; the review tagged on the version in MLflow, always, and appended to the store's
decision record while no service holds the store (a running service is the record's one writer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from duanka.cli.keys import key_file
from duanka.cli.options import PLAIN_HELP, ServiceDataOption
from duanka.cli.output import console, fail
from duanka.cli.prerequisites import require_registry
from duanka.data.config import get_settings

KEY_VARIABLE = "DUANKA_API_KEY"

models_app = typer.Typer(
    **PLAIN_HELP,
    help="Model reviewers' decisions on registered versions (what /models does, offline).",
    no_args_is_help=True,
)

VersionArgument = Annotated[str, typer.Argument(help="The registered version of duanka (a number).")]
NoteOption = Annotated[str, typer.Option(help="Why, in the reviewer's words (kept in the record).")]
KeyFileOption = Annotated[
    Path | None,
    typer.Option("--key-file", help=f"A file holding the model reviewer's key [default: ${KEY_VARIABLE}]."),
]
ReportOption = Annotated[
    str | None,
    typer.Option(
        "--report-sha256",
        help="The SHA-256 of the report read (as /models shows it): refused when the version's "
        "report is another one now.",
    ),
]


def _token(key_file_path: Path | None) -> str:
    """The key given: the file's content, else ``$DUANKA_API_KEY`` (never an option: it would sit in
    the shell's history and the process list)."""
    if key_file_path is not None:
        try:
            return key_file_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise fail(f"cannot read {key_file_path}: {exc.strerror}") from None
    token = os.environ.get(KEY_VARIABLE, "").strip()
    if not token:
        raise fail(f"no key given: set {KEY_VARIABLE} to the model reviewer's key, or pass --key-file")
    return token


def _review(
    verb: str, version: str, note: str, key_file_path: Path | None, report: str | None, data: Path | None
) -> None:
    """Authenticate a model reviewer, check the version and its report, tag the review, record it."""
    from duanka.cli.record import append_event, say_recorded
    from duanka.serving.review.dispose import DispositionRefused, checked_note
    from duanka.serving.review.model_desk import ModelDesk, ReviewRefused
    from duanka.training.approval import DECISIONS, REJECTED, REVIEWED, Review, record_review, short, utc_now
    from duanka.training.tracking import configure

    if not version.isdigit():
        raise fail(f"{version!r} is not a version number (duanka's versions are 1, 2, ...)")
    key = key_file(data).authenticate(_token(key_file_path))
    if key is None:
        raise fail("the key given is not an active key of this service (duanka keys list)")
    if not key.model_reviewer:
        raise fail(
            f"key {key.key_id} is not a model reviewer's: only a key made with "
            "`duanka keys create --model-reviewer` approves or rejects models"
        )
    try:
        note = checked_note(note, "a model review")
    except DispositionRefused as exc:
        raise fail(exc.reason) from None
    settings = get_settings()
    require_registry(settings)
    client = configure(settings)
    desk = ModelDesk(client)
    if desk.run_of(version) is None:
        raise fail(f"version {version} of duanka is not registered")
    decision = DECISIONS[verb]
    current = desk.current_report(version)
    try:
        sha = desk.checked_review(version, decision, current if report is None else report)
    except ReviewRefused as exc:
        raise fail(f"{exc}{'' if current or decision == REJECTED else _report_hint(version)}") from None
    given = Review(version, decision, key.key_id, utc_now(), note, sha, "cli")
    written, why = append_event(data, f"models {verb}", REVIEWED, given.detail(), key_id=key.key_id)
    record_review(client, given)
    console.print(
        f"{decision} version {version} on report {short(sha)} as key {key.key_id}: tagged in MLflow",
        soft_wrap=True,
        markup=False,
    )
    say_recorded(written, why, f"({REVIEWED})", "the version's MLflow tags keep the review")


def _report_hint(version: str) -> str:
    return f" (duanka report --model models:/duanka/{version} --out FILE builds it: read it, then approve)"


@models_app.command("approve")
def models_approve(
    version: VersionArgument,
    note: NoteOption,
    key_file_path: KeyFileOption = None,
    report_sha256: ReportOption = None,
    data: ServiceDataOption = None,
) -> None:
    """Approve a version on the report its run holds now: duanka promote then takes it (if the rule
    does too)."""
    _review("approve", version, note, key_file_path, report_sha256, data)


@models_app.command("reject")
def models_reject(
    version: VersionArgument,
    note: NoteOption,
    key_file_path: KeyFileOption = None,
    report_sha256: ReportOption = None,
    data: ServiceDataOption = None,
) -> None:
    """Reject a version: duanka promote refuses it (short of --force) until it is approved."""
    _review("reject", version, note, key_file_path, report_sha256, data)
