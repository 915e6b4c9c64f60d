"""One offline training run: point-in-time features, out-of-time split, LightGBM and baselines,
calibration, bands, evaluation, MLflow logging and registration as ``duanka@challenger``.

The steps are functions of their own: the models are fitted by :func:`fit_run_models`
(:mod:`duanka.training.fit`), judged by :func:`evidence_comparison`, logged by :func:`run_parameters`,
:func:`log_metrics` and :func:`log_artifacts` (the rows the report reads:
:mod:`duanka.training.evaluation_frame`), and registered and signed by :mod:`duanka.training.registration`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from duanka.data.config import Settings
from duanka.data.store import EventStore
from duanka.features.declaration import Family
from duanka.features.registry import BY_NAME, FEATURE_SET_VERSION, MODEL_FEATURES, monotone_constraints
from duanka.features.training_set import TrainingSet, TrainingSummary, build_training_set
from duanka.training.calibration import make_calibrator
from duanka.training.evaluation_frame import (
    EVALUATION_FRAME_FILE,
    evaluation_frame,
    refused_by_rule,
    rule_refused_parts,
)
from duanka.training.fairness import OUT_OF_PROVINCE_LEGIT_WEIGHT
from duanka.training.fit import FitOptions, Fitted, fit_evidence, fit_models, matrix, sampled_weights
from duanka.training.groups import GroupCatch, group_catch_rates, load_truth
from duanka.training.labels import (
    DEFAULT_HORIZON_DAYS,
    DEFAULT_POLICY,
    REVIEWED_COLUMN,
    LabelPolicy,
    confirmed_us,
    reviewed_us,
)
from duanka.training.metrics import HEADLINE_METRICS, Evaluation, compare, evaluate
from duanka.training.monthly import month_counts, monthly_summary
from duanka.training.registration import make_challenger, register, sign
from duanka.training.rules import BranchRules
from duanka.training.sampled_set import build_sampled_training_set
from duanka.training.scorecard import WoEScorecard
from duanka.training.split import TEST, TRAIN, VALID, TimeSplit
from duanka.training.tracking import code_version, metric_key
from duanka.training.tuning import tune

# The families that link one application to others; the ablation drops them to show what links add.
LINKAGE_FAMILIES = frozenset(
    {Family.ESCORT, Family.INTERMEDIARY, Family.ADDRESS, Family.PHONE_DEVICE, Family.LINKED}
)


def linkage_free_features() -> list[str]:
    return [n for n in MODEL_FEATURES if BY_NAME[n].family not in LINKAGE_FAMILIES]


@dataclass(frozen=True)
class TrainConfig:
    """What a run is asked to do; every field is logged as a parameter."""

    as_of: pd.Timestamp
    valid_months: int = 2
    test_months: int = 2
    train_months: int | None = None
    calibration: str = "platt"
    negative_rate: float = 0.2
    seed: int = 0
    n_boot: int = 200
    truth: Path | None = None
    tune_trials: int = 0
    label_policy: LabelPolicy = DEFAULT_POLICY
    horizon_days: int = DEFAULT_HORIZON_DAYS
    out_of_province_legit_weight: float = OUT_OF_PROVINCE_LEGIT_WEIGHT
    fast: bool = False  # skip the baselines and the bootstrap (backtests)

    def fit_options(self) -> FitOptions:
        return FitOptions(
            calibration=self.calibration,
            negative_rate=self.negative_rate,
            seed=self.seed,
            label_policy=LabelPolicy(self.label_policy),
            horizon_days=self.horizon_days,
            out_of_province_legit_weight=self.out_of_province_legit_weight,
        )


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    split: TimeSplit
    comparison: pd.DataFrame
    evaluations: dict[str, Evaluation]
    summary: TrainingSummary
    groups: GroupCatch | None = None
    fitted: Fitted | None = None
    notes: list[str] = field(default_factory=list)


def time_split(cfg: TrainConfig, settings: Settings) -> TimeSplit:
    """The run's out-of-time split, ending where labels stop being mature at ``cfg.as_of``."""
    return TimeSplit.before_maturity(
        cfg.as_of,
        outcome_window_days=settings.outcome_window_days,
        valid_months=cfg.valid_months,
        test_months=cfg.test_months,
        train_months=cfg.train_months,
    )


