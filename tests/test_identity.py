"""GB 11643 resident IDs and GB 32100 credit codes: the scalar and the column rules agree."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duanka.data.identity import (
    EXCEL_NUMBER_REASON,
    USCC_ALPHABET,
    InvalidIdentifier,
    ResidentId,
    ages_on,
    check_resident_ids,
    check_usccs,
    id_check_character,
    parse_resident_id,
    uscc_check_character,
    validate_phone,
    validate_region,
    validate_uscc,
)

ID_CHARACTERS = "0123456789X"
# derandomised: the same examples on every run and every machine
PROPERTY = settings(max_examples=250, derandomize=True)


def scalar_problem(number: str, on: date | None = None) -> str | None:
    try:
        parse_resident_id(number, on)
    except InvalidIdentifier as error:
        return str(error)
    return None


def column_problem(number: str, on: date | None = None) -> str | None:
    days = None if on is None else pd.Series([pd.Timestamp(on)])
    return check_resident_ids(pd.Series([number]), days)["problem"].iloc[0]


# Both the one-value and the whole-column rule are held to every specification below.
CHECKS = pytest.mark.parametrize("problem", [scalar_problem, column_problem])


def uscc_scalar_problem(code: str) -> str | None:
    try:
        validate_uscc(code)
    except InvalidIdentifier as error:
        return str(error)
    return None


def uscc_column_problem(code: str) -> str | None:
    return check_usccs(pd.Series([code])).iloc[0]


USCC_CHECKS = pytest.mark.parametrize("problem", [uscc_scalar_problem, uscc_column_problem])


def resident_id(region: str, born: date, sequence: int) -> str:
    first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
    return first17 + id_check_character(first17)


regions = st.from_regex(r"[1-9][0-9]{5}", fullmatch=True)
births = st.dates(min_value=date(1900, 1, 1), max_value=date(2024, 12, 31))
valid_ids = st.builds(resident_id, regions, births, st.integers(0, 999))


def uscc(first17: str) -> str:
    return first17 + uscc_check_character(first17)


uscc_symbols = st.sampled_from(USCC_ALPHABET)
valid_usccs = st.builds(
    lambda head, region, organisation: uscc(head + region + organisation),
    st.text(uscc_symbols, min_size=2, max_size=2),
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.text(uscc_symbols, min_size=9, max_size=9),
)


# --- published vectors ----------------------------------------------------------


@CHECKS
def test_the_gb_11643_example_number_is_valid(problem):
    assert problem("11010519491231002X") is None


def test_the_gb_11643_example_number_tells_birth_gender_and_region():
    facts = parse_resident_id("11010519491231002X")
    assert facts == ResidentId(birth_date=date(1949, 12, 31), gender="F", home_region="110105")


@CHECKS
def test_a_retired_region_code_is_not_a_defect(problem):
    # 440524 was abolished long ago; cards issued under it are still valid
    assert problem("440524188001010014") is None


@CHECKS
def test_a_lower_case_x_check_character_is_accepted(problem):
    assert problem("11010519491231002x") is None
    assert problem(" 11010519491231002x ") is None


@USCC_CHECKS
def test_the_gb_32100_example_code_is_valid(problem):
    assert uscc_check_character("91350100M000100Y4") == "3"
    assert problem("91350100M000100Y43") is None
    assert problem("91350100m000100y43") is None


# --- properties -----------------------------------------------------------------


@CHECKS
@given(number=valid_ids)
@PROPERTY
def test_every_well_formed_resident_id_is_valid(problem, number):
    assert problem(number) is None


@CHECKS
@given(number=valid_ids, data=st.data())
@PROPERTY
def test_any_single_changed_character_of_a_resident_id_is_rejected(problem, number, data):
    position = data.draw(st.integers(0, 17))
    other = data.draw(st.sampled_from(ID_CHARACTERS.replace(number[position], "")))
    assert problem(number[:position] + other + number[position + 1 :]) is not None


@USCC_CHECKS
@given(code=valid_usccs)
@PROPERTY
def test_every_well_formed_credit_code_is_valid(problem, code):
    assert problem(code) is None


@USCC_CHECKS
@given(code=valid_usccs, data=st.data())
@PROPERTY
def test_any_single_changed_character_of_a_credit_code_is_rejected(problem, code, data):
    position = data.draw(st.integers(0, 17))
    other = data.draw(st.sampled_from(USCC_ALPHABET.replace(code[position], "")))
    assert problem(code[:position] + other + code[position + 1 :]) is not None


near_ids = st.one_of(valid_ids, st.text(alphabet="0123456789Xx Y２", min_size=15, max_size=20))
application_days = st.one_of(st.none(), st.dates(date(1990, 1, 1), date(2030, 12, 31)))


@given(number=near_ids, on=application_days)
@PROPERTY
def test_the_column_rule_gives_the_scalar_verdict_and_reason(number, on):
    assert column_problem(number, on) == scalar_problem(number, on)


@given(code=st.one_of(valid_usccs, st.text(alphabet=USCC_ALPHABET + "IOZ a", max_size=20)))
@PROPERTY
def test_the_credit_code_column_rule_gives_the_scalar_verdict_and_reason(code):
    assert uscc_column_problem(code) == uscc_scalar_problem(code)


@given(born=births, on=st.dates(date(1900, 1, 1), date(2030, 12, 31)))
@PROPERTY
def test_column_ages_count_whole_years_as_the_scalar_rule_does(born, on):
    expected = ResidentId(born, "F", "110105").age_on(on)
    got = ages_on(np.array([born], dtype="datetime64[D]"), np.array([on], dtype="datetime64[D]"))
    assert got[0] == expected


def test_the_column_rule_returns_derived_facts_only_for_valid_numbers():
    facts = check_resident_ids(pd.Series(["11010519491231002x", "110105194912310021"]))
    assert facts["problem"].tolist() == [None, "check character does not match (GB 11643 MOD 11-2)"]
    assert facts["birth_date"].iloc[0] == np.datetime64("1949-12-31")
    assert pd.isna(facts["birth_date"].iloc[1])
    assert facts["gender"].iloc[0] == "F"
    assert facts["home_region"].iloc[0] == "110105"
    assert facts[["gender", "home_region"]].iloc[1].isna().all()


# --- defects and their reasons ----------------------------------------------------


@CHECKS
@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("1101051949123100", "must have 18 characters, has 16"),
        ("4.40103E+17", EXCEL_NUMBER_REASON),  # Excel saved the column as a number
        ("1.10105e17", EXCEL_NUMBER_REASON),
        ("11010519491231002Y", "must be 17 digits followed by a digit or X"),
        ("１１010519491231002X", "must be 17 digits followed by a digit or X"),
        ("110105194902300021", "birth date is not a calendar date"),
        ("110105000001010021", "birth date is not a calendar date"),
        ("110105194912310021", "check character does not match (GB 11643 MOD 11-2)"),
    ],
)
def test_a_defective_resident_id_is_rejected_with_a_reason(problem, number, reason):
    assert problem(number) == reason


@CHECKS
def test_reasons_never_repeat_the_number_or_its_birth_date(problem):
    for number in ("110105194902300021", "110105194912310021", "11010519491231002Y"):
        reason = problem(number, date(2024, 1, 1))
        assert number[:6] not in reason
        assert number[6:14] not in reason


def test_credit_code_reasons_never_repeat_the_code_or_its_characters():
    reason = uscc_scalar_problem("91350100M000100IOZ")
    assert reason.startswith("has characters outside the GB 32100 alphabet")
    assert "IOZ" not in reason
    assert "'" not in reason


# --- ages on the application day --------------------------------------------------


@CHECKS
def test_the_sixteenth_birthday_is_the_first_accepted_day(problem):
    number = resident_id("440106", date(2008, 3, 5), 21)
    assert problem(number, date(2024, 3, 5)) is None
    assert problem(number, date(2024, 3, 4)) == "applicant aged 15, outside 16-100"


@CHECKS
def test_the_hundredth_year_is_the_last_accepted(problem):
    number = resident_id("440106", date(1924, 3, 5), 21)
    assert problem(number, date(2025, 3, 4)) is None
    assert problem(number, date(2025, 3, 5)) == "applicant aged 101, outside 16-100"


@CHECKS
def test_a_29_february_birthday_falls_on_29_february_in_leap_years(problem):
    number = resident_id("440106", date(2008, 2, 29), 21)
    assert problem(number, date(2024, 2, 28)) == "applicant aged 15, outside 16-100"
    assert problem(number, date(2024, 2, 29)) is None


@CHECKS
def test_a_29_february_birthday_falls_on_1_march_in_common_years(problem):
    # 2100 is not a leap year, so this sixteenth birthday has no 29 February
    number = resident_id("440106", date(2084, 2, 29), 21)
    assert problem(number, date(2100, 2, 28)) == "applicant aged 15, outside 16-100"
    assert problem(number, date(2100, 3, 1)) is None


@CHECKS
def test_a_birth_date_after_the_application_is_rejected(problem):
    number = resident_id("440106", date(2024, 6, 1), 21)
    assert problem(number, date(2024, 5, 31)) == "birth date is after the application"


@CHECKS
def test_the_age_rule_applies_only_when_an_application_day_is_given(problem):
    number = resident_id("440106", date(2020, 1, 1), 21)
    assert problem(number) is None
    assert problem(number, date(2024, 1, 1)) == "applicant aged 4, outside 16-100"


def test_an_unknown_application_day_skips_only_the_age_rule():
    numbers = pd.Series([resident_id("440106", date(2020, 1, 1), 21), "110105194912310021"])
    days = pd.Series([pd.NaT, pd.NaT], dtype="datetime64[s]")
    problems = check_resident_ids(numbers, days)["problem"].tolist()
    assert problems == [None, "check character does not match (GB 11643 MOD 11-2)"]


def test_column_and_scalar_ages_agree_across_a_leap_day_window():
    born = date(2008, 2, 29)
    days = [date(2024, 2, 27) + timedelta(days=k) for k in range(4)]
    column = ages_on(np.full(len(days), np.datetime64(born, "D")), np.array(days, dtype="datetime64[D]"))
    assert column.tolist() == [ResidentId(born, "F", "440106").age_on(d) for d in days]


# --- phone and region -------------------------------------------------------------


@pytest.mark.parametrize("phone", ["13800138000", " 19912345678 "])
def test_an_eleven_digit_mobile_number_is_valid(phone):
    assert validate_phone(phone) == phone.strip()


@pytest.mark.parametrize("phone", ["1380013800", "12800138000", "23800138000", "1380013800０"])
def test_other_phone_numbers_are_rejected(phone):
    with pytest.raises(InvalidIdentifier, match="11-digit mobile number"):
        validate_phone(phone)


@pytest.mark.parametrize("region", ["44011", "044010", "4401061", "44０106"])
def test_a_region_code_must_be_six_ascii_digits(region):
    with pytest.raises(InvalidIdentifier, match="6-digit administrative division code"):
        validate_region(region)
