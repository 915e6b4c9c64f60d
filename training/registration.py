"""Registering a training run's shipped model as ``duanka@challenger``, hash-tagged and signed.

The run's two bundles are written and logged: the evidence model as a plain artifact (the
promotion rule reads it, :mod:`duanka.training.promote`) and the shipped model as the registered
pyfunc. The version is tagged with the hashes serving verifies before it scores
(:func:`duanka.training.bundle.load_registered`) and, where a signing key is configured, with their
signature (:mod:`duanka.training.signing`); only then does the ``challenger`` alias move to it.

Given the run's training-set rows, the version also carries its monitoring reference
(:mod:`duanka.training.monitoring_reference`): the band window's score and feature bins, logged
to the run and its SHA-256 tagged on the version, which ``duanka monitor`` reads PSI and CSI against.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

from duanka.data.config import Settings
from duanka.features.registry import FEATURE_SET_VERSION
from duanka.training.bundle import EVIDENCE_PATH, MODEL_NAME, log_bundle, sha256_text, write_bundle
from duanka.training.fit import Fitted
from duanka.training.monitoring_reference import REFERENCE_FILE, REFERENCE_TAG, band_window_reference
from duanka.training.promote import CHALLENGER
from duanka.training.signing import SIGNATURE_TAG, signature, signing_key
from duanka.training.tracking import PROJECT_ROOT

SHIPPED_PATH = "shipped"


def _meta_sha256(paths: dict[str, str]) -> str:
    return sha256_text(Path(paths["meta"]).read_text(encoding="utf-8"))


def register(
    fitted: Fitted,
    example: pd.DataFrame,
    folder: Path,
    run_id: str,
    *,
    reference_rows: pd.DataFrame | None = None,
) -> str:
    """Log both bundles to the active run, register the shipped one and tag its hashes.

    Parameters
    ----------
    fitted : Fitted
        The run's evidence and shipped models.
    example : pandas.DataFrame
        A few rows of model features: the pyfunc's input example and signature.
    folder : Path
        Scratch space for the bundles; the caller removes it.
    run_id : str
        The active MLflow run, tagged on the version.
    reference_rows : pandas.DataFrame, optional
        The run's training-set frame: its band window, scored by the shipped model, becomes the
        version's monitoring reference. None: the version has none (its monitoring says so).

    Returns
    -------
    str
        The new model version, not yet under any alias.
    """
    names = fitted.names
    evidence_paths = write_bundle(
        folder / EVIDENCE_PATH,
        fitted.evidence.booster_,
        fitted.evidence_calibrator,
        fitted.evidence_bands,
        names,
        FEATURE_SET_VERSION,
    )
    mlflow.log_artifacts(str(folder / EVIDENCE_PATH), EVIDENCE_PATH)
    paths = write_bundle(
        folder / SHIPPED_PATH,
        fitted.shipped.booster_,
        fitted.calibrator,
        fitted.bands,
        names,
        FEATURE_SET_VERSION,
    )
    info = log_bundle(folder / SHIPPED_PATH, example, paths, PROJECT_ROOT)
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    meta = json.loads(Path(paths["meta"]).read_text(encoding="utf-8"))
    tags = {
        "booster_sha256": meta["booster_sha256"],
        "feature_set_version": meta["feature_set_version"],
        "bundle_sha256": _meta_sha256(paths),
        "evidence_sha256": _meta_sha256(evidence_paths),
        "run_id": run_id,
    }
    if reference_rows is not None:
        window = fitted.band_window
        reference = band_window_reference(reference_rows, names, fitted.score, window.start, window.end)
        text = reference.text()
        mlflow.log_text(text, REFERENCE_FILE)
        tags[REFERENCE_TAG] = sha256_text(text)
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)
    return version


def sign(version: str, settings: Settings) -> bool:
    """Sign a registered version's booster and bundle hashes, when a signing key is configured.

    Parameters
    ----------
    version : str
    settings : Settings
        Where the signing key is found (:func:`duanka.training.signing.signing_key`).

    Returns
    -------
    bool
        Whether the version was signed.
    """
    key = signing_key(settings)
    if key is None:
        return False
    client = mlflow.MlflowClient()
    tags = client.get_model_version(MODEL_NAME, version).tags
    client.set_model_version_tag(
        MODEL_NAME, version, SIGNATURE_TAG, signature(key, tags["booster_sha256"], tags["bundle_sha256"])
    )
    return True


def make_challenger(version: str) -> None:
    """Point ``duanka@challenger`` at ``version``: what ``duanka promote`` judges next."""
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
