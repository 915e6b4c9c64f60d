"""The offline builder: every declared feature for a whole history at once.

Each entity's windowed counts are prefix counts over its applications in time order
(:mod:`duanka.features.windows`): exactly ``[t - W, t)`` with ``applied_at`` in integer
microseconds, so an application never sees itself or anything applied at the same instant.
Confirmed-mule and listed-applicant counts and the linked group are DuckDB queries
(:func:`_marked_sql`, :mod:`duanka.features.linked`); the applicant's ended listings come
from :func:`listing_history`. The engines only count; the values come from the shared
transforms in :mod:`duanka.features.values`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.config import get_settings
from duanka.data.watchlist import effective_listings
from duanka.features import values
from duanka.features.columns import (
    COMPARED,
    COUNTED_FLAGS,
    MARK_COLUMN,
    OWN_BOOLEANS,
    OWN_NUMBERS,
    OWN_STRINGS,
)
from duanka.features.declaration import Aggregate, Entity, Feature, Op
from duanka.features.linked import linked_group
from duanka.features.registry import FEATURES
from duanka.features.windows import window_counts


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


def listing_history(
    applicant_keys: pa.Array | pa.ChunkedArray,
    applied_at: np.ndarray,
    listings: pa.Table | pd.DataFrame | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per application, its applicant's joint-punishment listings as the features read them.

    Only listings that apply at some instant count (:func:`duanka.data.watchlist.effective_listings`:
    removals applied, withdrawn listings dropped), the same rule as the online store's.

    Parameters
    ----------
    applicant_keys : pyarrow.Array or pyarrow.ChunkedArray
        One per application.
    applied_at : numpy.ndarray
        The applications' ``applied_at`` in microseconds (int64), aligned with ``applicant_keys``.
    listings : pyarrow.Table or pandas.DataFrame or None
        :data:`duanka.data.events.WATCHLIST_EVENTS` rows as stored; None means no listing.

    Returns
    -------
    listed : numpy.ndarray
        int64: the applicant's earliest ``listed_at`` in microseconds, or -1 when never listed.
    ended : numpy.ndarray
        int64: how many of the applicant's listings had ended (``expires_at <= applied_at``).
    """
    n = len(applicant_keys)
    listed = np.full(n, -1, dtype=np.int64)
    ended = np.zeros(n, dtype=np.int64)
    if listings is None or len(listings) == 0 or n == 0:
        return listed, ended
    applying = pa.Table.from_pandas(effective_listings(listings), preserve_index=False)
    con = duckdb.connect()
    try:
        rows = np.arange(n, dtype=np.int64)
        con.register("a", pa.table({"rn": rows, "applicant_key": applicant_keys, "t": applied_at}))
        con.register("l", applying.select(["applicant_key", "listed_at", "expires_at"]))
        found = con.execute(
            """SELECT a.rn, MIN(epoch_us(l.listed_at)) AS listed,
                COUNT(*) FILTER (WHERE epoch_us(l.expires_at) <= a.t) AS ended
            FROM a JOIN l USING (applicant_key) GROUP BY a.rn"""
        ).fetchnumpy()
    finally:
        con.close()
    at = np.asarray(found["rn"], dtype=np.int64)
    listed[at] = np.asarray(found["listed"], dtype=np.int64)
    ended[at] = np.asarray(found["ended"], dtype=np.int64)
    return listed, ended


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
    for name in OWN_STRINGS:
        columns[name] = _objects(applications[name], rows)
    for name in OWN_NUMBERS:
        columns[name] = applications[name].cast(pa.float64()).to_numpy()[rows]
    for name in OWN_BOOLEANS:
        columns[name] = applications[name].to_numpy()[rows]
    columns.update(values.derived_flags(columns))
    return columns


def _engine_table(
    applications: pa.Table,
    rows: np.ndarray,
    columns: dict[str, np.ndarray],
    conf: np.ndarray,
    listed: np.ndarray,
) -> pa.Table:
    """What DuckDB counts over: codes instead of strings, flags, confirmation and listing times."""
    data: dict[str, pa.Array | np.ndarray] = {
        "idx": np.arange(len(rows), dtype=np.int64),
        "ts": columns["applied_at"],
        MARK_COLUMN[Op.CONFIRMED]: pa.array(conf, pa.int64(), mask=conf < 0),
        MARK_COLUMN[Op.LISTED]: pa.array(listed, pa.int64(), mask=listed < 0),
    }
    for name in COMPARED:
        data[name] = pc.dictionary_encode(applications[name].combine_chunks()).indices.take(rows)
    for name in COUNTED_FLAGS:
        data[name] = columns[name]
    return pa.table(data)


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An encoded column as numpy codes, -1 where missing."""
    return pc.fill_null(column, -1).to_numpy()


def _windowed(engine: pa.Table, entity: Entity, aggregates: list[Aggregate]) -> dict[str, np.ndarray]:
    """One entity's windowed counts from the engine table (:func:`_engine_table`)."""
    read = {}
    for a in aggregates:
        if a.op is Op.FLAGGED:
            read[a.column] = engine[a.column].to_numpy()
        elif a.op in (Op.DISTINCT, Op.OTHERS):
            read[a.column] = _codes(engine[a.column])
    keys = [_codes(engine[key]) for key in entity.keys]
    return window_counts(keys, engine["ts"].to_numpy(), aggregates, read)


