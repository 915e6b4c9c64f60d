"""The training room's jobs as ``duanka train``, ``backtest`` and ``promote`` run them.

Each job points MLflow at the configured tracking store and registry first
(:func:`duanka.training.tracking.configure`), then runs the room's function. Nothing here prints
beyond the progress bars those functions draw themselves; the caller shows the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from duanka.data.config import Settings
from duanka.data.store import EventStore
from duanka.training.backtest import BacktestConfig, BacktestResult, backtest
from duanka.training.backtest_report import html_page, log_backtest
from duanka.training.promote import Decision, promote
from duanka.training.run import Cluster, TrainConfig, TrainResult, train
from duanka.training.tracking import configure


def train_challenger(
    store: EventStore, config: TrainConfig, settings: Settings, *, cluster: Cluster | None = None
) -> TrainResult:
    """Train on ``store`` as ``config`` asks and register the model as ``duanka@challenger``.

    Raises
    ------
    ValueError
        A request the store cannot answer (too little history for the split, tuning on a cluster).
    """
    configure(settings)
    return train(store, config, settings, cluster=cluster)


def run_backtest(
    store: EventStore,
    config: BacktestConfig,
    settings: Settings,
    *,
    truth: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """The rolling-origin backtest of ``config`` on ``store``; registers nothing.

    Raises
    ------
    training.backtest.StoreTooYoung
        The first period starts before the store holds enough history.
    ValueError
        Periods that do not fit the store.
    """
    configure(settings)
    return backtest(store, config, settings.outcome_window_days, truth_path=truth, progress=progress)


def publish_backtest(result: BacktestResult, config: BacktestConfig, page: Path, settings: Settings) -> str:
    """Write the backtest's HTML page to ``page`` and log it as an MLflow run; the run's id."""
    html = html_page(result, config)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(html, encoding="utf-8")
    return log_backtest(result, config, html, settings.outcome_window_days, settings)


def promote_challenger(
    store: EventStore, settings: Settings, *, force: bool = False, forced_by: str | None = None
) -> Decision:
    """Move ``@champion`` to the challenger when a model reviewer approved its current report and it is
    better on the same test months (or ``force``, tagged with ``forced_by``).

    Raises
    ------
    training.bundle.ModelIntegrityError
        A registered model that fails verification.
    """
    configure(settings)
    return promote(store, settings, force=force, forced_by=forced_by)
