"""Draws keyed by an identifier instead of by position.

The same key gives the same value in whichever month and whichever row it turns
up, with no table kept: a household always lives at one address, a ring's
accounts are found out around one time.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def keyed_bits(keys: np.ndarray, salt: int) -> np.ndarray:
    """64 well-mixed bits per key (SplitMix64 of key + salt), uint64."""
    z = np.asarray(keys).astype(np.uint64) + np.uint64(salt % 2**64)
    z = z * _GOLDEN  # uint64 arithmetic wraps, as SplitMix64 intends
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def keyed_uniform(keys: np.ndarray, salt: int) -> np.ndarray:
    """A number in [0, 1) per key."""
    return (keyed_bits(keys, salt) >> np.uint64(11)).astype(np.float64) / 2.0**53


def keyed_integers(keys: np.ndarray, salt: int, low: int, high: int) -> np.ndarray:
    """An integer in [low, high) per key, int64."""
    return (keyed_bits(keys, salt) % np.uint64(high - low)).astype(np.int64) + low
