"""Check characters and derived facts for Chinese identity numbers.

GB 11643-1999 resident identity numbers (18 characters, ISO 7064 MOD 11-2 check
character) and GB 32100-2015 unified social credit codes (18 characters over a
31-character alphabet, MOD 31 check character). Region codes are *not* checked
against a list: retired and unknown codes appear on real, valid cards.

Each rule exists twice: a scalar function for one value (the HTTP service) and a
vectorised one for a whole column (ingestion). Both give the same verdict and the
same reason, and no reason ever repeats the value or a part of it, because the
values are personal information and reasons end up in quarantine files and logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_ID_CHECK = "10X98765432"
# [0-9], not \d: Python's \d also matches full-width and other Unicode digits
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

PHONE_PATTERN = "1[3-9][0-9]{9}"
REGION_PATTERN = "[1-9][0-9]{5}"
_PHONE_SHAPE = re.compile(PHONE_PATTERN)
_REGION_SHAPE = re.compile(REGION_PATTERN)

MIN_AGE = 16
MAX_AGE = 100

ID_SHAPE_REASON = "must be 17 digits followed by a digit or X"
ID_DATE_REASON = "birth date is not a calendar date"
ID_CHECK_REASON = "check character does not match (GB 11643 MOD 11-2)"
ID_FUTURE_REASON = "birth date is after the application"
USCC_ALPHABET_REASON = "has characters outside the GB 32100 alphabet (digits and A-Y except I, O, S, V, Z)"
USCC_REGION_REASON = "characters 3-8 must be the registering region code"
USCC_CHECK_REASON = "check character does not match (GB 32100 MOD 31)"
PHONE_REASON = "must be an 11-digit mobile number starting 13-19"
REGION_REASON = "must be a 6-digit administrative division code"
EXCEL_NUMBER_REASON = (
    "reads like a number Excel shortened to scientific notation (as in 4.40103E+17): its digits are "
    "lost; export the column as text (docs/contract.md, Excel)"
)
# 4.40103E+17, 4.4E17, 1.38001E+10: a long number Excel rounded and saved as a float
_EXCEL_NUMBER = re.compile(r"[0-9](?:\.[0-9]+)?E\+?[0-9]+", re.IGNORECASE)


def length_reason(length: int) -> str:
    """The reason for an 18-character identifier of the wrong length."""
    return f"must have 18 characters, has {length}"


def age_reason(age: int) -> str:
    """The reason for an applicant outside the accepted ages."""
    return f"applicant aged {age}, outside {MIN_AGE}-{MAX_AGE}"


def _excel_numbers(text: pd.Series) -> np.ndarray:
    """Where a canonical column holds a number Excel wrote in scientific notation."""
    return text.str.fullmatch(_EXCEL_NUMBER.pattern, case=False).to_numpy(dtype=bool, na_value=False)


def canonical_code(value: str) -> str:
    """``value`` stripped and upper-cased as the column functions do it.

    Pandas' ``str`` columns upper-case through pyarrow one character at a time, so
    ``ß`` stays one character where Python's ``str.upper`` makes it ``SS``; a length
    reason must count the same characters in both paths.
    """
    text = value.strip()
    if text.isascii():
        return text.upper()
    return pc.utf8_upper(pa.scalar(text, pa.string())).as_py()


class InvalidIdentifier(ValueError):
    """An identifier that breaks its standard; the message says how."""


def id_check_character(first17: str) -> str:
    """Return the GB 11643 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def uscc_check_character(first17: str) -> str:
    """Return the GB 32100 check character for the first 17 characters."""
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


@dataclass(frozen=True, slots=True)
class ResidentId:
    """What an identity number says about its holder, without the number itself."""

    birth_date: date
    gender: str  # "M" or "F": odd sequence digit is male
    home_region: str  # 6-digit GB/T 2260 code as issued, possibly retired

    @property
    def home_province(self) -> str:
        return self.home_region[:2]

    def age_on(self, day: date) -> int:
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - before_birthday


def parse_resident_id(value: str, on: date | None = None) -> ResidentId:
    """Validate a GB 11643 number and return its derived facts.

    Parameters
    ----------
    value : str
        The 18-character number; a lower-case ``x`` check character is accepted.
    on : date, optional
        The day of the application. When given, the holder must be aged
        16 to 100 on that day and the birth date must not be after it.

    Raises
    ------
    InvalidIdentifier
        With a reason a data steward can act on.
    """
    number = canonical_code(value)
    if _EXCEL_NUMBER.fullmatch(number):
        raise InvalidIdentifier(EXCEL_NUMBER_REASON)
    if len(number) != 18:
        raise InvalidIdentifier(length_reason(len(number)))
    if not _ID_SHAPE.fullmatch(number):
        raise InvalidIdentifier(ID_SHAPE_REASON)
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdentifier(ID_DATE_REASON) from None
    expected = id_check_character(number[:17])
    if number[17] != expected:
        raise InvalidIdentifier(ID_CHECK_REASON)
    facts = ResidentId(
        birth_date=born,
        gender="M" if int(number[16]) % 2 else "F",
        home_region=number[:6],
    )
    if on is not None:
        if born > on:
            raise InvalidIdentifier(ID_FUTURE_REASON)
        age = facts.age_on(on)
        if not MIN_AGE <= age <= MAX_AGE:
            raise InvalidIdentifier(age_reason(age))
    return facts


