"""What a verb needs before it starts work, each got or refused with one line naming the remedy:
the settings, the event store, the model registry, the keys, a verified model.

Heavy rooms (MLflow, the scorer) are imported inside the functions that need them, so that
``--help`` and the light verbs start quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from duanka.cli.output import console, err, fail, invoked_as
from duanka.data.config import Settings, get_settings
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore, StoreOutdated

if TYPE_CHECKING:
    import mlflow

    from duanka.serving.model_source import LoadedModel, ModelSource
    from duanka.serving.state import ServingPaths


def checked_settings() -> Settings:
    """The settings in force, or exit with one line naming the variable or file line at fault."""
    from pydantic import ValidationError

    from duanka.data.config import ConfigFileError, variable_of

    try:
        return get_settings()
    except ConfigFileError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        # a bad value in the environment (the file's are caught above): the variable and why
        problems = "; ".join(
            f"{variable_of(str(e['loc'][0]).lower()) if e['loc'] else 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise fail(f"invalid setting: {problems}") from None


def require_store(data_dir: Path, *, empty_ok: bool = False) -> EventStore:
    """The event store at ``data_dir``, or exit saying "ingest first" before any work.

    Parameters
    ----------
    data_dir : pathlib.Path
        The store's folder.
    empty_ok : bool
        Accept a folder nothing has been ingested into yet: the service and a scored file
        read the store as history, which may be empty.
    """
    store = EventStore(data_dir)
    if not data_dir.is_dir() or not (empty_ok or store.manifest()):
        raise fail(
            f"no event store at {data_dir}: ingest the bank's files first ({invoked_as()} ingest "
            f"--applications FILE --labels FILE --data {data_dir}), or pass --data or set DUANKA_DATA_DIR"
        )
    try:
        store.check_layout()
    except StoreOutdated as exc:
        raise fail(str(exc)) from None
    return store


def require_registry(settings: Settings) -> None:
    """Say "train first" before MLflow would create an empty registry where none was meant to be."""
    if settings.mlflow_tracking_uri:
        return
    registry = settings.models_dir / "mlflow.db"
    if not registry.exists():
        raise fail(
            f"no model registry at {registry}: train a model first ({invoked_as()} train --data DIR "
            "--as-of DATE), or point DUANKA_MODELS_DIR or MLFLOW_TRACKING_URI at the registry"
        )


def warn_if_demo_key(keys: Pseudonymiser) -> None:
    """The public demo key on stderr, every time it is used."""
    if keys.is_demo:
        err.print(
            "[bold yellow]DEMO pseudonym key in use[/]: fine for synthetic data, never for real "
            "applicants; set DUANKA_PSEUDONYM_KEY or DUANKA_PSEUDONYM_KEY_FILE."
        )


def pseudonymiser(*, demo: bool) -> Pseudonymiser:
    """The configured pseudonym key (the demo key when ``demo`` and none is configured)."""
    from duanka.data.pseudonym import MissingPseudonymKey

    try:
        keys = Pseudonymiser.from_settings(get_settings(), demo=demo)
    except (MissingPseudonymKey, ValueError) as exc:
        raise fail(str(exc)) from None
    warn_if_demo_key(keys)
    return keys


def store_pseudonymiser(store: EventStore) -> Pseudonymiser:
    """The pseudonymiser of ``store``: the configured key, or the demo key for a demo store."""
    return pseudonymiser(demo=str(store.manifest().get("key_id", "")).startswith("demo-"))


def require_state_key(store: EventStore, paths: ServingPaths, keys: Pseudonymiser) -> None:
    """Exit with one line when the store or the service's state was pseudonymised under another key
    than ``keys``, before the service starts (where it would end in a traceback)."""
    from duanka.serving.state import StateKeyMismatch, check_state_key

    try:
        check_state_key(store, paths.sync_marker, keys.key_id)
    except StateKeyMismatch as exc:
        raise fail(str(exc)) from None


def model_signing_key() -> bytes | None:
    """The model signing key of the settings (None when unset), or a clear failure."""
    from duanka.training.signing import SigningKeyError, signing_key

    try:
        return signing_key(get_settings())
    except SigningKeyError as exc:
        raise fail(str(exc)) from None


def audit_chain_key(settings: Settings, keys: Pseudonymiser) -> bytes:
    """The decision record's chain key, or a clear failure naming the setting."""
    from duanka.serving.chain import MissingChainKey, chain_key

    try:
        return chain_key(settings, keys)
    except MissingChainKey as exc:
        raise fail(f"{exc}: set DUANKA_AUDIT_CHAIN_KEY or DUANKA_AUDIT_CHAIN_KEY_FILE") from None


def resolve_model(model: str | None) -> tuple[str, mlflow.MlflowClient]:
    """``--model`` as given, else ``@champion`` falling back to ``@challenger``; says which it took."""
    from duanka.training.bundle import ModelIntegrityError, resolve_model_uri
    from duanka.training.tracking import configure

    settings = get_settings()
    if model is None or model.startswith("models:/"):
        require_registry(settings)
    client = configure(settings)
    try:
        uri = resolve_model_uri(model, client)
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None
    if model is None:
        console.print(f"model: {uri}")
    return uri, client


def verified(source: ModelSource) -> LoadedModel:
    """The model ``source`` points at, verified and compatible (fail closed: exit on any mismatch)."""
    from duanka.training.bundle import ModelIntegrityError

    try:
        return source.load()
    except ModelIntegrityError as exc:
        raise fail(str(exc)) from None


def model_source(model: str | None) -> ModelSource:
    """Where ``--model`` points, with the signing key every version loaded must carry."""
    from duanka.serving.model_source import ModelSource

    return ModelSource(*resolve_model(model), signing_key=model_signing_key())


def load_model(model: str | None) -> LoadedModel:
    """The verified, compatible model ``--model`` names."""
    return verified(model_source(model))
