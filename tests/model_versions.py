"""Two registered versions in a registry of their own, for the review-before-promotion tests.

Not a test module. The session's served bank (tests/conftest.py) shares one registry with many
tests that read its champion, so these tests register and promote in their own: a weak version
1 (fitted on one month) as champion and a sound version 2 as challenger, both trained on the
served bank's store as of its end, each with its model report built (as ``duanka report``
builds it), and a backtest of the same code logged as ``duanka backtest`` logs its pooled
figures. :meth:`ModelVersions.reset` puts aliases and tags back before each test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow

from duanka.data.config import Settings
from duanka.data.store import EventStore
from duanka.training.approval import FORCED_AT_TAG, FORCED_BY_TAG
from duanka.training.backtest import EXPERIMENT as BACKTEST_EXPERIMENT
from duanka.training.bundle import MODEL_NAME
from duanka.training.report import build_report
from duanka.training.run import TrainConfig, train
from duanka.training.tracking import configure, experiment_id

REVIEW_TAGS = ("decision", "by", "at", "note", "report_sha256", "via")
# What `duanka backtest` logs of its pooled row (training/backtest_report.py, log_backtest)
BACKTEST_METRICS = {
    "pooled.pr_auc": 0.412,
    "pooled.recall_at_1.0pct": 0.503,
    "pooled.out_of_province_ratio": 1.8,
}


@dataclass(frozen=True)
class ModelVersions:
    """A registry with a champion (``weak``) and a challenger (``sound``) of the served bank."""

    root: Path
    settings: Settings
    store: EventStore
    weak: str
    sound: str

    def client(self) -> mlflow.MlflowClient:
        """Point MLflow at this registry (another test may have moved it) and return a client."""
        return configure(self.settings)

    def reset(self) -> mlflow.MlflowClient:
        """Champion ``weak``, challenger ``sound``, no review, no forced promotion, each report as built."""
        client = self.client()
        client.set_registered_model_alias(MODEL_NAME, "champion", self.weak)
        client.set_registered_model_alias(MODEL_NAME, "challenger", self.sound)
        for version in (self.weak, self.sound):
            tags = client.get_model_version(MODEL_NAME, version).tags
            for tag in (
                *(f"duanka.review.{t}" for t in REVIEW_TAGS),
                FORCED_BY_TAG,
                FORCED_AT_TAG,
                "promotion",
            ):
                if tag in tags:
                    client.delete_model_version_tag(MODEL_NAME, version, tag)
        return client

    def report(self, version: str) -> None:
        """Build the version's report again, as ``duanka report`` does: a new report."""
        build_report(
            f"models:/{MODEL_NAME}/{version}",
            self.root / f"report-{version}.html",
            self.client(),
            progress=False,
        )


def two_versions(store: EventStore, root: Path, as_of) -> ModelVersions:
    """Train both versions on ``store`` in a registry under ``root``, build their reports, log a backtest."""
    settings = Settings(models_dir=root / "models")
    client = configure(settings)
    # fast: no baselines, no bootstrap; what the page compares is the evidence and shipped models
    weak = train(store, TrainConfig(as_of=as_of, train_months=1, fast=True), settings, progress=False)
    sound = train(store, TrainConfig(as_of=as_of, fast=True), settings, progress=False)
    versions = ModelVersions(root, settings, store, weak.model_version, sound.model_version)
    for version in (versions.weak, versions.sound):
        versions.report(version)
    code = client.get_run(sound.run_id).data.params["code_version"]
    with mlflow.start_run(experiment_id=experiment_id(BACKTEST_EXPERIMENT, settings)):
        mlflow.log_params({"from": "2024-09-01T00:00:00+08:00", "to": "2025-01-01T00:00:00+08:00"})
        mlflow.log_params({"periods": 4, "code_version": code})
        mlflow.log_metrics(BACKTEST_METRICS)
    versions.reset()
    return versions