def normalise_resident_id(value: str) -> str:
    """The canonical spelling used for pseudonyms (upper-case X, no spaces)."""
    return value.strip().upper()


def validate_uscc(value: str) -> str:
    """Validate a GB 32100 unified social credit code; return it canonicalised."""
    code = canonical_code(value)
    if _EXCEL_NUMBER.fullmatch(code):
        raise InvalidIdentifier(EXCEL_NUMBER_REASON)
    if len(code) != 18:
        raise InvalidIdentifier(length_reason(len(code)))
    if any(c not in _USCC_VALUE for c in code):
        raise InvalidIdentifier(USCC_ALPHABET_REASON)
    if not code[2:8].isdigit():
        raise InvalidIdentifier(USCC_REGION_REASON)
    if code[17] != uscc_check_character(code[:17]):
        raise InvalidIdentifier(USCC_CHECK_REASON)
    return code


def validate_phone(value: str) -> str:
    """Validate an 11-digit mainland mobile number; return it stripped."""
    phone = value.strip()
    if not _PHONE_SHAPE.fullmatch(phone):
        raise InvalidIdentifier(PHONE_REASON)
    return phone


def validate_region(value: str) -> str:
    """Validate a 6-digit GB/T 2260 administrative division code (shape only)."""
    code = value.strip()
    if not _REGION_SHAPE.fullmatch(code):
        raise InvalidIdentifier(REGION_REASON)
    return code


# --- whole columns -------------------------------------------------------------

