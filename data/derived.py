"""What a stored event holds in place of the raw values: derived facts, keyed pseudonyms, a row digest.

Each rule is written once here and applied in two shapes: to whole columns of a validated
frame (:func:`derived_columns`, :func:`row_digests`: ingestion and batch scoring) and to one
typed record (:func:`derived_values`, :func:`row_digest`: the scoring service, which cannot
afford a frame per request). ``tests/test_record.py`` holds the two shapes to the same events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import pandas as pd

from duanka.data.address import (
    address_kind,
    address_kinds,
    address_province,
    address_provinces,
    building_key,
    building_keys,
)
from duanka.data.contract import APPLICATIONS, Table
from duanka.data.identity import canonical_code
from duanka.data.pseudonym import Pseudonymiser

# contract column -> (stored column, pseudonym family)
PSEUDONYMS = {
    "id_number": ("applicant_key", "applicant"),
    "phone": ("phone_key", "phone"),
    "device_id": ("device_key", "device"),
    "escort_id": ("escort_key", "escort"),
    "intermediary_id": ("intermediary_key", "intermediary"),
    "company_id": ("company_key", "company"),
}
# Contract columns spelt one way before they are keyed, so that one person gets one pseudonym.
# Escorts are recorded by their ID number where known, so an escort is spelt as the contract
# spells an id_number: trimmed, upper case one character at a time (`x` as `X`).
SPELLINGS: dict[str, Callable[[str], str]] = {"escort_id": canonical_code}
# How a row digest joins the canonical strings of its contract values, and writes a missing one.
ROW_SEPARATOR = "\x1f"
ROW_MISSING = "\x00"
ROW_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # values are UTC by then


def derived_columns(valid: pd.DataFrame, keys: Pseudonymiser) -> dict[str, pd.Series | str]:
    """The derived and pseudonymised columns of validated applications.

    Parameters
    ----------
    valid : pandas.DataFrame
        Applications that passed :func:`duanka.data.validate.validate`, with ``home_region``.
    keys : Pseudonymiser
        The pseudonym key.

    Returns
    -------
    dict
        Stored column -> values with ``valid``'s index (``key_id`` a single string): every
        :data:`duanka.data.events.APPLICATION_EVENTS` column that is not a contract value.
    """
    phone = valid["phone"]
    derived: dict[str, pd.Series | str] = {
        "branch_province": valid["branch_region"].str[:2],
        "branch_city": valid["branch_region"].str[:4],
        "home_province": valid["home_region"].str[:2],
        "phone_prefix": phone.str[:3],
        "phone_block_key": keys.tokens("phone_block", phone.str[:7]),
        "address_key": keys.tokens("address", building_keys(valid["address"])),
        "address_kind": address_kinds(valid["address"]),
        "address_province": address_provinces(valid["address"]),
        "company_region": valid["company_id"].str[2:8],
    }
    for raw, (stored, family) in PSEUDONYMS.items():
        values = valid[raw]
        if raw in SPELLINGS:
            values = values.map(SPELLINGS[raw], na_action="ignore")
        derived[stored] = keys.tokens(family, values)
    derived["row_digest"] = row_digests(valid, APPLICATIONS, keys)
    derived["key_id"] = keys.key_id
    return derived


def derived_values(typed: Mapping[str, object], keys: Pseudonymiser) -> dict[str, object]:
    """:func:`derived_columns` of one typed application.

    Parameters
    ----------
    typed : mapping
        The typed values of a valid application (:func:`duanka.data.record.validate_record`),
        with ``home_region``.
    keys : Pseudonymiser
        The pseudonym key.

    Returns
    -------
    dict
        The same stored columns as :func:`derived_columns`, missing values None.
    """
    phone = str(typed["phone"])
    address = str(typed["address"])
    company = typed["company_id"]
    derived: dict[str, object] = {
        "branch_province": str(typed["branch_region"])[:2],
        "branch_city": str(typed["branch_region"])[:4],
        "home_province": str(typed["home_region"])[:2],
        "phone_prefix": phone[:3],
        "phone_block_key": keys.token("phone_block", phone[:7]),
        "address_key": keys.token("address", building_key(address)),
        "address_kind": address_kind(address),
        "address_province": address_province(address),
        "company_region": None if company is None else str(company)[2:8],
    }
    for raw, (stored, family) in PSEUDONYMS.items():
        value = typed[raw]
        if value is None:
            derived[stored] = None
            continue
        text = str(value)
        if raw in SPELLINGS:
            text = SPELLINGS[raw](text)
        derived[stored] = keys.token(family, text)
    derived["row_digest"] = row_digest(typed, APPLICATIONS, keys)
    derived["key_id"] = keys.key_id
    return derived


def row_digests(valid: pd.DataFrame, table: Table, keys: Pseudonymiser) -> pd.Series:
    """A keyed digest of each row's canonical contract values: tells an identical
    resend from a conflicting one without storing the raw values."""
    canonical = valid.loc[:, list(table.names)].copy()
    for name in table.names:
        if isinstance(canonical[name].dtype, pd.DatetimeTZDtype):
            # a fixed format: pandas' own rendering depends on the other rows of the column
            canonical[name] = canonical[name].dt.strftime(ROW_TIMESTAMP_FORMAT)
    canonical = canonical.astype("string").fillna(ROW_MISSING)
    first, *rest = table.names
    joined = canonical[first].str.cat([canonical[name] for name in rest], sep=ROW_SEPARATOR)
    return keys.tokens("row", joined.astype(object))


def row_digest(typed: Mapping[str, object], table: Table, keys: Pseudonymiser) -> str:
    """:func:`row_digests` of one typed row (timestamps aware ``datetime``)."""
    return keys.token("row", ROW_SEPARATOR.join(_canonical(typed[name]) for name in table.names))


def _canonical(value: object) -> str:
    """A typed value as :func:`row_digests` renders its column."""
    if value is None:
        return ROW_MISSING
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(ROW_TIMESTAMP_FORMAT)
    return str(value)
