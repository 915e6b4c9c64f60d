"""The service's request and response bodies: what the OpenAPI document shows and pydantic checks.

Request models hold text as sent (the contract validator judges values on the scoring thread,
exactly as for a file); they only bound its size and refuse what no contract field can hold, and
any field they do not name (a file may carry extra columns; a request is ours to define, and a
field that would be ignored is a client's typo or a place to smuggle megabytes through).
Response models describe the answers; the routes build plain dicts that match them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

MAX_BATCH = 1_000
MAX_LABELS = 10_000
MAX_LISTINGS = 10_000

T = TypeVar("T")

# Every text of a request: a bounded length, UTF-8 text (a lone surrogate such as "\ud800" is
# valid JSON but no text), and no control or bidirectional-override character, which no
# identifier, date, code or address of the contract holds and which can hide what a string says.
MAX_TEXT_CHARS = 256
MAX_ADDRESS_CHARS = 512
_HIDDEN = re.compile("[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# An unknown field is named back only when its name is a plain one: it may be 100,000 characters
# long, or no text at all (a lone surrogate), and the answer quotes nothing else that was sent.
_PLAIN_NAME = re.compile("[A-Za-z_][A-Za-z0-9_]{0,63}")
UNKNOWN_FIELD_REASON = "no such field: the API takes the contract's fields only (docs/contract.md)"
UNPLAIN_FIELD = "(a field name that is not plain text of 1-64 letters, digits and _)"


def unknown_field(name: object) -> str:
    """How an error names a field no request model has: its name when plain, else a placeholder."""
    return name if isinstance(name, str) and _PLAIN_NAME.fullmatch(name) else UNPLAIN_FIELD


class RequestBody(BaseModel):
    """A request body or part of one: every field it may hold is declared, any other is refused."""

    model_config = ConfigDict(extra="forbid")


def checked_text(value: T, limit: int = MAX_TEXT_CHARS) -> T:
    """``value`` when it is text a contract field may hold, or not text at all (a number, a flag);
    else why not (never the value itself)."""
    if not isinstance(value, str):
        return value
    if len(value) > limit:
        raise ValueError(f"{len(value):,} characters, more than the {limit} a field may hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not text: it holds a lone surrogate code point (\\ud800-\\udfff)") from None
    if _HIDDEN.search(value):
        raise ValueError("holds a control character (such as NUL or a line break) or a bidirectional mark")
    return value


Text = Annotated[StrictStr | None, AfterValidator(checked_text), Field(default=None)]
LongText = Annotated[
    StrictStr | None, AfterValidator(lambda v: checked_text(v, MAX_ADDRESS_CHARS)), Field(default=None)
]
Flag = Annotated[StrictBool | StrictStr | None, AfterValidator(checked_text), Field(default=None)]
Count = Annotated[StrictInt | StrictStr | None, AfterValidator(checked_text), Field(default=None)]

_EXAMPLE = {
    "application_id": "DOC-0001",
    # the served document stamps the time now (duanka.serving.api): the service takes no other
    "applied_at": "2025-06-30T10:12:00+08:00",
    "branch_id": "B4401040",
    "branch_region": "440104",
    "channel": "counter",
    "account_type": "personal",
    "staff_id": "S44010401",
    "id_number": "11010519491231002X",
    "phone": "13800138000",
    "phone_tenure_days": 12,
    "address": "广州市越秀区荔城大道141号4楼",
    "device_id": None,
    "escort_id": None,
    "intermediary_id": None,
    "photo_tampered": False,
    "onsite_verified": None,
    "company_id": None,
    "company_age_days": None,
    "u_shield": True,
    "mobile_banking": True,
    "payment_binding": True,
}


class ApplicationIn(RequestBody):
    """One account-opening application in the input contract's fields (docs/contract.md).

    Values are judged by the contract validator exactly as in a file: booleans
    may also be ``"true"``/``"false"``/``"1"``/``"0"``, integers may be digit
    strings. Missing required fields are reported, never guessed; fields the
    contract does not name are refused.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    application_id: Text
    applied_at: Text = Field(default=None, description="ISO 8601; naive values are Asia/Shanghai time")
    branch_id: Text
    branch_region: Text = Field(default=None, description="6-digit GB/T 2260 code")
    channel: Text = Field(default=None, description="counter, mobile or agent")
    account_type: Text = Field(default=None, description="personal or corporate")
    staff_id: Text
    id_number: Text = Field(
        default=None, description="18-character resident ID (pseudonymised, never stored)"
    )
    phone: Text = Field(default=None, description="11-digit mobile number (pseudonymised, never stored)")
    phone_tenure_days: Count
    address: LongText = Field(default=None, description="address as written (pseudonymised, never stored)")
    device_id: Text
    escort_id: Text
    intermediary_id: Text
    photo_tampered: Flag
    onsite_verified: Flag
    company_id: Text
    company_age_days: Count
    u_shield: Flag
    mobile_banking: Flag
    payment_binding: Flag

    def contract_fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in type(self).model_fields}


class BatchIn(RequestBody):
    """Up to 1,000 applications, scored in (applied_at, application_id) order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"applications": [_EXAMPLE]}]})

    applications: list[ApplicationIn] = Field(min_length=1, max_length=MAX_BATCH)


class LabelIn(RequestBody):
    """One confirmed mule account (the contract's labels table)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "application_id": "A000140001",
                    "confirmed_at": "2025-07-02T16:00:00+08:00",
                    "source": "police_notice",
                }
            ]
        },
    )

    application_id: Text
    confirmed_at: Text
    source: Text = Field(
        default=None,
        description="police_notice, account_freeze, investigation or review (the bank's own team)",
    )