def out_of_time_parts(ts: TrainingSet, split: TimeSplit) -> dict[str, pd.DataFrame]:
    """The mature rows of each part of ``split``; every part must hold confirmed mules.

    Raises
    ------
    ValueError
        When a part holds no confirmed mule (the message says how to move the split).
    """
    mature = ts.frame.loc[ts.frame["label_mature"]]
    part = split.assign(mature["applied_at"])
    parts = {name: mature.loc[part == name] for name in (TRAIN, VALID, TEST)}
    for name, rows in parts.items():
        if rows.empty or rows["label"].sum() == 0:
            raise ValueError(
                f"the {name} months ({split.describe()}) hold no confirmed mules: "
                "move --as-of later or change the month options"
            )
    return parts


@contextmanager
def _steps(show: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar over the run's steps: each call names the step starting now."""
    if not show:
        yield lambda _: None
        return
    with Progress(
        TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("training", total=total)
        started = [False]

        def step(description: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=description)

        yield step
        bar.advance(task)


@dataclass(frozen=True)
class Cluster:
    """Where ``duanka train --engine dask`` builds and samples its training set.

    Attributes
    ----------
    client : distributed.Client
    partitions : int, optional
        Partitions per stage (:func:`duanka.features.distributed.feature_partitions`).
    scratch : path, optional
        Root of the run's stage folder; every worker must reach it.
    fit : bool
        Fit on the cluster too, with ``lightgbm.dask``.
    """

    client: object
    partitions: int | None = None
    scratch: Path | None = None
    fit: bool = False


@dataclass(frozen=True)
class _Data:
    """What the run reads of its training set, from one machine or a cluster."""

    ts: TrainingSet
    parts: dict[str, pd.DataFrame]  # the training months sampled when built on a cluster
    part_counts: dict[str, tuple[int, int]]  # rows and mules of each whole part
    months: pd.DataFrame  # training.monthly.month_counts of every application
    confirmed: pd.DataFrame  # application_id, applied_at of the applications confirmed by as_of


def _data_here(store: EventStore, cfg: TrainConfig, settings: Settings, split: TimeSplit) -> _Data:
    ts = build_training_set(
        store.applications(),
        store.labels(),
        listings=store.watchlist(),
        as_of=cfg.as_of,
        outcome_window_days=settings.outcome_window_days,
        progress=False,  # the run's own bar is live: rich allows one at a time
    )
    parts = out_of_time_parts(ts, split)
    counts = {name: (len(rows), int(rows["label"].sum())) for name, rows in parts.items()}
    known = store.labels(["application_id", "confirmed_at"]).to_pandas()
    known = known.loc[known["confirmed_at"] <= ts.as_of, "application_id"]
    confirmed = ts.frame.loc[ts.frame["application_id"].isin(known), ["application_id", "applied_at"]]
    return _Data(ts, parts, counts, month_counts(ts.frame), confirmed)


def _data_on(
    cluster: Cluster, store: EventStore, cfg: TrainConfig, settings: Settings, split: TimeSplit
) -> _Data:
    sampled = build_sampled_training_set(
        cluster.client,  # type: ignore[arg-type]
        store.parts("applications"),
        store.parts("labels"),
        as_of=cfg.as_of,
        split=split,
        negative_rate=cfg.negative_rate,
        seed=cfg.seed,
        listings=store.watchlist(),
        outcome_window_days=settings.outcome_window_days,
        scratch=cluster.scratch,
        partitions=cluster.partitions,
    )
    parts = out_of_time_parts(sampled.training_set, split)
    return _Data(sampled.training_set, parts, sampled.part_counts, sampled.months, sampled.confirmed)


def train(
    store: EventStore,
    cfg: TrainConfig,
    settings: Settings,
    *,
    progress: bool = True,
    cluster: Cluster | None = None,
) -> TrainResult:
    """Run the whole training job and register the model as ``duanka@challenger``.

    On this machine by default. With ``cluster`` the training set is built and
    sampled on a Dask cluster (:mod:`duanka.training.sampled_set`: this machine receives
    the training months' mules and sampled legitimate openings, and the validation
    and test months), and with ``cluster.fit`` the model is fitted there too with
    ``lightgbm.dask`` (:class:`duanka.training.dask_fit.DaskMuleClassifier`).
    """
    if cluster is not None and cfg.tune_trials:
        raise ValueError(
            "the tuning search fits on every training row of this machine: run it without --engine dask"
        )
    with _steps(progress, 5) as step:
        return _train(store, cfg, settings, step, cluster)


def evidence_comparison(
    parts: dict[str, pd.DataFrame],
    fitted: Fitted,
    cfg: TrainConfig,
    fit_client: object | None = None,
) -> tuple[dict[str, Evaluation], pd.DataFrame]:
    """The evidence model against the baselines on the out-of-time test months.

    ``cfg.fast`` (backtests): the evidence model alone, without bootstrap intervals.
    """
    names = fitted.names
    test = parts[TEST]
    scores = {"lightgbm": fitted.evidence_score(matrix(test, names))}
    if not cfg.fast:
        options = cfg.fit_options()
        ablation_names = linkage_free_features()
        ablation = fit_evidence(parts, ablation_names, options, fit_client=fit_client)
        ablation_calibrator = make_calibrator(cfg.calibration).fit(
            ablation.decision_function(matrix(parts[VALID], ablation_names)), parts[VALID]["label"].to_numpy()
        )
        scorecard = WoEScorecard(random_state=cfg.seed).fit(
            parts[TRAIN].loc[:, names], parts[TRAIN]["label"], sample_weight=sampled_weights(parts[TRAIN])
        )
        scores |= {
            "lightgbm_no_links": ablation_calibrator.predict(
                ablation.decision_function(matrix(test, ablation_names))
            ),
            "woe_scorecard": scorecard.predict_proba(test.loc[:, names])[:, 1],
            "branch_rules": BranchRules().score(test),
        }
    n_boot = 0 if cfg.fast else cfg.n_boot
    test_y = test["label"].to_numpy()
    evaluations = {name: evaluate(test_y, s, n_boot=n_boot, seed=cfg.seed) for name, s in scores.items()}
    return evaluations, compare(evaluations, HEADLINE_METRICS)


def known_labels(store: EventStore, as_of: pd.Timestamp) -> pd.DataFrame:
    """``application_id`` and ``confirmed_at`` of the confirmations the store held at ``as_of``."""
    labels = store.labels(["application_id", "confirmed_at"]).to_pandas()
    return labels.loc[labels["confirmed_at"] <= as_of]


def fit_as_of(
    ts: TrainingSet,
    parts: dict[str, pd.DataFrame],
    split: TimeSplit,
    labels: pd.DataFrame,
    cfg: TrainConfig,
    params: dict | None = None,
    fit_client: object | None = None,
    *,
    reviewed: pd.DataFrame | None = None,
) -> Fitted:
    """The evidence and shipped models of a training set: what ``duanka train --as-of`` ships.

    ``reviewed`` (``application_id``, ``reviewed_at``, optionally ``status``: see
    :func:`~duanka.training.labels.reviewed_us`) are case reviewers' dispositions; the
    clearances among them known at the as-of date make the shipped refit's reviewed negatives
    (weight 1, :func:`~duanka.training.labels.with_reviewed_negatives`). None: none.
    """
    confirmed = confirmed_us(ts.frame, labels, ts.as_of)
    frame = ts.frame
    if reviewed is not None:
        # A copy with the column: the training set may be shared (a backtest cuts one per period).
        frame = frame.assign(**{REVIEWED_COLUMN: reviewed_us(frame, reviewed, ts.as_of)})
    return fit_models(
        frame,
        parts,
        split,
        confirmed,
        ts.as_of,
        ts.outcome_window_days,
        cfg.fit_options(),
        names=list(MODEL_FEATURES),
        params=params,
        fit_client=fit_client,
    )


def fit_run_models(
    data: _Data, split: TimeSplit, labels: pd.DataFrame, cfg: TrainConfig, fit_client: object | None
) -> Fitted:
    """The run's evidence and shipped models, after the tuning search when one is asked for.

    The search fits on the training months and judges on the validation months only; the
    test months stay untouched for the evidence.
    """
    names = list(MODEL_FEATURES)
    parts = data.parts
    tuned: dict = {}
    if cfg.tune_trials:
        tuned = tune(
            matrix(parts[TRAIN], names),
            parts[TRAIN]["label"].to_numpy(),
            matrix(parts[VALID], names),
            parts[VALID]["label"].to_numpy(),
            names,
            n_trials=cfg.tune_trials,
            negative_rate=cfg.negative_rate,
            seed=cfg.seed,
            monotone_constraints=monotone_constraints(names),
        )
    return fit_as_of(data.ts, parts, split, labels, cfg, tuned, fit_client)


def ring_catch_rates(cfg: TrainConfig, parts: dict[str, pd.DataFrame], fitted: Fitted) -> GroupCatch | None:
    """With a truth file, how many of each scheme's rings the evidence model's bands catch on the
    test months (band medium or above); None without one."""
    if cfg.truth is None:
        return None
    test = parts[TEST]
    truth = load_truth(cfg.truth)
    test_rows = test.loc[:, ["application_id", "applied_at"]].merge(truth, on="application_id", how="left")
    banded = fitted.evidence_bands.assign(fitted.evidence_score(matrix(test, fitted.names)))
    return group_catch_rates(test_rows, banded != "low")


def run_parameters(
    cfg: TrainConfig, settings: Settings, split: TimeSplit, fitted: Fitted, on_cluster: bool
) -> dict[str, object]:
    """Everything the run was asked and what it fitted, as MLflow parameters (the report reads them)."""
    shipped = fitted.shipped
    lgb = shipped.lgb_params()
    # One int per feature reads as noise among the learner's parameters: the constrained features by name.
    directions = lgb.pop("monotone_constraints", [0] * len(fitted.names))
    increasing = [n for n, d in zip(fitted.names, directions, strict=True) if d > 0]
    decreasing = [n for n, d in zip(fitted.names, directions, strict=True) if d < 0]
    return {
        "as_of": cfg.as_of.isoformat(),
        "calibration": cfg.calibration,
        "negative_rate": cfg.negative_rate,
        "seed": cfg.seed,
        "n_boot": cfg.n_boot,
        "fast": cfg.fast,
        "outcome_window_days": settings.outcome_window_days,
        "label_policy": str(cfg.label_policy),
        "horizon_days": cfg.horizon_days,
        "out_of_province_legit_weight": cfg.out_of_province_legit_weight,
        "feature_set_version": FEATURE_SET_VERSION,
        "code_version": code_version(),
        "best_iteration": shipped.booster_.best_iteration,
        "fit": "lightgbm.dask" if on_cluster else "lightgbm",
        "tune_trials": cfg.tune_trials,
        "n_features": len(fitted.names),
        **{f"split_{k}": v for k, v in split.describe().items()},
        **fitted.describe(),
        **{f"lgb_{k}": v for k, v in lgb.items()},
        "monotone_increasing": ",".join(increasing) or "none",
        "monotone_decreasing": ",".join(decreasing) or "none",
    }


def log_metrics(data: _Data, fitted: Fitted, evaluations: dict[str, Evaluation]) -> None:
    """Row counts of each part and of the fits, the training set's summary, and every model's
    test metrics with their bootstrap bounds."""
    for part_name, (rows, positives) in data.part_counts.items():
        mlflow.log_metrics({f"{part_name}_rows": rows, f"{part_name}_positives": positives})
    mlflow.log_metric("train_rows_fitted", len(data.parts[TRAIN]))
    mlflow.log_metric("refit_rows_fitted", fitted.shipped.training_rows_)
    mlflow.log_metrics({f"set_{k}": float(v) for k, v in asdict(data.ts.summary).items()})
    for model_name, ev in evaluations.items():
        for suffix, values in (("", ev.point), ("_ci_low", ev.ci_low), ("_ci_high", ev.ci_high)):
            mlflow.log_metrics({metric_key(f"{model_name}.test_{k}{suffix}"): v for k, v in values.items()})


def log_artifacts(
    data: _Data,
    split: TimeSplit,
    labels: pd.DataFrame,
    fitted: Fitted,
    evidence: tuple[dict[str, Evaluation], pd.DataFrame],
    groups: GroupCatch | None,
    seed: int,
    folder: Path,
) -> None:
    """What the model report reads back (:func:`duanka.training.report_context.read_run`): features,
    data fingerprint, comparison, evaluations, ring catch rates, monthly summary, the
    evaluation frame and the branch rules."""
    ts, names = data.ts, fitted.names
    evaluations, comparison = evidence
    mlflow.log_dict({"model_features": names, "linkage_free": linkage_free_features()}, "features.json")
    mlflow.log_dict(
        {
            "inputs_sha256": ts.inputs_sha256,
            "as_of": ts.as_of.isoformat(),
            "feature_set_version": FEATURE_SET_VERSION,
            "counts": asdict(ts.summary),
        },
        "data_fingerprint.json",
    )
    mlflow.log_text(comparison.to_csv(), "comparison.csv")
    mlflow.log_text(
        json.dumps({n: e.to_frame().reset_index().to_dict("records") for n, e in evaluations.items()}),
        "evaluations.json",
    )
    if groups is not None:
        mlflow.log_text(groups.to_frame().to_csv(), "group_catch.csv")
    mlflow.log_text(monthly_summary(data.months, data.confirmed, labels).to_csv(), "monthly.csv")
    frame_path = folder / EVALUATION_FRAME_FILE
    evaluation_frame(
        data.parts,
        names,
        fitted.evidence_score,
        seed,
        refused_by_rule(ts.refused),
        rule_refused_parts(ts, split),
    ).to_parquet(frame_path, index=False)
    mlflow.log_artifact(str(frame_path))
    rules = BranchRules()
    mlflow.log_dict(
        {"rules": [{"code": r.code, "description": r.description} for r in rules.rules]}, "rules.json"
    )


def _train(
    store: EventStore,
    cfg: TrainConfig,
    settings: Settings,
    step: Callable[[str], None],
    cluster: Cluster | None = None,
) -> TrainResult:
    step("point-in-time features" + (" on Dask" if cluster is not None else ""))
    split = time_split(cfg, settings)
    data = (
        _data_here(store, cfg, settings, split)
        if cluster is None
        else _data_on(cluster, store, cfg, settings, split)
    )
    fit_client = cluster.client if cluster is not None and cluster.fit else None
    labels = known_labels(store, data.ts.as_of)

    tuning = f" ({cfg.tune_trials} tuning trials)" if cfg.tune_trials else ""
    step("LightGBM: evidence fit and refit" + tuning + (" on Dask" if fit_client is not None else ""))
    fitted = fit_run_models(data, split, labels, cfg, fit_client)

    step("baselines" if not cfg.fast else "evidence (fast: no baselines)")
    evaluations, comparison = evidence_comparison(data.parts, fitted, cfg, fit_client)
    step("ring catch rates")
    groups = ring_catch_rates(cfg, data.parts, fitted)

    step("MLflow logging and registration")
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(run_parameters(cfg, settings, split, fitted, fit_client is not None))
        log_metrics(data, fitted, evaluations)
        log_artifacts(data, split, labels, fitted, (evaluations, comparison), groups, cfg.seed, Path(tmp))
        example = data.parts[VALID].loc[:, fitted.names].head(5).astype("float64")
        version = register(fitted, example, Path(tmp), run.info.run_id, reference_rows=data.ts.frame)
        sign(version, settings)
        make_challenger(version)
        return TrainResult(
            run.info.run_id, version, split, comparison, evaluations, data.ts.summary, groups, fitted
        )
