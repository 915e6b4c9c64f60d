"""How events, event tables and listings become what the online store keeps and reads.

One event at a time (:func:`stored_row`, :func:`own_columns`) or a whole history at once
(:func:`stored_table`, :func:`with_totals`); both give the same rows, with the flags
derived by :func:`duanka.features.values.derived_flags` as the offline builder derives them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from duanka.features import values
from duanka.features.columns import COMPARED, OWN_BOOLEANS, OWN_NUMBERS, OWN_STRINGS
from duanka.features.online_queries import STORED
from duanka.features.running import RunningTotals

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LOAD_SLICE = 100_000


def micros(at: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime (or pandas Timestamp)."""
    if at.tzinfo is None:
        raise ValueError(f"timestamp {at} has no timezone; events carry UTC timestamps")
    return (at - EPOCH) // _MICROSECOND


def missing(value: object) -> bool:
    """Whether an event's value is absent: None, NaN or pandas' NA."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def compared_values(event: Mapping[str, object]) -> dict[str, object]:
    """The event's :data:`duanka.features.columns.COMPARED` by name, None where absent."""
    return {c: None if missing(value := event.get(c)) else value for c in COMPARED}


def own_columns(event: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The application's own columns as arrays of one element, as the offline builder has them."""
    columns: dict[str, np.ndarray] = {}
    for name in OWN_STRINGS:
        columns[name] = np.array([event.get(name)], dtype=object)
    for name in (*OWN_NUMBERS, *OWN_BOOLEANS):
        value = event.get(name)
        columns[name] = np.array([np.nan if missing(value) else value], dtype=np.float64)
    return columns


def stored_row(event: Mapping[str, object], ts: int) -> dict[str, object]:
    """One event as the state keeps it: :data:`duanka.features.online_queries.STORED` by name, in order."""
    flags = values.derived_flags(own_columns(event))
    row = {
        "application_id": event["application_id"],
        "ts": ts,
        **compared_values(event),
        "photo_tampered": int(bool(event["photo_tampered"])),
        **{c: int(flags[c][0]) for c in values.FLAG_COLUMNS},
    }
    return {name: row[name] for name in STORED}


def stored_table(applications: pa.Table) -> pa.Table:
    """The table's rows as the state keeps them (:data:`STORED`), flags derived as for one event."""
    columns = {
        name: applications[name].to_numpy(zero_copy_only=False)
        if name in OWN_STRINGS
        else pc.cast(applications[name], pa.float64()).to_numpy(zero_copy_only=False)
        for name in values.FLAG_INPUTS
    }
    flags = values.derived_flags(columns)
    data = {
        "application_id": applications["application_id"],
        "ts": applications["applied_at"].cast(pa.int64()),
        **{c: applications[c] for c in COMPARED},
        "photo_tampered": applications["photo_tampered"].cast(pa.int64()),
        **{c: pa.array(flags[c].astype(np.int64)) for c in values.FLAG_COLUMNS},
    }
    return pa.table({name: data[name] for name in STORED})


def with_totals(rows: pa.Table, totals: tuple[RunningTotals, ...]) -> Iterator[pa.RecordBatch]:
    """The rows in time order with every running total, in slices (DuckDB window sums)."""
    import duckdb

    con = duckdb.connect()
    con.register("rows", rows)
    expressions = [e for running in totals for e in running.window_sql()]
    reader = con.sql(
        f"SELECT {', '.join(STORED)}, {', '.join(expressions)} FROM rows ORDER BY ts, application_id"
    ).to_arrow_reader(_LOAD_SLICE)
    try:
        yield from reader
    finally:
        con.close()


def listing_rows(listings: pa.Table | pd.DataFrame) -> list[dict[str, object]]:
    """``applicant_key``, ``source``, ``listed_at`` and ``expires_at`` (microseconds) by name.

    Raises
    ------
    ValueError
        A time column is not tz-aware: listings carry UTC instants, as events do.
    """
    if len(listings) == 0:
        return []
    columns = ["applicant_key", "source", "listed_at", "expires_at"]
    table = (
        listings.select(columns)
        if isinstance(listings, pa.Table)
        else pa.Table.from_pandas(listings.loc[:, columns], preserve_index=False)
    )
    for name in ("listed_at", "expires_at"):
        kind = table[name].type
        if not pa.types.is_timestamp(kind) or kind.tz is None:
            raise ValueError(f"listings' {name} is {kind}, not a tz-aware timestamp")
        at = table.schema.get_field_index(name)
        table = table.set_column(at, name, table[name].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()))
    return table.to_pylist()
