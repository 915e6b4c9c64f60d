"""Which registered model the service scores with: loaded, verified and checked to fit this code.

Fail closed: a model is only used after its booster hash matches the registry's
record (:func:`duanka.training.bundle.load_registered`), its feature definitions are
this code's (:data:`duanka.features.registry.FEATURE_SET_VERSION`) and its signature is
:data:`duanka.features.registry.MODEL_FEATURES` in order. Anything else raises
:class:`duanka.training.bundle.ModelIntegrityError`: no model, no score.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from duanka.features.registry import FEATURE_SET_VERSION, MODEL_FEATURES
from duanka.training.bundle import MODEL_NAME, ModelIntegrityError, RegisteredModel, load_registered
from duanka.training.explain import ReasonExplainer

TOP_REASONS = 3


def check_compatible(model: RegisteredModel) -> None:
    """Refuse a model this code cannot feed.

    Raises
    ------
    ModelIntegrityError
        Its feature set version or its feature list differs from this code's.
    """
    bundle = model.bundle
    if bundle.feature_set_version != FEATURE_SET_VERSION:
        raise ModelIntegrityError(
            f"{model.uri} (version {model.version}) was trained on feature set "
            f"{bundle.feature_set_version}, this code computes {FEATURE_SET_VERSION}: "
            "refusing to score with features it was not trained on; retrain or deploy the matching code"
        )
    if list(bundle.feature_names) != list(MODEL_FEATURES):
        missing = sorted(set(MODEL_FEATURES) - set(bundle.feature_names))
        extra = sorted(set(bundle.feature_names) - set(MODEL_FEATURES))
        raise ModelIntegrityError(
            f"{model.uri} (version {model.version}) expects other inputs than this code's MODEL_FEATURES "
            f"(missing {missing or 'none'}, unexpected {extra or 'none'}, or another order): refusing to load"
        )


@dataclass(frozen=True)
class LoadedModel:
    """A verified, compatible model and its explainer, ready to score."""

    registered: RegisteredModel
    explainer: ReasonExplainer

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def version(self) -> str:
        return self.registered.version

    @property
    def booster_sha256(self) -> str:
        return self.registered.bundle.booster_sha256

    def describe(self) -> dict[str, str]:
        """Name, version and hashes, as each answer and audit row names the model."""
        return {
            "name": self.name,
            "version": self.version,
            "booster_sha256": self.booster_sha256,
            "bundle_sha256": self.registered.bundle_sha256,
        }


class ModelSource:
    """A registry URI (``models:/duanka@champion`` or ``models:/duanka/3``) and how to load it.

    Parameters
    ----------
    uri : str
        Registry URI; an alias URI follows the alias when reloaded.
    client : mlflow.MlflowClient
        Registry client (:func:`duanka.training.tracking.configure`).
    signing_key : bytes, optional
        Require every version loaded to be signed with it (:mod:`duanka.training.signing`).
    """

    def __init__(self, uri: str, client: mlflow.MlflowClient, signing_key: bytes | None = None) -> None:
        self.uri = uri
        self.client = client
        self.signing_key = signing_key

    @property
    def alias(self) -> str | None:
        _, _, alias = self.uri.removeprefix("models:/").partition("@")
        return alias or None

    def load(self) -> LoadedModel:
        """Load, verify and check the model the URI points at now.

        Raises
        ------
        ModelIntegrityError
            Unknown URI, tampered booster, or a model this code cannot feed.
        """
        registered = load_registered(self.uri, self.client, self.signing_key)
        check_compatible(registered)
        return LoadedModel(registered, ReasonExplainer(registered.bundle, top_k=TOP_REASONS))

    def current_version(self) -> str:
        """The version the alias points at now (cheap: one registry read)."""
        if self.alias is None:
            return self.uri.rsplit("/", 1)[-1]
        return str(self.client.get_model_version_by_alias(MODEL_NAME, self.alias).version)
