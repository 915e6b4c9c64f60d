"""Scale-out on Dask: the single-machine builder, run per partition, joined by application_id.

Nothing here computes a feature. :func:`duanka.features.offline.build_features` runs
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
(:func:`duanka.data.watchlist.effective_listings`) and sent to every worker once; each
partition's builder reads its applicants' listings from it, as the single
machine does.

The tasks are plain :mod:`distributed` futures (no dask.dataframe
conversion, so types stay exactly those of the event schema). Each stage
writes its partitions as Parquet to a scratch folder every worker reaches
and returns their paths; the next stage reads them and the driver removes
them once read. So a task holds one partition, not the cluster's share of
the bank, and the bank's size is bounded by the scratch folder's disk.
Shards run one after another, so one re-partitioned copy of the events is
on disk at a time. ``dask`` is imported only inside functions.

One job, the Dask driver, in one module past 500 lines: its stages share the partitioning
argument above and the scratch-folder protocol, and reading them side by side is how a
reviewer checks that every window stays exact.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
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

from duanka.data.events import APPLICATION_EVENTS, LABEL_EVENTS, WATCHLIST_EVENTS
from duanka.data.watchlist import effective_listings
from duanka.features.declaration import Entity, Feature
from duanka.features.offline import _in_order, as_table, build_features, confirmations
from duanka.features.registry import FEATURES, LINK_WINDOW_DAYS
from duanka.features.values import DAY_US

if TYPE_CHECKING:
    from distributed import Client, Future

CONFIRMED = "confirmed_at"  # carried with each application: its earliest confirmation, or null
PREPARED = APPLICATION_EVENTS.append(pa.field(CONFIRMED, LABEL_EVENTS.field("confirmed_at").type))
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


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How a feature build on the cluster is cut up and what it reads; the defaults build
    every feature of every event given, with partitions and link blocks sized to the cluster.

    Attributes
    ----------
    partitions : int, optional
        Partitions per stage; default twice the workers.
    features : tuple of Feature, optional
        Only these, in this order; default every feature of the registry.
    applications_where, labels_where : pyarrow.compute.Expression, optional
        Row filters applied while reading (an ``as_of`` cut, a period's reach).
    link_block_days : int, optional
        Length of the linked group's time blocks; default the history's span
        over ``partitions``, at least 30 days (the halo is 30 days).
    """

    partitions: int | None = None
    features: tuple[Feature, ...] | None = None
    applications_where: pc.Expression | None = None
    labels_where: pc.Expression | None = None
    link_block_days: int | None = None


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
#
# Every stage reads its inputs from Parquet in the scratch folder and writes its outputs there,
# returning paths: a task holds one partition in memory, never the cluster's whole share of the
# events, so the bank's size is bounded by the scratch folder's disk, not the workers' memory.


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


def _write(table: pa.Table, path: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def _write_pieces(pieces: Sequence[pa.Table | pd.DataFrame], stem: str) -> list[str | None]:
    """Piece ``j`` to ``{stem}-{j}.parquet``; None where a piece is empty (nothing is written)."""
    paths: list[str | None] = []
    for j, piece in enumerate(pieces):
        if not len(piece):
            paths.append(None)
            continue
        table = piece if isinstance(piece, pa.Table) else pa.Table.from_pandas(piece, preserve_index=False)
        paths.append(_write(table, f"{stem}-{j:05d}.parquet"))
    return paths


def _read_pieces(paths: Sequence[str | None], schema: pa.Schema) -> pa.Table:
    found = [pq.read_table(p, schema=schema) for p in paths if p]
    return pa.concat_tables(found) if found else schema.empty_table()


def _remove(paths: Sequence[str | None]) -> None:
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)


def _split_input(item: str | pa.Table, schema: pa.Schema, where: pc.Expression | None, n: int, stem: str):
    """One input (a Parquet path, or a scattered slice) filtered and split by ``application_id``."""
    if isinstance(item, str):
        table = as_table(pq.read_table(item, schema=schema, filters=where), schema)
    else:
        table = item if where is None else item.filter(where)
    return _write_pieces(_split(table, _hash_parts(table, "application_id", n), n), stem)


