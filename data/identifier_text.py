"""Identifiers as one spelling: NFKC-normalised, with nothing invisible inside.

``A000000001`` followed by a zero-width space, or a branch id in full-width letters, looks the
same as the plain id to a person and differs from it to a computer: the first would open a new
application beside the real one, the second a new branch for an all-branch key. So every
identifier of the contract (:data:`IDENTIFIER_KINDS`) is read in its NFKC form (full-width
``Ｂ４４０１`` is ``B4401``), and one that still holds a space or a character that shows nothing
(control and format characters such as U+200B, U+FEFF and U+2060, line and paragraph separators,
fillers and variation selectors, code points no character is assigned to) is refused.

The file validator (:mod:`duanka.data.validate`, a column at a time) and the one-record path of
the service (:mod:`duanka.data.record`) both apply this module, so a file and a request agree.
The reason never repeats the value.
"""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from duanka.data.contract import Kind

IDENTIFIER_KINDS = frozenset({Kind.IDENTIFIER, Kind.RESIDENT_ID, Kind.PHONE, Kind.USCC, Kind.REGION})
HIDDEN_CHARACTER_REASON = (
    "holds a space or a character that shows nothing (such as U+200B or U+FEFF); "
    "identifiers are compared as their NFKC form"
)

# Control, format, surrogate, private-use and unassigned code points, and every kind of space.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# Unicode's Default_Ignorable_Code_Point characters outside those categories: they render as
# nothing too (combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian free
# variation selectors, variation selectors).
_IGNORABLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)
# In ASCII text, which NFKC leaves as it is, only controls and the space hide.
_ASCII_HIDDEN = "[\x00-\x20\x7f]"
_ASCII_HIDDEN_SHAPE = re.compile(_ASCII_HIDDEN)


def normalised_identifier(text: str) -> str | None:
    """``text`` (already trimmed) in its NFKC form, trimmed again; None when nothing is left."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).strip() or None


def identifier_problem(text: str) -> str | None:
    """Why the normalised identifier ``text`` is refused, or None when it is not."""
    if text.isascii():
        hidden = _ASCII_HIDDEN_SHAPE.search(text) is not None
    else:
        hidden = _IGNORABLE.search(text) is not None or any(
            unicodedata.category(ch) in _HIDDEN_CATEGORIES for ch in text
        )
    return HIDDEN_CHARACTER_REASON if hidden else None


def normalised_identifiers(texts: pd.Series) -> pd.Series:
    """:func:`normalised_identifier` of each trimmed text of a column (nulls stay null)."""
    other = texts.notna() & ~texts.str.isascii().fillna(True).astype(bool)
    if not other.any():
        return texts
    out = texts.copy()
    out[other] = [normalised_identifier(t) for t in texts[other]]
    return out


def identifier_problems(texts: pd.Series) -> pd.Series:
    """:func:`identifier_problem` of each non-null, normalised text of a column (None where fine).

    ASCII texts, nearly all of a bank's, are judged by one pattern over the whole column.
    """
    ascii_ = texts.str.isascii().to_numpy(dtype=bool)
    hidden = texts.str.contains(_ASCII_HIDDEN).to_numpy(dtype=bool) & ascii_
    problems = pd.Series(None, index=texts.index, dtype=object)
    problems[hidden] = HIDDEN_CHARACTER_REASON
    if not ascii_.all():
        other = texts[~ascii_]
        problems[~ascii_] = [identifier_problem(t) for t in other]
    return problems
