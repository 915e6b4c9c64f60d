"""Keyed pseudonyms: the only form in which an identifier leaves ingestion.

One master secret, from configuration, never from code. Each identifier family
gets its own key, ``HMAC-SHA256(master, b"duanka/v1/family/" + family)``, so a
phone number and an ID number that happen to share digits never share a token,
and a token from one family cannot be looked up in another. A token is
``HMAC-SHA256(family_key, value)`` as 32 lower-case hex characters (128 bits).

Values are hashed exactly as given: callers canonicalise them first (for instance
:func:`duanka.data.identity.normalise_resident_id`, :func:`duanka.data.address.building_key`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import pandas as pd

from duanka.data.config import Settings

FAMILIES: tuple[str, ...] = (
    "applicant",
    "phone",
    "phone_block",
    "address",
    "device",
    "escort",
    "intermediary",
    "company",
    "row",
)

MIN_KEY_BYTES = 32
TOKEN_HEX_CHARS = 32

# Deliberately recognisable: anything pseudonymised with it is marked by its key id.
_DEMO_SECRET = b"duanka-DEMO-KEY-not-for-production-data"
_KEY_ID_LABEL = b"duanka/key-id"
_FAMILY_LABEL = b"duanka/v1/family/"
_CHAIN_LABEL = b"duanka/audit-chain-key"


class MissingPseudonymKey(RuntimeError):
    """No pseudonym key is configured, or the configured key file cannot be read."""


_HOW_TO_CONFIGURE = (
    f"set DUANKA_PSEUDONYM_KEY to a secret of at least {MIN_KEY_BYTES} bytes, "
    "or DUANKA_PSEUDONYM_KEY_FILE to a file holding one "
    "(for example `openssl rand -hex 32 > pseudonym.key`)"
)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class Pseudonymiser:
    """Turns identifiers into keyed pseudonyms, one key per identifier family.

    Build one with :meth:`from_settings`, :meth:`from_secret` or :meth:`demo`.
    Its repr shows the key id and never key material, and it refuses to be
    pickled, so that no model bundle, artifact or cache can carry the keys;
    a worker process builds its own from the settings.

    Attributes
    ----------
    key_id : str
        12 hex characters of ``HMAC(master, b"duanka/key-id")``: names the secret
        in stored data and reports without revealing it. Prefixed ``demo-`` for
        the demo secret.
    is_demo : bool
        True for the built-in demo secret, which is public and must only ever
        pseudonymise synthetic data.
    """

    key_id: str
    is_demo: bool
    _family_keys: dict[str, bytes] = field(repr=False, compare=False)
    _chain_key: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def from_secret(cls, secret: bytes, *, is_demo: bool = False) -> Pseudonymiser:
        """Derive the per-family keys from a master secret.

        Parameters
        ----------
        secret : bytes
            The master secret, at least :data:`MIN_KEY_BYTES` long. It is not kept;
            only the derived family keys are.
        is_demo : bool
            Marks the demo secret; its key id gets the ``demo-`` prefix.

        Raises
        ------
        ValueError
            If the secret is shorter than :data:`MIN_KEY_BYTES`.
        """
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(f"pseudonym key has {len(secret)} bytes, needs at least {MIN_KEY_BYTES}")
        key_id = _hmac(secret, _KEY_ID_LABEL).hex()[:12]
        family_keys = {f: _hmac(secret, _FAMILY_LABEL + f.encode("ascii")) for f in FAMILIES}
        return cls(
            key_id=f"demo-{key_id}" if is_demo else key_id,
            is_demo=is_demo,
            _family_keys=family_keys,
            _chain_key=_hmac(secret, _CHAIN_LABEL),
        )

    @classmethod
    def demo(cls) -> Pseudonymiser:
        """The public demo secret, for synthetic data only; callers warn when using it."""
        return cls.from_secret(_DEMO_SECRET, is_demo=True)

    @classmethod
    def from_settings(cls, settings: Settings, *, demo: bool = False) -> Pseudonymiser:
        """The configured secret: ``DUANKA_PSEUDONYM_KEY``, else ``DUANKA_PSEUDONYM_KEY_FILE``.

        Surrounding whitespace is stripped from either, so a key file written with
        a trailing newline works; an empty value counts as not set.

        Parameters
        ----------
        settings : Settings
            Where the key or the key file's path comes from.
        demo : bool
            Fall back to :meth:`demo` when no key is configured (quickstart and
            synthetic data). A configured key always wins.

        Raises
        ------
        MissingPseudonymKey
            If no key is configured and ``demo`` is false, or the key file cannot
            be read. The message says how to configure one.
        ValueError
            If the configured key is shorter than :data:`MIN_KEY_BYTES`.
        """
        if settings.pseudonym_key is not None:
            secret = settings.pseudonym_key.get_secret_value().strip().encode("utf-8")
            if secret:
                return cls._configured(secret, "DUANKA_PSEUDONYM_KEY")
        if settings.pseudonym_key_file is not None:
            path = settings.pseudonym_key_file
            try:
                secret = path.read_bytes().strip()
            except OSError as exc:
                raise MissingPseudonymKey(
                    f"cannot read pseudonym key file {path}: {exc.strerror}; " + _HOW_TO_CONFIGURE
                ) from None
            if secret:
                return cls._configured(secret, f"key file {path}")
        if demo:
            return cls.demo()
        raise MissingPseudonymKey("no pseudonym key configured: " + _HOW_TO_CONFIGURE)

    @classmethod
    def _configured(cls, secret: bytes, source: str) -> Pseudonymiser:
        try:
            return cls.from_secret(secret)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}; " + _HOW_TO_CONFIGURE) from None

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a Pseudonymiser holds key material and is never pickled; "
            "build one where it is needed with Pseudonymiser.from_settings"
        )

    def __copy__(self) -> Pseudonymiser:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, object]) -> Pseudonymiser:
        return self

    def audit_chain_key(self) -> bytes:
        """The decision record's chain key derived from this secret (``serving.chain``), for
        deployments that configure no key of its own."""
        return self._chain_key

    def _key(self, family: str) -> bytes:
        try:
            return self._family_keys[family]
        except KeyError:
            raise ValueError(f"unknown pseudonym family {family!r}; known: {', '.join(FAMILIES)}") from None

    def token(self, family: str, value: str) -> str:
        """Keyed pseudonym of one value: 32 lower-case hex characters.

        Raises
        ------
        ValueError
            If ``family`` is not one of :data:`FAMILIES`.
        """
        digest = hmac.new(self._key(family), value.encode("utf-8"), hashlib.sha256).hexdigest()
        return digest[:TOKEN_HEX_CHARS]

    def tokens(self, family: str, values: pd.Series) -> pd.Series:
        """Keyed pseudonyms of a column; missing values (None, NaN, NA) stay ``None``.

        Each distinct value is hashed once, since identifiers repeat across rows.
        The result has the input's index and object dtype.
        """
        # Keying an HMAC costs as much as hashing a short value; do it once and copy.
        keyed = hmac.new(self._key(family), digestmod=hashlib.sha256)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        digests = []
        for value in uniques:
            h = keyed.copy()
            h.update(value.encode("utf-8"))
            digests.append(h.hexdigest()[:TOKEN_HEX_CHARS])
        # The trailing None is what the missing values' code, -1, picks.
        mapped = np.array([*digests, None], dtype=object)
        return pd.Series(mapped[codes], index=values.index, dtype=object, name=values.name)
