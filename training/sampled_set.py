"""The training set built and sampled on a Dask cluster: the client gets only what a run uses.

``duanka train --engine dask`` would otherwise gather every application's features
(about 540 bytes each) before the fit downsampled them. Here each feature partition,
on its worker, adds the label, its maturity and the watchlist refusal exactly as
:func:`duanka.features.training_set.build_training_set` does, assigns the out-of-time part
and keeps:

- of the training months, every confirmed mule and the legitimate applications whose
  seeded hash of ``application_id`` (:func:`uniform`) falls below ``negative_rate``,
  weighted ``1 / negative_rate``; the hash makes the choice independent of how the
  cluster is partitioned;
- the validation and test months whole (early stopping, calibration, evaluation).

What the run reports about the whole set comes back as sums: the summary counts, the
rows and mules of each part, monthly counts and the confirmed applications' ids (for
label delays). The input hashes are the single machine's (sha256 of the sorted row
digests), computed without a global sort: digests are bucketed by their first
character, each bucket is sorted on a worker, and the buckets are streamed in order
into one sha256 here.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from duanka.data.config import default_of
from duanka.data.events import APPLICATION_EVENTS, LABEL_EVENTS
from duanka.features.distributed import (
    CONFIRMED,
    BuildOptions,
    Source,
    _write_pieces,
    feature_partitions,
    scratch_folder,
)
from duanka.features.offline import as_table
from duanka.features.training_set import (
    TrainingSet,
    TrainingSummary,
    _digest,
    _listed_at_applied,
    add_labels,
    as_of_timestamp,
    known_at,
    summarise,
)
from duanka.training.bands import BAND_WINDOW_DAYS
from duanka.training.monthly import add_counts, month_counts
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit

if TYPE_CHECKING:
    from distributed import Client

PARTS = (TRAIN, VALID, TEST)


def uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A number in ``[0, 1)`` per application id: the same in every process and partitioning."""
    key = f"duanka-{seed % 10**9:09d}"  # pandas' hash key: 16 characters
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=key, categorize=False)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(2**53)


@dataclass(frozen=True)
class SampledTrainingSet:
    """A training set whose training months are sampled, with the whole set's counts.

    Attributes
    ----------
    training_set : TrainingSet
        ``frame``: the mature applications of the three parts that the run uses and the
        immature ones (those of the last ``recent_days`` whole, the others sampled like the
        training months), with ``sampled`` (True where the rows were downsampled here),
        ``weight`` (``1 / negative_rate`` for a sampled legitimate application of the
        training months, else 1) and ``uniform`` (True for a uniform sample of the
        training months at ``negative_rate``: what the report's training reference
        reads); ``refused``: the mature watchlist-refused applications of the
        validation and test months. ``summary`` and ``inputs_sha256`` are those of the
        whole set, as on one machine.
    negative_rate : float
    part_counts : dict
        Part name to ``(rows, confirmed mules)`` of the whole part, before sampling.
    months : pandas.DataFrame
        :func:`duanka.training.monthly.month_counts` of every application.
    confirmed : pandas.DataFrame
        ``application_id`` and ``applied_at`` of the applications confirmed by ``as_of``.
    """

    training_set: TrainingSet
    negative_rate: float
    part_counts: dict[str, tuple[int, int]]
    months: pd.DataFrame
    confirmed: pd.DataFrame


@dataclass(frozen=True)
class _Sampled:
    rows: pd.DataFrame
    refused: pd.DataFrame
    summary: dict[str, int]
    part_counts: dict[str, tuple[int, int]]
    months: pd.DataFrame
    confirmed: pd.DataFrame


