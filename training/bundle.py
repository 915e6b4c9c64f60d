"""The shipped model: booster (LightGBM text), calibrator, bands and feature list.

Logged to MLflow as a pyfunc with a signature and an input example, registered
as ``duanka`` and addressed by alias. The booster travels in LightGBM's own text
format and is verified by SHA-256 on load: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

from duanka.training.bands import Bands
from duanka.training.calibration import Calibrator, calibrator_from_dict
from duanka.training.signing import signature_problem

MODEL_NAME = "duanka"
BOOSTER_FILE = "booster.txt"
META_FILE = "bundle.json"
FEW_ROWS = 256  # fewer rows than this are predicted on one thread


class ModelIntegrityError(RuntimeError):
    """A model artifact does not match what was recorded at registration."""


@dataclass(frozen=True)
class ScoringBundle:
    """Everything needed to turn a feature row into a calibrated score and a band."""

    booster: lgb.Booster
    calibrator: Calibrator
    bands: Bands
    feature_names: list[str]
    feature_set_version: str
    booster_sha256: str

    def margin(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        # One thread for a request's few rows: waking LightGBM's OpenMP team costs milliseconds on
        # busy cores (0.06 ms against 6 ms measured on 2). Values do not depend on the thread count.
        return self.booster.predict(X, raw_score=True, num_threads=1 if len(X) < FEW_ROWS else 0)

    def score(self, X: np.ndarray) -> np.ndarray:
        return self.calibrator.predict(self.margin(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions on the margin; the last column is the base value."""
        return self.booster.predict(np.asarray(X, dtype=float), pred_contrib=True)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_bundle(
    folder: Path,
    booster: lgb.Booster,
    calibrator: Calibrator,
    bands: Bands,
    feature_names: list[str],
    feature_set_version: str,
) -> dict[str, str]:
    """Write the two artifact files; returns their paths for MLflow."""
    folder.mkdir(parents=True, exist_ok=True)
    text = booster.model_to_string(num_iteration=booster.best_iteration or None)
    (folder / BOOSTER_FILE).write_text(text, encoding="utf-8")
    meta = {
        "calibrator": calibrator.to_dict(),
        "bands": bands.to_dict(),
        "feature_names": list(feature_names),
        "feature_set_version": feature_set_version,
        "booster_sha256": sha256_text(text),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return {"booster": str(folder / BOOSTER_FILE), "meta": str(folder / META_FILE)}


def read_bundle(booster_path: Path, meta_path: Path) -> ScoringBundle:
    """Load and verify a bundle; refuse a booster whose hash differs from the record."""
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
        text = Path(booster_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"model artifact unreadable: {exc}") from None
    if sha256_text(text) != meta.get("booster_sha256"):
        raise ModelIntegrityError(
            "booster.txt does not match the SHA-256 recorded at registration: refusing to load"
        )
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ModelIntegrityError(f"booster.txt is not a LightGBM model: {exc}") from None
    if booster.feature_name() != meta["feature_names"]:
        raise ModelIntegrityError("booster features differ from the recorded feature list")
    return ScoringBundle(
        booster=booster,
        calibrator=calibrator_from_dict(meta["calibrator"]),
        bands=Bands(**meta["bands"]),
        feature_names=meta["feature_names"],
        feature_set_version=meta["feature_set_version"],
        booster_sha256=meta["booster_sha256"],
    )


EVIDENCE_PATH = "evidence"  # run artifact folder of the evidence model (training.fit)


def load_evidence(run_id: str, expected_sha256: str | None) -> ScoringBundle | None:
    """The evidence model a training run logged beside its shipped model, verified.

    None for a run from before shipped models were refits (it logged none).
    ``expected_sha256`` is the registered version's ``evidence_sha256`` tag.
    """
    if expected_sha256 is None:
        return None
    try:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=EVIDENCE_PATH))
    except (mlflow.exceptions.MlflowException, OSError):
        raise ModelIntegrityError(f"run {run_id}: its evidence model is missing") from None
    meta_path = local / META_FILE
    try:
        actual = sha256_text(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        raise ModelIntegrityError(f"run {run_id}: the evidence model is unreadable") from None
    if actual != expected_sha256:
        raise ModelIntegrityError(f"run {run_id}: the evidence model differs from the one registered")
    return read_bundle(local / BOOSTER_FILE, meta_path)


class DuankaPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow entry point for callers that send precomputed feature rows."""

    def load_context(self, context) -> None:
        self.bundle = read_bundle(Path(context.artifacts["booster"]), Path(context.artifacts["meta"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        X = model_input.loc[:, self.bundle.feature_names].to_numpy(dtype=float)
        score = self.bundle.score(X)
        return pd.DataFrame({"score": score, "band": self.bundle.bands.assign(score)})


CODE_ROOMS = ("data", "features", "training")
ENTRY_FILE = "pyfunc_entry.py"  # the models-from-code entry point MLflow logs beside the code


def _source_only(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree`` filter: Python packages and their ``.py`` files, nothing else.

    ``data/`` is also where exports and stores may sit (the quickstart writes its bank
    there): a model must never carry them.
    """
    here = Path(folder)
    return {
        name
        for name in names
        if not (
            ((here / name).is_dir() and (here / name / "__init__.py").exists())
            or ((here / name).is_file() and name.endswith(".py"))
        )
    }


def copy_inference_code(sources: Path, into: Path) -> list[str]:
    """The package's Python sources, copied as ``into/duanka/<room>`` without data beside them.

    ``sources`` is the folder holding the rooms (the checkout, or ``site-packages/duanka``).
    MLflow puts the model's ``code/`` folder on ``sys.path`` at load, so the copy imports as
    ``duanka.*``, the one name the package installs.
    """
    package = into / "duanka"
    for room in CODE_ROOMS:
        # copyfile, not copy2: a copy takes the process's umask (owner-only under `duanka`), not
        # the checkout's modes, and MLflow keeps the modes it finds
        shutil.copytree(sources / room, package / room, ignore=_source_only, copy_function=shutil.copyfile)
    return [str(package)]


def log_bundle(
    folder: Path, input_example: pd.DataFrame, paths: dict[str, str], project_root: Path
) -> mlflow.models.model.ModelInfo:
    """Log the pyfunc (with the project's inference code) and register it as ``duanka``."""
    preview = DuankaPyfunc()
    preview.bundle = read_bundle(Path(paths["booster"]), Path(paths["meta"]))
    signature = mlflow.models.infer_signature(input_example, preview.predict(None, input_example))
    entry = shutil.copyfile(Path(__file__).with_name(ENTRY_FILE), folder / ENTRY_FILE)  # as the code
    with _quiet_registration():
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry),
            artifacts=paths,
            code_paths=copy_inference_code(project_root, folder / "code"),
            signature=signature,
            input_example=input_example,
            registered_model_name=MODEL_NAME,
        )


