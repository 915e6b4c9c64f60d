"""The event store: append-only Parquet parts of pseudonymised events under one folder.

Layout (``DIR`` is ``--data``)::

    DIR/manifest.json            key id of the pseudonym secret, part list, counts
    DIR/applications/part-*.parquet
    DIR/labels/part-*.parquet
    DIR/watchlist/part-*.parquet joint-punishment listings (data.watchlist)
    DIR/quarantine.csv           rejected rows: row, application_id, column, reason, source
    DIR/.lock                    taken while a part, the manifest or the quarantine is written
    DIR/holder.lock              held by the service for its whole life (data.store_lock)

Parts are written to a temporary name and renamed, so a crash never leaves a
half-written part where readers look. Writers in several processes (``duanka
ingest`` and the service feeding the watchlist) take ``DIR/.lock`` in turn, so
two appends never pick the same part number or lose each other's manifest counts.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from duanka.data.events import APPLICATION_EVENTS, LABEL_EVENTS, WATCHLIST_EVENTS
from duanka.data.private import new_private_file, private_file, private_folder
from duanka.data.store_lock import StoreHold

QUARANTINE_COLUMNS = ("row", "application_id", "column", "reason", "source")
SCHEMAS = {"applications": APPLICATION_EVENTS, "labels": LABEL_EVENTS, "watchlist": WATCHLIST_EVENTS}


class StoreUnusable(RuntimeError):
    """The store cannot be read or appended to by this code as it is."""


class StoreKeyMismatch(StoreUnusable):
    """The store was written under another pseudonym secret."""


class StoreOutdated(StoreUnusable):
    """The store holds events written before this code derived some of the columns it reads.

    Reading them would leave those columns empty and every feature built on them missing,
    silently; the events cannot be completed from the store (the raw values are gone), so the
    bank's exports must be ingested again into a new store.
    """


@dataclass(frozen=True)
class EventStore:
    """One folder of ingested, pseudonymised events."""

    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def quarantine_path(self) -> Path:
        return self.root / "quarantine.csv"

    def _dir(self, table: str) -> Path:
        return self.root / table

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def check_key(self, key_id: str) -> None:
        """Refuse to mix pseudonyms made under two secrets in one store."""
        stored = self.manifest().get("key_id")
        if stored is not None and stored != key_id:
            raise StoreKeyMismatch(
                f"{self.root} was pseudonymised with key {stored}, the configured key is "
                f"{key_id}; use the same DUANKA_PSEUDONYM_KEY, or re-key the store "
                "(docs/pseudonymisation.md)"
            )

    def _schema(self, table: str) -> pa.Schema:
        return SCHEMAS[table]

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's write lock (``DIR/.lock``, an advisory ``flock``) until the block ends."""
        with private_file(self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def hold(self, verb: str) -> StoreHold:
        """Hold the store for this process until the returned hold is released (``with`` it).

        Only one process at a time may (:mod:`duanka.data.store_lock`): ``duanka serve`` takes it
        for its life, so that a second service on the store is refused.

        Raises
        ------
        duanka.data.store_lock.StoreHeld
            Another process holds the store; the message names its PID and verb.
        """
        return StoreHold(self.root, verb)

    def parts(self, table: str) -> list[Path]:
        """The Parquet parts of ``applications``, ``labels`` or ``watchlist``, in write order.

        What a cluster's workers read themselves (the store must be on storage they reach).
        """
        self._schema(table)
        return sorted(self._dir(table).glob("part-*.parquet"))

    def check_layout(self) -> None:
        """Refuse a store whose parts lack a column this code stores.

        Raises
        ------
        StoreOutdated
            Naming the table, the missing columns and the remedy.
        """
        for table, schema in SCHEMAS.items():
            self._check_parts(table, schema, self.parts(table))

    def _check_parts(self, table: str, schema: pa.Schema, parts: list[Path]) -> None:
        missing: set[str] = set()
        for part in parts:  # a footer read each
            missing |= set(schema.names) - set(pq.read_schema(part).names)
        if missing:
            raise StoreOutdated(
                f"{self.root}: its {table} were stored by an earlier duanka, before it derived "
                f"{', '.join(sorted(missing))}; ingest the bank's exports again into a new, empty "
                "store (duanka ingest ... --data NEW) and use that one (docs/contract.md, "
                '"What is stored")'
            )

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """All stored rows of ``applications``, ``labels`` or ``watchlist`` (empty table when none).

        Raises
        ------
        StoreOutdated
            A part lacks a column this code stores.
        """
        schema = self._schema(table)
        parts = self.parts(table)
        self._check_parts(table, schema, parts)
        if not parts:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        found = pq.read_table(parts, columns=columns, schema=schema)
        # Reading leaves decoding buffers in Arrow's pool: 2 GiB of 6 for 10M applications.
        pa.default_memory_pool().release_unused()
        return found

    def applications(self, columns: list[str] | None = None) -> pa.Table:
        return self.read("applications", columns)

    def labels(self, columns: list[str] | None = None) -> pa.Table:
        return self.read("labels", columns)

    def watchlist(self, columns: list[str] | None = None) -> pa.Table:
        return self.read("watchlist", columns)

    def digests(self, table: str) -> pd.Series:
        """``row_digest`` by ``application_id`` of what is stored."""
        stored = self.read(table, ["application_id", "row_digest"]).to_pandas()
        return stored.set_index("application_id")["row_digest"]

    def append(self, table: str, rows: pa.Table, *, key_id: str) -> Path | None:
        """Write ``rows`` as a new part; update the manifest. Returns the part's path."""
        if rows.num_rows == 0:
            return None
        with self.locked():
            self.check_key(key_id)
            self._check_parts(table, self._schema(table), self.parts(table))
            folder = self._dir(table)
            private_folder(folder)
            seq = len(list(folder.glob("part-*.parquet")))
            part = folder / f"part-{seq:06d}.parquet"
            tmp = new_private_file(part.with_suffix(".tmp"))
            pq.write_table(rows.cast(self._schema(table)), tmp, compression="zstd")
            os.replace(tmp, part)
            manifest = self.manifest()
            manifest["key_id"] = key_id
            counts = manifest.setdefault("rows", {})
            counts[table] = counts.get(table, 0) + rows.num_rows
            self._write_manifest(manifest)
        return part

    def _write_manifest(self, manifest: dict) -> None:
        tmp = new_private_file(self.manifest_path.with_suffix(".tmp"))
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.manifest_path)

    def quarantine(self, rejections: pd.DataFrame) -> int:
        """Append rejections not already recorded; return how many were new."""
        if rejections.empty:
            return 0
        with self.locked():
            return self._quarantine(rejections)

    def _quarantine(self, rejections: pd.DataFrame) -> int:
        fresh = rejections.loc[:, list(QUARANTINE_COLUMNS)].astype({"row": "int64"})
        if self.quarantine_path.exists():
            known = pd.read_csv(self.quarantine_path, dtype=str, keep_default_na=False)
            seen = set(map(tuple, known.loc[:, list(QUARANTINE_COLUMNS)].to_numpy()))
            as_text = fresh.fillna("").astype(str)
            mask = [tuple(r) not in seen for r in as_text.to_numpy()]
            fresh = fresh.loc[mask]
        if fresh.empty:
            return 0
        header = not self.quarantine_path.exists()
        fresh.to_csv(private_file(self.quarantine_path), mode="a", header=header, index=False)
        return len(fresh)
