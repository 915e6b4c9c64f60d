"""Ingestion: contract file -> validated, pseudonymised events in the store.

Raw identifiers live only in memory between reading and pseudonymising; what
is written holds pseudonyms and the derived facts the contract allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from duanka.data.address import address_kinds, building_keys
from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST, Table
from duanka.data.events import APPLICATION_EVENTS, LABEL_EVENTS
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import Encoding, RawTable, iter_raw
from duanka.data.store import EventStore
from duanka.data.validate import validate

# contract column -> (stored column, pseudonym family)
PSEUDONYMS = {
    "id_number": ("applicant_key", "applicant"),
    "phone": ("phone_key", "phone"),
    "device_id": ("device_key", "device"),
    "escort_id": ("escort_key", "escort"),
    "intermediary_id": ("intermediary_key", "intermediary"),
    "company_id": ("company_key", "company"),
}
# How a row digest joins the canonical strings of its contract values, and writes a missing one.
ROW_SEPARATOR = "\x1f"
ROW_MISSING = "\x00"
ROW_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # values are UTC by then


@dataclass
class IngestReport:
    """What one ingest run did, in counts (no row contents)."""

    table: str
    source: str
    rows_read: int = 0
    stored: int = 0
    already_stored: int = 0
    duplicates_in_file: int = 0
    quarantined_rows: int = 0
    quarantine_lines_new: int = 0
    extra_columns: tuple[str, ...] = ()
    parts: list[Path] = field(default_factory=list)


def row_digests(valid: pd.DataFrame, table: Table, keys: Pseudonymiser) -> pd.Series:
    """A keyed digest of each row's canonical contract values: tells an identical
    resend from a conflicting one without storing the raw values."""
    canonical = valid.loc[:, list(table.names)].copy()
    for name in table.names:
        if isinstance(canonical[name].dtype, pd.DatetimeTZDtype):
            # a fixed format: pandas' own rendering depends on the other rows of the column
            canonical[name] = canonical[name].dt.strftime(ROW_TIMESTAMP_FORMAT)
    canonical = canonical.astype("string").fillna(ROW_MISSING)
    first, *rest = table.names
    joined = canonical[first].str.cat([canonical[name] for name in rest], sep=ROW_SEPARATOR)
    return keys.tokens("row", joined.astype(object))


def pseudonymise_applications(valid: pd.DataFrame, keys: Pseudonymiser) -> pd.DataFrame:
    """Derive the allowed facts, replace identifiers by pseudonyms, drop the raw values."""
    # Columns are collected first and framed once: inserting them one by one into a frame
    # costs more than the work itself for the one-row calls of the scoring service.
    out: dict[str, pd.Series | str] = {
        name: valid[name]
        for name in (
            "application_id",
            "applied_at",
            "branch_id",
            "branch_region",
            "channel",
            "account_type",
            "staff_id",
            "phone_tenure_days",
            "photo_tampered",
            "onsite_verified",
            "company_age_days",
            "u_shield",
            "mobile_banking",
            "payment_binding",
            "age",
            "gender",
            "home_region",
        )
    }
    out["branch_province"] = valid["branch_region"].str[:2]
    out["home_province"] = valid["home_region"].str[:2]
    out["phone_prefix"] = valid["phone"].str[:3]
    out["phone_block_key"] = keys.tokens("phone_block", valid["phone"].str[:7])
    out["address_key"] = keys.tokens("address", building_keys(valid["address"]))
    out["address_kind"] = address_kinds(valid["address"])
    out["company_region"] = valid["company_id"].str[2:8]
    for raw, (stored, family) in PSEUDONYMS.items():
        values = valid[raw]
        if raw == "escort_id":
            # escorts are recorded by their ID number where known: one spelling per person
            values = values.str.strip().str.upper()
        out[stored] = keys.tokens(family, values)
    out["row_digest"] = row_digests(valid, APPLICATIONS, keys)
    out["key_id"] = keys.key_id
    return pd.DataFrame(out, index=valid.index)


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


def _label_rejections(labels: pd.DataFrame, store: EventStore, source: str) -> pd.Series:
    """Confirmations dated before their application was submitted cannot be true."""
    apps = store.applications(["application_id", "applied_at"]).to_pandas()
    applied = labels["application_id"].map(apps.set_index("application_id")["applied_at"])
    return applied.notna() & (labels["confirmed_at"] < applied)


CHUNK_ROWS = 250_000


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
    A watchlist goes through :func:`data.watchlist.ingest_watchlist`. ``progress`` is told
    ``(rows done, rows in the file)`` after each slice.
    """
    if table is WATCHLIST:
        from duanka.data.watchlist import ingest_watchlist  # it builds on this module

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
    report.rows_read += len(raw.frame)
    report.duplicates_in_file += checked.duplicates_dropped
    rejections = [checked.rejections.assign(source=raw.source)]
    valid = checked.valid
    if table is APPLICATIONS:
        events = pseudonymise_applications(valid, keys).assign(row=valid["row"])
        schema, what = APPLICATION_EVENTS, "application"
    else:
        events = valid.loc[:, ["row", "application_id", "confirmed_at", "source"]].copy()
        events["row_digest"] = row_digests(valid, LABELS, keys)
        too_early = _label_rejections(events, store, raw.source)
        rejections.append(
            pd.DataFrame(
                {
                    "row": events.loc[too_early, "row"],
                    "application_id": events.loc[too_early, "application_id"],
                    "column": "confirmed_at",
                    "reason": "confirmed before the application was submitted",
                    "source": raw.source,
                }
            )
        )
        events = events.loc[~too_early]
        schema, what = LABEL_EVENTS, "label"
    fresh, already, conflicts = _split_against_store(events, stored, raw.source, what)
    report.already_stored += already
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