def _sample_partition(
    path: str,
    as_of: pd.Timestamp,
    outcome_window_days: int,
    listings: pa.Table,
    split: TimeSplit,
    negative_rate: float,
    seed: int,
    recent_from: pd.Timestamp,
) -> _Sampled:
    """One feature partition, labelled, refused by rule where listed, split and sampled (on a worker)."""
    frame = pd.read_parquet(path)
    confirmed_at = frame.pop(CONFIRMED)
    applicants = pa.table(
        {"application_id": frame["application_id"].to_numpy(), "applicant_key": frame.pop("applicant_key")}
    )
    known = confirmed_at.notna().to_numpy()
    confirmed = np.where(known, confirmed_at.to_numpy(dtype="datetime64[us]").astype(np.int64), -1)
    add_labels(frame, confirmed, as_of, outcome_window_days)
    by_rule = _listed_at_applied(frame, applicants, listings)
    kept = frame.loc[~by_rule]
    mature = kept.loc[kept["label_mature"].to_numpy()]
    part = split.assign(mature["applied_at"]).to_numpy()
    label = mature["label"].to_numpy()
    counts = {name: (int((part == name).sum()), int(label[part == name].sum())) for name in PARTS}
    chosen = uniform(mature["application_id"].to_numpy(), seed) < negative_rate
    training = part == TRAIN
    keep = (training & ((label == 1) | chosen)) | (part == VALID) | (part == TEST)
    rows = mature.loc[keep].copy()
    rows["weight"] = np.where(training[keep] & (label[keep] == 0), 1.0 / negative_rate, 1.0)
    rows["uniform"] = training[keep] & chosen[keep]
    rows["sampled"] = training[keep]
    # The immature applications: the shipped refit learns from them under a label-delay policy
    # (sampled like the training months), and the latest ones come whole, since the band cuts
    # are quantiles of their scores.
    immature = kept.loc[~kept["label_mature"].to_numpy()]
    young_label = immature["label"].to_numpy()
    latest = (immature["applied_at"] >= recent_from).to_numpy()
    drawn = uniform(immature["application_id"].to_numpy(), seed) < negative_rate
    take = latest | (young_label == 1) | drawn
    young = immature.loc[take].copy()
    young["weight"] = np.where(~latest[take] & (young_label[take] == 0), 1.0 / negative_rate, 1.0)
    young["uniform"] = False
    young["sampled"] = ~latest[take]
    rows = pd.concat([rows, young])
    refused = frame.loc[by_rule & frame["label_mature"].to_numpy()]
    refused = refused.loc[split.assign(refused["applied_at"]).isin([VALID, TEST]).to_numpy()]
    return _Sampled(
        rows=rows,
        refused=refused,
        summary=asdict(summarise(kept, int(by_rule.sum()))),
        part_counts=counts,
        months=month_counts(kept),
        confirmed=kept.loc[known[~by_rule], ["application_id", "applied_at"]],
    )


def _digest_buckets(path: str, where: pc.Expression | None, stem: str) -> dict[int, str]:
    """The row digests of one part, written in buckets by their first character (its code point)."""
    table = pq.read_table(path, columns=["row_digest"], filters=where)
    digests = table["row_digest"].combine_chunks()
    first = pc.utf8_slice_codeunits(digests, 0, 1).to_numpy(zero_copy_only=False)
    codes = np.array([ord(c) if c else -1 for c in first], dtype=np.int64)
    buckets = np.unique(codes)
    paths = _write_pieces([table.filter(pa.array(codes == b)) for b in buckets], stem)
    return {int(b): p for b, p in zip(buckets, paths, strict=True) if p}


def _sorted_bucket(paths: list[str]) -> bytes:
    digests = pa.concat_tables([pq.read_table(p) for p in paths])["row_digest"]
    return "\n".join(digests.take(pc.sort_indices(digests)).to_pylist()).encode("utf-8")


def _cluster_digest(client: Client, paths: list[str], where: pc.Expression | None, folder: str) -> str:
    """:func:`duanka.features.training_set._digest` of the parts' rows, sorted one bucket at a time."""
    found = client.gather(
        [
            client.submit(_digest_buckets, path, where, f"{folder}/digests/{i:05d}", pure=False)
            for i, path in enumerate(paths)
        ]
    )
    by_bucket: dict[int, list[str]] = {}
    for buckets in found:
        for bucket, path in buckets.items():
            by_bucket.setdefault(bucket, []).append(path)
    futures = [client.submit(_sorted_bucket, by_bucket[b], pure=False) for b in sorted(by_bucket)]
    sha = hashlib.sha256()
    for i, future in enumerate(futures):
        sha.update(b"\n" if i else b"")
        sha.update(future.result())
        future.release()
    return sha.hexdigest()


