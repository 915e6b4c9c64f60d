"""Scale-out on Dask: the single-machine builder, run per partition, joined by application_id.

Nothing here computes a feature. :func:`features.offline.build_features` runs
unchanged on partitions that hold every event its windows can read:

1. **By application.** Events and confirmations are split by the hash of
   ``application_id``; each partition drops repeated ids exactly as the
   builder does (first in (applied_at, application_id) order) and carries
   each application's earliest confirmation with it, so a later partition
   holds its labels without a join against the whole label table.
2. **By entity, per shard.** :func:`plan` groups the registry's features by
   the key their counts share (escort, intermediary, address, phone, number
   block, device, staff, branch, applicant); a shard's events are split by
   the hash of that key, so every application of a key, its whole history,
   lands in one partition and every window there is exact. Rows whose key
   is null have no such entity and are spread by ``application_id``. The
   staff-at-branch excess shares compare a (branch, staff) pair with its
   branch, so they go with the branch. The application's own facts ride
   with the applicant shard.
3. **The linked group, by time.** A group reaches other keys through its
   members, so no key hash holds it whole; it is bounded in time instead.
   Every member, at both hops, is an application of some key applied in
   ``[t - 30 d, t)``, ranked among that key's applications in the same
   window, so the group of ``x`` is a function of the applications applied
   in ``[t - 30 d, t]`` alone. A time block ``[s, e)`` with the 30 days
   before ``s`` as read-only history ("halo") therefore gives every
   application in the block exactly its single-machine group
   (docs/scale-out.md has the argument).
4. **Join.** Each partition's output is split again by ``application_id``
   hash and joined with the application's own row, in registry order.

The joint-punishment list is small (people, not applications): it is read on
the client, reduced to the listings that apply
(:func:`data.watchlist.effective_listings`) and sent to every worker once; each
partition's builder reads its applicants' listings from it, as the single
machine does.

The tasks are plain :mod:`distributed` futures over Arrow tables (no
dask.dataframe conversion, so types stay exactly those of the event
schema). Shards run one after another so that one copy of the events, not
nine, is in flight at a time. ``dask`` is imported only inside functions.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.events import APPLICATION_EVENTS, LABEL_EVENTS, WATCHLIST_EVENTS
from data.watchlist import effective_listings
from features.offline import _in_order, as_table, build_features, confirmations
from features.registry import FEATURES, LINK_WINDOW_DAYS, Entity, Feature
from features.values import DAY_US

if TYPE_CHECKING:
    from distributed import Client, Future

CONFIRMED = "confirmed_at"  # carried with each application: its earliest confirmation, or null
TIME = "applied_at"  # the linked shard's "key": time blocks with a halo
_HALO_US = LINK_WINDOW_DAYS * DAY_US
_OWN_FACTS_KEY = "applicant_key"

Source = pa.Table | pd.DataFrame | Sequence[str | Path]


@dataclass(frozen=True)
class Shard:
    """Features built together on partitions that hold their entities whole.

    Attributes
    ----------
    key : str
        The event column partitioned by hash, or ``"applied_at"`` for the
        linked group (time blocks with a 30-day halo).
    features : tuple of Feature
        In registry order.
    """

    key: str
    features: tuple[Feature, ...]


def plan(features: Sequence[Feature] = FEATURES) -> tuple[Shard, ...]:
    """The shards that cover ``features``, derived from the registry's entities.

    A feature whose counts are over several entities (the staff-at-branch
    excess shares: the pair and its branch) is partitioned by a key all of
    them share. Features with no counts (the application's own facts) join
    the applicant shard, or the first shard when there is none.

    Raises
    ------
    ValueError
        A feature's entities share no key, so no partitioning holds them whole.
    """
    by_key: dict[str, list[Feature]] = {}
    own: list[Feature] = []
    for feature in features:
        entities = {a.entity for a in feature.aggregates}
        if not entities:
            own.append(feature)
            continue
        if Entity.LINKED in entities:
            if len(entities) > 1:
                raise ValueError(f"{feature.name}: the linked group mixed with other counts")
            key = TIME
        else:
            common = set.intersection(*(set(e.keys) for e in entities))
            if not common:
                raise ValueError(f"{feature.name}: its counts share no key to partition by")
            key = sorted(common)[0]
        by_key.setdefault(key, []).append(feature)
    if own:
        target = _OWN_FACTS_KEY if _OWN_FACTS_KEY in by_key or not by_key else next(iter(by_key))
        by_key.setdefault(target, []).extend(own)
    order = {f.name: i for i, f in enumerate(features)}
    return tuple(
        Shard(key, tuple(sorted(found, key=lambda f: order[f.name]))) for key, found in by_key.items()
    )


# ---------------------------------------------------------------- tasks (run on workers)


def _hash(values: np.ndarray) -> np.ndarray:
    """A hash of strings that is the same in every process (unlike ``hash()``)."""
    return pd.util.hash_array(values.astype(object), categorize=False)


def _hash_parts(table: pa.Table, key: str, n: int) -> np.ndarray:
    """Partition of each row: hash of ``key``, or of ``application_id`` where the key is null."""
    encoded = pc.dictionary_encode(table[key].combine_chunks())
    names = encoded.dictionary.to_numpy(zero_copy_only=False)
    parts = np.empty(len(table), dtype=np.int64)
    null = encoded.indices.is_null().to_numpy(zero_copy_only=False)
    codes = encoded.indices.fill_null(0).to_numpy()
    if len(names):
        parts[~null] = (_hash(names) % np.uint64(n)).astype(np.int64)[codes[~null]]
    if null.any():
        ids = table["application_id"].filter(pa.array(null)).to_numpy(zero_copy_only=False)
        parts[null] = (_hash(ids) % np.uint64(n)).astype(np.int64)
    return parts


def _split(table: pa.Table, parts: np.ndarray, n: int) -> list[pa.Table]:
    """``n`` tables: row ``i`` goes to ``parts[i]``; input order is kept within each."""
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(n + 1))
    return [table.take(pa.array(order[bounds[p] : bounds[p + 1]])) for p in range(n)]


def _read(path: str, schema: pa.Schema, where: pc.Expression | None) -> pa.Table:
    table = pq.read_table(path, schema=schema, filters=where)
    return as_table(table, schema)


def _filter(table: pa.Table, where: pc.Expression | None) -> pa.Table:
    return table if where is None else table.filter(where)


def _split_by_id(table: pa.Table, n: int) -> list[pa.Table]:
    return _split(table, _hash_parts(table, "application_id", n), n)


def _prepare(applications: list[pa.Table], labels: list[pa.Table]) -> pa.Table:
    """One application partition: ids unique as the builder keeps them, in its order, with
    each application's earliest confirmation in :data:`CONFIRMED`."""
    apps = pa.concat_tables(applications) if applications else APPLICATION_EVENTS.empty_table()
    apps = apps.take(pa.array(_in_order(apps))) if len(apps) else apps
    known = pa.concat_tables(labels) if labels else LABEL_EVENTS.empty_table()
    conf = confirmations(apps["application_id"], known)
    stamp = LABEL_EVENTS.field("confirmed_at").type
    column = pa.array(conf, pa.int64(), mask=conf < 0).cast(stamp)
    return apps.append_column(CONFIRMED, column)


def _time_range(table: pa.Table) -> tuple[int, int] | None:
    if not len(table):
        return None
    ts = table["applied_at"].cast(pa.int64())
    return int(pc.min(ts).as_py()), int(pc.max(ts).as_py())


def _split_by_key(table: pa.Table, key: str, n: int) -> list[pa.Table]:
    return _split(table, _hash_parts(table, key, n), n)


def _split_by_time(table: pa.Table, origin: int, block_us: int, n: int) -> list[pa.Table]:
    """Block ``j`` gets the rows applied in ``[s_j - 30 d, e_j)``: its own and its halo."""
    ts = table["applied_at"].cast(pa.int64()).to_numpy()
    first = (ts - origin) // block_us
    last = np.minimum((ts - origin + _HALO_US) // block_us, n - 1)
    return [table.filter(pa.array((first <= j) & (last >= j))) for j in range(n)]


def _labels_of(table: pa.Table) -> pa.Table:
    confirmed = table.filter(pc.is_valid(table[CONFIRMED]))
    return pa.table({"application_id": confirmed["application_id"], "confirmed_at": confirmed[CONFIRMED]})


def _build(
    pieces: list[pa.Table],
    shard: Shard,
    n_out: int,
    block: tuple[int, int] | None,
    listings: pa.Table | None = None,
) -> list[pd.DataFrame]:
    """The single-machine builder on one partition; rows split by ``application_id`` for the join.

    ``block`` is ``(start, end)`` in microseconds for the linked shard: the
    halo before ``start`` is read, only rows applied in ``[start, end)`` are kept.
    ``listings`` is the whole (effective) list, shared by every partition.
    """
    table = pa.concat_tables([p for p in pieces if len(p)]) if any(len(p) for p in pieces) else None
    if table is None:
        return [pd.DataFrame() for _ in range(n_out)]
    frame = build_features(table, _labels_of(table), listings=listings, features=shard.features)
    if block is not None:
        at = frame["applied_at"].to_numpy(dtype="datetime64[us]").astype(np.int64)
        frame = frame.loc[(at >= block[0]) & (at < block[1])]
    frame = frame.drop(columns="applied_at")
    ids = frame["application_id"].to_numpy(dtype=object)
    parts = (_hash(ids) % np.uint64(n_out)).astype(np.int64) if len(ids) else np.zeros(0, np.int64)
    return [frame.loc[parts == q] for q in range(n_out)]


def _join(prepared: pa.Table, pieces: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """One application partition's rows: id, applied_at and every feature, in registry order."""
    ids = prepared["application_id"].to_pandas()
    frame = pd.DataFrame({"application_id": ids, "applied_at": prepared["applied_at"].to_pandas()})
    columns: dict[str, np.ndarray] = {}
    index = pd.Index(ids)
    for piece in (p for p in pieces if len(p)):
        at = index.get_indexer(piece["application_id"])
        if (at < 0).any():
            raise RuntimeError("a partition returned an application it was not given")
        for name in piece.columns.drop("application_id"):
            columns.setdefault(name, np.full(len(frame), np.nan))[at] = piece[name].to_numpy(dtype=np.float64)
    missing = [n for n in names if n not in columns]
    if missing and len(frame):
        raise RuntimeError(f"no partition returned {missing[:3]}")
    block = np.column_stack([columns[n] for n in names]) if len(frame) else np.empty((0, len(names)))
    return pd.concat([frame, pd.DataFrame(block, columns=names)], axis=1)


# ---------------------------------------------------------------- the driver (runs on the client)


def _inputs(client: Client, source: Source, schema: pa.Schema, where: pc.Expression | None) -> list[Future]:
    """Futures of Arrow tables: workers read Parquet paths themselves; a table is scattered in slices."""
    if isinstance(source, pa.Table | pd.DataFrame):
        table = as_table(source, schema)
        n = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        step = max(1, -(-len(table) // n))
        slices = [table.slice(i, step) for i in range(0, max(1, len(table)), step)]
        scattered = client.scatter(slices, hash=False)
        return [client.submit(_filter, s, where, pure=False) for s in scattered]
    return [client.submit(_read, str(p), schema, where, pure=False) for p in source]


def _pick(client: Client, future: Future, i: int) -> Future:
    return client.submit(operator.getitem, future, i, pure=False)


def _shared_listings(client: Client, listings: pa.Table | pd.DataFrame | None) -> Future | None:
    """The listings that apply, sent to every worker once (None when there are none)."""
    if listings is None or len(listings) == 0:
        return None
    applying = effective_listings(as_table(listings, WATCHLIST_EVENTS))
    table = pa.Table.from_pandas(applying, preserve_index=False)
    return client.scatter(table, broadcast=True, hash=False)


def feature_partitions(
    client: Client,
    applications: Source,
    labels: Source,
    *,
    listings: pa.Table | pd.DataFrame | None = None,
    partitions: int | None = None,
    features: Sequence[Feature] | None = None,
    applications_where: pc.Expression | None = None,
    labels_where: pc.Expression | None = None,
    link_block_days: int | None = None,
) -> list[Future]:
    """Futures of the feature partitions, each a frame as :func:`build_features` returns for its rows.

    Parameters
    ----------
    client : distributed.Client
    applications, labels
        Events in :mod:`data.events` form: an Arrow table or DataFrame (scattered
        from here), or Parquet paths that the workers read (shared or object
        storage: every worker must reach them).
    listings : pyarrow.Table or pandas.DataFrame, optional
        The joint-punishment list as stored (:meth:`data.store.EventStore.watchlist`),
        read here and sent to every worker once; None: nobody is listed.
    partitions : int, optional
        Partitions per stage; default twice the workers.
    features : sequence of Feature, optional
        Default: every feature of the registry.
    applications_where, labels_where : pyarrow.compute.Expression, optional
        Row filters applied while reading (an ``as_of`` cut, a period's reach).
    link_block_days : int, optional
        Length of the linked group's time blocks; default the history's span
        over ``partitions``, at least 30 days (the halo is 30 days).

    Returns
    -------
    list of distributed.Future
        One per ``application_id`` partition: ``application_id``,
        ``applied_at`` and the features, in (applied_at, application_id) order.
    """
    from distributed import wait

    chosen = tuple(FEATURES if features is None else features)
    names = [f.name for f in chosen]
    workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    n = partitions or 2 * workers
    app_splits = [
        client.submit(_split_by_id, t, n, pure=False)
        for t in _inputs(client, applications, APPLICATION_EVENTS, applications_where)
    ]
    label_splits = [
        client.submit(_split_by_id, t, n, pure=False)
        for t in _inputs(client, labels, LABEL_EVENTS, labels_where)
    ]
    prepared = [
        client.submit(
            _prepare,
            [_pick(client, s, q) for s in app_splits],
            [_pick(client, s, q) for s in label_splits],
            pure=False,
        )
        for q in range(n)
    ]
    wait(prepared)
    del app_splits, label_splits
    ranges = [r for r in client.gather([client.submit(_time_range, p, pure=False) for p in prepared]) if r]
    shared = _shared_listings(client, listings)
    outputs: list[Future] = []
    for shard in plan(chosen):
        if shard.key == TIME:
            if not ranges:
                continue
            origin = min(r[0] for r in ranges)
            span = max(r[1] for r in ranges) - origin + 1
            days = link_block_days or max(LINK_WINDOW_DAYS, -(-span // (n * DAY_US)))
            block_us = days * DAY_US
            n_parts = int(-(-span // block_us))
            splits = [
                client.submit(_split_by_time, p, origin, block_us, n_parts, pure=False) for p in prepared
            ]
            blocks: list[tuple[int, int] | None] = [
                (origin + j * block_us, origin + (j + 1) * block_us) for j in range(n_parts)
            ]
        else:
            n_parts = n
            splits = [client.submit(_split_by_key, p, shard.key, n, pure=False) for p in prepared]
            blocks = [None] * n_parts
        built = [
            client.submit(
                _build, [_pick(client, s, j) for s in splits], shard, n, blocks[j], shared, pure=False
            )
            for j in range(n_parts)
        ]
        # One shard's copy of the events at a time: wait, then let its splits go.
        wait(built)
        del splits
        outputs.extend(built)
    return [
        client.submit(_join, prepared[q], [_pick(client, b, q) for b in outputs], names, pure=False)
        for q in range(n)
    ]


def build_features_distributed(
    applications: Source,
    labels: Source,
    *,
    client: Client,
    listings: pa.Table | pd.DataFrame | None = None,
    partitions: int | None = None,
    features: Sequence[Feature] | None = None,
    applications_where: pc.Expression | None = None,
    labels_where: pc.Expression | None = None,
    link_block_days: int | None = None,
) -> pd.DataFrame:
    """:func:`features.offline.build_features` on a Dask cluster, gathered into one frame.

    The same frame, value for value and in the same order; arguments as
    :func:`feature_partitions`.
    """
    futures = feature_partitions(
        client,
        applications,
        labels,
        listings=listings,
        partitions=partitions,
        features=features,
        applications_where=applications_where,
        labels_where=labels_where,
        link_block_days=link_block_days,
    )
    frames = client.gather(futures)
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["applied_at", "application_id"], kind="stable", ignore_index=True)
    return frame


def builder(client: Client, **options: Any) -> Callable[[pa.Table, pa.Table], pd.DataFrame]:
    """A ``build_features``-shaped callable that runs on ``client`` (for the training set)."""

    def build(
        applications: pa.Table,
        labels: pa.Table,
        *,
        listings: pa.Table | pd.DataFrame | None = None,
        progress: bool = False,
    ) -> pd.DataFrame:
        return build_features_distributed(applications, labels, client=client, listings=listings, **options)

    return build


@contextmanager
def dask_client(
    scheduler: str | None = None, *, workers: int = 2, memory_limit: str = "auto"
) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a local cluster started for the duration.

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://host:8786`` of an existing cluster, or a scheduler file
        (``*.json``); None starts a :class:`distributed.LocalCluster`.
    workers : int
        Worker processes of the local cluster (one thread each).
    memory_limit : str
        Per local worker (Dask spills to disk at 60 % of it, pauses at 80 %).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler_file=scheduler) if scheduler.endswith(".json") else Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
