"""Outcomes: which accounts the bank later confirms as mules, when, and how it learns.

Most mule accounts are found out (80-90 %, by scheme), 14 to 275 days after
opening; a ring's or an insider's accounts come to light around one time, as one
police notice leads to the rest. A few legitimate accounts are confirmed by
mistake. Re-applications by people on the joint-punishment list
(:mod:`duanka.data.synthetic.watchlist`) are refused, so never confirmed.

``labels.csv`` is the bank's cumulative export taken on a data extraction date late
enough to hold every confirmation of the period's applications (its end plus 275
days). Confirmations after the last application are therefore kept, as a later
export would hold them: point-in-time code must compare ``confirmed_at`` with its
as-of date.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from duanka.data.synthetic.keyed import keyed_uniform
from duanka.data.synthetic.period import DAY
from duanka.data.synthetic.rows import SCHEMES, Draft, local_timestamps

FIRST_DAY, LAST_DAY = 14, 275  # confirmation delay after opening, days

# Probability that a mule account is confirmed at all.
CONFIRMED = {"escort_ring": 0.90, "shell_company": 0.85, "insider": 0.88, "solo_seller": 0.75}
FALSE_CONFIRMATION = 0.0002  # of legitimate accounts, hard negatives included
# Where confirmations come from; the bank's own reviews (source "review") are not generated.
GENERATED_SOURCES = ("police_notice", "account_freeze", "investigation")
SOURCES = {
    "escort_ring": (0.60, 0.30, 0.10),
    "shell_company": (0.45, 0.35, 0.20),
    "insider": (0.20, 0.20, 0.60),
    "solo_seller": (0.50, 0.40, 0.10),
    "legit": (0.30, 0.50, 0.20),
}
_TYPICAL_DELAY = 80.0  # days, median for accounts not in a group


def _delays(draft: Draft, rng: np.random.Generator, salt: int) -> np.ndarray:
    """Days from opening to confirmation: around a group's common delay where grouped."""
    n = len(draft)
    key = draft["scheme"].astype(np.int64) * 2**40 + draft["group"]
    common = 20.0 + 170.0 * keyed_uniform(key, salt)
    own = _TYPICAL_DELAY * rng.lognormal(0.0, 0.6, n)
    delay = np.where(draft["group"] >= 0, common * rng.lognormal(0.0, 0.25, n), own)
    return np.clip(delay, FIRST_DAY, LAST_DAY)


def confirmations(draft: Draft, ids: pa.Array, rng: np.random.Generator, salt: int) -> pa.Table:
    """The confirmations that will follow the applications of ``draft``.

    Parameters
    ----------
    draft : Draft
    ids : pyarrow.Array
        The application id of each row of ``draft``.
    rng : numpy.random.Generator
    salt : int
        Picks each group's common delay; the same in every month of one bank, so a
        group split over months is still found out around one time.

    Returns
    -------
    pyarrow.Table
        ``application_id``, ``confirmed_at`` (int64 local seconds, see
        :mod:`duanka.data.synthetic.period`) and ``source``.
    """
    scheme = draft["scheme"]
    chance = np.empty(len(draft))
    source = np.empty(len(draft), np.int64)
    for code, name in enumerate(SCHEMES):
        rows = np.flatnonzero(scheme == code)
        # Hard negatives are confirmed by mistake as rarely as other legitimate accounts.
        chance[rows] = CONFIRMED.get(name, FALSE_CONFIRMATION)
        shares = SOURCES[name if name in CONFIRMED else "legit"]
        source[rows] = rng.choice(len(GENERATED_SOURCES), len(rows), p=shares)
    # A listed person's new application is refused by rule: no account, nothing to confirm.
    chance[draft["reapplied"]] = 0.0
    confirmed = rng.random(len(draft)) < chance
    at = draft["at"] + (_delays(draft, rng, salt) * DAY).astype(np.int64)
    rows = pa.array(np.flatnonzero(confirmed))
    return pa.table(
        {
            "application_id": ids.take(rows),
            "confirmed_at": pa.array(at).take(rows),
            "source": pa.array(GENERATED_SOURCES).take(pa.array(source).take(rows)),
        }
    )


def label_table(parts: Sequence[pa.Table]) -> pa.Table:
    """The labels file: all confirmations in the order the bank learned of them."""
    labels = pa.concat_tables(parts).sort_by([("confirmed_at", "ascending"), ("application_id", "ascending")])
    return labels.set_column(1, "confirmed_at", local_timestamps(labels["confirmed_at"].to_numpy()))