def _marked_sql(aggregate: Aggregate) -> str:
    """Applications of the entity applied in ``[t - W, t)`` and marked before ``t``.

    The mark is the application's confirmation (:attr:`Op.CONFIRMED`) or its
    applicant's earliest listing (:attr:`Op.LISTED`). Each marked application
    counts for ``t`` in ``(max(applied, marked), applied + W]``: +1 at the first
    instant, -1 after the last, summed over everything strictly before ``t``.
    One marked after its window had closed never counts and is left out.
    """
    (key,) = aggregate.entity.keys
    mark = MARK_COLUMN[aggregate.op]
    w = aggregate.window_us
    return f"""
        WITH items AS (
            SELECT {key} AS k, ts, {mark} AS mark FROM apps
            WHERE {key} IS NOT NULL AND {mark} IS NOT NULL AND {mark} < ts + {w}
        ), steps AS (
            SELECT k, GREATEST(ts, mark) AS moment, 1 AS d, NULL::BIGINT AS idx FROM items
            UNION ALL SELECT k, ts + {w}, -1, NULL FROM items
            UNION ALL SELECT {key}, ts, 0, idx FROM apps WHERE {key} IS NOT NULL
        ), summed AS (
            SELECT idx, SUM(d) OVER (PARTITION BY k ORDER BY moment
                RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS n
            FROM steps
        )
        SELECT idx, COALESCE(n, 0) AS "{aggregate.name}"
        FROM summed WHERE idx IS NOT NULL
    """


@contextmanager
def _duckdb() -> Iterator[duckdb.DuckDBPyConnection]:
    with tempfile.TemporaryDirectory(prefix="duanka-features-") as spill:
        con = duckdb.connect(
            config={
                "memory_limit": get_settings().duckdb_memory_limit,
                "temp_directory": spill,
                "preserve_insertion_order": False,
            }
        )
        # The builder reports its own steps (``progress``); DuckDB's bars would interleave with
        # them on a terminal and flood a Dask worker's log with one bar per long query.
        con.execute("SET enable_progress_bar = false")
        try:
            yield con
        finally:
            con.close()


def _scatter(result: dict[str, np.ndarray], n: int, into: dict[str, np.ndarray]) -> None:
    """Each result column to its rows, NaN elsewhere; ``result`` is emptied as it goes.

    Taking the columns out one at a time frees each result column as soon as it is
    placed: with 10M rows a step's nine results held to the end cost 0.7 GB at the peak.
    """
    at = np.asarray(result.pop("idx"), dtype=np.int64)
    for name in list(result):
        found = result.pop(name)
        column = np.full(n, np.nan)
        column[at] = found
        del found
        into[name] = column


