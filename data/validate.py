"""Validating a contract table: typed rows that pass, one rejection line per defect.

Every rule works on whole columns. A row with any defect is rejected as a whole
(the rest of the file still goes through); nothing is coerced: ``12.0`` is not an
integer and ``yes`` is not a boolean. Reasons say what is wrong and never repeat
a personal value (:attr:`duanka.data.contract.Column.personal`), because quarantine
files and logs must not hold one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI
from duanka.data.contract import APPLICATIONS, Column, Kind, Table
from duanka.data.identifier_text import IDENTIFIER_KINDS, identifier_problems, normalised_identifiers
from duanka.data.identity import (
    PHONE_PATTERN,
    PHONE_REASON,
    REGION_PATTERN,
    REGION_REASON,
    ages_on,
    check_resident_ids,
    check_usccs,
)
from duanka.data.reader import RawTable

MISSING_REASON = "required value is missing"
CORPORATE_ONLY_REASON = "only for corporate accounts; must be empty when account_type is personal"
CORPORATE_REQUIRED_REASON = "required for corporate accounts"

# The table whose resident ID must belong to someone aged 16-100, and on which day.
AGE_RULE_AT = {APPLICATIONS.name: "applied_at"}
ACCOUNT_TYPE = "account_type"
# A corporate account is known by its company: without the USCC it cannot be tied
# to the company's other accounts, and the check-character rule has nothing to check.
CORPORATE_REQUIRED = ("company_id",)

# Fractions beyond microseconds are accepted only as trailing zeros (Parquet "ns"
# columns): the stored resolution is microseconds and nothing may be rounded away.
TIMESTAMP_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6}0{0,3})?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_OFFSET_PATTERN = r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$"
# Excel rewrites dates in the machine's format. The year-first ones (2024/1/5 9:30, what a Chinese
# Windows writes) are unambiguous and read as ISO 8601 without an offset (Asia/Shanghai); a day
# or month first (5/1/2024) is not, and stays refused.
SPREADSHEET_PATTERN = (
    r"([0-9]{4})[/-]([0-9]{1,2})[/-]([0-9]{1,2})(?:[ T]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?)?"
)
TIMESTAMP_SHAPE_REASON = (
    "not an ISO 8601 timestamp such as 2024-03-05T10:12:00+08:00 (at most microseconds) or a "
    "year-first date and time such as 2024/3/5 10:12; a day or month first is ambiguous"
)
TIMESTAMP_VALUE_REASON = "not a real date and time"
TRUE_TEXTS = ("true", "1")
FALSE_TEXTS = ("false", "0")
BOOLEAN_REASON = "not a boolean (true/false/1/0)"
INTEGER_REASON = "not a whole number >= 0 written in plain digits"
MAX_INT_DIGITS = 18  # fits int64
INTEGER_SIZE_REASON = f"more than {MAX_INT_DIGITS} digits"
_SHOWN_CHARACTERS = 40


def shown(reason: str, text: str, column: Column) -> str:
    """``reason`` for one trimmed value: non-personal values are quoted (cut short), personal ones never.

    The column rules (:func:`_reasons`) word their reasons the same way.
    """
    return reason if column.personal else f"{reason}; got '{text[:_SHOWN_CHARACTERS]}'"


def choice_reason(column: Column) -> str:
    """The reason for a value outside ``column.choices``."""
    return "not one of " + ", ".join(column.choices)


def conflict_reason(first_row: int, key: str) -> str:
    """The reason for a later row that repeats ``first_row``'s key with other content."""
    return f"conflicts with row {first_row} (same {key}, different content)"


@dataclass(frozen=True)
class Validated:
    """The outcome of :func:`validate`.

    Attributes
    ----------
    valid : pandas.DataFrame
        The rows that passed, typed, with ``row``; for applications also the
        derived ``age``, ``gender`` and ``home_region``.
    rejections : pandas.DataFrame
        ``row``, ``application_id`` (None where absent), ``column``, ``reason``:
        one line per defect, in row order.
    duplicates_dropped : int
        Rows that repeated an earlier row of the file exactly (same key, same content).
    """

    valid: pd.DataFrame
    rejections: pd.DataFrame
    duplicates_dropped: int


