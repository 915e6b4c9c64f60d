"""Identifiers in their standard shapes, rendered a column at a time.

Check characters come from :mod:`duanka.data.identity`, the functions ingestion validates
with, so a generated number is valid by the very definition it is checked against.
They are called once per value: the only per-row Python in the generator, about
2 µs a row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.identity import USCC_ALPHABET, id_check_character, uscc_check_character
from duanka.data.synthetic.keyed import keyed_integers

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_USCC_BYTES = np.frombuffer(USCC_ALPHABET.encode("ascii"), dtype=np.uint8)
DEVICE_SPACE = 16**10  # device fingerprints are "D" + 10 hex digits
INTERMEDIARY_DIGITS = 7  # intermediaries are "I" + 7 digits


def _ascii(matrix: np.ndarray) -> pa.Array:
    """One string per row of an (n, width) matrix of ASCII codes."""
    width = matrix.shape[1]
    raw = np.ascontiguousarray(matrix, dtype=np.uint8).view(f"S{width}").ravel()
    return pc.cast(pa.array(raw, pa.binary()), pa.string())


def _decimal_digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII digits of zero-padded non-negative integers."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (np.asarray(values, dtype=np.int64)[:, None] // powers % 10 + ord("0")).astype(np.uint8)


def _with_check(first17: pa.Array, check: Callable[[str], str]) -> pa.Array:
    checks = pa.array([check(value) for value in first17.to_pylist()], pa.string())
    return pc.binary_join_element_wise(first17, checks, "")


def resident_ids(region: np.ndarray, born: np.ndarray, sequence: np.ndarray) -> pa.Array:
    """GB 11643 numbers: region, birth date, sequence and check character.

    Parameters
    ----------
    region : numpy.ndarray
        6-digit GB/T 2260 codes (int).
    born : numpy.ndarray
        datetime64[D] birth dates.
    sequence : numpy.ndarray
        0-999; its parity is the holder's gender (odd: male).

    Returns
    -------
    pyarrow.Array
        18-character strings.
    """
    year = born.astype("datetime64[Y]")
    month = born.astype("datetime64[M]")
    ymd = (
        (year.astype(np.int64) + 1970) * 10_000
        + ((month - year).astype(np.int64) + 1) * 100
        + (born - month).astype(np.int64)
        + 1
    )
    first17 = np.asarray(region, np.int64) * 10**11 + ymd * 1000 + sequence
    return _with_check(_ascii(_decimal_digits(first17, 17)), id_check_character)


def usccs(region: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """GB 32100 codes of enterprises (registration type 91) registered in ``region``.

    The nine-character organisation code is drawn from the GB 32100 alphabet,
    mostly digits as issued codes are.
    """
    n = len(region)
    digit = rng.random((n, 9)) < 0.85
    body = _USCC_BYTES[
        np.where(digit, rng.integers(0, 10, (n, 9)), rng.integers(0, len(USCC_ALPHABET), (n, 9)))
    ]
    kind = np.broadcast_to(np.frombuffer(b"91", np.uint8), (n, 2))
    matrix = np.hstack([kind, _decimal_digits(region, 6), body])
    return _with_check(_ascii(matrix), uscc_check_character)


def device_ids(values: np.ndarray) -> pa.Array:
    """Device fingerprints: ``D`` and 10 lower-case hex digits of ``values`` (< 16**10)."""
    shifts = np.arange(36, -1, -4, dtype=np.uint64)
    nibbles = (np.asarray(values, np.uint64)[:, None] >> shifts) & np.uint64(15)
    return numbered("D", _ascii(_HEX[nibbles.astype(np.int64)]))


def intermediary_numbers(keys: np.ndarray | int, salt: int) -> np.ndarray:
    """Intermediary numbers (7 digits, written ``I1234567``): the same key and salt, the same number."""
    return keyed_integers(np.atleast_1d(keys), salt, 10 ** (INTERMEDIARY_DIGITS - 1), 10**INTERMEDIARY_DIGITS)


def numbered(prefix: str, values: np.ndarray | pa.Array, width: int = 0) -> pa.Array:
    """``prefix`` followed by ``values`` zero-padded to ``width`` digits."""
    text = values if isinstance(values, pa.Array) else pc.cast(pa.array(values), pa.string())
    if width:
        text = pc.utf8_lpad(text, width, "0")
    return pc.binary_join_element_wise(prefix, text, "")