class LabelsIn(RequestBody):
    labels: list[LabelIn] = Field(min_length=1, max_length=MAX_LABELS)


class ListingIn(RequestBody):
    """One row of the joint-punishment list (the contract's watchlist table)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id_number": "11010519491231002X",
                    "listed_at": "2025-05-20T00:00:00+08:00",
                    "expires_at": None,
                    "source": "pboc_joint_punishment",
                }
            ]
        },
    )

    id_number: Text = Field(
        default=None, description="18-character resident ID (pseudonymised, never stored)"
    )
    listed_at: Text = Field(default=None, description="from when the listing applies (ISO 8601)")
    expires_at: Text = Field(
        default=None,
        description="when it ends; empty: 5 years after listed_at. An earlier one than received before "
        "for the same person, source and listed_at ends the listing then (a removal)",
    )
    source: Text = Field(default=None, description="who listed the person, e.g. pboc_joint_punishment")


class WatchlistIn(RequestBody):
    listings: list[ListingIn] = Field(min_length=1, max_length=MAX_LISTINGS)


class ReasonOut(BaseModel):
    code: str = Field(description="stable catalogue code (training/reasons.toml)")
    family: str
    feature: str = Field(description="the code's feature that contributed most; for a rule, the rule")
    value: float | None = Field(description="that feature's value; null when the entity is absent, or a rule")
    contribution: float | None = Field(
        description="summed TreeSHAP contribution of the code's features, log-odds; null for a rule"
    )
    text_zh: str
    text_en: str


class ModelOut(BaseModel):
    name: str
    version: str
    booster_sha256: str
    bundle_sha256: str = Field(
        default="",
        description="of bundle.json (calibrator, band cuts); empty in answers given before it was recorded",
    )


_SCORE_EXAMPLE = {
    "request_id": "3f2a9c0e5b8d4e7f9a1b2c3d4e5f6a7b",
    "application_id": "A000150001",
    "score": 0.4123,
    "band": "high",
    "action": "enhanced_due_diligence",
    "action_zh": "开展强化尽职调查（核实开户意愿与用途）",
    "action_en": "Enhanced due diligence: verify the purpose and the applicant's own intent",
    "reasons": [
        {
            "code": "NEW_SIM",
            "family": "phone_device",
            "feature": "phone_tenure_days",
            "value": 12.0,
            "contribution": 0.91,
            "text_zh": "手机号入网仅12天",
            "text_en": "The phone number was activated only 12 days ago",
        }
    ],
    "model": {"name": "duanka", "version": "3", "booster_sha256": "fb4947…"},
    "features": {"phone_tenure_days": 12.0, "escort_applicants_30d": None},
    "replayed": False,
}


class ScoreOut(BaseModel):
    """The decision for one application."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SCORE_EXAMPLE]})

    request_id: str
    application_id: str
    score: float = Field(
        description="calibrated probability that the account is a mule (computed even when a rule decides)"
    )
    band: str = Field(description="critical, high, medium or low; blocked when a hard rule refuses")
    action: str
    action_zh: str
    action_en: str
    reasons: list[ReasonOut] = Field(description="up to 3 codes that raise the risk, largest first")
    rule: str | None = Field(
        default=None, description="the hard rule that decided (watchlist); null when the model did"
    )
    model_band: str | None = Field(
        default=None, description="the band the score alone gives, for monitoring; the decision is band"
    )
    model: ModelOut
    features: dict[str, float | None] = Field(description="the model's inputs, in MODEL_FEATURES order")
    replayed: bool = Field(description="true when this application id was scored before: the stored answer")


class BatchOut(BaseModel):
    request_id: str
    results: list[ScoreOut]


class LabelsOut(BaseModel):
    request_id: str
    received: int
    changed: int = Field(description="confirmations that were new, or earlier than the one held")


class WatchlistOut(BaseModel):
    request_id: str
    received: int
    stored: int = Field(description="listings new to the store")
    already_stored: int = Field(description="listings received before (re-sending changes nothing)")


class ErrorItem(BaseModel):
    item: int | None = Field(
        description="position in the batch (0 for a single application); null when about the whole body"
    )
    field: str
    reason: str


class ErrorOut(BaseModel):
    detail: str
    errors: list[ErrorItem] = []


class ReloadOut(BaseModel):
    switched: bool
    model: ModelOut


# What every /v1 route may answer besides its own errors (docs/serving.md, "Errors").
_V1_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body is not JSON"},
    401: {"model": ErrorOut, "description": "no API key, or an unknown or revoked one"},
    408: {"model": ErrorOut, "description": "the headers or the body took too long to arrive"},
    413: {"model": ErrorOut, "description": "the body is over 4 MiB"},
    422: {"model": ErrorOut, "description": "the input breaks the contract; every defect is listed"},
    429: {"model": ErrorOut, "description": "over the key's rate; see Retry-After"},
    503: {"model": ErrorOut, "description": "too many requests in flight; see Retry-After"},
}


def v1_responses(own: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a ``/v1/`` route: its ``own`` errors and those every one may give."""
    return {**_V1_ERRORS, **own}