def validate(raw: RawTable, table: Table) -> Validated:
    """Check every row of ``raw`` against ``table`` and type the rows that pass.

    Parameters
    ----------
    raw : RawTable
        The table as read by :func:`duanka.data.reader.read_raw`.
    table : data.contract.Table
        The contract table.

    Returns
    -------
    Validated

    Notes
    -----
    Values are trimmed first; a cell holding only spaces counts as empty. Identifiers are
    read in their NFKC form and refused when a space or an invisible character is left inside
    (:mod:`duanka.data.identifier_text`), so that repeats are found in that form too.
    Typed columns: timestamps ``datetime64[us, UTC]`` (naive values and plain dates
    are Asia/Shanghai local time), booleans ``boolean``, integers ``Int64``, text
    ``str`` (resident IDs and USCCs upper-cased). Repeats of the key column: an
    exact repeat of the first row (all contract values equal after trimming) is
    dropped and counted; any other repeat is rejected and the first row kept.
    """
    frame = raw.frame.reset_index(drop=True)
    rows = frame["row"].astype(np.int64)
    texts = {c.name: _read(frame[c.name], c) for c in table.columns}
    typed, problems, derived = _typed_columns(table, texts)
    problems.extend(_account_type_problems(table, texts, typed))
    conflicts, dropped = _repeats(table, texts, rows)
    problems.extend(conflicts)

    found = _Found.concat(problems)
    keep = ~dropped
    keep[found.position] = False
    valid = pd.DataFrame({"row": rows, **typed, **derived})[keep].reset_index(drop=True)
    if "age" in valid:
        valid["age"] = valid["age"].astype(np.int64)
    lines = _rejection_lines(found, table, texts, rows)
    if len(raw.malformed):  # records the reader left out for their width, each on its own
        lines = pd.concat([raw.malformed, lines], ignore_index=True)
        lines = lines.sort_values("row", kind="stable").reset_index(drop=True)
    return Validated(valid=valid, rejections=lines, duplicates_dropped=int(dropped.sum()))


def _typed_columns(
    table: Table, texts: dict[str, pd.Series]
) -> tuple[dict[str, pd.Series], list[_Found], dict[str, pd.Series]]:
    """Each column on its own: typed values (null where invalid), problem lines, and
    for applications the facts derived from the ID number."""
    typed: dict[str, pd.Series] = {}
    problems: list[_Found] = []
    derived: dict[str, pd.Series] = {}
    for column in table.columns:
        text = texts[column.name]
        present = text.notna()
        # Selecting, masking and re-indexing are no-ops on a full, valid column; skipping
        # them matters only for small tables (the scoring service validates one row).
        full = bool(present.all())
        given = text if full else text[present]
        if not column.nullable:
            problems.append(_problems(~present, column.name, MISSING_REASON))
        if column.kind is Kind.RESIDENT_ID:
            # the age rule needs the application day, declared before the ID column
            on = _local_day(typed[AGE_RULE_AT[table.name]]) if table.name in AGE_RULE_AT else None
            ids = check_resident_ids(given, None if on is None else (on if full else on[present]))
            values, reasons = given.str.upper(), ids["problem"]
            if on is not None:
                derived = _derived(ids if full else ids.reindex(text.index), on)
        else:
            values, reasons = _PARSERS[column.kind](given, column)
        if column.kind in IDENTIFIER_KINDS:
            # what hides in an identifier is its first defect, whatever else its shape breaks
            reasons = identifier_problems(given).fillna(reasons)
        broken = reasons.notna()
        problems.append(_problems(broken, column.name, reasons))
        if broken.any():
            values = values.where(~broken)
        typed[column.name] = values if full else values.reindex(text.index)
    return typed, problems, derived


def _trimmed(values: pd.Series) -> pd.Series:
    text = values.astype("str").str.strip()
    return text.where(text != "")


def _read(values: pd.Series, column: Column) -> pd.Series:
    """A column's cells as the rules judge them: trimmed, identifiers in their NFKC form."""
    text = _trimmed(values)
    return normalised_identifiers(text) if column.kind in IDENTIFIER_KINDS else text


class _Found(NamedTuple):
    """Problem lines as parallel arrays: positions in the table, column names, reasons.

    Plain arrays rather than a DataFrame per column: a one-row request (the scoring
    service) then costs microseconds per column instead of a DataFrame's construction.
    """

    position: np.ndarray
    column: np.ndarray
    reason: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Found]) -> _Found:
        return cls(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))


_NO_PROBLEMS = _Found(np.empty(0, dtype=np.int64), np.empty(0, dtype=object), np.empty(0, dtype=object))


