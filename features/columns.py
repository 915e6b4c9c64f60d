"""The application columns both engines read, and what their tables call a marked application.

One list of each, read by the offline builder (:mod:`duanka.features.offline`, DuckDB) and the
online store (:mod:`duanka.features.online`, SQLite), so the two cannot drift apart. Adding a
column that an aggregate keys on or counts means adding it to :data:`COMPARED` (a test
checks every entity key and counted column is there) and, for the online store, a new
:data:`duanka.features.online_queries.STATE_LAYOUT`.
"""

from __future__ import annotations

from duanka.features import values
from duanka.features.declaration import Op

COMPARED = (
    "applicant_key",
    "branch_id",
    "staff_id",
    "escort_key",
    "intermediary_key",
    "address_key",
    "phone_key",
    "phone_block_key",
    "device_key",
    "home_province",
    "company_key",
    "home_region",
    "branch_city",
    "address_province",
)
"""Columns compared by value: entity keys, link keys and the columns counted distinctly.
The online store keeps them as text, the offline builder as integer codes."""

OWN_STRINGS = (
    "account_type",
    "home_province",
    "branch_province",
    "channel",
    "address_kind",
    "address_province",
    "gender",
)
"""The application's own text columns that features and flags read."""
OWN_NUMBERS = ("age", "phone_tenure_days", "company_age_days", "onsite_verified")
"""The application's own numeric columns that features and flags read (nullable ones are NaN)."""
OWN_BOOLEANS = ("photo_tampered", "u_shield", "mobile_banking", "payment_binding")
"""The application's own yes/no columns that features and flags read."""

COUNTED_FLAGS = ("photo_tampered", *values.FLAG_COLUMNS)
"""Flags aggregates may count: the tampered photo and every derived flag."""

MARK_COLUMN = {Op.CONFIRMED: "conf", Op.LISTED: "listed"}
"""The column of both engines' application tables that a marked count compares with ``t``:
the application's confirmation, or its applicant's earliest listing (microseconds, or null)."""
