"""Ingestion: contract file -> validated, pseudonymised events in the store.

Raw identifiers live only in memory between reading and pseudonymising; what
is written holds pseudonyms and the derived facts the contract allows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST, Table
from duanka.data.derived import derived_columns, row_digests
from duanka.data.events import APPLICATION_EVENTS, LABEL_EVENTS
from duanka.data.ingest_report import IngestReport
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import CHUNK_ROWS, Encoding, RawTable, iter_raw
from duanka.data.store import EventStore
from duanka.data.validate import validate
from duanka.data.watchlist import ingest_watchlist

# The service refuses such a confirmation in the same words (duanka.serving.scorer).
CONFIRMED_BEFORE_APPLICATION = "confirmed before the application was submitted"


def pseudonymise_applications(valid: pd.DataFrame, keys: Pseudonymiser) -> pd.DataFrame:
    """Derive the allowed facts, replace identifiers by pseudonyms, drop the raw values.

    Parameters
    ----------
    valid : pandas.DataFrame
        Applications that passed :func:`duanka.data.validate.validate`.
    keys : Pseudonymiser
        The pseudonym key.

    Returns
    -------
    pandas.DataFrame
        The :data:`duanka.data.events.APPLICATION_EVENTS` columns, with ``valid``'s index.
    """
    derived = derived_columns(valid, keys)
    # Columns are collected first and framed once: inserting them one by one into a frame
    # costs more than the work itself for a file of a few rows.
    columns = {name: derived[name] if name in derived else valid[name] for name in APPLICATION_EVENTS.names}
    return pd.DataFrame(columns, index=valid.index)


def _split_against_store(
    frame: pd.DataFrame, stored: pd.Series, source: str, what: str
) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    """New rows, identical resends (count), and conflicts with what is stored."""
    known = frame["application_id"].map(stored)
    same = known.notna() & (known == frame["row_digest"])
    conflict = known.notna() & ~same
    rejections = pd.DataFrame(
        {
            "row": frame.loc[conflict, "row"],
            "application_id": frame.loc[conflict, "application_id"],
            "column": "application_id",
            "reason": f"conflicts with a stored {what} with the same application_id "
            "(ingested earlier with different content)",
            "source": source,
        }
    )
    return frame.loc[~known.notna()], int(same.sum()), rejections


def _applied_at(labels: pd.DataFrame, store: EventStore) -> pd.Series:
    """Each label's stored application's ``applied_at``; NaT where the store does not hold it."""
    apps = store.applications(["application_id", "applied_at"]).to_pandas()
    applied = apps.drop_duplicates("application_id").set_index("application_id")["applied_at"]
    # reindex keeps the timestamp type (NaT where missing); map gives NaN floats on an empty store
    return pd.Series(applied.reindex(labels["application_id"]).array, index=labels.index)


def ingest_file(
    path: Path,
    table: Table,
    store: EventStore,
    keys: Pseudonymiser,
    *,
    chunk_rows: int = CHUNK_ROWS,
    encoding: Encoding = Encoding.UTF8,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Validate, pseudonymise and append one contract file; quarantine what breaks it.

    The file goes through in slices of ``chunk_rows`` (one Parquet part each) so a
    national bank's export fits in memory. A repeat of an ``application_id`` from an
    earlier slice meets it in the store: counted as already stored when identical,
    quarantined as a conflict otherwise, exactly as a repeat across two runs.
    A watchlist goes through :func:`duanka.data.watchlist.ingest_watchlist`. ``progress`` is told
    ``(rows done, rows in the file)`` after each slice.
    """
    if table is WATCHLIST:
        return ingest_watchlist(path, store, keys, chunk_rows=chunk_rows, encoding=encoding)
    store.check_key(keys.key_id)
    report = IngestReport(table=table.name, source=Path(path).name)
    stored = store.digests(table.name)
    for raw in iter_raw(path, table, chunk_rows, encoding):
        report.extra_columns = raw.extra_columns
        fresh = _ingest_slice(raw, table, store, keys, stored, report)
        stored = pd.concat([stored, fresh.set_index("application_id")["row_digest"]])
        if progress is not None:
            progress(int(raw.frame["row"].max()) if len(raw.frame) else 0, raw.file_rows)
    return report


def _ingest_slice(
    raw: RawTable,
    table: Table,
    store: EventStore,
    keys: Pseudonymiser,
    stored: pd.Series,
    report: IngestReport,
) -> pd.DataFrame:
    checked = validate(raw, table)
    report.rows_read += raw.rows_read
    report.duplicates_in_file += checked.duplicates_dropped
    rejections = [checked.rejections.assign(source=raw.source)]
    valid = checked.valid
    if table is APPLICATIONS:
        events = pseudonymise_applications(valid, keys).assign(row=valid["row"])
        schema, what = APPLICATION_EVENTS, "application"
    else:
        events = valid.loc[:, ["row", "application_id", "confirmed_at", "source"]].copy()
        events["row_digest"] = row_digests(valid, LABELS, keys)
        applied = _applied_at(events, store)
        # Confirmations dated before their application was submitted cannot be true.
        too_early = applied.notna() & (events["confirmed_at"] < applied)
        awaiting = set(events.loc[applied.isna(), "application_id"])
        rejections.append(
            pd.DataFrame(
                {
                    "row": events.loc[too_early, "row"],
                    "application_id": events.loc[too_early, "application_id"],
                    "column": "confirmed_at",
                    "reason": CONFIRMED_BEFORE_APPLICATION,
                    "source": raw.source,
                }
            )
        )
        events = events.loc[~too_early]
        schema, what = LABEL_EVENTS, "label"
    fresh, already, conflicts = _split_against_store(events, stored, raw.source, what)
    report.already_stored += already
    if table is LABELS:
        # kept: a label applies once its application is ingested (exports may come in either order)
        report.awaiting_application += int(fresh["application_id"].isin(awaiting).sum())
    rejections.append(conflicts)
    all_rejections = pd.concat(rejections, ignore_index=True)
    report.quarantined_rows += int(all_rejections["row"].nunique()) if len(all_rejections) else 0
    report.quarantine_lines_new += store.quarantine(all_rejections)
    rows = pa.Table.from_pandas(
        fresh.loc[:, schema.names].reset_index(drop=True), schema=schema, preserve_index=False
    )
    part = store.append(table.name, rows, key_id=keys.key_id)
    if part is not None:
        report.parts.append(part)
    report.stored += rows.num_rows
    return fresh
