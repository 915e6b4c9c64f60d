"""Bringing the sidecar's counts up to the decision record: only the decisions after its watermark.

Each run reads the record's decisions after the sidecar's watermark, chunk by chunk, and adds
their counts (:mod:`duanka.serving.monitor.counts`), so a run on a record that grew by ten
thousand decisions reads ten thousand, however long the record. The counts are started over
(:meth:`duanka.serving.monitor.sidecar.Sidecar.reset`) when they cannot be trusted to be this
record's: another layout, another record at the path, a record shorter than the watermark, or a
model whose reference was found only after its decisions had been counted without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from duanka.serving.monitor.attributes import StoreApplications, group_attributes
from duanka.serving.monitor.baselines import Baseline, BaselineResolver
from duanka.serving.monitor.counts import chunk_counts
from duanka.serving.monitor.record import DecisionRecord
from duanka.serving.monitor.sidecar import Sidecar

Progress = Callable[[int, int], None]
"""``(seqs read, seqs to read)``, called after each chunk."""


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did.

    Attributes
    ----------
    read : int
        Decisions read from the record this time (replays left out).
    watermark : int
        The last ``seq`` now counted.
    restarted : str
        Why the counts were started over ("" when they were not).
    baselines : dict of str to Baseline
        Each model's baseline, by booster.
    """

    read: int
    watermark: int
    restarted: str
    baselines: dict[str, Baseline] = field(default_factory=dict)


def _settled_again(sidecar: Sidecar, resolve: BaselineResolver) -> tuple[dict[str, Baseline], bool]:
    """The cached baselines, the unsettled ones asked again; whether a reference was found late."""
    baselines = sidecar.baselines()
    late = False
    for booster, baseline in list(baselines.items()):
        if baseline.settled:
            continue
        again = resolve(booster, baseline.model_version)
        if again.settled:
            sidecar.keep_baseline(again)
            baselines[booster] = again
            late |= again.reference is not None
    return baselines, late


def refresh(
    record: DecisionRecord,
    sidecar: Sidecar,
    resolve: BaselineResolver,
    *,
    store: StoreApplications | None = None,
    progress: Progress | None = None,
) -> Refreshed:
    """Count the record's decisions after the sidecar's watermark.

    Parameters
    ----------
    record : DecisionRecord
        Open read-only.
    sidecar : Sidecar
    resolve : BaselineResolver
        Asked once for each model not yet known to the sidecar (and again while unsettled).
    store : StoreApplications, optional
        Where batch decisions' origin and gender are found.
    progress : callable, optional
        Told after each chunk.

    Returns
    -------
    Refreshed
    """
    identity, head = record.identity(), record.head()
    restarted = ""
    if not sidecar.current_for(identity):
        restarted = "first count, or the layout or the record changed"
    elif sidecar.watermark > head:
        restarted = "the record is shorter than the counts"
    baselines, late = _settled_again(sidecar, resolve)
    if late and not restarted:
        restarted = "a model's reference was found after its decisions had been counted"
    if restarted:
        sidecar.reset(identity)
    read, total = 0, head - sidecar.watermark
    if progress is not None:
        progress(0, total)
    while (after := sidecar.watermark) < head:
        for booster, version in record.models_after(after):
            if booster not in baselines:
                baselines[booster] = resolve(booster, version)
                sidecar.keep_baseline(baselines[booster])
        for chunk in record.chunks(after, head):
            frame = chunk.frame
            groups = group_attributes(
                frame["application_id"].tolist(), chunk.X, record.features, frame, store
            )
            counts, decided = chunk_counts(chunk, record.features, groups, baselines)
            if not sidecar.add(counts, decided, after=after, watermark=chunk.last_seq):
                break  # another run counted past us: carry on from its watermark
            after = chunk.last_seq
            read += len(frame)
            if progress is not None:
                progress(total - (head - after), total)
    return Refreshed(read, sidecar.watermark, restarted, baselines)