def _read_here(source: Source, schema: pa.Schema) -> pa.Table:
    if isinstance(source, pa.Table | pd.DataFrame):
        return as_table(source, schema)
    tables = [pq.read_table(str(p), schema=schema) for p in source]
    return as_table(pa.concat_tables(tables), schema) if tables else schema.empty_table()


def build_sampled_training_set(
    client: Client,
    applications: Source,
    labels: Source,
    *,
    as_of: pd.Timestamp,
    split: TimeSplit,
    negative_rate: float,
    seed: int,
    listings: pa.Table | pd.DataFrame | None = None,
    outcome_window_days: int = default_of("outcome_window_days"),
    scratch: str | Path | None = None,
    partitions: int | None = None,
    recent_days: int = BAND_WINDOW_DAYS,
) -> SampledTrainingSet:
    """The training set as of ``as_of``, built on the cluster and sampled there.

    Parameters
    ----------
    client : distributed.Client
    applications, labels
        As :func:`duanka.features.distributed.feature_partitions` takes them: Parquet paths the
        workers read (with the ``as_of`` cut pushed into the read), or tables. Labels
        are also read here: they are few, and their hash is the fingerprint's.
    as_of, listings, outcome_window_days
        As :func:`duanka.features.training_set.build_training_set`.
    split : training.split.TimeSplit
        The run's out-of-time parts.
    negative_rate : float
        Share of the training months' legitimate applications kept, in ``(0, 1]``.
    seed : int
        Seeds the choice (:func:`uniform`).
    scratch, partitions
        As :func:`duanka.features.distributed.build_features_distributed`.
    recent_days : int
        The immature applications of these last days before ``as_of`` come back whole
        (unlabelled): the shipped model's band cuts are read off them (:mod:`duanka.training.fit`).
    """
    if not 0 < negative_rate <= 1:
        raise ValueError("negative_rate must be in (0, 1]")
    at = as_of_timestamp(as_of)
    cut = pa.scalar(at.to_pydatetime(), pa.timestamp("us", tz="UTC"))
    known, listed = known_at(_read_here(labels, LABEL_EVENTS), listings, cut)
    with scratch_folder(client, scratch) as folder:
        if isinstance(applications, pa.Table | pd.DataFrame):  # small enough to be here already
            source: Source = as_table(applications, APPLICATION_EVENTS)
            source = source.filter(pc.less_equal(source["applied_at"], cut))
            where, digest = None, _digest(source)
        else:
            source = [str(p) for p in applications]
            where = pc.field("applied_at") <= cut
            digest = _cluster_digest(client, source, where, folder)
        paths = feature_partitions(
            client,
            source,
            known,
            scratch=folder,
            listings=listed,
            options=BuildOptions(partitions=partitions, applications_where=where),
            carry=(CONFIRMED, "applicant_key"),
        )
        shared = client.scatter(listed, broadcast=True, hash=False)
        futures = [
            client.submit(
                _sample_partition,
                p,
                at,
                outcome_window_days,
                shared,
                split,
                negative_rate,
                seed,
                at - pd.Timedelta(days=recent_days),
                pure=False,
            )
            for p in paths
        ]
        sampled: list[_Sampled] = client.gather(futures)

    def together(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frame = pd.concat(frames, ignore_index=True)
        return frame.sort_values(["applied_at", "application_id"], kind="stable", ignore_index=True)

    summary = TrainingSummary(**{k: sum(s.summary[k] for s in sampled) for k in sampled[0].summary})
    training_set = TrainingSet(
        frame=together([s.rows for s in sampled]),
        summary=summary,
        as_of=at,
        outcome_window_days=outcome_window_days,
        inputs_sha256={"applications": digest, "labels": _digest(known), "watchlist": _digest(listed)},
        refused=together([s.refused for s in sampled]),
    )
    return SampledTrainingSet(
        training_set=training_set,
        negative_rate=negative_rate,
        part_counts={
            n: (sum(s.part_counts[n][0] for s in sampled), sum(s.part_counts[n][1] for s in sampled))
            for n in PARTS
        },
        months=add_counts([s.months for s in sampled]),
        confirmed=together([s.confirmed for s in sampled]),
    )
