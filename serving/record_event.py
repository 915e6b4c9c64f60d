"""One chained event appended to a store's decision record by a job that is not the service.

The record has one writer at a time (:mod:`duanka.data.store_lock`): the running service, or a job
that holds the store (``duanka models approve``, ``duanka promote``, ``duanka quickstart``). An event
that is a note beside the job's real work (a model review, a promotion: both kept in MLflow as
well) does not fail the job when it cannot be written: the caller is told why and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from duanka.data.config import Settings
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.data.store_lock import StoreHeld
from duanka.serving.audit import DecisionLog, RecordTampered
from duanka.serving.chain import MissingChainKey, chain_key
from duanka.serving.state import ServingPaths


def append_store_event(
    store: EventStore,
    settings: Settings,
    keys: Pseudonymiser,
    holder: str,
    kind: str,
    detail: Mapping[str, object],
    *,
    key_id: str | None,
    request_id: str,
) -> tuple[Path | None, str | None]:
    """Append one event to the decision record of ``store``, holding the store meanwhile.

    Parameters
    ----------
    store : EventStore
    settings : Settings
        Where the record is, and the audit chain key.
    keys : Pseudonymiser
        The store's pseudonym key (the demo's chain key derives from it).
    holder : str
        What holds the store meanwhile, as a service starting just then is told.
    kind, detail, key_id, request_id
        The event (:meth:`duanka.serving.audit.DecisionLog.event`).

    Returns
    -------
    (Path or None, str or None)
        The record written and None; or None and why nothing was written (a service holds the
        store, no audit key, a tampered record).
    """
    try:
        hold = store.hold(holder)
    except StoreHeld as exc:
        # the service appends to the same record: two writers would fork its chain
        return None, str(exc)
    with hold:
        path = ServingPaths.for_data(store.root, settings).decisions
        try:
            with DecisionLog(path, chain_key=chain_key(settings, keys)) as log:
                log.event(kind, detail, key_id=key_id, request_id=request_id)
        except (MissingChainKey, RecordTampered, ValueError) as exc:
            return None, str(exc)
    return path, None
