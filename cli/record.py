"""Appending one event from the command line to a store's decision record, when no service holds it
(:mod:`duanka.serving.record_event`), and saying where it went or why it did not."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

from rich.markup import escape

from duanka.cli.output import console, err
from duanka.data.config import get_settings
from duanka.data.store import EventStore


def append_event(
    data: Path | None, verb: str, kind: str, detail: Mapping[str, object], *, key_id: str | None
) -> tuple[Path | None, str | None]:
    """Append one chained event to the decision record of the event store at ``data``.

    Parameters
    ----------
    data : Path, optional
        The event store's folder (the configured one when None).
    verb : str
        What holds the store meanwhile (``models approve``), for a service that starts just then.
    kind, detail, key_id
        The event (:meth:`duanka.serving.audit.DecisionLog.event`); its request id is
        ``cli-<hex>``, one per command.

    Returns
    -------
    (Path or None, str or None)
        The record written and None; or None and why nothing was written (no store there, a
        service holds it, no audit key, a tampered record).
    """
    from duanka.data.pseudonym import MissingPseudonymKey, Pseudonymiser
    from duanka.serving.record_event import append_store_event

    settings = get_settings()
    store = EventStore(data or settings.data_dir)
    if not store.root.is_dir() or not store.manifest():
        return None, f"no event store at {store.root} (pass --data)"
    demo = str(store.manifest().get("key_id", "")).startswith("demo-")
    try:
        keys = Pseudonymiser.from_settings(settings, demo=demo)
    except (MissingPseudonymKey, ValueError) as exc:
        return None, str(exc)
    request_id = f"cli-{uuid.uuid4().hex}"
    return append_store_event(store, settings, keys, verb, kind, detail, key_id=key_id, request_id=request_id)


def say_recorded(written: Path | None, why: str | None, what: str, kept: str) -> None:
    """Print where ``what`` was recorded, or, in yellow, why not and where ``kept`` is kept instead."""
    if written is not None:
        console.print(f"recorded {what} -> {written}", soft_wrap=True, markup=False)
    else:
        err.print(
            f"[bold yellow]not in the decision record[/] ({escape(why or '')}); {kept}",
            soft_wrap=True,
        )