_ID_WEIGHT_VECTOR = np.array(_ID_WEIGHTS, dtype=np.int64)
_ID_CHECK_BYTES = np.frombuffer(_ID_CHECK.encode("ascii"), dtype=np.uint8)
_USCC_WEIGHT_VECTOR = np.array(_USCC_WEIGHTS, dtype=np.int64)
_USCC_BYTE_VALUE = np.full(256, -1, dtype=np.int64)
_USCC_BYTE_VALUE[np.frombuffer(USCC_ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(31)
_USCC_PATTERN = "[0-9A-HJ-NP-RTUWXY]{18}"
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _canonical(values: pd.Series) -> pd.Series:
    return values.astype("str").str.strip().str.upper()


def _byte_rows(values: pd.Series) -> np.ndarray:
    """An (n, 18) uint8 matrix of values already known to be 18 ASCII characters."""
    joined = "".join(values.tolist()).encode("ascii")
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, 18)


def _worded(numbers: np.ndarray, word: Callable[[int], str]) -> np.ndarray:
    """``word`` applied to each number, calling it once per distinct number."""
    distinct, position = np.unique(numbers, return_inverse=True)
    return np.array([word(int(k)) for k in distinct], dtype=object)[position]


def _first_problems(index: pd.Index, rules: list[tuple[np.ndarray, np.ndarray | str]]) -> pd.Series:
    """The first broken rule per value: ``rules`` are (broken mask, reason) in priority order."""
    problem = np.full(len(index), None, dtype=object)
    for broken, reason in reversed(rules):
        problem = np.where(broken, reason, problem)
    return pd.Series(problem, index=index, dtype=object)


def _decimal(digits: np.ndarray) -> np.ndarray:
    """Numbers from an (n, k) matrix of decimal digits, most significant first."""
    return digits @ (10 ** np.arange(digits.shape[1] - 1, -1, -1, dtype=np.int64))


def _calendar_days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """datetime64[D] for (year, month, day) triples; NaT where not a calendar date."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    longest = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    # year 0 is not a date in Python's calendar, which the scalar rule follows
    ok = month_ok & (year >= 1) & (day >= 1) & (day <= longest)
    months = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
    return np.where(ok, days, np.datetime64("NaT", "D"))


def _year_month_day(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    return (
        years.astype(np.int64) + 1970,
        (months - years).astype(np.int64) + 1,
        (days - months).astype(np.int64) + 1,
    )


def ages_on(born: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Whole years from ``born`` to ``on`` (both datetime64[D]), as :meth:`ResidentId.age_on`.

    Someone born on 29 February has their birthday on 1 March in common years.
    """
    by, bm, bd = _year_month_day(born)
    oy, om, od = _year_month_day(on)
    before_birthday = (om < bm) | ((om == bm) & (od < bd))
    return oy - by - before_birthday


def check_resident_ids(numbers: pd.Series, on: pd.Series | None = None) -> pd.DataFrame:
    """Validate a column of GB 11643 numbers at once, as :func:`parse_resident_id` does.

    Parameters
    ----------
    numbers : pandas.Series
        Non-null strings; surrounding spaces and a lower-case ``x`` are accepted.
    on : pandas.Series, optional
        The application day of each number (datetime64, aligned with ``numbers``).
        Where given and not NaT, the age rule applies as in :func:`parse_resident_id`.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``numbers``: ``problem`` (the first rule broken, worded as the
        scalar function words it, None where valid), ``birth_date`` (datetime64[D]),
        ``gender`` ("M"/"F") and ``home_region``; the last three are null where a
        problem was found.
    """
    text = _canonical(numbers)
    n = len(text)
    length = text.str.len().to_numpy(dtype=np.int64)
    shaped = (length == 18) & text.str.fullmatch(_ID_SHAPE.pattern).to_numpy(dtype=bool)

    year = np.zeros(n, dtype=np.int64)
    month = np.zeros(n, dtype=np.int64)
    day = np.zeros(n, dtype=np.int64)
    odd = np.zeros(n, dtype=bool)
    check_ok = np.zeros(n, dtype=bool)
    if shaped.any():
        rows = _byte_rows(text[shaped])
        digits = rows[:, :17].astype(np.int64) - ord("0")
        check_ok[shaped] = rows[:, 17] == _ID_CHECK_BYTES[(digits @ _ID_WEIGHT_VECTOR) % 11]
        year[shaped] = _decimal(digits[:, 6:10])
        month[shaped] = _decimal(digits[:, 10:12])
        day[shaped] = _decimal(digits[:, 12:14])
        odd[shaped] = digits[:, 16] % 2 == 1
    born = _calendar_days(year, month, day)
    dated = shaped & ~np.isnat(born)

    rules: list[tuple[np.ndarray, np.ndarray | str]] = [
        (_excel_numbers(text), EXCEL_NUMBER_REASON),
        (length != 18, _worded(length, length_reason)),
        (~shaped, ID_SHAPE_REASON),
        (~dated, ID_DATE_REASON),
        (~check_ok, ID_CHECK_REASON),
    ]
    if on is not None:
        day_of = on.to_numpy(dtype="datetime64[D]")
        applies = dated & ~np.isnat(day_of)
        safe_born = np.where(dated, born, day_of)
        age = np.where(applies, ages_on(safe_born, day_of), MIN_AGE)
        future = applies & (born > day_of)
        rules.append((future, ID_FUTURE_REASON))
        out_of_range = applies & ~future & ((age < MIN_AGE) | (age > MAX_AGE))
        rules.append((out_of_range, _worded(age, age_reason)))
    problem = _first_problems(text.index, rules)
    good = problem.isna().to_numpy()
    return pd.DataFrame(
        {
            "problem": problem,
            "birth_date": np.where(good, born, np.datetime64("NaT", "D")),
            "gender": pd.Series(np.where(odd, "M", "F"), index=text.index, dtype="str").where(good),
            "home_region": text.str.slice(0, 6).where(good),
        },
        index=text.index,
    )


def check_usccs(codes: pd.Series) -> pd.Series:
    """Validate a column of GB 32100 codes at once, as :func:`validate_uscc` does.

    Parameters
    ----------
    codes : pandas.Series
        Non-null strings; surrounding spaces and lower case are accepted.

    Returns
    -------
    pandas.Series
        Indexed like ``codes``: the first rule broken, worded as the scalar function
        words it, or None where the code is valid.
    """
    text = _canonical(codes)
    length = text.str.len().to_numpy(dtype=np.int64)
    in_alphabet = (length == 18) & text.str.fullmatch(_USCC_PATTERN).to_numpy(dtype=bool)
    region_ok = text.str.slice(2, 8).str.fullmatch("[0-9]{6}").to_numpy(dtype=bool)
    check_ok = np.zeros(len(text), dtype=bool)
    if in_alphabet.any():
        values = _USCC_BYTE_VALUE[_byte_rows(text[in_alphabet])]
        expected = (31 - (values[:, :17] @ _USCC_WEIGHT_VECTOR) % 31) % 31
        check_ok[in_alphabet] = values[:, 17] == expected
    return _first_problems(
        text.index,
        [
            (_excel_numbers(text), EXCEL_NUMBER_REASON),
            (length != 18, _worded(length, length_reason)),
            (~in_alphabet, USCC_ALPHABET_REASON),
            (~region_ok, USCC_REGION_REASON),
            (~check_ok, USCC_CHECK_REASON),
        ],
    )
