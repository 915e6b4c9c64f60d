"""Check characters and derived facts for Chinese identity numbers.

GB 11643-1999 resident identity numbers (18 characters, ISO 7064 MOD 11-2 check
character) and GB 32100-2015 unified social credit codes (18 characters over a
31-character alphabet, MOD 31 check character). Region codes are *not* checked
against a list: retired and unknown codes appear on real, valid cards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_ID_CHECK = "10X98765432"
_ID_SHAPE = re.compile(r"^\d{17}[\dX]$")

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

_PHONE_SHAPE = re.compile(r"^1[3-9]\d{9}$")
_REGION_SHAPE = re.compile(r"^[1-9]\d{5}$")

MIN_AGE = 16
MAX_AGE = 100


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
    number = value.strip().upper()
    if len(number) != 18:
        raise InvalidIdentifier(f"must have 18 characters, has {len(number)}")
    if not _ID_SHAPE.match(number):
        raise InvalidIdentifier("must be 17 digits followed by a digit or X")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdentifier(f"birth date {number[6:14]} is not a calendar date") from None
    expected = id_check_character(number[:17])
    if number[17] != expected:
        raise InvalidIdentifier("check character does not match (GB 11643 MOD 11-2)")
    facts = ResidentId(
        birth_date=born,
        gender="M" if int(number[16]) % 2 else "F",
        home_region=number[:6],
    )
    if on is not None:
        if born > on:
            raise InvalidIdentifier(f"birth date {born.isoformat()} is after the application")
        age = facts.age_on(on)
        if not MIN_AGE <= age <= MAX_AGE:
            raise InvalidIdentifier(f"applicant aged {age}, outside {MIN_AGE}-{MAX_AGE}")
    return facts


def normalise_resident_id(value: str) -> str:
    """The canonical spelling used for pseudonyms (upper-case X, no spaces)."""
    return value.strip().upper()


def validate_uscc(value: str) -> str:
    """Validate a GB 32100 unified social credit code; return it canonicalised."""
    code = value.strip().upper()
    if len(code) != 18:
        raise InvalidIdentifier(f"must have 18 characters, has {len(code)}")
    bad = sorted({c for c in code if c not in _USCC_VALUE})
    if bad:
        raise InvalidIdentifier(f"characters {''.join(bad)!r} are outside the GB 32100 alphabet")
    if not code[2:8].isdigit():
        raise InvalidIdentifier("characters 3-8 must be the registering region code")
    if code[17] != uscc_check_character(code[:17]):
        raise InvalidIdentifier("check character does not match (GB 32100 MOD 31)")
    return code


def validate_phone(value: str) -> str:
    """Validate an 11-digit mainland mobile number; return it stripped."""
    phone = value.strip()
    if not _PHONE_SHAPE.match(phone):
        raise InvalidIdentifier("must be an 11-digit mobile number starting 13-19")
    return phone


def validate_region(value: str) -> str:
    """Validate a 6-digit GB/T 2260 administrative division code (shape only)."""
    code = value.strip()
    if not _REGION_SHAPE.match(code):
        raise InvalidIdentifier("must be a 6-digit administrative division code")
    return code
