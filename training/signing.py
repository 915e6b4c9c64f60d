"""Model signatures: the registry's record of a bundle, made unforgeable without a key.

The registry tags each version with the SHA-256 of its booster and of ``bundle.json`` (the
calibrator and the band thresholds), and loading refuses files that differ from the tags.
Someone who can write both the artifacts and ``mlflow.db`` can change the files and the
tags together. With ``DUANKA_MODEL_SIGNING_KEY`` (or ``_FILE``) set, ``duanka train`` also
tags the version with ``HMAC-SHA256(key, booster hash, bundle hash)``, and every load (the
service, its reloads, batch scoring) refuses a version whose signature is missing or does
not match: re-signing needs the key, which lives in configuration, not beside the model.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from duanka.data.config import Settings, configured_secret

SIGNATURE_TAG = "signature"
MIN_SIGNING_KEY_BYTES = 32


class SigningKeyError(RuntimeError):
    """The configured signing key cannot be read or is too short."""


def signing_key(settings: Settings) -> bytes | None:
    """The model signing key from ``DUANKA_MODEL_SIGNING_KEY`` or ``_FILE``; None when unset.

    Raises
    ------
    SigningKeyError
        A configured key file cannot be read, or a key is shorter than 32 bytes.
    """
    return configured_secret(
        settings.model_signing_key,
        settings.model_signing_key_file,
        "DUANKA_MODEL_SIGNING_KEY",
        min_bytes=MIN_SIGNING_KEY_BYTES,
        error=SigningKeyError,
    )


def signature(key: bytes, booster_sha256: str, bundle_sha256: str) -> str:
    """The signature of one bundle, given its two recorded hashes."""
    message = f"duanka/model/{booster_sha256}/{bundle_sha256}".encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_problem(key: bytes, tags: Mapping[str, str]) -> str | None:
    """Why a version's tags do not carry a valid signature by ``key``; None when they do."""
    given = tags.get(SIGNATURE_TAG)
    if not given:
        return "it is not signed, and DUANKA_MODEL_SIGNING_KEY is set"
    expected = signature(key, tags.get("booster_sha256", ""), tags.get("bundle_sha256", ""))
    if not hmac.compare_digest(given, expected):
        return "its signature was not made with the configured DUANKA_MODEL_SIGNING_KEY"
    return None
