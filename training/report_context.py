"""What the model report's sections read: the registered model, its run, its test rows.

A section builder takes one :class:`ReportContext` and returns the values its part of the
template prints, so every section reads the same rows, scored and banded once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from duanka.training.bands import ALERT_BANDS
from duanka.training.bundle import RegisteredModel
from duanka.training.evaluation_frame import EVALUATION_FRAME_FILE
from duanka.training.explain import Reason, ReasonExplainer
from duanka.training.split import TEST, TRAIN

# The report is logged to the run it reads: its own earlier copy is no input of its lineage.
REPORT_NAME = "report.html"
# shap's beeswarm lays out every dot: a seeded sample keeps the report's time flat in test rows
SHAP_SAMPLE = 2_000
SHAP_SEED = 0


@dataclass(frozen=True)
class RunRecord:
    """What one training run logged, read back from MLflow."""

    params: dict[str, str]
    metrics: dict[str, float]
    comparison: pd.DataFrame
    evaluations: dict[str, list[dict]]
    fingerprint: dict
    monthly: pd.DataFrame
    frame: pd.DataFrame
    rules: list[dict]
    group_catch: pd.DataFrame | None
    artifact_sha256: dict[str, str]


def read_run(run_id: str, client: mlflow.MlflowClient, folder: Path) -> RunRecord:
    """Download a run's artifacts into ``folder`` and parse them.

    Parameters
    ----------
    run_id : str
    client : mlflow.MlflowClient
    folder : Path
        Where the artifacts land; the caller removes it.

    Returns
    -------
    RunRecord
        With the sha256 of every artifact but an earlier report.
    """
    local = Path(client.download_artifacts(run_id, "", str(folder)))
    hashes = {
        p.relative_to(local).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(local.rglob("*"))
        if p.is_file() and p.name != REPORT_NAME
    }
    run = client.get_run(run_id)
    catch = local / "group_catch.csv"
    return RunRecord(
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        comparison=pd.read_csv(local / "comparison.csv", index_col=0),
        evaluations=json.loads((local / "evaluations.json").read_text(encoding="utf-8")),
        fingerprint=json.loads((local / "data_fingerprint.json").read_text(encoding="utf-8")),
        monthly=pd.read_csv(local / "monthly.csv", index_col=0),
        frame=pd.read_parquet(local / EVALUATION_FRAME_FILE),
        rules=json.loads((local / "rules.json").read_text(encoding="utf-8"))["rules"],
        group_catch=pd.read_csv(catch, index_col=0) if catch.exists() else None,
        artifact_sha256=hashes,
    )


class ReportContext:
    """What the sections share: the model, its run, the test rows and a SHAP sample of them.

    Parameters
    ----------
    model : RegisteredModel
        The registered model the report is about.
    run : RunRecord
        Its training run.
    branches : int or None
        Branches the bank runs, when given; else the performance section estimates them.
    """

    def __init__(self, model: RegisteredModel, run: RunRecord, branches: int | None) -> None:
        self.model = model
        self.run = run
        self.branches = branches
        self.explainer = ReasonExplainer(model.bundle)
        frame = run.frame
        self.names = model.bundle.feature_names
        every = frame.loc[frame["part"] == TEST].reset_index(drop=True)
        # runs from before hard rules recorded no rule column: nothing is known to be refused
        self.rule = every["rule"].fillna("").to_numpy(dtype=object) if "rule" in every.columns else None
        self.rule_bands = model.bundle.bands.assign(every["score"].to_numpy())
        self.rule_y = every["label"].to_numpy().astype(int)
        # What the model decides: the rows the logged metrics measure, and every table and figure here.
        self.test = every if self.rule is None else every.loc[self.rule == ""].reset_index(drop=True)
        self.train = frame.loc[frame["part"] == TRAIN].reset_index(drop=True)
        self.y = self.test["label"].to_numpy().astype(int)
        self.score = self.test["score"].to_numpy()
        self.X = self.test.loc[:, self.names].to_numpy(dtype=float)
        self.alert = np.isin(model.bundle.bands.assign(self.score), ALERT_BANDS)

    @cached_property
    def sample(self) -> np.ndarray:
        """Test rows whose contributions the global explanations show (seeded)."""
        rng = np.random.default_rng(SHAP_SEED)
        return np.sort(rng.choice(len(self.X), size=min(SHAP_SAMPLE, len(self.X)), replace=False))

    @cached_property
    def sample_contrib(self) -> np.ndarray:
        """``pred_contrib`` of the sample, as the request path computes it: the base value last."""
        return self.model.bundle.contributions(self.X[self.sample])

    @cached_property
    def importance(self) -> np.ndarray:
        """Feature positions by mean absolute SHAP on the sample, most important first."""
        return np.argsort(-np.abs(self.sample_contrib[:, :-1]).mean(axis=0), kind="stable")

    @cached_property
    def alert_reasons(self) -> list[list[Reason]]:
        """The reason codes staff would see on each alerted test application."""
        return self.explainer.explain(self.X[self.alert])[1] if self.alert.any() else []
