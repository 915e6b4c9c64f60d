"""Training sets: point-in-time features, outcome labels and their maturity, as of a date.

Everything is seen from ``as_of``: applications applied after it and
confirmations that arrived after it do not exist. An application is labelled
1 when it was confirmed as a mule within the outcome window (``confirmed_at -
applied_at <= window``) and by ``as_of``. It is *mature* once its whole
window has passed (``applied_at + window <= as_of``): only then is a 0 a
negative. Immature rows stay in the frame, marked, so a report can count
them; training leaves them out.

An application whose applicant was on the joint-punishment list at its
``applied_at`` is refused by rule (:mod:`duanka.serving.rules`), never by the model,
and it is never confirmed (the account is not opened): as a row it would only
teach the model a false negative. Such rows are taken out of the frame,
counted (``rule_refused``) and kept aside (:attr:`TrainingSet.refused`) for the
report's rule counts. They still happened, so they stay in every other
application's windows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.config import default_of
from duanka.data.events import APPLICATION_EVENTS, LABEL_EVENTS, WATCHLIST_EVENTS
from duanka.data.watchlist import Watchlist
from duanka.features.offline import _in_order, as_table, build_features, confirmations
from duanka.features.registry import FEATURE_NAMES, FEATURE_SET_VERSION, MODEL_FEATURES
from duanka.features.values import DAY_US


@dataclass(frozen=True)
class TrainingSummary:
    rows: int
    mature: int
    immature: int
    positives: int  # mature rows labelled 1: what training learns from
    immature_positives: int  # confirmed early, window still open: reported, not trained on
    rule_refused: int = 0  # listed at applied_at: decided by the watchlist rule, not in the frame


@dataclass(frozen=True)
class TrainingSet:
    """Features, labels and maturity per application, and where they came from.

    ``frame`` has ``application_id``, ``applied_at``, every feature of the
    registry, ``label`` (0/1) and ``label_mature`` (bool). ``refused`` has the
    same columns for the applications the watchlist rule refused at their
    ``applied_at``: out of the frame, for the report's rule counts only.
    """

    frame: pd.DataFrame
    summary: TrainingSummary
    as_of: pd.Timestamp
    outcome_window_days: int
    inputs_sha256: dict[str, str]
    refused: pd.DataFrame = field(default_factory=pd.DataFrame)

    def mature(self) -> pd.DataFrame:
        """The rows a model may be trained and evaluated on."""
        return self.frame[self.frame["label_mature"]]


def as_of_timestamp(as_of: pd.Timestamp | str) -> pd.Timestamp:
    """As a UTC timestamp; a naive one is Beijing time, as the input contract fixes."""
    from duanka.data.config import SHANGHAI

    at = pd.Timestamp(as_of)
    if at.tzinfo is None:
        at = at.tz_localize(SHANGHAI)
    return at.tz_convert("UTC")


def _digest(table: pa.Table) -> str:
    """sha256 of the rows' digests in sorted order: the same rows give the same hash."""
    digests = pc.sort_indices(table["row_digest"])
    ordered = table["row_digest"].take(digests).to_pylist()
    return hashlib.sha256("\n".join(ordered).encode("utf-8")).hexdigest()


def _applicants(applications: pa.Table) -> pa.Table:
    """Application id and applicant of each application as the builder keeps it (first in time order).

    Arrow, not pandas: 10M short strings as Python objects would cost more than the table.
    """
    return applications.select(["application_id", "applicant_key"]).take(pa.array(_in_order(applications)))


def _listed_at_applied(frame: pd.DataFrame, applicants: pa.Table, listings: pa.Table) -> np.ndarray:
    """Per row of ``frame``, whether its applicant was listed at its ``applied_at``.

    The serving rule itself (:meth:`duanka.data.watchlist.Watchlist.listings_for`), so training
    leaves out exactly what serving would refuse. ``applicants`` comes from :func:`_applicants`.
    """
    watchlist = Watchlist(listings)
    if len(watchlist) == 0 or frame.empty:
        return np.zeros(len(frame), dtype=bool)
    applicant = pd.Series(
        applicants["applicant_key"].to_numpy(zero_copy_only=False),
        index=applicants["application_id"].to_numpy(zero_copy_only=False),
    )
    keys = frame["application_id"].map(applicant).reset_index(drop=True)
    found = watchlist.listings_for(keys, frame["applied_at"].reset_index(drop=True))
    return found["source"].notna().to_numpy()