@contextmanager
def _quiet_registration() -> Iterator[None]:
    """MLflow prints "Successfully registered model" and "Created version" past its log levels;
    below INFO (duanka without --verbose) they are not said: duanka says what it registered."""
    from mlflow.utils import logging_utils

    if logging.getLogger("mlflow").isEnabledFor(logging.INFO):
        yield
        return
    logging_utils.disable_logging()
    try:
        yield
    finally:
        logging_utils.enable_logging()


@dataclass(frozen=True)
class RegisteredModel:
    """A registry entry resolved from a URI, and its verified bundle."""

    uri: str
    version: str
    run_id: str
    bundle: ScoringBundle
    bundle_sha256: str = ""  # of bundle.json (calibrator, band cuts), as verified against the registry


def resolve_model_uri(uri: str | None, client: mlflow.MlflowClient) -> str:
    """``--model`` default: ``@champion``, else ``@challenger`` (the caller says which it took)."""
    if uri:
        return uri
    for alias in ("champion", "challenger"):
        try:
            client.get_model_version_by_alias(MODEL_NAME, alias)
        except mlflow.exceptions.MlflowException:
            continue
        return f"models:/{MODEL_NAME}@{alias}"
    raise ModelIntegrityError(
        f"no registered model {MODEL_NAME!r} with alias champion or challenger: train first"
    )


def _version_of(uri: str, client: mlflow.MlflowClient):
    name, _, ref = uri.removeprefix("models:/").partition("@")
    if ref:
        return client.get_model_version_by_alias(name, ref)
    name, _, number = uri.removeprefix("models:/").partition("/")
    return client.get_model_version(name, number)


def load_registered(
    uri: str, client: mlflow.MlflowClient, signing_key: bytes | None = None
) -> RegisteredModel:
    """Download a registered model's artifacts and verify them against the registry's record.

    With ``signing_key`` (:mod:`duanka.training.signing`), the record itself must carry a valid
    signature by that key.

    Raises
    ------
    ModelIntegrityError
        Unknown URI, a booster whose hash differs from the one tagged at registration,
        unreadable artifacts, or (with a key) a missing or foreign signature: no model, no score.
    """
    if not uri.startswith("models:/"):
        raise ModelIntegrityError(
            f"{uri!r}: load models from the registry (models:/duanka@champion), not a path"
        )
    try:
        version = _version_of(uri, client)
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}"))
    except mlflow.exceptions.MlflowException as exc:
        raise ModelIntegrityError(f"cannot resolve {uri}: {exc.message}") from None
    if signing_key is not None and (problem := signature_problem(signing_key, version.tags)) is not None:
        raise ModelIntegrityError(f"{uri} (version {version.version}): {problem}: refusing to load")
    booster_path, meta_path = local / "artifacts" / BOOSTER_FILE, local / "artifacts" / META_FILE
    # Both files are checked against the registry before LightGBM parses anything: a damaged
    # booster can crash the parser, and bundle.json holds the calibrator and the band thresholds.
    for tag, path in (("booster_sha256", booster_path), ("bundle_sha256", meta_path)):
        try:
            actual = sha256_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            raise ModelIntegrityError(f"{uri}: {path.name} is unreadable: refusing to load") from None
        if actual != version.tags.get(tag):
            raise ModelIntegrityError(
                f"{uri}: {path.name} differs from the one recorded at registration: refusing to load"
            )
    bundle = read_bundle(booster_path, meta_path)
    return RegisteredModel(uri, str(version.version), version.run_id, bundle, version.tags["bundle_sha256"])
