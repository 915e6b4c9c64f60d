"""MLflow wiring: the embedded SQLite store by default, a team server when configured."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from duanka.data.config import Settings

EXPERIMENT = "duanka"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists."""
    # MLflow's alembic migrations log at INFO on every fresh SQLite store: noise for users.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.tracking_uri())
    mlflow.set_registry_uri(settings.tracking_uri())
    # set_tracking_uri also exports MLFLOW_TRACKING_URI, which every later Settings() would read
    # in preference to its own models_dir; the process-wide URI above is all MLflow needs.
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
    experiment_id(EXPERIMENT, settings)
    mlflow.set_experiment(EXPERIMENT)
    return MlflowClient()


def experiment_id(name: str, settings: Settings) -> str:
    """The id of experiment ``name``, created if missing with its artifacts under the embedded
    artifact root (a team's tracking server decides that itself), never in the current folder."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None if settings.mlflow_tracking_uri else settings.artifact_root()
    if location is not None and name != EXPERIMENT:
        location = f"{location}/{name}"
    return mlflow.create_experiment(name, artifact_location=location)


def code_version() -> str:
    """The git commit of the code that trained, or 'unknown' outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def metric_key(name: str) -> str:
    """MLflow's metric names allow no '@' or '%': ``recall@0.5%`` is logged as ``recall_at_0.5pct``."""
    return name.replace("@", "_at_").replace("%", "pct")
