"""The offline builder: every declared feature for a whole history at once, in DuckDB.

Each entity's windowed counts are window functions over its partition,
ordered by the application timestamp in integer microseconds with frames
``RANGE BETWEEN W PRECEDING AND 1 PRECEDING``: exactly ``[t - W, t)``, so an
application never sees itself or anything applied at the same instant.
Confirmed-mule counts and the linked group are their own queries
(:func:`_confirmed_sql`, :mod:`features.linked`). The engines only count; the
values come from the shared transforms in :mod:`features.values`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import values
from features.linked import linked_group
from features.registry import FEATURES, Aggregate, Entity, Feature, Op
from features.values import DAY_US

DUCKDB_MEMORY_LIMIT = "3GB"

# Columns kept as int32 codes in DuckDB: entity keys and the columns counted distinctly.
_CODED = (
    "applicant_key",
    "escort_key",
    "intermediary_key",
    "address_key",
    "phone_key",
    "phone_block_key",
    "device_key",
    "staff_id",
    "branch_id",
    "home_province",
    "company_key",
)
_STRINGS = ("account_type", "home_province", "branch_province", "channel", "address_kind", "gender")
_NUMBERS = ("age", "phone_tenure_days", "company_age_days", "onsite_verified")
_BOOLEANS = ("photo_tampered", "u_shield", "mobile_banking", "payment_binding")


def as_table(data: pa.Table | pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """The schema's columns of ``data`` as an Arrow table, cast to the schema's types."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    return pa.table({f.name: table[f.name].cast(f.type) for f in schema if f.name in table.column_names})


def _in_order(applications: pa.Table) -> np.ndarray:
    """Row positions in (applied_at, application_id) order, one per application_id.

    A repeated application_id is the same application (the contract), so its
    first row in that order stands, as it would in the online store.
    """
    keys = [("applied_at", "ascending"), ("application_id", "ascending")]
    positions = pc.sort_indices(applications, sort_keys=keys).to_numpy()
    ids = applications["application_id"]
    if pc.count_distinct(ids).as_py() == len(ids):
        return positions
    repeated = pd.Series(ids.take(positions).to_numpy(zero_copy_only=False)).duplicated()
    return positions[~repeated.to_numpy()]


def confirmations(application_ids: pa.Array | pa.ChunkedArray, labels: pa.Table) -> np.ndarray:
    """Per application id, its earliest ``confirmed_at`` in microseconds, or -1."""
    con = duckdb.connect()
    try:
        rows = np.arange(len(application_ids), dtype=np.int64)
        con.register("a", pa.table({"rn": rows, "application_id": application_ids}))
        con.register("l", labels.select(["application_id", "confirmed_at"]))
        found = con.execute(
            """SELECT a.rn, epoch_us(MIN(l.confirmed_at)) AS conf
            FROM a JOIN l USING (application_id) GROUP BY a.rn"""
        ).fetchnumpy()
    finally:
        con.close()
    conf = np.full(len(application_ids), -1, dtype=np.int64)
    conf[np.asarray(found["rn"], dtype=np.int64)] = np.asarray(found["conf"], dtype=np.int64)
    return conf


def _objects(column: pa.ChunkedArray, rows: np.ndarray) -> np.ndarray:
    """Strings as an object array in which equal values share one Python object.

    Ten million short strings as separate objects would cost gigabytes; a
    handful of categories shared costs a pointer per row.
    """
    encoded = pc.dictionary_encode(column.combine_chunks())
    names = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
    codes = encoded.indices.fill_null(len(names) - 1).to_numpy()
    return names[codes[rows]]


