"""Appending one event from the command line to a store's decision record, when no service holds it.

The record has one writer at a time (:mod:`duanka.data.store_lock`): the running service, or a
verb that holds the store as ``duanka score --record`` does. A verb whose event is a note beside
its real work (a model review, a promotion, both kept in MLflow as well) does not fail when it
cannot write the record: it says why, and the caller goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

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
    from duanka.data.store_lock import StoreHeld
    from duanka.serving.audit import DecisionLog, RecordTampered
    from duanka.serving.chain import MissingChainKey, chain_key
    from duanka.serving.state import ServingPaths

    settings = get_settings()
    store = EventStore(data or settings.data_dir)
    if not store.root.is_dir() or not store.manifest():
        return None, f"no event store at {store.root} (pass --data)"
    try:
        hold = store.hold(verb)
    except StoreHeld as exc:
        # the service appends to the same record: two writers would fork its chain
        return None, str(exc)
    with hold:
        demo = str(store.manifest().get("key_id", "")).startswith("demo-")
        path = ServingPaths.for_data(store.root, settings).decisions
        try:
            key = chain_key(settings, Pseudonymiser.from_settings(settings, demo=demo))
            with DecisionLog(path, chain_key=key) as log:
                log.event(kind, detail, key_id=key_id, request_id=f"cli-{uuid.uuid4().hex}")
        except (MissingPseudonymKey, MissingChainKey, RecordTampered, ValueError) as exc:
            return None, str(exc)
    return path, None