def _problems(broken: pd.Series, column: str, reason: str | pd.Series) -> _Found:
    """Problem lines for the positions where ``broken`` is true."""
    mask = broken.to_numpy(dtype=bool)
    if not mask.any():
        return _NO_PROBLEMS
    positions = broken.index[mask]
    if isinstance(reason, pd.Series):
        reasons = reason.loc[positions].to_numpy(dtype=object)
    else:
        reasons = np.full(len(positions), reason, dtype=object)
    columns = np.full(len(positions), column, dtype=object)
    return _Found(np.asarray(positions, dtype=np.int64), columns, reasons)


def _reasons(broken: pd.Series, reason: str, text: pd.Series, column: Column) -> pd.Series:
    """``reason`` where ``broken``, else None; non-personal values are quoted."""
    out = pd.Series(None, index=text.index, dtype=object)
    if broken.any():
        if column.personal:
            out[broken] = reason
        else:
            shown = text[broken].str.slice(0, _SHOWN_CHARACTERS)
            out[broken] = (reason + "; got '" + shown + "'").astype(object)
    return out


def _as_text(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    return text, pd.Series(None, index=text.index, dtype=object)


def _as_choice(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    return text, _reasons(~text.isin(column.choices), choice_reason(column), text, column)


def _as_region(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    return text, _reasons(~text.str.fullmatch(REGION_PATTERN), REGION_REASON, text, column)


def _as_phone(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    return text, _reasons(~text.str.fullmatch(PHONE_PATTERN), PHONE_REASON, text, column)


def _as_uscc(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    return text.str.upper(), check_usccs(text)


def _as_boolean(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    lower = text.str.lower()
    true, false = lower.isin(TRUE_TEXTS), lower.isin(FALSE_TEXTS)
    values = true.astype("boolean").where(true | false)
    return values, _reasons(~(true | false), BOOLEAN_REASON, text, column)


def _as_integer(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    digits = text.str.fullmatch("[0-9]+")
    fits = digits & (text.str.len() <= MAX_INT_DIGITS)
    values = text.where(fits, "0").astype(np.int64).astype("Int64").where(fits)
    reasons = _reasons(~digits, INTEGER_REASON, text, column)
    too_long = _reasons(digits & ~fits, INTEGER_SIZE_REASON, text, column)
    return values, reasons.fillna(too_long)


def iso_from_spreadsheet(text: pd.Series) -> pd.Series:
    """Year-first spreadsheet dates (:data:`SPREADSHEET_PATTERN`) as ISO 8601 without an offset;
    every other text as it is."""
    found = text.str.fullmatch(SPREADSHEET_PATTERN) & ~text.str.fullmatch(TIMESTAMP_PATTERN)
    if not found.any():
        return text
    parts = text[found].str.extract(SPREADSHEET_PATTERN)
    day = parts[0] + "-" + parts[1].str.zfill(2) + "-" + parts[2].str.zfill(2)
    clock = ("T" + parts[3].str.zfill(2) + ":" + parts[4] + ":" + parts[5].fillna("00")).fillna("")
    out = text.copy()
    out[found] = day + clock
    return out


def parse_timestamps(text: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    """Trimmed, non-null texts as ``datetime64[us, UTC]`` (NaT where invalid) and their reasons."""
    iso = iso_from_spreadsheet(text)  # the reasons quote the text as written
    shaped = iso.str.fullmatch(TIMESTAMP_PATTERN)
    aware = shaped & iso.str.contains(_OFFSET_PATTERN)
    naive = shaped & ~aware
    values = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if aware.any():
        parsed = pd.to_datetime(iso[aware], format="ISO8601", utc=True, errors="coerce")
        values[aware] = parsed.astype("datetime64[us, UTC]")
    if naive.any():
        local = pd.to_datetime(iso[naive], format="ISO8601", errors="coerce")
        # a clock time skipped or repeated by Shanghai's 1986-1991 summer time is no instant
        shanghai = local.dt.tz_localize(SHANGHAI, ambiguous="NaT", nonexistent="NaT")
        values[naive] = shanghai.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    reasons = _reasons(~shaped, TIMESTAMP_SHAPE_REASON, text, column)
    unreal = _reasons(shaped & values.isna(), TIMESTAMP_VALUE_REASON, text, column)
    return values, reasons.fillna(unreal)


_PARSERS = {
    Kind.STRING: _as_text,
    Kind.IDENTIFIER: _as_text,
    Kind.ENUM: _as_choice,
    Kind.REGION: _as_region,
    Kind.PHONE: _as_phone,
    Kind.USCC: _as_uscc,
    Kind.BOOLEAN: _as_boolean,
    Kind.NON_NEGATIVE_INT: _as_integer,
    Kind.TIMESTAMP: parse_timestamps,
}


def _local_day(instants: pd.Series) -> pd.Series:
    """The Asia/Shanghai calendar day of each instant (NaT stays NaT)."""
    return instants.dt.tz_convert(SHANGHAI).dt.tz_localize(None).dt.floor("D")


def _derived(ids: pd.DataFrame, on: pd.Series) -> dict[str, pd.Series]:
    """Age on the application day, gender and home region: what may outlive the ID."""
    born = ids["birth_date"].to_numpy(dtype="datetime64[D]")
    day = on.to_numpy(dtype="datetime64[D]")
    known = ~np.isnat(born) & ~np.isnat(day)
    age = np.where(known, ages_on(np.where(known, born, day), day), -1)
    return {
        "age": pd.Series(age, index=ids.index).where(known),
        "gender": ids["gender"],
        "home_region": ids["home_region"],
    }


def _account_type_problems(
    table: Table, texts: dict[str, pd.Series], typed: dict[str, pd.Series]
) -> list[_Found]:
    """Corporate-only values on personal accounts; what corporate accounts must carry."""
    if ACCOUNT_TYPE not in typed:
        return []
    # an invalid account type is already rejected: neither rule applies to it
    personal = typed[ACCOUNT_TYPE].eq("personal").fillna(False).astype(bool)
    corporate = typed[ACCOUNT_TYPE].eq("corporate").fillna(False).astype(bool)
    found = [
        _problems(personal & texts[c.name].notna(), c.name, CORPORATE_ONLY_REASON)
        for c in table.columns
        if c.corporate_only
    ]
    found += [
        _problems(corporate & texts[name].isna(), name, CORPORATE_REQUIRED_REASON)
        for name in CORPORATE_REQUIRED
        if name in texts
    ]
    return found


def _repeats(table: Table, texts: dict[str, pd.Series], rows: pd.Series) -> tuple[list[_Found], np.ndarray]:
    """Later rows that repeat an earlier key: conflict lines, and a mask of exact repeats."""
    dropped = np.zeros(len(rows), dtype=bool)
    if table.key is None:
        return [], dropped
    key = texts[table.key]
    repeated = key.notna() & key.duplicated(keep=False)
    if not repeated.any():
        return [], dropped
    positions = pd.Series(key.index[repeated], index=key.index[repeated])
    first = positions.groupby(key[repeated].to_numpy()).transform("min")
    later = first[first != positions]
    involved = key.index[repeated]
    content = pd.DataFrame({name: texts[name][involved] for name in table.names})
    mine = content.loc[later.index].to_numpy(dtype=object)
    theirs = content.loc[later.to_numpy()].to_numpy(dtype=object)
    same = ((mine == theirs) | (pd.isna(mine) & pd.isna(theirs))).all(axis=1)
    dropped[later.index[same]] = True
    conflicting = later[~same]
    reasons = pd.Series(
        [conflict_reason(int(rows[p]), table.key) for p in conflicting.to_numpy()],
        index=conflicting.index,
        dtype=object,
    )
    broken = pd.Series(False, index=key.index)
    broken[conflicting.index] = True
    return [_problems(broken, table.key, reasons)], dropped


def _rejection_lines(
    found: _Found, table: Table, texts: dict[str, pd.Series], rows: pd.Series
) -> pd.DataFrame:
    positions = found.position
    if len(positions) and "application_id" in texts:
        ids = texts["application_id"].iloc[positions].to_numpy(dtype=object)
        ids = np.where(pd.isna(ids), None, ids)
    else:
        ids = np.full(len(positions), None, dtype=object)
    lines = pd.DataFrame(
        {
            "row": rows.to_numpy(dtype=np.int64)[positions],
            "application_id": pd.Series(ids, dtype=object),
            "column": pd.Series(found.column, dtype=object),
            "reason": pd.Series(found.reason, dtype=object),
        }
    )
    if not len(positions):
        return lines
    order = {name: i for i, name in enumerate(table.names)}
    rank = [order[name] for name in found.column]
    lines = lines.assign(_rank=rank).sort_values(["row", "_rank"], kind="stable")
    return lines.drop(columns="_rank").reset_index(drop=True)