def _row_columns(applications: pa.Table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The applications' own columns at positions ``rows``, plus the derived flags."""
    columns: dict[str, np.ndarray] = {
        "applied_at": applications["applied_at"].cast(pa.int64()).to_numpy()[rows]
    }
    for name in _STRINGS:
        columns[name] = _objects(applications[name], rows)
    for name in _NUMBERS:
        columns[name] = applications[name].cast(pa.float64()).to_numpy()[rows]
    for name in _BOOLEANS:
        columns[name] = applications[name].to_numpy()[rows]
    columns.update(values.derived_flags(columns))
    return columns


def _engine_table(
    applications: pa.Table, rows: np.ndarray, columns: dict[str, np.ndarray], conf: np.ndarray
) -> pa.Table:
    """What DuckDB counts over: codes instead of strings, flags, confirmation times."""
    data: dict[str, pa.Array | np.ndarray] = {
        "idx": np.arange(len(rows), dtype=np.int64),
        "ts": columns["applied_at"],
        "conf": pa.array(conf, pa.int64(), mask=conf < 0),
        "photo_tampered": columns["photo_tampered"],
    }
    for name in _CODED:
        data[name] = pc.dictionary_encode(applications[name].combine_chunks()).indices.take(rows)
    for name in values.FLAG_COLUMNS:
        data[name] = columns[name]
    return pa.table(data)


def _window_sql(entity: Entity, aggregates: list[Aggregate]) -> str:
    keys = entity.keys
    windows = sorted({a.window_days for a in aggregates})
    selected = ", ".join(f'{a.sql()} OVER w{a.window_days} AS "{a.name}"' for a in aggregates)
    frames = ", ".join(
        f"w{d} AS (PARTITION BY {', '.join(keys)} ORDER BY ts "
        f"RANGE BETWEEN {d * DAY_US} PRECEDING AND 1 PRECEDING)"
        for d in windows
    )
    present = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    return f"SELECT idx, {selected} FROM apps WHERE {present} WINDOW {frames}"


def _confirmed_sql(entity: Entity, window_days: int) -> str:
    """Applications of the entity applied in ``[t - W, t)`` and confirmed before ``t``.

    Each confirmed application counts for ``t`` in ``(max(applied, confirmed),
    applied + W]``: +1 at the first instant, -1 after the last, summed over
    everything strictly before ``t``. One whose confirmation came after its
    window had closed never counts and is left out.
    """
    (key,) = entity.keys
    w = window_days * DAY_US
    return f"""
        WITH items AS (
            SELECT {key} AS k, ts, conf FROM apps
            WHERE {key} IS NOT NULL AND conf IS NOT NULL AND conf < ts + {w}
        ), steps AS (
            SELECT k, GREATEST(ts, conf) AS moment, 1 AS d, NULL::BIGINT AS idx FROM items
            UNION ALL SELECT k, ts + {w}, -1, NULL FROM items
            UNION ALL SELECT {key}, ts, 0, idx FROM apps WHERE {key} IS NOT NULL
        ), summed AS (
            SELECT idx, SUM(d) OVER (PARTITION BY k ORDER BY moment
                RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS n
            FROM steps
        )
        SELECT idx, COALESCE(n, 0) AS "{Aggregate(entity, Op.CONFIRMED, window_days).name}"
        FROM summed WHERE idx IS NOT NULL
    """


@contextmanager
def _duckdb() -> Iterator[duckdb.DuckDBPyConnection]:
    with tempfile.TemporaryDirectory(prefix="duanka-features-") as spill:
        con = duckdb.connect(
            config={
                "memory_limit": DUCKDB_MEMORY_LIMIT,
                "temp_directory": spill,
                "preserve_insertion_order": False,
            }
        )
        try:
            yield con
        finally:
            con.close()


def _scatter(result: dict[str, np.ndarray], n: int, into: dict[str, np.ndarray]) -> None:
    at = np.asarray(result.pop("idx"), dtype=np.int64)
    for name, found in result.items():
        column = np.full(n, np.nan)
        column[at] = np.asarray(found, dtype=np.float64)
        into[name] = column


def _steps(features: Sequence[Feature]) -> list[tuple[str, Entity, list[Aggregate]]]:
    """Engine work: the linked group, one windowed query per entity, one per confirmed count.

    Only the aggregates that ``features`` read. The linked group, the
    hungriest, goes first, while the feature block is still empty.
    """
    aggregates = tuple(dict.fromkeys(a for f in features for a in f.aggregates))
    linked = [a for a in aggregates if a.op is Op.LINKED]
    steps = [("linked group", Entity.LINKED, linked)] if linked else []
    windowed: dict[Entity, list[Aggregate]] = {}
    for a in aggregates:
        if a.windowed:
            windowed.setdefault(a.entity, []).append(a)
    steps += [(e.name.lower(), e, aggs) for e, aggs in windowed.items()]
    steps += [
        (f"{a.entity.name.lower()} confirmed", a.entity, [a]) for a in aggregates if a.op is Op.CONFIRMED
    ]
    return steps


def build_features(
    applications: pa.Table | pd.DataFrame,
    labels: pa.Table | pd.DataFrame,
    *,
    progress: bool = False,
    features: Sequence[Feature] | None = None,
) -> pd.DataFrame:
    """Every declared feature of every application, point in time.

    Parameters
    ----------
    applications : pyarrow.Table or pandas.DataFrame
        Events in :data:`data.events.APPLICATION_EVENTS` form.
    labels : pyarrow.Table or pandas.DataFrame
        Confirmations in :data:`data.events.LABEL_EVENTS` form; an application
        confirmed more than once counts from its earliest confirmation.
    progress : bool
        Show a progress bar on the terminal.
    features : sequence of Feature, optional
        Only these features (in this order), and only the engine work they
        need; the scale-out path (:mod:`features.distributed`) builds each
        family on the partitions that hold its entities whole. Default: all
        of :data:`features.registry.FEATURES`.

    Returns
    -------
    pandas.DataFrame
        One row per application_id in (applied_at, application_id) order:
        ``application_id``, ``applied_at`` and every feature of
        :data:`features.registry.FEATURES` (or of ``features``), as float64.
    """
    from data.events import APPLICATION_EVENTS, LABEL_EVENTS

    table = as_table(applications, APPLICATION_EVENTS)
    rows = _in_order(table)
    n = len(rows)
    ids = table["application_id"].take(rows)
    columns = _row_columns(table, rows)
    conf = confirmations(ids, as_table(labels, LABEL_EVENTS))
    # One float64 block that the frame wraps as it is; 10M rows are not copied again.
    chosen = FEATURES if features is None else tuple(features)
    block = np.empty((len(chosen), n))
    values_of = _Evaluator(block, columns, chosen)
    steps = _steps(chosen)
    with _duckdb() as con, _progress(progress, len(steps)) as advance:
        con.register("apps", _engine_table(table, rows, columns, conf))
        # Give back what reading and encoding left in Arrow's pool before DuckDB needs it.
        pa.default_memory_pool().release_unused()
        values_of.settle()
        for label, entity, aggregates in steps:
            advance(label)
            if entity is Entity.LINKED:
                stats = linked_group(con, n)
                values_of.counts.update({a.name: stats[a.column] for a in aggregates})
            elif aggregates[0].op is Op.CONFIRMED:
                sql = _confirmed_sql(entity, aggregates[0].window_days)
                _scatter(con.execute(sql).fetchnumpy(), n, values_of.counts)
            else:
                sql = _window_sql(entity, aggregates)
                _scatter(con.execute(sql).fetchnumpy(), n, values_of.counts)
            values_of.settle()
    frame = pd.DataFrame(block.T, columns=[f.name for f in chosen], copy=False)
    frame.insert(0, "applied_at", table["applied_at"].take(rows).to_pandas())
    frame.insert(0, "application_id", ids.to_pandas())
    return frame


class _Evaluator:
    """Fills feature rows of ``block`` as soon as their inputs exist, then drops the inputs.

    Holding every count and column of 10M applications to the end would
    double the memory.
    """

    def __init__(
        self, block: np.ndarray, columns: dict[str, np.ndarray], features: Sequence[Feature]
    ) -> None:
        self.block = block
        self.columns = columns
        self.counts: dict[str, np.ndarray] = {}
        self._pending = list(enumerate(features))

    def settle(self) -> None:
        waiting = []
        for i, feature in self._pending:
            if all(a.name in self.counts for a in feature.aggregates):
                self.block[i] = feature.evaluate(self.columns, self.counts)
            else:
                waiting.append((i, feature))
        self._pending = waiting
        needed = {i if isinstance(i, str) else i.name for _, f in waiting for i in f.inputs}
        for inputs in (self.counts, self.columns):
            for name in set(inputs) - needed:
                del inputs[name]


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[str], None]]:
    if not show:
        yield lambda label: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("features", total=total)

        def advance(label: str) -> None:
            bar.update(task, advance=1, description=f"features: {label}")

        yield advance
