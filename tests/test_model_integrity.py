"""A model artifact that was edited or cut short is refused at load, with a reason: no model, no score.

Each case damages a copy of the served bank's registered bundle, never the original, so the other
modules' model stays intact.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.training.bundle import (
    BOOSTER_FILE,
    META_FILE,
    MODEL_NAME,
    ModelIntegrityError,
    load_registered,
    read_bundle,
    sha256_text,
)
from duanka.training.signing import SIGNATURE_TAG, SigningKeyError, signature, signing_key

ALIAS = "integrity-test"


def _edit_a_leaf(folder: Path) -> None:
    """Change one digit of the first leaf value: a model that still parses, and scores differently.

    Same length on purpose: the header records each tree's size, and LightGBM aborts the whole
    process (not an exception) on a text whose sizes do not add up.
    """
    booster = folder / BOOSTER_FILE
    text = booster.read_text(encoding="utf-8")
    at = re.search(r"^leaf_value=-?([0-9])", text, re.M).start(1)
    booster.write_text(text[:at] + str((int(text[at]) + 5) % 10) + text[at + 1 :], encoding="utf-8")


def _truncate_booster(folder: Path) -> None:
    booster = folder / BOOSTER_FILE
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])


def _edit_meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        change(meta)
        (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    return edit


def _shift_calibrator(meta: dict) -> None:
    calibrator = meta["calibrator"]
    if calibrator["kind"] == "platt":
        calibrator["intercept"] += 2.0
    else:
        calibrator["y"] = [min(1.0, y + 0.2) for y in calibrator["y"]]


def _truncate_meta(folder: Path) -> None:
    meta = folder / META_FILE
    meta.write_bytes(meta.read_bytes()[:100])


def _forge(folder: Path) -> None:
    """Edit the booster and record the new hash in bundle.json too: self-consistent, but not registered."""
    _edit_a_leaf(folder)
    text = (folder / BOOSTER_FILE).read_text(encoding="utf-8")
    _edit_meta(lambda meta: meta.update(booster_sha256=sha256_text(text)))(folder)


DAMAGE = {
    "booster.txt edited": (_edit_a_leaf, "does not match the SHA-256"),
    "booster.txt truncated": (_truncate_booster, "does not match the SHA-256"),
    "bundle.json hash edited": (_edit_meta(lambda m: m.update(booster_sha256="0" * 64)), "does not match"),
    "bundle.json features reordered": (
        _edit_meta(lambda m: m.update(feature_names=m["feature_names"][::-1])),
        "features differ",
    ),
    "bundle.json truncated": (_truncate_meta, "unreadable"),
    "booster.txt deleted": (lambda folder: (folder / BOOSTER_FILE).unlink(), "unreadable"),
}


@pytest.fixture(scope="module")
def genuine(served_bank) -> Path:
    """The registered model's downloaded folder (MLflow layout, bundle under ``artifacts/``)."""
    served_bank.client()
    return Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{served_bank.version}"))


def _damaged_copy(genuine: Path, where: Path, damage: Callable[[Path], None]) -> Path:
    copy = Path(shutil.copytree(genuine, where / "model"))
    damage(copy / "artifacts")
    return copy


def test_the_genuine_bundle_loads(genuine):
    bundle = read_bundle(genuine / "artifacts" / BOOSTER_FILE, genuine / "artifacts" / META_FILE)
    assert len(bundle.booster_sha256) == 64


@pytest.mark.parametrize("case", list(DAMAGE))
def test_read_bundle_refuses_a_damaged_bundle_with_a_reason(genuine, tmp_path, case):
    damage, reason = DAMAGE[case]
    folder = _damaged_copy(genuine, tmp_path, damage) / "artifacts"
    with pytest.raises(ModelIntegrityError, match=reason):
        read_bundle(folder / BOOSTER_FILE, folder / META_FILE)


def test_a_forged_bundle_is_self_consistent_so_only_the_registry_record_catches_it(genuine, tmp_path):
    folder = _damaged_copy(genuine, tmp_path, _forge) / "artifacts"
    # read_bundle alone cannot tell: this is why models load from the registry, never from a path
    assert read_bundle(folder / BOOSTER_FILE, folder / META_FILE).booster_sha256 != ""