def _prepare(applications: list[str | None], labels: list[str | None], path: str):
    """One application partition: ids unique as the builder keeps them, in its order, with
    each application's earliest confirmation in :data:`CONFIRMED`; written to ``path``.

    Returns the path and the partition's first and last ``applied_at`` (None when empty).
    """
    apps = _read_pieces(applications, APPLICATION_EVENTS)
    apps = apps.take(pa.array(_in_order(apps))) if len(apps) else apps
    known = _read_pieces(labels, LABEL_EVENTS)
    conf = confirmations(apps["application_id"], known)
    column = pa.array(conf, pa.int64(), mask=conf < 0).cast(PREPARED.field(CONFIRMED).type)
    prepared = apps.append_column(PREPARED.field(CONFIRMED), column)
    return _write(prepared, path), _time_range(prepared)


def _time_range(table: pa.Table) -> tuple[int, int] | None:
    if not len(table):
        return None
    ts = table["applied_at"].cast(pa.int64())
    return int(pc.min(ts).as_py()), int(pc.max(ts).as_py())


def _split_by_key(path: str, key: str, n: int, stem: str) -> list[str | None]:
    table = pq.read_table(path, schema=PREPARED)
    return _write_pieces(_split(table, _hash_parts(table, key, n), n), stem)


def _split_by_time(path: str, origin: int, block_us: int, n: int, stem: str) -> list[str | None]:
    """Block ``j`` gets the rows applied in ``[s_j - 30 d, e_j)``: its own and its halo."""
    table = pq.read_table(path, schema=PREPARED)
    ts = table["applied_at"].cast(pa.int64()).to_numpy()
    first = (ts - origin) // block_us
    last = np.minimum((ts - origin + _HALO_US) // block_us, n - 1)
    return _write_pieces([table.filter(pa.array((first <= j) & (last >= j))) for j in range(n)], stem)


def _labels_of(table: pa.Table) -> pa.Table:
    confirmed = table.filter(pc.is_valid(table[CONFIRMED]))
    return pa.table({"application_id": confirmed["application_id"], "confirmed_at": confirmed[CONFIRMED]})


def _build(
    pieces: list[str | None],
    shard: Shard,
    n_out: int,
    block: tuple[int, int] | None,
    listings: pa.Table | None,
    stem: str,
) -> list[str | None]:
    """The single-machine builder on one partition; rows split by ``application_id`` for the join.

    ``block`` is ``(start, end)`` in microseconds for the linked shard: the
    halo before ``start`` is read, only rows applied in ``[start, end)`` are kept.
    ``listings`` is the whole (effective) list, shared by every partition.
    """
    if not any(pieces):
        return [None] * n_out
    table = _read_pieces(pieces, PREPARED)
    frame = build_features(table, _labels_of(table), listings=listings, features=shard.features)
    if block is not None:
        at = frame["applied_at"].to_numpy(dtype="datetime64[us]").astype(np.int64)
        frame = frame.loc[(at >= block[0]) & (at < block[1])]
    frame = frame.drop(columns="applied_at")
    ids = frame["application_id"].to_numpy(dtype=object)
    parts = (_hash(ids) % np.uint64(n_out)).astype(np.int64) if len(ids) else np.zeros(0, np.int64)
    return _write_pieces([frame.loc[parts == q] for q in range(n_out)], stem)


def _join(prepared: str, pieces: list[str | None], names: list[str], carry: list[str], path: str) -> str:
    """One application partition's rows: id, applied_at and every feature, in registry order,
    then the ``carry`` columns of the prepared partition."""
    own = pq.read_table(prepared, columns=["application_id", "applied_at", *carry])
    ids = own["application_id"].to_pandas()
    frame = pd.DataFrame({"application_id": ids, "applied_at": own["applied_at"].to_pandas()})
    columns: dict[str, np.ndarray] = {}
    index = pd.Index(ids)
    for piece in (pd.read_parquet(p) for p in pieces if p):
        at = index.get_indexer(piece["application_id"])
        if (at < 0).any():
            raise RuntimeError("a partition returned an application it was not given")
        for name in piece.columns.drop("application_id"):
            columns.setdefault(name, np.full(len(frame), np.nan))[at] = piece[name].to_numpy(dtype=np.float64)
    missing = [n for n in names if n not in columns]
    if missing and len(frame):
        raise RuntimeError(f"no partition returned {missing[:3]}")
    block = np.column_stack([columns[n] for n in names]) if len(frame) else np.empty((0, len(names)))
    frame = pd.concat([frame, pd.DataFrame(block, columns=names)], axis=1)
    for name in carry:
        frame[name] = own[name].to_pandas()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, compression="zstd")
    return path


