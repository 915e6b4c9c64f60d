"""The service's state folder, and bringing its online feature state up to the event store.

Layout (``DIR`` is ``--data``, the event store)::

    DIR/serving/online.db         live feature state (features.online), SQLite WAL
    DIR/serving/online.sync.json  what of the event store the state already holds
    DIR/serving/decisions.db      audit trail and stored responses (serving.audit)
    DIR/serving/api_keys.json     hashed API keys (serving.keys)
    DIR/serving/monitor.db        the monitoring's counts of the decision record (serving.monitor)

``DUANKA_AUDIT_DB`` and ``DUANKA_API_KEYS_FILE`` move the last two elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from duanka.data.config import Settings
from duanka.data.private import new_private_file
from duanka.data.store import EventStore
from duanka.features.online import OnlineFeatureStore

STATE_TABLES = ("watchlist", "applications", "labels")  # the store's tables the state is built from
# Applications per commit of the service's state: 1.28 ms to record one with its features committed
# one by one on a 1M-application state, 0.98 ms at 25 a commit (a 3.4 ms commit), 0.90 ms at 100
# (a 9.7 ms commit, too long a wait for the request behind it); docs/benchmarks.md.
WRITES_PER_COMMIT = 25


def open_service_state(path: Path) -> OnlineFeatureStore:
    """The online state as the service keeps it: not fsynced per application (its decision record
    is the redo log), committed :data:`WRITES_PER_COMMIT` applications at a time, checkpointed in
    the background so that no request waits for a checkpoint."""
    return OnlineFeatureStore(
        path, durable=False, checkpoint_every_s=0.5, writes_per_commit=WRITES_PER_COMMIT
    )


class StateKeyMismatch(RuntimeError):
    """The online state was built from pseudonyms made under another secret."""


@dataclass(frozen=True)
class ServingPaths:
    """Where the service keeps its files."""

    root: Path
    decisions: Path
    keys: Path

    @classmethod
    def for_data(cls, data_dir: Path, settings: Settings) -> ServingPaths:
        """The paths for the event store in ``data_dir``, honouring configured overrides."""
        root = Path(data_dir) / "serving"
        return cls(
            root=root,
            decisions=settings.audit_db or root / "decisions.db",
            keys=settings.api_keys_file or root / "api_keys.json",
        )

    @property
    def online(self) -> Path:
        return self.root / "online.db"

    @property
    def monitor(self) -> Path:
        """The monitoring's sidecar of counts (:mod:`duanka.serving.monitor.sidecar`): a cache."""
        return self.root / "monitor.db"

    @property
    def sync_marker(self) -> Path:
        return self.root / "online.sync.json"


def check_state_key(store: EventStore, marker: Path, key_id: str) -> tuple[dict, dict]:
    """Refuse a store or an online state pseudonymised under another key than ``key_id``.

    Returns
    -------
    manifest, marker : dict
        The store's manifest and the marker's record of the last sync (empty when none).

    Raises
    ------
    StateKeyMismatch
        Saying which key made what, and what to do.
    """
    manifest = store.manifest()
    stored = manifest.get("key_id")
    if stored is not None and stored != key_id:
        remedy = (
            "it was made with the public demo key: unset DUANKA_PSEUDONYM_KEY and "
            "DUANKA_PSEUDONYM_KEY_FILE to serve it (with --demo)"
            if str(stored).startswith("demo-")
            else "configure the key the store was ingested with"
        )
        raise StateKeyMismatch(
            f"{store.root} was pseudonymised with key {stored}, the service's key is {key_id}: {remedy}"
        )
    done = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}
    if done.get("key_id") not in (None, key_id):
        raise StateKeyMismatch(
            f"{marker.parent} holds online state made with key {done['key_id']}, the service's key is "
            f"{key_id}: remove {marker.parent / 'online.db'} to rebuild it from the event store"
        )
    return manifest, done


def sync_online_state(online: OnlineFeatureStore, store: EventStore, marker: Path, key_id: str) -> int:
    """Add the store's listings, applications and confirmations that the online state lacks.

    Every addition is idempotent, so after a crash the next start simply adds
    everything again; the marker only spares a restart from re-reading a table
    that has not grown since the last sync. Listings go first, so a bulk load of
    an empty state reads each applicant's listing as it inserts the row.

    Parameters
    ----------
    online : OnlineFeatureStore
        The live state.
    store : EventStore
        The ingested events.
    marker : Path
        JSON file recording the key id and the store's row counts at the last sync.
    key_id : str
        Key id of the pseudonymiser the service uses; the state and the store must share it.

    Returns
    -------
    int
        Applications newly added.

    Raises
    ------
    StateKeyMismatch
        The state or the store holds pseudonyms made under another key: features
        would silently never link, so the service refuses to start.
    """
    manifest, done = check_state_key(store, marker, key_id)
    counts = {t: n for t, n in manifest.get("rows", {}).items() if t in STATE_TABLES}
    # An empty state (a new file, or one removed to be rebuilt) holds nothing, whatever the marker says.
    synced = {} if online.is_empty() else done.get("rows", {})
    grown = {t for t in STATE_TABLES if counts.get(t, 0) != synced.get(t, 0)}
    if not grown:
        return 0
    if "watchlist" in grown:
        online.add_listings(store.watchlist(["applicant_key", "source", "listed_at", "expires_at"]))
    added = _sync_applications(online, store) if "applications" in grown else 0
    if "labels" in grown:
        labels = store.labels(["application_id", "confirmed_at", "source"])
        for batch in labels.to_batches(max_chunksize=50_000):
            online.add_labels(zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True))
    online.sync()  # the marker says the state holds these rows: they must be on disk first
    tmp = new_private_file(marker.with_suffix(".tmp"))
    tmp.write_text(json.dumps({"key_id": key_id, "rows": counts}), encoding="utf-8")
    os.replace(tmp, marker)
    return added


def _sync_applications(online: OnlineFeatureStore, store: EventStore) -> int:
    """The store's applications into the state: a bulk load when it is empty. Returns those added."""
    applications = store.applications()
    if online.is_empty():
        return online.load_history(applications)
    added = 0
    for batch in applications.to_batches(max_chunksize=50_000):
        added += online.add_applications(pa.Table.from_batches([batch]).to_pylist())
    return added
