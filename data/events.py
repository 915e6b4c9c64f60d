"""The pseudonymised event schema: what ingestion stores and everything downstream reads.

No column here holds a raw identifier. ``*_key`` columns are keyed pseudonyms
(:mod:`duanka.data.pseudonym`); the others are derived facts the contract allows.
"""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

APPLICATION_EVENTS = pa.schema(
    [
        pa.field("application_id", pa.string(), nullable=False),
        pa.field("applied_at", UTC_TS, nullable=False),
        pa.field("branch_id", pa.string(), nullable=False),
        pa.field("branch_region", pa.string(), nullable=False),
        pa.field("branch_province", pa.string(), nullable=False),
        pa.field("branch_city", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("account_type", pa.string(), nullable=False),
        pa.field("staff_id", pa.string()),
        pa.field("applicant_key", pa.string(), nullable=False),
        pa.field("age", pa.int16(), nullable=False),
        pa.field("gender", pa.string(), nullable=False),
        pa.field("home_region", pa.string(), nullable=False),
        pa.field("home_province", pa.string(), nullable=False),
        pa.field("phone_key", pa.string(), nullable=False),
        pa.field("phone_prefix", pa.string(), nullable=False),
        pa.field("phone_block_key", pa.string(), nullable=False),
        pa.field("phone_tenure_days", pa.int32()),
        pa.field("address_key", pa.string(), nullable=False),
        pa.field("address_kind", pa.string(), nullable=False),
        pa.field("address_province", pa.string()),
        pa.field("device_key", pa.string()),
        pa.field("escort_key", pa.string()),
        pa.field("intermediary_key", pa.string()),
        pa.field("photo_tampered", pa.bool_(), nullable=False),
        pa.field("onsite_verified", pa.bool_()),
        pa.field("company_key", pa.string()),
        pa.field("company_region", pa.string()),
        pa.field("company_age_days", pa.int32()),
        pa.field("u_shield", pa.bool_(), nullable=False),
        pa.field("mobile_banking", pa.bool_(), nullable=False),
        pa.field("payment_binding", pa.bool_(), nullable=False),
        pa.field("row_digest", pa.string(), nullable=False),
        pa.field("key_id", pa.string(), nullable=False),
    ]
)

LABEL_EVENTS = pa.schema(
    [
        pa.field("application_id", pa.string(), nullable=False),
        pa.field("confirmed_at", UTC_TS, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("row_digest", pa.string(), nullable=False),
    ]
)

# The joint-punishment list (断卡联合惩戒名单): one row per listing as received. ``applicant_key`` is
# the listed person's ID number pseudonymised in the applicants' family, so it equals the
# ``applicant_key`` of their applications; ``expires_at`` is filled (5 years) when the list left it empty.
WATCHLIST_EVENTS = pa.schema(
    [
        pa.field("applicant_key", pa.string(), nullable=False),
        pa.field("listed_at", UTC_TS, nullable=False),
        pa.field("expires_at", UTC_TS, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("row_digest", pa.string(), nullable=False),
        pa.field("key_id", pa.string(), nullable=False),
    ]
)

ADDRESS_KINDS = ("lodging", "dormitory", "residential", "office", "other", "village")
