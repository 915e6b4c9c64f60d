"""The input contract (docs/contract.md) as data: columns, types, nullability.

The reader and the validator both walk these declarations, so a column's rules
live in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    STRING = "string"
    IDENTIFIER = "identifier"  # text compared as one spelling (duanka.data.identifier_text)
    TIMESTAMP = "timestamp"
    REGION = "region"
    ENUM = "enum"
    BOOLEAN = "boolean"
    NON_NEGATIVE_INT = "non_negative_int"
    RESIDENT_ID = "resident_id"
    PHONE = "phone"
    USCC = "uscc"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False
    choices: tuple[str, ...] = ()
    corporate_only: bool = False
    personal: bool = False  # raw personal information: pseudonymised, then dropped


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: str | None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


CHANNELS = ("counter", "mobile", "agent")
ACCOUNT_TYPES = ("personal", "corporate")
LABEL_SOURCES = ("police_notice", "account_freeze", "investigation", "review")

APPLICATIONS = Table(
    name="applications",
    key="application_id",
    columns=(
        Column("application_id", Kind.IDENTIFIER),
        Column("applied_at", Kind.TIMESTAMP),
        Column("branch_id", Kind.IDENTIFIER),
        Column("branch_region", Kind.REGION),
        Column("channel", Kind.ENUM, choices=CHANNELS),
        Column("account_type", Kind.ENUM, choices=ACCOUNT_TYPES),
        Column("staff_id", Kind.IDENTIFIER, nullable=True),
        Column("id_number", Kind.RESIDENT_ID, personal=True),
        Column("phone", Kind.PHONE, personal=True),
        Column("phone_tenure_days", Kind.NON_NEGATIVE_INT, nullable=True),
        Column("address", Kind.STRING, personal=True),
        Column("device_id", Kind.IDENTIFIER, nullable=True, personal=True),
        Column("escort_id", Kind.IDENTIFIER, nullable=True, personal=True),
        Column("intermediary_id", Kind.IDENTIFIER, nullable=True),
        Column("photo_tampered", Kind.BOOLEAN),
        Column("onsite_verified", Kind.BOOLEAN, nullable=True, corporate_only=True),
        Column("company_id", Kind.USCC, nullable=True, corporate_only=True, personal=True),
        Column("company_age_days", Kind.NON_NEGATIVE_INT, nullable=True, corporate_only=True),
        Column("u_shield", Kind.BOOLEAN),
        Column("mobile_banking", Kind.BOOLEAN),
        Column("payment_binding", Kind.BOOLEAN),
    ),
)

LABELS = Table(
    name="labels",
    key="application_id",
    columns=(
        Column("application_id", Kind.IDENTIFIER),
        Column("confirmed_at", Kind.TIMESTAMP),
        Column("source", Kind.ENUM, choices=LABEL_SOURCES),
    ),
)

WATCHLIST = Table(
    name="watchlist",
    key=None,
    columns=(
        Column("id_number", Kind.RESIDENT_ID, personal=True),
        Column("listed_at", Kind.TIMESTAMP),
        Column("expires_at", Kind.TIMESTAMP, nullable=True),
        Column("source", Kind.STRING),
    ),
)

PERSONAL_COLUMNS = tuple(c.name for c in APPLICATIONS.columns if c.personal)