def known_at(
    labels: pa.Table | pd.DataFrame, listings: pa.Table | pd.DataFrame | None, cut: pa.Scalar
) -> tuple[pa.Table, pa.Table]:
    """The confirmations and joint-punishment listings known at ``cut`` (the run's ``as_of``)."""
    known = as_table(labels, LABEL_EVENTS)
    known = known.filter(pc.less_equal(known["confirmed_at"], cut))
    # A listing that starts after as_of reaches no application up to it (removals of earlier
    # listings share their listed_at, so they stay).
    listed = WATCHLIST_EVENTS.empty_table() if listings is None else as_table(listings, WATCHLIST_EVENTS)
    return known, listed.filter(pc.less_equal(listed["listed_at"], cut))


def add_labels(
    frame: pd.DataFrame, confirmed: np.ndarray, as_of: pd.Timestamp, outcome_window_days: int
) -> None:
    """Add ``label`` and ``label_mature`` to ``frame`` in place.

    ``confirmed`` holds each row's earliest confirmation in UTC microseconds, or -1 where none
    is known: the label is 1 when it came within the outcome window of opening, and mature
    when the window had closed by ``as_of``.
    """
    applied = frame["applied_at"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    window = outcome_window_days * DAY_US
    frame["label"] = ((confirmed >= 0) & (confirmed - applied <= window)).astype(np.int8)
    frame["label_mature"] = applied + window <= as_of.value // 1_000


def summarise(frame: pd.DataFrame, rule_refused: int) -> TrainingSummary:
    """The counts of a labelled frame whose watchlist-refused rows are already taken out."""
    mature = frame["label_mature"].to_numpy()
    positive = frame["label"].to_numpy() == 1
    return TrainingSummary(
        rows=len(frame),
        mature=int(mature.sum()),
        immature=int((~mature).sum()),
        positives=int((positive & mature).sum()),
        immature_positives=int((positive & ~mature).sum()),
        rule_refused=rule_refused,
    )


def build_training_set(
    applications: pa.Table | pd.DataFrame,
    labels: pa.Table | pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    listings: pa.Table | pd.DataFrame | None = None,
    outcome_window_days: int = default_of("outcome_window_days"),
    progress: bool = False,
    builder: Callable[..., pd.DataFrame] | None = None,
) -> TrainingSet:
    """Features and outcome labels of every application known at ``as_of``.

    Parameters
    ----------
    applications, labels
        Events in :mod:`duanka.data.events` form.
    listings : pyarrow.Table or pandas.DataFrame, optional
        The joint-punishment list as stored (:meth:`duanka.data.store.EventStore.watchlist`):
        the listing features read it, and applications listed at their ``applied_at``
        are left out of the frame. None: nobody is listed.
    as_of : pandas.Timestamp
        The training run's date; nothing after it is considered at all.
    outcome_window_days : int
        How long after opening a confirmation still makes the label 1
        (``Settings.outcome_window_days``).
    progress : bool
        Show a progress bar.
    builder : callable, optional
        ``builder(applications, labels, listings=..., progress=...)`` giving what
        :func:`duanka.features.offline.build_features` gives; the Dask engine passes
        :func:`duanka.features.distributed.builder`. Default: ``build_features``.
    """
    at = as_of_timestamp(as_of)
    cut = pa.scalar(at.to_pydatetime(), pa.timestamp("us", tz="UTC"))
    apps = as_table(applications, APPLICATION_EVENTS)
    del applications  # the filtered copy below is all that is needed: let a handed-over input go
    apps = apps.filter(pc.less_equal(apps["applied_at"], cut))
    known, listed = known_at(labels, listings, cut)

    # What is needed of the applications after the build is taken now, and the table itself
    # is handed to the builder as its only reference, so the builder can free its strings once
    # encoded (3.3 GiB of 11 at the peak for 10M applications: docs/features.md).
    inputs_sha256 = {"applications": _digest(apps), "labels": _digest(known), "watchlist": _digest(listed)}
    applicants = _applicants(apps)
    handed = [apps]
    del apps
    frame = (builder or build_features)(handed.pop(), known, listings=listed, progress=progress)
    confirmed = confirmations(pa.array(frame["application_id"]), known)
    add_labels(frame, confirmed, at, outcome_window_days)
    by_rule = _listed_at_applied(frame, applicants, listed)
    refused = frame.loc[by_rule].reset_index(drop=True)
    frame = frame.loc[~by_rule].reset_index(drop=True)
    return TrainingSet(
        frame=frame,
        summary=summarise(frame, len(refused)),
        as_of=at,
        outcome_window_days=outcome_window_days,
        inputs_sha256=inputs_sha256,
        refused=refused,
    )


def training_set_at(later: TrainingSet, labels: pa.Table | pd.DataFrame, as_of: pd.Timestamp) -> TrainingSet:
    """The training set as of an earlier instant, read off one built as of a later one.

    Features are point in time (each row sees only what came before it), so a row's
    values do not depend on the build's ``as_of``; what does is which rows exist and
    which confirmations are known. Both are cut here: rows applied after ``as_of`` go,
    and labels are recomputed from the confirmations known at ``as_of``. A rolling
    backtest builds features once and cuts them per period
    (:mod:`duanka.training.backtest`); a test checks the result equals a build as of ``as_of``.
    ``inputs_sha256`` is left empty: the cut never saw the raw inputs.
    """
    at = as_of_timestamp(as_of)
    if at > later.as_of:
        raise ValueError(f"cannot cut a training set built as of {later.as_of} at a later {at}")
    cut = pa.scalar(at.to_pydatetime(), pa.timestamp("us", tz="UTC"))
    known, _ = known_at(labels, None, cut)

    def relabelled(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame.loc[frame["applied_at"] <= at].reset_index(drop=True) if len(frame) else frame.copy()
        if len(rows):
            confirmed = confirmations(pa.array(rows["application_id"]), known)
            add_labels(rows, confirmed, at, later.outcome_window_days)
        return rows

    frame = relabelled(later.frame)
    refused = relabelled(later.refused)
    return TrainingSet(
        frame=frame,
        summary=summarise(frame, len(refused)),
        as_of=at,
        outcome_window_days=later.outcome_window_days,
        inputs_sha256={},
        refused=refused,
    )


def write_training_set(training_set: TrainingSet, path: Path) -> dict[str, object]:
    """Write the frame as Parquet and a JSON fingerprint beside it (``<stem>.fingerprint.json``).

    The fingerprint records the schema, the counts, the inputs' sha256, the
    feature-set version and ``as_of``, so a model can say exactly what it
    was trained on. Both files are written whole or not at all.

    Returns
    -------
    dict
        The fingerprint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = training_set.frame
    fingerprint = {
        "feature_set_version": FEATURE_SET_VERSION,
        "as_of": training_set.as_of.isoformat(),
        "outcome_window_days": training_set.outcome_window_days,
        "counts": asdict(training_set.summary),
        "inputs_sha256": training_set.inputs_sha256,
        "schema": [{"name": c, "dtype": str(frame[c].dtype)} for c in frame.columns],
        "features": list(FEATURE_NAMES),
        "model_features": list(MODEL_FEATURES),
    }
    partial = path.with_name(path.name + ".partial")
    frame.to_parquet(partial, index=False)
    fingerprint["parquet_sha256"] = _file_sha256(partial)
    os.replace(partial, path)
    beside = path.with_name(f"{path.stem}.fingerprint.json")
    partial = beside.with_name(beside.name + ".partial")
    partial.write_text(json.dumps(fingerprint, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(partial, beside)
    return fingerprint


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