def _remove_tree(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the driver (runs on the client)


def _inputs(client: Client, source: Source, schema: pa.Schema) -> list[str | Future]:
    """Parquet paths (the workers read them), or a table scattered in one slice per worker."""
    if isinstance(source, pa.Table | pd.DataFrame):
        table = as_table(source, schema)
        n = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        step = max(1, -(-len(table) // n))
        slices = [table.slice(i, step) for i in range(0, max(1, len(table)), step)]
        return client.scatter(slices, hash=False)
    return [str(p) for p in source]


def _shared_listings(client: Client, listings: pa.Table | pd.DataFrame | None) -> Future | None:
    """The listings that apply, sent to every worker once (None when there are none)."""
    if listings is None or len(listings) == 0:
        return None
    applying = effective_listings(as_table(listings, WATCHLIST_EVENTS))
    table = pa.Table.from_pandas(applying, preserve_index=False)
    return client.scatter(table, broadcast=True, hash=False)


def _run(client: Client, function: Callable[..., Any], *calls: tuple) -> list[Any]:
    """One stage: ``function(*args)`` for each argument tuple, on the cluster; their results."""
    futures = [client.submit(function, *args, pure=False) for args in calls]
    return client.gather(futures)


@contextmanager
def scratch_folder(client: Client, root: str | Path | None = None) -> Iterator[str]:
    """A fresh folder for one run's stages under ``root``, removed (by a worker) afterwards.

    ``root`` must be a path every worker reaches at the same name (a shared file system);
    None: the system's temporary folder, which only a cluster on this machine shares.
    """
    folder = str(Path(root or tempfile.gettempdir()) / f"duanka-dask-{uuid.uuid4().hex[:12]}")
    try:
        yield folder
    finally:
        client.submit(_remove_tree, folder, pure=False).result()


def feature_partitions(
    client: Client,
    applications: Source,
    labels: Source,
    *,
    scratch: str | Path,
    listings: pa.Table | pd.DataFrame | None = None,
    options: BuildOptions | None = None,
    carry: Sequence[str] = (),
) -> list[str]:
    """The feature partitions, written as Parquet under ``scratch``, each a frame as
    :func:`build_features` returns for its rows.

    Parameters
    ----------
    client : distributed.Client
    applications, labels
        Events in :mod:`duanka.data.events` form: an Arrow table or DataFrame (scattered
        from here), or Parquet paths that the workers read (shared or object
        storage: every worker must reach them).
    scratch : str or path
        A folder every worker reaches (:func:`scratch_folder`): each stage's
        partitions are written there and removed once the next stage has read
        them; the feature partitions stay, under ``scratch/features``.
    listings : pyarrow.Table or pandas.DataFrame, optional
        The joint-punishment list as stored (:meth:`duanka.data.store.EventStore.watchlist`),
        read here and sent to every worker once; None: nobody is listed.
    options : BuildOptions, optional
        Partitions, features, read filters, link blocks; default :class:`BuildOptions`'s.
    carry : sequence of str
        Columns of the prepared applications to add after the features: any
        event column, or :data:`CONFIRMED` (the earliest confirmation read).

    Returns
    -------
    list of str
        One Parquet path per ``application_id`` partition: ``application_id``,
        ``applied_at``, the features and ``carry``, in (applied_at, application_id) order.
    """
    unknown = [c for c in carry if c not in PREPARED.names]
    if unknown:
        raise ValueError(f"cannot carry {unknown}: not a column of the prepared applications")
    options = options or BuildOptions()
    chosen = FEATURES if options.features is None else options.features
    names = [f.name for f in chosen]
    workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    n = options.partitions or 2 * workers
    root = str(scratch)
    by_id = {
        kind: _run(
            client,
            _split_input,
            *(
                (item, schema, where, n, f"{root}/by-id/{kind}-{i:05d}")
                for i, item in enumerate(_inputs(client, source, schema))
            ),
        )
        for kind, source, schema, where in (
            ("applications", applications, APPLICATION_EVENTS, options.applications_where),
            ("labels", labels, LABEL_EVENTS, options.labels_where),
        )
    }
    stage = _run(
        client,
        _prepare,
        *(
            (
                [s[q] for s in by_id["applications"]],
                [s[q] for s in by_id["labels"]],
                f"{root}/prepared/part-{q:05d}.parquet",
            )
            for q in range(n)
        ),
    )
    _run(client, _remove, *((s,) for split in by_id.values() for s in split))
    prepared = [path for path, _ in stage]
    ranges = [r for _, r in stage if r]
    shared = _shared_listings(client, listings)
    built: list[list[str | None]] = []
    for k, shard in enumerate(plan(chosen)):
        folder = f"{root}/shard-{k:02d}"
        if shard.key == TIME:
            if not ranges:
                continue
            origin = min(r[0] for r in ranges)
            span = max(r[1] for r in ranges) - origin + 1
            days = options.link_block_days or max(LINK_WINDOW_DAYS, -(-span // (n * DAY_US)))
            block_us = days * DAY_US
            n_parts = int(-(-span // block_us))
            splits = _run(
                client,
                _split_by_time,
                *((p, origin, block_us, n_parts, f"{folder}/split/{q:05d}") for q, p in enumerate(prepared)),
            )
            blocks: list[tuple[int, int] | None] = [
                (origin + j * block_us, origin + (j + 1) * block_us) for j in range(n_parts)
            ]
        else:
            n_parts = n
            splits = _run(
                client,
                _split_by_key,
                *((p, shard.key, n, f"{folder}/split/{q:05d}") for q, p in enumerate(prepared)),
            )
            blocks = [None] * n_parts
        built.extend(
            _run(
                client,
                _build,
                *(
                    ([s[j] for s in splits], shard, n, blocks[j], shared, f"{folder}/built/{j:05d}")
                    for j in range(n_parts)
                ),
            )
        )
        # One shard's copy of the events at a time.
        _run(client, _remove, *((s,) for s in splits))
    joined = _run(
        client,
        _join,
        *(
            (prepared[q], [b[q] for b in built], names, list(carry), f"{root}/features/part-{q:05d}.parquet")
            for q in range(n)
        ),
    )
    _run(client, _remove, (prepared,), *((b,) for b in built))
    return joined


def build_features_distributed(
    applications: Source,
    labels: Source,
    *,
    client: Client,
    scratch: str | Path | None = None,
    listings: pa.Table | pd.DataFrame | None = None,
    options: BuildOptions | None = None,
) -> pd.DataFrame:
    """:func:`duanka.features.offline.build_features` on a Dask cluster, gathered into one frame.

    The same frame, value for value and in the same order. ``scratch`` is the
    root of the run's stage folder (:func:`scratch_folder`); the other arguments
    as :func:`feature_partitions`.
    """
    with scratch_folder(client, scratch) as folder:
        paths = feature_partitions(
            client,
            applications,
            labels,
            scratch=folder,
            listings=listings,
            options=options,
        )
        frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    return frame.sort_values(["applied_at", "application_id"], kind="stable", ignore_index=True)


def builder(
    client: Client, options: BuildOptions | None = None, *, scratch: str | Path | None = None
) -> Callable[[pa.Table, pa.Table], pd.DataFrame]:
    """A ``build_features``-shaped callable that runs on ``client`` (for the training set).

    ``options`` and ``scratch`` as :func:`build_features_distributed` takes them.
    """

    def build(
        applications: pa.Table,
        labels: pa.Table,
        *,
        listings: pa.Table | pd.DataFrame | None = None,
        progress: bool = False,
    ) -> pd.DataFrame:
        return build_features_distributed(
            applications, labels, client=client, scratch=scratch, listings=listings, options=options
        )

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
