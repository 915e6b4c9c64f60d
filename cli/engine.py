"""``--engine``, ``--scheduler``, ``--partitions`` and ``--fit``: where a verb's work runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import typer

from duanka.cli.output import fail
from duanka.data.config import get_settings


class EngineKind(StrEnum):
    LOCAL = "local"
    DASK = "dask"


class FitWhere(StrEnum):
    LOCAL = "local"
    DASK = "dask"


EngineOption = Annotated[
    EngineKind, typer.Option(help="local (one machine, DuckDB) or dask (the same builder per partition).")
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        help="With --engine dask: scheduler address (tcp://HOST:8786) or scheduler file (.json) "
        "[default: a local cluster of this machine]."
    ),
]
PartitionsOption = Annotated[
    int | None, typer.Option(min=1, help="With --engine dask: partitions per stage [default: 2 x workers].")
]


@contextmanager
def dask_engine(engine: EngineKind, scheduler: str | None) -> Iterator[object | None]:
    """A Dask client for ``--engine dask`` (None for the local engine)."""
    if engine is EngineKind.LOCAL:
        if scheduler is not None:
            raise typer.BadParameter("--scheduler needs --engine dask")
        yield None
        return
    try:
        from duanka.features.distributed import dask_client
    except ImportError:  # pragma: no cover - the extra is not installed
        raise fail("--engine dask needs the dask extra: pip install 'duanka[dask]'") from None
    if scheduler is not None and get_settings().scratch_dir is None:
        raise typer.BadParameter(
            "--scheduler needs DUANKA_SCRATCH_DIR: a folder every worker reaches at the same path "
            "(the run's stages are written there)"
        )
    with dask_client(scheduler) as client:
        yield client
