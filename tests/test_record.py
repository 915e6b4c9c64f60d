"""The per-record path gives the column path's verdicts, reasons and events.

The column path (reader, :func:`duanka.data.validate.validate`,
:func:`duanka.data.ingest.pseudonymise_applications`) is the definition; every test here
runs both on the same rows and compares.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duanka.data.contract import APPLICATIONS
from duanka.data.events import APPLICATION_EVENTS
from duanka.data.ingest import pseudonymise_applications
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import RawTable, read_raw
from duanka.data.record import application_event, validate_record
from duanka.data.synthetic import generate_bank
from duanka.data.validate import validate

FIXTURES = Path(__file__).parent / "fixtures" / "contract"
KEYS = Pseudonymiser.demo()


def _records(raw: RawTable) -> list[dict[str, str | None]]:
    return raw.frame.loc[:, list(APPLICATIONS.names)].to_dict("records")


def _column_verdict(record: dict[str, str | None]) -> tuple[dict | None, list[tuple[str, str]]]:
    """The column path on a one-row file: the event (or None) and the rejection lines."""
    frame = pd.DataFrame({name: [record.get(name)] for name in APPLICATIONS.names}, dtype=object)
    frame["row"] = 1
    checked = validate(RawTable(frame=frame, extra_columns=(), source="t"), APPLICATIONS)
    lines = list(zip(checked.rejections["column"], checked.rejections["reason"], strict=True))
    if not len(checked.valid):
        return None, lines
    events = pseudonymise_applications(checked.valid, KEYS).loc[:, APPLICATION_EVENTS.names]
    table = pa.Table.from_pandas(events.reset_index(drop=True), schema=APPLICATION_EVENTS)
    return table.to_pylist()[0], lines


def _record_verdict(record: dict[str, str | None]) -> tuple[dict | None, list[tuple[str, str]]]:
    typed, defects = validate_record(record)
    return (None if typed is None else application_event(typed, KEYS)), defects


@pytest.fixture(scope="module")
def contract_rows() -> list[dict[str, str | None]]:
    return _records(read_raw(FIXTURES / "applications.csv", APPLICATIONS))


def test_every_contract_sample_gives_ingestions_event_field_by_field(contract_rows):
    raw = read_raw(FIXTURES / "applications.csv", APPLICATIONS)
    whole = pseudonymise_applications(validate(raw, APPLICATIONS).valid, KEYS)
    assert len(contract_rows) == len(whole) == 200
    for record, (_, ingested) in zip(contract_rows, whole.iterrows(), strict=True):
        event, defects = _record_verdict(record)
        assert defects == []
        alone, _ = _column_verdict(record)
        assert event == alone  # row_digest included
        # every field but the digest also matches the whole file's event
        for name in APPLICATION_EVENTS.names:
            if name != "row_digest":
                assert event[name] == (None if pd.isna(ingested[name]) else ingested[name]), name


def test_the_contract_samples_include_a_lower_case_x_and_a_naive_timestamp(contract_rows):
    assert any(r["id_number"].endswith("x") for r in contract_rows)
    assert any(len(r["applied_at"]) == len("2024-01-01T09:45:07") for r in contract_rows)


def test_every_invalid_sample_gets_the_validators_defects():
    raw = read_raw(FIXTURES / "invalid_applications.csv", APPLICATIONS)
    lines = validate(raw, APPLICATIONS).rejections
    for row, record in zip(raw.frame["row"], _records(raw), strict=True):
        mine = lines[lines["row"] == row]
        expected = list(zip(mine["column"], mine["reason"], strict=True))
        assert expected
        assert validate_record(record) == (None, expected)


def _column_verdicts(records: list[dict[str, str | None]]) -> list[tuple[dict | None, list[tuple[str, str]]]]:
    """The column path on one file of all the records: each row's event (or None) and rejection lines.

    One file, not one per record: the column path judges each row on its own (the records'
    ids are distinct), and one call keeps the comparison of thousands of rows to seconds.
    """
    frame = pd.DataFrame({name: [r.get(name) for r in records] for name in APPLICATIONS.names}, dtype=object)
    frame["row"] = range(1, len(records) + 1)
    checked = validate(RawTable(frame=frame, extra_columns=(), source="t"), APPLICATIONS)
    lines: dict[int, list[tuple[str, str]]] = {}
    for row, column, reason in zip(
        checked.rejections["row"], checked.rejections["column"], checked.rejections["reason"], strict=True
    ):
        lines.setdefault(int(row), []).append((column, reason))
    events: dict[int, dict] = {}
    if len(checked.valid):
        rows = checked.valid["row"].to_numpy()
        valid = pseudonymise_applications(checked.valid, KEYS).loc[:, APPLICATION_EVENTS.names]
        table = pa.Table.from_pandas(valid.reset_index(drop=True), schema=APPLICATION_EVENTS)
        events = dict(zip((int(r) for r in rows), table.to_pylist(), strict=True))
    return [(events.get(i), lines.get(i, [])) for i in range(1, len(records) + 1)]


def test_a_generated_bank_agrees_row_by_row(tmp_path):
    bank = generate_bank(tmp_path, months=12, applications=20_000, seed=3)
    rows = _records(read_raw(bank.applications, APPLICATIONS))[::10]
    assert len(rows) == 2_000
    # The batch form of the column path agrees with its one-row form (the other tests' form).
    assert _column_verdicts(rows[:20]) == [_column_verdict(r) for r in rows[:20]]
    for record, column_verdict in zip(rows, _column_verdicts(rows), strict=True):
        assert _record_verdict(record) == column_verdict


@pytest.mark.parametrize(
    ("escort", "spelt"),
    [
        (" 11010519491231002x ", "11010519491231002X"),  # an ID number, as id_number is spelt
        ("straße", "STRAẞE"),  # upper case one character at a time: ß is not SS
        ("ﬁx", "FIX"),  # an identifier is read in its NFKC form: the ligature is two letters
    ],
)
def test_one_raw_escort_gets_one_key_through_both_paths(contract_rows, escort, spelt):
    record = {**contract_rows[0], "escort_id": escort}
    event, defects = _record_verdict(record)
    assert defects == []
    assert event["escort_key"] == KEYS.token("escort", spelt)
    frame = pd.DataFrame({name: [record[name]] for name in APPLICATIONS.names}, dtype=object)
    checked = validate(RawTable(frame=frame.assign(row=1), extra_columns=(), source="t"), APPLICATIONS)
    # the frame as validated, and with plain Python strings (pandas before 3, a frame built by hand)
    for valid in (checked.valid, checked.valid.astype({"escort_id": object})):
        assert pseudonymise_applications(valid, KEYS)["escort_key"].tolist() == [event["escort_key"]]


@pytest.mark.parametrize(
    "applied_at",
    [
        "2024-01-01",
        "2024-01-01 10:00",
        "2024-01-01T10:00:00.1",
        "2024-01-01T10:00:00.123456000+0800",
        "2024-01-01T10:00+23:59",
        "2024-01-01T10:00-00:00",
        "2024-01-01T10:00+24:00",
        "2024-01-01T10:00+0860",
        "2024-01-01T24:00",
        "2024-01-01T23:59:60",
        "2024-02-30",
        "1988-04-10T02:30",  # summer time began at 02:00: no such clock time
        "1988-09-11T01:30",  # summer time ended at 02:00: this clock time happened twice
        "1899-12-31T23:00",  # local mean time: the column path judges it
        "1600-01-01T00:00Z",
        "2262-04-12",
        "2024-1-01",
        "2024/1/5 9:30",
        "2024/1/5",
        "2024/2/30 9:30",
        "2024/1/5 24:30",
        "5/1/2024 9:30",
    ],
)
def test_timestamps_at_the_edges_get_the_same_verdict(contract_rows, applied_at):
    record = {**contract_rows[0], "applied_at": applied_at}
    assert _record_verdict(record) == _column_verdict(record)


_COLUMNS = st.sampled_from(APPLICATIONS.names)
_MUTATIONS = st.one_of(
    st.tuples(st.just("blank"), _COLUMNS, st.sampled_from(["", "  ", None])),
    st.tuples(st.just("char"), _COLUMNS, st.tuples(st.integers(0, 40), st.characters(codec="utf-8"))),
    st.tuples(
        st.just("set"),
        st.sampled_from(["photo_tampered", "u_shield", "onsite_verified", "mobile_banking"]),
        st.sampled_from(["TRUE", "1", "yes", "0", " False ", "t"]),
    ),
    st.tuples(
        st.just("set"),
        st.sampled_from(["phone_tenure_days", "company_age_days"]),
        st.sampled_from(["12.0", "0012", "-1", "1234567890123456789", "１２"]),
    ),
    st.tuples(
        st.just("set"), st.sampled_from(["id_number", "company_id", "escort_id"]), st.text(max_size=20)
    ),
)


def _mutated(record: dict[str, str | None], mutation: tuple) -> dict[str, str | None]:
    how, column, what = mutation
    out = dict(record)
    if how == "char":
        at, character = what
        text = out[column] or ""
        out[column] = text[:at] + character + text[at + 1 :]
    else:
        out[column] = what
    return out


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 199), mutations=st.lists(_MUTATIONS, min_size=1, max_size=3))
def test_mutated_rows_get_the_same_verdict_in_both_paths(contract_rows, which, mutations):
    record = contract_rows[which]
    for mutation in mutations:
        record = _mutated(record, mutation)
    assert _record_verdict(record) == _column_verdict(record)
