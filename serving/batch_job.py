"""Batch scoring as ``duanka score`` runs it: a stored period on this machine or a Dask cluster.

:mod:`duanka.serving.batch` scores; this module picks the engine, refuses an empty period, names
the file a contract file's rejected rows go to, and appends a period's decisions to the decision
record (:func:`record_decisions`, ``duanka score --record``). It prints nothing.

Recorded batch decisions are the service's rows in the service's words (the answer it would store,
:func:`duanka.serving.decision.answer`), with these differences, each for a reason:

- ``request_id`` ``batch-<hex>``, one per run, and ``key_id`` ``batch``
  (:data:`duanka.serving.audit.BATCH_KEY_ID`): an operator's run decided them, not an API key's
  caller; ``latency_ms`` 0 (no caller waited);
- ``decided_at`` is when each chunk was recorded, not the application's time, which is
  ``applied_at``; the service's band refresh passes over these rows
  (:meth:`duanka.serving.audit.DecisionLog.scores_since`);
- the response's ``row_digest`` is the one the event store keeps for the application, the keyed
  digest of its contract row that the service computes for it too, so the service replays the
  recorded answer to the same application sent again; its ``event`` is NULL: the application is the
  event store's, which the online state follows, so the state never redoes it;
- reasons are those the batch found: for every band with ``--explain-all``, else medium and above.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from duanka.data.store import EventStore
from duanka.serving.audit import BATCH_KEY_ID, DecisionLog, DecisionRow, iso_utc, utc_now
from duanka.serving.batch import (
    PeriodDecisions,
    decide_period,
    progress_bars,
    score_period,
    score_period_distributed,
)
from duanka.serving.model_source import LoadedModel

# decisions per transaction of the record: one fsync each, and a chunk's answers in memory at once
RECORD_CHUNK = 5_000


class NothingToScore(ValueError):
    """No stored application applied in the period asked for."""


def score_stored_period(
    store: EventStore,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model: LoadedModel,
    *,
    explain_all: bool = False,
    client: object | None = None,
    partitions: int | None = None,
    scratch: Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score the applications stored as applied in ``[start, end)``, each point in time.

    Parameters
    ----------
    store : data.store.EventStore
    start, end : pandas.Timestamp
        The period, UTC.
    model : serving.model_source.LoadedModel
        A verified model.
    explain_all : bool
        Reasons for every band, not only medium and above.
    client : distributed.Client, optional
        Score the partitions on this cluster; on this machine when None.
    partitions : int, optional
        Partitions per stage on the cluster.
    scratch : pathlib.Path, optional
        A folder every worker reaches (``DUANKA_SCRATCH_DIR``).
    progress : bool
        Draw this machine's progress bars.

    Raises
    ------
    NothingToScore
        No stored application applied in the period.
    """
    if client is None:
        scores = score_period(store, start, end, model, explain_all=explain_all, progress=progress)
    else:
        scores = score_period_distributed(
            store,
            start,
            end,
            model,
            client=client,  # type: ignore[arg-type]
            explain_all=explain_all,
            partitions=partitions,
            scratch=scratch,
        )
    if scores.empty:
        raise NothingToScore(f"no stored applications between {start} and {end}")
    return scores


def decide_stored_period(
    store: EventStore,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model: LoadedModel,
    *,
    explain_all: bool = False,
    progress: bool = True,
) -> PeriodDecisions:
    """:func:`score_stored_period` on this machine, keeping what the decision record words each
    decision from (:func:`record_decisions`).

    Raises
    ------
    NothingToScore
        No stored application applied in the period.
    """
    decided = decide_period(store, start, end, model, explain_all=explain_all, progress=progress)
    if not len(decided):
        raise NothingToScore(f"no stored applications between {start} and {end}")
    return decided


@dataclass(frozen=True)
class Recorded:
    """What :func:`record_decisions` appended to the decision record.

    Attributes
    ----------
    request_id : str
        The run's ``request_id`` on every row it appended.
    recorded : int
        Decisions appended (with their responses).
    already : int
        Applications the record had answered before: nothing appended for them.
    differing : int
        Of ``already``, those answered for other content than the event store holds under their
        id (the row digests differ): worth a look, never overwritten.
    """

    request_id: str
    recorded: int
    already: int
    differing: int


def record_decisions(
    log: DecisionLog,
    decided: PeriodDecisions,
    model: LoadedModel,
    *,
    chunk: int = RECORD_CHUNK,
    progress: bool = True,
) -> Recorded:
    """Append each decision of ``decided`` whose application the record has not answered, with its
    response, ``chunk`` decisions per durable transaction (the module's docstring says how they
    differ from the service's rows).

    The caller holds the store (:meth:`duanka.data.store.EventStore.hold`): two writers of one
    record would extend its chain from the same head.

    Parameters
    ----------
    log : DecisionLog
        The store's decision record, open.
    decided : PeriodDecisions
        A period decided by ``model`` (:func:`decide_stored_period`).
    model : LoadedModel
        The model that decided them.
    chunk : int
        Decisions per :meth:`DecisionLog.record` call.
    progress : bool
        Draw a progress bar.

    Raises
    ------
    ValueError
        ``chunk`` is not positive.
    """
    if chunk < 1:
        raise ValueError(f"record at least one decision per transaction, not {chunk}")
    request_id = f"batch-{uuid.uuid4().hex}"
    applications = decided.applications()
    ids = applications["application_id"]
    answered = log.answered(ids.tolist())
    known = ids.isin(answered.keys()).to_numpy()
    differing = int((applications.loc[known, "row_digest"] != ids[known].map(answered)).sum())
    fresh = np.flatnonzero(~known)
    # plain arrays: a row of a DataFrame costs a Series each, a million times over
    branches, digests = (applications[c].to_numpy(dtype=object) for c in ("branch_id", "row_digest"))
    applied = applications["applied_at"].to_numpy(dtype=object)
    with progress_bars(progress) as bar:
        advance = bar("recording", len(fresh))
        for start in range(0, len(fresh), chunk):
            rows = fresh[start : start + chunk]
            decided_at = utc_now()
            lines, responses = [], {}
            for row, response in zip(rows.tolist(), decided.answers(model, rows), strict=True):
                aid = response["application_id"]
                lines.append(
                    DecisionRow.of_response(
                        aid,
                        response,
                        request_id=request_id,
                        key_id=BATCH_KEY_ID,
                        decided_at=decided_at,
                        latency_ms=0.0,
                        replayed=False,
                        branch_id=branches[row],
                        applied_at=iso_utc(applied[row]),
                    )
                )
                responses[aid] = (digests[row], response, None)
            log.record(lines, responses)
            advance(len(rows))
    return Recorded(request_id, len(fresh), int(known.sum()), differing)


def write_rejections(rejections: pd.DataFrame, scores_out: Path) -> Path:
    """Write a contract file's unscorable rows beside its scores (``NAME.rejected.csv``); the path."""
    rejected = scores_out.with_name(scores_out.stem + ".rejected.csv")
    rejections.to_csv(rejected, index=False)
    return rejected
