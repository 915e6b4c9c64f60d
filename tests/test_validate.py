"""Validating contract tables: what passes, typed; what is rejected, and why."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
from duanka.data.identity import id_check_character
from duanka.data.reader import RawTable, read_raw
from duanka.data.validate import Validated, validate

SAMPLES = Path(__file__).parent / "fixtures" / "contract"
with (SAMPLES / "invalid_applications.csv").open(encoding="utf-8") as _handle:
    INVALID = list(csv.DictReader(_handle))

PERSONAL = [c.name for c in APPLICATIONS.columns if c.personal]
CORPORATE_ROW = 0  # A000000001
NAIVE_ROW = 1  # A000000002, applied_at 2024-01-01T09:45:07 without an offset
PERSONAL_ROW = 4  # A000000007


@pytest.fixture(scope="module")
def samples() -> RawTable:
    return read_raw(SAMPLES / "applications.csv", APPLICATIONS)


@pytest.fixture(scope="module")
def invalid() -> Validated:
    return validate(read_raw(SAMPLES / "invalid_applications.csv", APPLICATIONS), APPLICATIONS)


def rows(samples: RawTable, *positions: int, **changes: str | None) -> RawTable:
    """Sample rows at ``positions``, renumbered from 1, with ``changes`` applied to all."""
    frame = samples.frame.iloc[list(positions)].reset_index(drop=True)
    for name, value in changes.items():
        frame[name] = pd.Series([value] * len(frame), dtype=object)
    frame["row"] = range(1, len(frame) + 1)
    return RawTable(frame=frame, extra_columns=(), source="test.csv")


def reasons(outcome: Validated) -> list[tuple[int, str, str]]:
    lines = outcome.rejections
    return list(zip(lines["row"], lines["column"], lines["reason"], strict=True))


# --- the contract samples ----------------------------------------------------------


def test_every_valid_sample_application_is_accepted(samples):
    outcome = validate(samples, APPLICATIONS)
    assert outcome.rejections.empty
    assert len(outcome.valid) == 200
    assert outcome.duplicates_dropped == 0


def test_every_sample_label_is_accepted():
    outcome = validate(read_raw(SAMPLES / "labels.csv", LABELS), LABELS)
    assert outcome.rejections.empty
    assert len(outcome.valid) == 15


@pytest.mark.parametrize("sample", INVALID, ids=[f"{s['expected_column']}: {s['defect']}" for s in INVALID])
def test_each_invalid_sample_is_rejected_naming_its_column(invalid, sample):
    row = INVALID.index(sample) + 1
    lines = invalid.rejections[invalid.rejections["row"] == row]
    assert sample["expected_column"] in lines["column"].tolist()
    assert row not in invalid.valid["row"].tolist()


def test_no_invalid_sample_reaches_the_valid_rows(invalid):
    assert invalid.valid.empty
    assert set(invalid.rejections["row"]) == set(range(1, len(INVALID) + 1))


def test_rejection_lines_carry_row_application_id_column_and_reason(invalid):
    assert list(invalid.rejections.columns) == ["row", "application_id", "column", "reason"]
    first = invalid.rejections.iloc[0]
    assert (first["row"], first["application_id"], first["column"]) == (1, "BAD000", "id_number")
    missing_id = invalid.rejections[invalid.rejections["column"] == "application_id"].iloc[0]
    assert missing_id["application_id"] is None
    assert missing_id["reason"] == "required value is missing"


def test_reasons_never_repeat_a_personal_value_of_the_invalid_samples(invalid):
    text = " ".join(invalid.rejections["reason"])
    for sample in INVALID:
        for name in PERSONAL:
            if sample[name]:
                assert sample[name] not in text, name


def test_reasons_never_repeat_a_personal_value_of_a_row_bad_everywhere(samples):
    bad = {
        "id_number": "11010519491331002X",
        "phone": "1380013800",
        "company_id": "91350100M000100IOZ",
        "address": "   ",
        "device_id": "D-device-secret",
        "escort_id": "110105194912310021",
    }
    outcome = validate(rows(samples, CORPORATE_ROW, account_type="personal", **bad), APPLICATIONS)
    text = " ".join(outcome.rejections["reason"])
    assert set(outcome.rejections["column"]) >= {"id_number", "phone", "company_id", "address"}
    for value in bad.values():
        if value.strip():
            assert value not in text
    assert "19491331" not in text  # not even the ID's birth-date part
    assert "IOZ" not in text


def test_non_personal_values_are_quoted_to_help_fix_them(invalid):
    by_column = dict(zip(invalid.rejections["column"], invalid.rejections["reason"], strict=False))
    assert by_column["channel"] == "not one of counter, mobile, agent; got 'branch'"
    assert by_column["account_type"] == "not one of personal, corporate; got 'retail'"


# --- typed values ------------------------------------------------------------------


def test_valid_rows_are_typed(samples):
    valid = validate(samples, APPLICATIONS).valid
    assert str(valid["applied_at"].dtype) == "datetime64[us, UTC]"
    assert str(valid["photo_tampered"].dtype) == "boolean"
    assert str(valid["onsite_verified"].dtype) == "boolean"
    assert str(valid["phone_tenure_days"].dtype) == "Int64"
    assert str(valid["company_age_days"].dtype) == "Int64"
    assert valid["row"].tolist() == list(range(1, 201))
    assert valid["channel"].isin(["counter", "mobile", "agent"]).all()


def test_a_naive_timestamp_is_shanghai_time(samples):
    valid = validate(rows(samples, NAIVE_ROW), APPLICATIONS).valid
    assert valid["applied_at"].iloc[0] == pd.Timestamp("2024-01-01T09:45:07+08:00")


@pytest.mark.parametrize(
    ("written", "instant"),
    [
        ("2024-03-05T10:12:00+08:00", "2024-03-05T02:12:00Z"),
        ("2024-03-05T02:12:00Z", "2024-03-05T02:12:00Z"),
        ("2024-03-05T10:12:00+0800", "2024-03-05T02:12:00Z"),
        ("2024-03-05 10:12:00.25", "2024-03-05T02:12:00.25Z"),
        ("2024-03-05", "2024-03-04T16:00:00Z"),
        ("2024-03-05T10:12:00.123456000+08:00", "2024-03-05T02:12:00.123456Z"),
        # year first, as Excel writes on a Chinese Windows: Asia/Shanghai, like ISO without an offset
        ("2024/3/5 10:12", "2024-03-05T02:12:00Z"),
        ("2024/03/05 9:05:30", "2024-03-05T01:05:30Z"),
        ("2024/3/5", "2024-03-04T16:00:00Z"),
        ("2024-3-5 10:12", "2024-03-05T02:12:00Z"),
    ],
)
def test_iso_8601_timestamps_with_or_without_offset(samples, written, instant):
    valid = validate(rows(samples, PERSONAL_ROW, applied_at=written), APPLICATIONS).valid
    assert valid["applied_at"].iloc[0] == pd.Timestamp(instant)


@pytest.mark.parametrize(
    "written",
    [
        "5/3/2024 10:12",
        "03/05/2024",
        "05-03-2024",
        "2024-03-05T10:12:00.1234567+08:00",
        "2024-03-05+08:00",
        "today",
    ],
)
def test_other_timestamp_spellings_are_rejected(samples, written):
    outcome = validate(rows(samples, PERSONAL_ROW, applied_at=written), APPLICATIONS)
    assert reasons(outcome) == [
        (
            1,
            "applied_at",
            "not an ISO 8601 timestamp such as 2024-03-05T10:12:00+08:00 (at most microseconds) or a "
            "year-first date and time such as 2024/3/5 10:12; a day or month first is ambiguous; "
            f"got '{written}'",
        )
    ]


@pytest.mark.parametrize("written", ["2024-02-30T10:00:00+08:00", "2024-03-05T24:30:00"])
def test_timestamps_that_are_no_real_time_are_rejected(samples, written):
    outcome = validate(rows(samples, PERSONAL_ROW, applied_at=written), APPLICATIONS)
    assert reasons(outcome) == [(1, "applied_at", f"not a real date and time; got '{written}'")]


@pytest.mark.parametrize(
    ("written", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("False", False), (" 0 ", False)],
)
def test_booleans_are_true_false_one_or_zero(samples, written, value):
    valid = validate(rows(samples, PERSONAL_ROW, u_shield=written), APPLICATIONS).valid
    assert valid["u_shield"].tolist() == [value]


@pytest.mark.parametrize("written", ["yes", "T", "2", "1.0", "on", "１"])
def test_nothing_else_is_coerced_to_a_boolean(samples, written):
    outcome = validate(rows(samples, PERSONAL_ROW, u_shield=written), APPLICATIONS)
    assert reasons(outcome) == [(1, "u_shield", f"not a boolean (true/false/1/0); got '{written}'")]


@pytest.mark.parametrize(("written", "value"), [("0", 0), ("12", 12), ("007", 7)])
def test_integers_are_plain_digits(samples, written, value):
    valid = validate(rows(samples, PERSONAL_ROW, phone_tenure_days=written), APPLICATIONS).valid
    assert valid["phone_tenure_days"].iloc[0] == value


@pytest.mark.parametrize("written", ["12.0", "-1", "1e3", "+5", "１２", "0x10", "1,000"])
def test_nothing_else_is_coerced_to_an_integer(samples, written):
    outcome = validate(rows(samples, PERSONAL_ROW, phone_tenure_days=written), APPLICATIONS)
    assert reasons(outcome) == [
        (
            1,
            "phone_tenure_days",
            f"not a whole number >= 0 written in plain digits; got '{written}'",
        )
    ]


def test_an_integer_too_large_for_int64_is_rejected(samples):
    outcome = validate(rows(samples, PERSONAL_ROW, phone_tenure_days="9" * 19), APPLICATIONS)
    assert reasons(outcome)[0][1:] == ("phone_tenure_days", "more than 18 digits; got '" + "9" * 19 + "'")


def test_identifiers_come_out_canonical(samples):
    valid = validate(
        rows(samples, CORPORATE_ROW, id_number=" 44011319860228924x ", company_id="91440104620646179q"),
        APPLICATIONS,
    ).valid
    assert valid["id_number"].iloc[0] == "44011319860228924X"
    assert valid["company_id"].iloc[0] == "91440104620646179Q"


def test_text_is_trimmed_and_a_blank_cell_is_empty(samples):
    valid = validate(
        rows(samples, PERSONAL_ROW, branch_id="  B4403062 ", intermediary_id="   "), APPLICATIONS
    ).valid
    assert valid["branch_id"].iloc[0] == "B4403062"
    assert pd.isna(valid["intermediary_id"].iloc[0])


# --- facts derived from the ID number ------------------------------------------------


def test_age_gender_and_home_region_come_from_the_id_number(samples):
    valid = validate(rows(samples, CORPORATE_ROW), APPLICATIONS).valid  # 441202197411010819
    assert valid[["age", "gender", "home_region"]].iloc[0].tolist() == [49, "M", "441202"]
    assert str(valid["age"].dtype) == "int64"


def test_age_is_counted_on_the_shanghai_calendar_day(samples):
    # 2024-11-01T00:30+08:00 is still 31 October in UTC, the day before the 50th birthday
    valid = validate(rows(samples, CORPORATE_ROW, applied_at="2024-11-01T00:30:00+08:00"), APPLICATIONS).valid
    assert valid["age"].iloc[0] == 50


def test_an_applicant_under_16_on_the_application_day_is_rejected(samples):
    born_2010 = "11010520100101002" + id_check_character("11010520100101002")
    outcome = validate(
        rows(samples, PERSONAL_ROW, id_number=born_2010, applied_at="2025-12-31"), APPLICATIONS
    )
    assert reasons(outcome) == [(1, "id_number", "applicant aged 15, outside 16-100")]


def test_the_age_rule_belongs_to_applications_not_to_the_watchlist():
    frame = pd.DataFrame(
        {
            "id_number": ["440524188001010014"],
            "listed_at": ["2024-01-01"],
            "expires_at": [None],
            "source": ["pboc_joint_punishment"],
            "row": [1],
        },
        dtype=object,
    )
    outcome = validate(RawTable(frame, (), "watchlist.csv"), WATCHLIST)
    assert outcome.rejections.empty
    assert "age" not in outcome.valid.columns


# --- rules across columns ----------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [("onsite_verified", "true"), ("company_id", "91440104620646179Q"), ("company_age_days", "10")],
)
def test_corporate_only_columns_must_be_empty_on_personal_accounts(samples, column, value):
    outcome = validate(rows(samples, PERSONAL_ROW, **{column: value}), APPLICATIONS)
    assert reasons(outcome) == [
        (1, column, "only for corporate accounts; must be empty when account_type is personal")
    ]


def test_a_corporate_account_requires_its_credit_code(samples):
    outcome = validate(rows(samples, CORPORATE_ROW, company_id=None), APPLICATIONS)
    assert reasons(outcome) == [(1, "company_id", "required for corporate accounts")]


def test_a_corporate_account_may_leave_visit_and_company_age_unknown(samples):
    outcome = validate(
        rows(samples, CORPORATE_ROW, onsite_verified=None, company_age_days=None), APPLICATIONS
    )
    assert outcome.rejections.empty


def test_a_row_with_several_defects_has_one_line_per_defect(samples):
    outcome = validate(
        rows(samples, PERSONAL_ROW, channel="branch", phone=None, u_shield="maybe"), APPLICATIONS
    )
    assert [(r, c) for r, c, _ in reasons(outcome)] == [
        (1, "channel"),
        (1, "phone"),
        (1, "u_shield"),
    ]
    assert outcome.valid.empty


# --- repeats within a file ----------------------------------------------------------


def test_an_identical_repeat_is_dropped_and_counted(samples):
    outcome = validate(rows(samples, PERSONAL_ROW, NAIVE_ROW, PERSONAL_ROW), APPLICATIONS)
    assert outcome.rejections.empty
    assert outcome.duplicates_dropped == 1
    assert outcome.valid["row"].tolist() == [1, 2]


def test_a_repeat_differing_only_in_surrounding_spaces_is_identical(samples):
    raw = rows(samples, PERSONAL_ROW, PERSONAL_ROW)
    raw.frame.loc[1, "address"] = " " + raw.frame.loc[1, "address"] + " "
    outcome = validate(raw, APPLICATIONS)
    assert outcome.duplicates_dropped == 1
    assert len(outcome.valid) == 1


def test_a_conflicting_repeat_is_rejected_and_the_first_kept(samples):
    raw = rows(samples, PERSONAL_ROW, NAIVE_ROW, PERSONAL_ROW)
    raw.frame.loc[2, "phone_tenure_days"] = "28"
    outcome = validate(raw, APPLICATIONS)
    assert reasons(outcome) == [
        (3, "application_id", "conflicts with row 1 (same application_id, different content)")
    ]
    assert outcome.valid["row"].tolist() == [1, 2]
    assert outcome.valid["phone_tenure_days"].tolist() == [27, 4500]
    assert outcome.duplicates_dropped == 0


def test_repeated_labels_follow_the_same_rule():
    frame = pd.DataFrame(
        {
            "application_id": ["A1", "A1", "A1"],
            "confirmed_at": ["2024-04-13T06:51:24+08:00"] * 3,
            "source": ["police_notice", "police_notice", "investigation"],
            "row": [1, 2, 3],
        },
        dtype=object,
    )
    outcome = validate(RawTable(frame, (), "labels.csv"), LABELS)
    assert outcome.duplicates_dropped == 1
    assert reasons(outcome) == [
        (3, "application_id", "conflicts with row 1 (same application_id, different content)")
    ]
