"""What the model review page shows of each registered version, read back from what its run logged.

Per version: the training run's parameters (as-of date, test months, feature set and code
versions), its test metrics (the evidence model's, as the model report prints them), the shipped
bundle's band thresholds, the recall at each band and the FPR ratios on the run's test rows (the
evaluation frame, scored by the evidence model and banded by the shipped bands, as the report's
tables are), and the latest backtest of the same code. All of it is fixed once the run has ended,
so a caller may keep it (:class:`duanka.serving.review.model_desk.ModelDesk` does); the report
and the review, which change, are read apart (:mod:`duanka.training.approval`).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.entities.model_registry import ModelVersion

from duanka.training.backtest import EXPERIMENT as BACKTEST_EXPERIMENT
from duanka.training.bands import ALERT_BANDS
from duanka.training.bundle import MODEL_NAME, ModelIntegrityError, load_registered
from duanka.training.evaluation_frame import EVALUATION_FRAME_FILE
from duanka.training.metrics import fpr_key, recall_key
from duanka.training.monitoring import false_positive_rate_ratio
from duanka.training.split import TEST
from duanka.training.tracking import metric_key

BANDS = ("critical", "high", "medium")
# The evidence model's test metrics the page sets side by side, in this order.
METRICS = ("pr_auc", "roc_auc", *(recall_key(r) for r in (0.005, 0.01, 0.02, 0.05)), fpr_key(0.05))
# The groups whose false positives are compared (the model report's fairness section names both).
FPR_GROUPS = {
    "out of province / local": "applicant_out_of_province",
    "corporate / personal": "corporate",
}
PARAMS = (
    "as_of",
    "split_test_start",
    "split_test_end",
    "feature_set_version",
    "code_version",
    "label_policy",
)
_FRAME_COLUMNS = ("part", "label", "score", "rule", *FPR_GROUPS.values())


@dataclass(frozen=True)
class BacktestSummary:
    """The pooled figures of one ``duanka backtest`` run (experiment ``duanka-backtest``)."""

    run_id: str
    ran_at: str
    span: str
    periods: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class VersionFigures:
    """One registered version's figures, as its run logged them.

    Attributes
    ----------
    version, run_id : str
    registered_at : str
        When the version was registered, ISO 8601 UTC.
    params : dict
        The run's parameters of :data:`PARAMS` (missing ones left out).
    metrics : dict
        The evidence model's test metrics of :data:`METRICS`.
    band_thresholds : dict
        The shipped bundle's lower score bound of each band in :data:`BANDS`.
    band_recall : dict
        Share of the test months' mules at that band or above.
    fpr_ratios : dict
        FPR (high and critical alerts) of each pair of :data:`FPR_GROUPS`.
    backtest : BacktestSummary or None
        The latest backtest run of the same ``code_version``.
    problem : str or None
        Why the bundle's figures are missing (a version that fails verification).
    """

    version: str
    run_id: str
    registered_at: str
    params: dict[str, str]
    metrics: dict[str, float]
    band_thresholds: dict[str, float] = field(default_factory=dict)
    band_recall: dict[str, float] = field(default_factory=dict)
    fpr_ratios: dict[str, float] = field(default_factory=dict)
    backtest: BacktestSummary | None = None
    problem: str | None = None


def registered_versions(client: mlflow.MlflowClient) -> list[ModelVersion]:
    """Every registered version of ``duanka``, newest first (without their aliases: a search leaves
    them out)."""
    found = client.search_model_versions(f"name = '{MODEL_NAME}'")
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def figures_of(client: mlflow.MlflowClient, version: str) -> VersionFigures:
    """Read one version's figures from its run, its bundle and its evaluation frame.

    Raises
    ------
    mlflow.exceptions.MlflowException
        No such version.
    """
    registered = client.get_model_version(MODEL_NAME, version)
    run = client.get_run(registered.run_id)
    params = {k: run.data.params[k] for k in PARAMS if k in run.data.params}
    logged = run.data.metrics
    metrics = {
        m: logged[metric_key(f"lightgbm.test_{m}")]
        for m in METRICS
        if metric_key(f"lightgbm.test_{m}") in logged
    }
    registered_at = datetime.fromtimestamp(registered.creation_timestamp / 1000, UTC).isoformat(
        timespec="seconds"
    )
    figures = VersionFigures(
        version,
        registered.run_id,
        registered_at,
        params,
        metrics,
        backtest=latest_backtest(client, params.get("code_version")),
    )
    try:
        bands = load_registered(f"models:/{MODEL_NAME}/{version}", client).bundle.bands
        test = _test_rows(client, registered.run_id)
    except ModelIntegrityError as exc:
        return _with(figures, problem=str(exc))
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        # a run from before evaluation frames: its logged metrics are still worth setting side by side
        return _with(figures, problem=f"the run's {EVALUATION_FRAME_FILE} cannot be read ({exc})")
    thresholds = {b: float(getattr(bands, b)) for b in BANDS}
    y, score = test["label"].to_numpy().astype(int), test["score"].to_numpy(dtype=float)
    recall = {b: float(y[score >= thresholds[b]].sum() / y.sum()) if y.any() else math.nan for b in BANDS}
    alert = np.isin(bands.assign(score), ALERT_BANDS)
    ratios = {}
    for pair, column in FPR_GROUPS.items():
        values = test[column].to_numpy() if column in test.columns else np.full(len(test), np.nan)
        ratios[pair] = false_positive_rate_ratio(y, alert, values == 1, values == 0)
    return _with(figures, band_thresholds=thresholds, band_recall=recall, fpr_ratios=ratios)


def _with(figures: VersionFigures, **changes: object) -> VersionFigures:
    return VersionFigures(**{**figures.__dict__, **changes})


def _test_rows(client: mlflow.MlflowClient, run_id: str) -> pd.DataFrame:
    """The run's test rows the model decided (not those the watchlist rule refused), as the report
    reads them (:class:`duanka.training.report_context.ReportContext`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run_id, EVALUATION_FRAME_FILE, tmp))
        present = set(pq.read_schema(path).names)
        frame = pd.read_parquet(path, columns=[c for c in _FRAME_COLUMNS if c in present])
    test = frame.loc[frame["part"] == TEST]
    if "rule" in test.columns:
        test = test.loc[test["rule"].fillna("") == ""]
    return test.reset_index(drop=True)


def latest_backtest(client: mlflow.MlflowClient, code_version: str | None) -> BacktestSummary | None:
    """The newest ``duanka backtest`` run of the same code as a version's training run.

    A backtest judges a way of training (the code and its defaults), not one fitted model: the
    run it belongs beside is the one with the same ``code_version``. None when there is none, or
    the code's version is unknown (trained outside a checkout).
    """
    experiment = client.get_experiment_by_name(BACKTEST_EXPERIMENT)
    if experiment is None or not code_version or code_version == "unknown":
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"params.code_version = '{code_version}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    p, m = run.data.params, run.data.metrics
    wanted = {
        "pr_auc": "pooled.pr_auc",
        recall_key(0.01): metric_key(f"pooled.{recall_key(0.01)}"),
        "out_of_province_ratio": "pooled.out_of_province_ratio",
    }
    return BacktestSummary(
        run.info.run_id,
        datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
        f"{p.get('from', '?')[:10]} → {p.get('to', '?')[:10]}",
        p.get("periods", "?"),
        {name: m[key] for name, key in wanted.items() if key in m},
    )
