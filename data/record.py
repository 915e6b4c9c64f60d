"""Validating and pseudonymising one record, exactly as ingestion does a whole file.

The column path (:func:`duanka.data.validate.validate`, :func:`duanka.data.ingest.pseudonymise_applications`)
costs tens of milliseconds per call whatever the row count, which is the whole
latency budget of a single decision. This path gives the same verdicts, the same
reasons and the same event for one record in tens of microseconds. Every rule,
pattern and reason text comes from the modules the column path uses; what is
spelt out here is only how to apply them to one value. ``tests/test_record.py``
holds both paths to the same answers.

A timestamp outside 1901-2199 (older ones are in local mean time, and the
column parser has its own bounds) sends the record through the column path,
so that rare inputs are judged by the one definition rather than an imitation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI
from duanka.data.contract import APPLICATIONS, Column, Kind, Table
from duanka.data.derived import derived_values
from duanka.data.events import APPLICATION_EVENTS
from duanka.data.identifier_text import (
    IDENTIFIER_KINDS,
    identifier_problem,
    normalised_identifier,
)
from duanka.data.identity import (
    PHONE_PATTERN,
    PHONE_REASON,
    REGION_PATTERN,
    REGION_REASON,
    InvalidIdentifier,
    canonical_code,
    parse_resident_id,
    validate_uscc,
)
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import RawTable
from duanka.data.validate import (
    ACCOUNT_TYPE,
    AGE_RULE_AT,
    BOOLEAN_REASON,
    CORPORATE_ONLY_REASON,
    CORPORATE_REQUIRED,
    CORPORATE_REQUIRED_REASON,
    FALSE_TEXTS,
    INTEGER_REASON,
    INTEGER_SIZE_REASON,
    MAX_INT_DIGITS,
    MISSING_REASON,
    SPREADSHEET_PATTERN,
    TIMESTAMP_PATTERN,
    TIMESTAMP_SHAPE_REASON,
    TIMESTAMP_VALUE_REASON,
    TRUE_TEXTS,
    choice_reason,
    shown,
    validate,
)

Defect = tuple[str, str]

_LOCAL = ZoneInfo(SHANGHAI)
_SHAPE = re.compile(TIMESTAMP_PATTERN)
_SPREADSHEET = re.compile(SPREADSHEET_PATTERN)
# The same shape with its parts captured; only applied to texts _SHAPE accepts.
_PARTS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6})0{0,3})?)?"
    r"(?:(Z)|([+-])([0-9]{2}):?([0-9]{2}))?)?"
)
# Years the scalar timestamp rule is proven on; Asia/Shanghai used local mean time before 1901.
_FIRST_YEAR, _LAST_YEAR = 1901, 2199
_REGION = re.compile(REGION_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
_DIGITS = re.compile("[0-9]+")


class _Unusual(Exception):
    """A value this path does not judge itself: the column path does."""


def trimmed(value: str | None) -> str | None:
    """A cell stripped, and None when nothing is left."""
    if value is None:
        return None
    return value.strip() or None


def cell_text(value: str | None, column: Column) -> str | None:
    """A cell as the validator reads it: :func:`trimmed`, an identifier in its NFKC form."""
    text = trimmed(value)
    if text is None or column.kind not in IDENTIFIER_KINDS:
        return text
    return normalised_identifier(text)


def validate_record(
    record: Mapping[str, object], table: Table = APPLICATIONS
) -> tuple[dict[str, object] | None, list[Defect]]:
    """Check one record against ``table`` as :func:`duanka.data.validate.validate` checks a row.

    Parameters
    ----------
    record : mapping
        Contract column -> ``str`` or None, as :func:`duanka.data.reader.read_raw` holds a
        cell; absent columns are missing, others are ignored.
    table : data.contract.Table
        The contract table.

    Returns
    -------
    typed : dict or None
        The typed contract values (timestamps aware UTC ``datetime``, booleans
        ``bool``, counts ``int``, resident IDs and USCCs upper-case); for
        applications also ``age``, ``gender`` and ``home_region``. None when the
        record has a defect.
    defects : list of (str, str)
        Every (column, reason), worded and ordered as the validator's rejection lines.
    """
    texts = {c.name: cell_text(record.get(c.name), c) for c in table.columns}  # type: ignore[arg-type]
    try:
        typed, defects = _judged(table, texts)
    except _Unusual:
        return _by_columns(table, texts)
    position = {name: i for i, name in enumerate(table.names)}
    defects.sort(key=lambda d: position[d[0]])
    return (None if defects else typed), defects


def _judged(table: Table, texts: dict[str, str | None]) -> tuple[dict[str, object], list[Defect]]:
    typed: dict[str, object] = {}
    defects: list[Defect] = []
    for column in table.columns:
        text = texts[column.name]
        value: object = None
        hidden = None if text is None or column.kind not in IDENTIFIER_KINDS else identifier_problem(text)
        if text is None:
            if not column.nullable:
                defects.append((column.name, MISSING_REASON))
        elif hidden is not None:
            defects.append((column.name, hidden))
        elif column.kind is Kind.RESIDENT_ID:
            at = typed.get(AGE_RULE_AT[table.name]) if table.name in AGE_RULE_AT else None
            on = at.astimezone(_LOCAL).date() if isinstance(at, datetime) else None
            try:
                facts = parse_resident_id(text, on)
            except InvalidIdentifier as exc:
                defects.append((column.name, shown(str(exc), text, column)))
            else:
                value = canonical_code(text)
                if on is not None:
                    typed.update(age=facts.age_on(on), gender=facts.gender, home_region=facts.home_region)
        else:
            value, reason = _PARSERS[column.kind](text, column)
            if reason is not None:
                defects.append((column.name, shown(reason, text, column)))
        typed[column.name] = value
    if ACCOUNT_TYPE in texts:
        kind = typed[ACCOUNT_TYPE]
        if kind == "personal":
            defects += [
                (c.name, CORPORATE_ONLY_REASON) for c in table.columns if c.corporate_only and texts[c.name]
            ]
        elif kind == "corporate":
            defects += [
                (n, CORPORATE_REQUIRED_REASON) for n in CORPORATE_REQUIRED if n in texts and not texts[n]
            ]
    return typed, defects


def _as_text(text: str, column: Column) -> tuple[object, str | None]:
    return text, None


def _as_choice(text: str, column: Column) -> tuple[object, str | None]:
    return (text, None) if text in column.choices else (None, choice_reason(column))


def _as_region(text: str, column: Column) -> tuple[object, str | None]:
    return (text, None) if _REGION.fullmatch(text) else (None, REGION_REASON)


def _as_phone(text: str, column: Column) -> tuple[object, str | None]:
    return (text, None) if _PHONE.fullmatch(text) else (None, PHONE_REASON)


def _as_uscc(text: str, column: Column) -> tuple[object, str | None]:
    try:
        return validate_uscc(text), None
    except InvalidIdentifier as exc:
        return None, str(exc)


def _as_boolean(text: str, column: Column) -> tuple[object, str | None]:
    lower = text.lower()
    if lower in TRUE_TEXTS:
        return True, None
    if lower in FALSE_TEXTS:
        return False, None
    return None, BOOLEAN_REASON


def _as_integer(text: str, column: Column) -> tuple[object, str | None]:
    if not _DIGITS.fullmatch(text):
        return None, INTEGER_REASON
    if len(text) > MAX_INT_DIGITS:
        return None, INTEGER_SIZE_REASON
    return int(text), None


def _iso(text: str) -> str:
    """A year-first spreadsheet date as ISO 8601 without an offset (as validate's column rule)."""
    found = None if _SHAPE.fullmatch(text) else _SPREADSHEET.fullmatch(text)
    if found is None:
        return text
    year, month, day, hour, minute, second = found.groups()
    if hour is None:
        return f"{year}-{month:0>2}-{day:0>2}"
    return f"{year}-{month:0>2}-{day:0>2}T{hour:0>2}:{minute}:{second or '00'}"


def _as_timestamp(text: str, column: Column) -> tuple[object, str | None]:
    text = _iso(text)
    if not _SHAPE.fullmatch(text):
        return None, TIMESTAMP_SHAPE_REASON
    year, month, day, hour, minute, second, fraction, utc, sign, off_h, off_m = _PARTS.fullmatch(
        text
    ).groups()  # type: ignore[union-attr]
    if not _FIRST_YEAR <= int(year) <= _LAST_YEAR:
        raise _Unusual(column.name)
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
        if utc:
            return local.replace(tzinfo=UTC), None
        if sign:
            if int(off_m) > 59:
                return None, TIMESTAMP_VALUE_REASON
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            zone = timezone(offset if sign == "+" else -offset)
            return local.replace(tzinfo=zone).astimezone(UTC), None
    except ValueError:  # no such day or clock time, or an offset of a day or more
        return None, TIMESTAMP_VALUE_REASON
    earlier, later = local.replace(tzinfo=_LOCAL, fold=0), local.replace(tzinfo=_LOCAL, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        # skipped or repeated by a summer-time change: no single instant
        return None, TIMESTAMP_VALUE_REASON
    return earlier.astimezone(UTC), None


_PARSERS = {
    Kind.STRING: _as_text,
    Kind.IDENTIFIER: _as_text,
    Kind.ENUM: _as_choice,
    Kind.REGION: _as_region,
    Kind.PHONE: _as_phone,
    Kind.USCC: _as_uscc,
    Kind.BOOLEAN: _as_boolean,
    Kind.NON_NEGATIVE_INT: _as_integer,
    Kind.TIMESTAMP: _as_timestamp,
}


def _by_columns(table: Table, texts: dict[str, str | None]) -> tuple[dict[str, object] | None, list[Defect]]:
    """The column validator's verdict on a one-row table, in this path's types."""
    frame = pd.DataFrame({name: [text] for name, text in texts.items()}, dtype=object)
    frame["row"] = np.int64(1)
    checked = validate(RawTable(frame=frame, extra_columns=(), source="record"), table)
    lines = checked.rejections
    defects = list(zip(lines["column"], lines["reason"], strict=True))
    if defects:
        return None, defects
    row = checked.valid.drop(columns="row").iloc[0]
    return {name: _plain(value) for name, value in row.items()}, []


def _plain(value: object) -> object:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def application_event(typed: Mapping[str, object], keys: Pseudonymiser) -> dict[str, object]:
    """The :data:`~duanka.data.events.APPLICATION_EVENTS` row that
    :func:`~duanka.data.ingest.pseudonymise_applications` makes from one typed application
    (from :func:`validate_record`).

    Parameters
    ----------
    typed : mapping
        The typed values of a valid application, with ``age``, ``gender`` and ``home_region``.
    keys : Pseudonymiser
        The pseudonym key.

    Returns
    -------
    dict
        Event fields in schema order, as ``pyarrow.Table.to_pylist`` gives them
        (``applied_at`` an aware UTC ``datetime``).
    """
    derived = derived_values(typed, keys)
    applied = typed["applied_at"]
    if isinstance(applied, pd.Timestamp):
        applied = applied.to_pydatetime()
    event = {name: derived[name] if name in derived else typed[name] for name in APPLICATION_EVENTS.names}
    event["applied_at"] = applied
    return event
