"""The monitoring reference stored with a registered model, and how the monitoring finds it again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest

from duanka.data.config import Settings
from duanka.serving.monitor.baselines import NO_REFERENCE, registry_resolver
from duanka.training.bundle import MODEL_NAME, sha256_text
from duanka.training.monitoring_reference import (
    REFERENCE_FILE,
    REFERENCE_TAG,
    band_window_reference,
    reference_of,
)
from duanka.training.tracking import configure, metric_key

BOOSTER = "a" * 64


def test_the_reference_is_the_band_window_scored_by_the_shipped_model() -> None:
    rng = np.random.default_rng(0)
    applied = pd.date_range("2025-01-01", periods=1000, freq="6h", tz="UTC")
    frame = pd.DataFrame({"applied_at": applied, "x": rng.normal(size=1000), "y": rng.random(1000)})
    start, end = applied[600], applied[-1] + pd.Timedelta(hours=6)

    def score(X: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-X[:, 0]))

    found = band_window_reference(frame, ["x", "y"], score, start, end)
    rows = frame.iloc[600:][["x", "y"]].to_numpy()
    assert found.rows == 400
    assert found == reference_of(rows, score(rows), ["x", "y"], (start.isoformat(), end.isoformat()))


@pytest.fixture
def registry(tmp_path) -> Iterator[mlflow.MlflowClient]:
    """A registry of its own, MLflow's process-wide URIs put back afterwards."""
    tracking, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield configure(Settings(models_dir=tmp_path / "models"))
    finally:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry_uri)


def _register(client: mlflow.MlflowClient, text: str | None, tag: str | None) -> str:
    """A version of the booster :data:`BOOSTER`, its run logging ``text`` as the reference."""
    with mlflow.start_run() as run:
        if text is not None:
            mlflow.log_text(text, REFERENCE_FILE)
        mlflow.log_metrics(
            {
                metric_key("lightgbm.test_recall@2.0%"): 0.6,
                metric_key("lightgbm.test_recall@2.0%_ci_low"): 0.5,
            }
        )
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # registered by an earlier call
        client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_model_version_tag(MODEL_NAME, version.version, "booster_sha256", BOOSTER)
    if tag is not None:
        client.set_model_version_tag(MODEL_NAME, version.version, REFERENCE_TAG, tag)
    return str(version.version)


def test_the_monitoring_reads_the_reference_a_version_was_registered_with(registry) -> None:
    rng = np.random.default_rng(1)
    reference = reference_of(rng.normal(size=(500, 2)), rng.random(500), ["x", "y"], ("a", "b"))
    text = reference.text()
    resolve = registry_resolver(registry)

    found = resolve(BOOSTER, _register(registry, text, sha256_text(text)))
    assert found.reference == reference and found.settled
    assert found.expected["recall alert"][:2] == (0.6, 0.5)  # the run's test figure at the alert rate

    older = resolve(BOOSTER, _register(registry, None, None))
    assert older.reference is None and older.note == NO_REFERENCE

    changed = resolve(
        BOOSTER, _register(registry, text.replace('"rows": 500', '"rows": 501'), sha256_text(text))
    )
    assert changed.reference is None and "differs" in changed.note

    other = resolve("b" * 64, _register(registry, text, sha256_text(text)))
    assert other.reference is None and "another booster" in other.note
    assert "not registered" in resolve(BOOSTER, "999").note