def _steps(features: Sequence[Feature]) -> list[tuple[str, Entity, list[Aggregate]]]:
    """Engine work: the linked group, one windowed query per entity, one per marked count,
    and the applicant's ended listings (already counted by :func:`listing_history`).

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
    steps += [(e.label, e, aggs) for e, aggs in windowed.items()]
    steps += [(f"{a.entity.label} {a.op}", a.entity, [a]) for a in aggregates if a.op in MARK_COLUMN]
    steps += [("listings ended", a.entity, [a]) for a in aggregates if a.op is Op.LISTINGS_ENDED]
    return steps


def _step_counts(
    steps: list[tuple[str, Entity, list[Aggregate]]],
    con: duckdb.DuckDBPyConnection,
    engine: pa.Table,
    ended: np.ndarray,
    n: int,
    advance: Callable[[str], None],
) -> Iterator[dict[str, np.ndarray]]:
    """Each step's counts, in order.

    DuckDB steps run here (on DuckDB's own threads); windowed steps run two at a time on a
    pool, since numpy's sorts and searches let go of the GIL. Never more than two at once, and
    none beside a DuckDB step: each holds several arrays as long as the history.
    """
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="duanka-windows") as pool:
        running: dict[int, Future[dict[str, np.ndarray]]] = {}
        for i, (label, entity, aggregates) in enumerate(steps):
            # the next one only beside another window: the linked group wants the memory alone
            for j in (i, i + 1) if _plain_window(steps[i]) else ():
                if j < len(steps) and j not in running and _plain_window(steps[j]):
                    running[j] = pool.submit(_windowed, engine, steps[j][1], steps[j][2])
            advance(label)
            if i in running:
                yield running.pop(i).result()
            elif entity is Entity.LINKED:
                stats = linked_group(con, n)
                yield {a.name: stats[a.column] for a in aggregates}
            elif aggregates[0].op is Op.LISTINGS_ENDED:
                yield {aggregates[0].name: ended.astype(np.float64)}
            else:
                found: dict[str, np.ndarray] = {}
                _scatter(con.execute(_marked_sql(aggregates[0])).fetchnumpy(), n, found)
                yield found


def _plain_window(step: tuple[str, Entity, list[Aggregate]]) -> bool:
    _, entity, aggregates = step
    return entity is not Entity.LINKED and aggregates[0].windowed


def _needs_listings(features: Sequence[Feature]) -> bool:
    return any(
        a.op in (Op.LISTED, Op.LISTINGS_ENDED) or (a.op is Op.LINKED and a.column == "listed")
        for f in features
        for a in f.aggregates
    )


def build_features(
    applications: pa.Table | pd.DataFrame,
    labels: pa.Table | pd.DataFrame,
    *,
    listings: pa.Table | pd.DataFrame | None = None,
    progress: bool = False,
    features: Sequence[Feature] | None = None,
) -> pd.DataFrame:
    """Every declared feature of every application, point in time.

    Parameters
    ----------
    applications : pyarrow.Table or pandas.DataFrame
        Events in :data:`duanka.data.events.APPLICATION_EVENTS` form.
    labels : pyarrow.Table or pandas.DataFrame
        Confirmations in :data:`duanka.data.events.LABEL_EVENTS` form; an application
        confirmed more than once counts from its earliest confirmation.
    listings : pyarrow.Table or pandas.DataFrame, optional
        The joint-punishment list in :data:`duanka.data.events.WATCHLIST_EVENTS` form
        (removals included: :meth:`duanka.data.store.EventStore.watchlist`). None: nobody
        is listed, and the listing features are 0.
    progress : bool
        Show a progress bar on the terminal.
    features : sequence of Feature, optional
        Only these features (in this order), and only the engine work they
        need; the scale-out path (:mod:`duanka.features.distributed`) builds each
        family on the partitions that hold its entities whole. Default: all
        of :data:`duanka.features.registry.FEATURES`.

    Returns
    -------
    pandas.DataFrame
        One row per application_id in (applied_at, application_id) order:
        ``application_id``, ``applied_at`` and every feature of
        :data:`duanka.features.registry.FEATURES` (or of ``features``), as float64.
    """
    from duanka.data.events import APPLICATION_EVENTS, LABEL_EVENTS, WATCHLIST_EVENTS

    table = as_table(applications, APPLICATION_EVENTS)
    # The strings (pseudonyms, 3.7 GiB at 10M) are encoded below and then let go: a caller
    # that hands over its only reference gets them freed before the output block fills.
    del applications
    rows = _in_order(table)
    # What reading the input and sorting it left in Arrow's pool (GiBs at 10M) goes back first.
    pa.default_memory_pool().release_unused()
    n = len(rows)
    ids = table["application_id"].take(rows)
    columns = _row_columns(table, rows)
    conf = confirmations(ids, as_table(labels, LABEL_EVENTS))
    chosen = FEATURES if features is None else tuple(features)
    listed, ended = listing_history(
        table["applicant_key"].take(rows),
        columns["applied_at"],
        as_table(listings, WATCHLIST_EVENTS) if listings is not None and _needs_listings(chosen) else None,
    )
    # One float64 block that the frame wraps as it is; 10M rows are not copied again.
    block = np.empty((len(chosen), n))
    values_of = _Evaluator(block, columns, chosen)
    steps = _steps(chosen)
    with _duckdb() as con, _progress(progress, len(steps)) as advance:
        engine = _engine_table(table, rows, columns, conf, listed)
        con.register("apps", engine)
        applied_at = table["applied_at"].take(rows)
        del listed, table
        # Give back what reading and encoding left in Arrow's pool before DuckDB needs it.
        pa.default_memory_pool().release_unused()
        values_of.settle()
        for counts in _step_counts(steps, con, engine, ended, n, advance):
            values_of.counts.update(counts)
            values_of.settle()
    frame = pd.DataFrame(block.T, columns=[f.name for f in chosen], copy=False)
    frame.insert(0, "applied_at", applied_at.to_pandas())
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
