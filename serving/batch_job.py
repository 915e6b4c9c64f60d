"""Batch scoring as ``duanka score`` runs it: a stored period on this machine or a Dask cluster.

:mod:`duanka.serving.batch` scores; this module picks the engine, refuses an empty period and names
the file a contract file's rejected rows go to. It prints nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from duanka.data.store import EventStore
from duanka.serving.batch import score_period, score_period_distributed
from duanka.serving.model_source import LoadedModel


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


def write_rejections(rejections: pd.DataFrame, scores_out: Path) -> Path:
    """Write a contract file's unscorable rows beside its scores (``NAME.rejected.csv``); the path."""
    rejected = scores_out.with_name(scores_out.stem + ".rejected.csv")
    rejections.to_csv(rejected, index=False)
    return rejected