@pytest.fixture(scope="module")
def register_damaged(served_bank, genuine, tmp_path_factory):
    """Register a damaged copy as a new version under a module-only alias, with the genuine tags."""
    client = served_bank.client()
    original = client.get_model_version(MODEL_NAME, served_bank.version)

    def register(damage: Callable[[Path], None]) -> str:
        copy = _damaged_copy(genuine, tmp_path_factory.mktemp("damaged"), damage)
        with mlflow.start_run(run_name="damaged copy (test_model_integrity)") as run:
            mlflow.log_artifacts(str(copy), "model")
        version = client.create_model_version(
            MODEL_NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        for key, value in original.tags.items():  # the registry's record is the genuine model's
            client.set_model_version_tag(MODEL_NAME, version.version, key, value)
        client.set_registered_model_alias(MODEL_NAME, ALIAS, version.version)
        return f"models:/{MODEL_NAME}@{ALIAS}"

    yield register
    client.delete_registered_model_alias(MODEL_NAME, ALIAS)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_edit_a_leaf, "booster.txt differs from the one"),
        (_truncate_booster, "booster.txt differs from the one"),
        (_forge, "differs from the one"),
        (_edit_meta(_shift_calibrator), "bundle.json differs from the one"),
    ],
    ids=[
        "booster edited",
        "booster truncated",
        "booster and bundle.json forged together",
        "calibrator edited (booster untouched)",
    ],
)
def test_the_service_refuses_to_start_on_a_damaged_model(
    served_bank, duanka_env, tmp_path, register_damaged, damage, reason
):
    uri = register_damaged(damage)
    data = tmp_path / "store"
    shutil.copytree(served_bank.store.root, data)
    result = CliRunner().invoke(app, ["serve", "--data", str(data), "--model", uri, "--port", "1"])
    assert result.exit_code == 1, result.output
    assert reason in result.output and "refusing" in result.output
    # fail closed: nothing was opened, so nothing can have been scored
    assert not (data / "serving" / "decisions.db").exists()


def _raise_every_band_cut(meta: dict) -> None:
    meta["bands"] = {name: min(1.0, value * 3) for name, value in meta["bands"].items()}


def test_with_a_signing_key_only_versions_signed_with_it_load(served_bank, genuine, tmp_path):
    """Whoever can write the artifacts and mlflow.db can change every band cut and the recorded
    hash together; only the signature, made with a key kept in configuration, tells."""
    key, foreign = b"s" * 32, b"x" * 32
    client = served_bank.client()
    original = {k: v for k, v in client.get_model_version(MODEL_NAME, served_bank.version).tags.items()}
    original.pop(SIGNATURE_TAG, None)

    def register(folder: Path, tags: dict[str, str]) -> str:
        with mlflow.start_run(run_name="signing test (test_model_integrity)") as run:
            mlflow.log_artifacts(str(folder), "model")
        version = client.create_model_version(
            MODEL_NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        for name, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version.version, name, value)
        return f"models:/{MODEL_NAME}/{version.version}"

    doctored = _damaged_copy(genuine, tmp_path / "doctored", _edit_meta(_raise_every_band_cut))
    doctored_tags = {
        **original,
        "bundle_sha256": sha256_text((doctored / "artifacts" / META_FILE).read_text()),
    }
    unsigned = register(doctored, doctored_tags)
    resigned = register(
        doctored,
        {
            **doctored_tags,
            SIGNATURE_TAG: signature(
                foreign, doctored_tags["booster_sha256"], doctored_tags["bundle_sha256"]
            ),
        },
    )
    genuine_signed = register(
        genuine,
        {**original, SIGNATURE_TAG: signature(key, original["booster_sha256"], original["bundle_sha256"])},
    )

    assert (
        load_registered(unsigned, client).bundle.bands != load_registered(genuine_signed, client).bundle.bands
    )
    with pytest.raises(ModelIntegrityError, match="not signed"):
        load_registered(unsigned, client, key)
    with pytest.raises(ModelIntegrityError, match="signature was not made with"):
        load_registered(resigned, client, key)
    assert load_registered(genuine_signed, client, key).version == genuine_signed.rsplit("/", 1)[1]


def test_the_signing_key_comes_from_configuration_and_a_short_one_is_refused():
    from duanka.data.config import Settings

    assert signing_key(Settings()) is None
    assert signing_key(Settings(model_signing_key="k" * 40)) == b"k" * 40
    with pytest.raises(SigningKeyError, match="at least 32"):
        signing_key(Settings(model_signing_key="short"))
