"""Submitted JSON items turned into what ingestion would have stored: validated, pseudonymised.

A raw application is validated and pseudonymised exactly as ingestion does it, one
record at a time (:mod:`duanka.data.record`, held to the column path by its tests);
confirmations and watchlist rows go through the contract validator as a file would.
Every defect of every item is named, in the validator's words, and never quotes a
personal value: nothing is recorded until every item is valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST, Table
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import RawTable
from duanka.data.record import application_event, cell_text, validate_record
from duanka.data.validate import conflict_reason, validate
from duanka.data.watchlist import EXPIRES_BEFORE_LISTED, expiry_problems, listing_events

REQUEST_SOURCE = "request"
_KEY = "application_id"
_COLUMNS = {c.name: c for c in APPLICATIONS.columns}
_NOT_A_VALUE = "not a contract value: send a string, boolean or number"


@dataclass(frozen=True)
class FieldError:
    """One defect of one submitted item; never quotes a personal value."""

    item: int
    field: str
    reason: str


class InvalidInput(ValueError):
    """Submitted items break the contract; nothing was recorded."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} field error(s)")
        self.errors = errors


def canonical_text(value: object) -> str | None:
    """A submitted value as the contract reader would hold it: the validator then judges it.

    Booleans become ``true``/``false``, integers their digits and floats their
    ``repr`` (so ``12.0`` is rejected as an integer, as in a Parquet file);
    an empty string is missing.

    Raises
    ------
    TypeError
        For values no contract file can hold (lists, objects).
    """
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise TypeError(type(value).__name__)


def _raw_table(rows: Sequence[Mapping[str, object]], table: Table) -> tuple[RawTable, list[FieldError]]:
    """The rows as the contract reader would hold them, and the values no contract file can hold."""
    errors: list[FieldError] = []
    columns: dict[str, list[str | None]] = {name: [] for name in table.names}
    for item, row in enumerate(rows):
        for name in table.names:
            try:
                columns[name].append(canonical_text(row.get(name)))
            except TypeError:
                errors.append(FieldError(item, name, _NOT_A_VALUE))
                columns[name].append(None)
    frame = pd.DataFrame(columns, dtype=object)
    frame["row"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    return RawTable(frame=frame, extra_columns=(), source=REQUEST_SOURCE), errors


def _defects(rows: Sequence[Mapping[str, object]], table: Table) -> tuple[pd.DataFrame, list[FieldError]]:
    """Valid typed rows, and every defect: wrong JSON types first, then the validator's findings."""
    raw, errors = _raw_table(rows, table)
    checked = validate(raw, table)
    wrong_type = {(e.item, e.field) for e in errors}
    lines = checked.rejections
    for row, column, reason in zip(lines["row"], lines["column"], lines["reason"], strict=True):
        if (int(row) - 1, column) not in wrong_type:  # its value was dropped as unreadable: said already
            errors.append(FieldError(int(row) - 1, str(column), str(reason)))
    position = {name: i for i, name in enumerate(table.names)}
    return checked.valid, sorted(errors, key=lambda e: (e.item, position[e.field]))


def prepare_applications(rows: Sequence[Mapping[str, object]], keys: Pseudonymiser) -> list[dict]:
    """Validate and pseudonymise submitted applications exactly as ingestion does.

    Parameters
    ----------
    rows : sequence of mapping
        Contract fields by name; absent fields are missing values, others are ignored.
    keys : Pseudonymiser
        The key the state was built with.

    Returns
    -------
    list of dict
        One :data:`duanka.data.events.APPLICATION_EVENTS` row per submitted item, in
        order; an exact repeat within ``rows`` gets the same event as its first.

    Raises
    ------
    InvalidInput
        Every defect of every item, as the contract validator words it.
    """
    errors: list[FieldError] = []
    events: list[dict] = []
    # application id -> (item, contract values, event or None) of its first item, each value as the
    # validator reads it: two spellings of one id (full-width, say) are one application
    first: dict[str, tuple[int, dict[str, str | None], dict | None]] = {}
    for item, row in enumerate(rows):
        record: dict[str, str | None] = {}
        for name in APPLICATIONS.names:
            try:
                record[name] = canonical_text(row.get(name))
            except TypeError:
                errors.append(FieldError(item, name, _NOT_A_VALUE))
                record[name] = None
        unreadable = {e.field for e in errors if e.item == item}
        texts = {name: cell_text(text, _COLUMNS[name]) for name, text in record.items()}
        key = texts[_KEY]
        earlier = first.get(key) if key is not None else None
        typed, defects = validate_record(record)
        if earlier is not None and earlier[1] != texts:
            defects.insert(0, (_KEY, conflict_reason(earlier[0] + 1, _KEY)))
        # an unreadable value was dropped and its field named already
        errors += [FieldError(item, column, reason) for column, reason in defects if column not in unreadable]
        if earlier is not None:
            # an exact repeat gets its first item's event, as the validator drops it from a file
            events.append(earlier[2])  # type: ignore[arg-type]
            continue
        event = None if typed is None else application_event(typed, keys)
        if key is not None:
            first[key] = (item, texts, event)
        events.append(event)  # type: ignore[arg-type]
    if errors:
        position = {name: i for i, name in enumerate(APPLICATIONS.names)}
        raise InvalidInput(sorted(errors, key=lambda e: (e.item, position[e.field])))
    return events


def prepare_labels(rows: Sequence[Mapping[str, object]]) -> list[dict]:
    """Validate submitted confirmations against the contract's labels table.

    Returns
    -------
    list of dict
        ``application_id``, ``confirmed_at`` (aware datetime, UTC) and ``source``, one per distinct row.

    Raises
    ------
    InvalidInput
        Every defect of every item.
    """
    valid, errors = _defects(rows, LABELS)
    if errors:
        raise InvalidInput(errors)
    return [
        {"application_id": a, "confirmed_at": at.to_pydatetime(), "source": s}
        for a, at, s in zip(valid["application_id"], valid["confirmed_at"], valid["source"], strict=True)
    ]


def prepare_listings(rows: Sequence[Mapping[str, object]], keys: Pseudonymiser) -> pd.DataFrame:
    """Validate and pseudonymise submitted watchlist rows exactly as ``duanka ingest --watchlist`` does.

    Returns
    -------
    pandas.DataFrame
        :data:`duanka.data.events.WATCHLIST_EVENTS` rows, one per submitted item; the raw ID numbers are gone.

    Raises
    ------
    InvalidInput
        Every defect of every item (an ``expires_at`` before its ``listed_at`` included).
    """
    valid, errors = _defects(rows, WATCHLIST)
    early = expiry_problems(valid)
    errors += [
        FieldError(int(row) - 1, "expires_at", EXPIRES_BEFORE_LISTED) for row in valid.loc[early, "row"]
    ]
    if errors:
        position = {name: i for i, name in enumerate(WATCHLIST.names)}
        raise InvalidInput(sorted(errors, key=lambda e: (e.item, position[e.field])))
    return listing_events(valid, keys)
