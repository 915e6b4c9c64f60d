"""Hard rules that refuse an opening before any model: the 断卡 joint-punishment list.

An applicant listed at the application's ``applied_at`` (``listed_at <= applied_at <
expires_at``, :mod:`duanka.data.watchlist`) gets band ``blocked``, action ``refuse`` and the
reason ``WATCHLIST``, whose Chinese and English sentences name the list and the day
the person was listed. The model still scores the application, for monitoring: the
score and the model's own band are kept beside the refusal, but they decide nothing.

The sentences are reviewed text in ``training/reasons.toml`` (``[rules.WATCHLIST]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI
from duanka.data.watchlist import RULE as WATCHLIST_RULE
from duanka.data.watchlist import Listing
from duanka.training.bands import ACTION_TEXT, BLOCKED, REFUSE
from duanka.training.explain import load_catalogue

WATCHLIST_CODE = "WATCHLIST"
RULE_FAMILY = "rule"


@dataclass(frozen=True)
class RuleDecision:
    """What a rule decided for one application, in the words a teller reads."""

    rule: str
    code: str
    text_zh: str
    text_en: str

    def reason(self) -> dict[str, object]:
        """The decision as one reason of a scoring answer (no feature, no contribution)."""
        return {
            "code": self.code,
            "family": RULE_FAMILY,
            "feature": self.rule,
            "value": None,
            "contribution": None,
            "text_zh": self.text_zh,
            "text_en": self.text_en,
        }


@lru_cache(maxsize=1)
def _watchlist_texts() -> dict:
    return load_catalogue()["rules"][WATCHLIST_CODE]


def source_name(source: str, language: str) -> str:
    """A list's name in ``language``: the catalogue's, or its code as received when unknown."""
    spec = _watchlist_texts()
    known = spec.get("sources", {}).get(source)
    if known is not None:
        return known[language]
    return spec[f"unknown_source_{language}"].format(source=source)


def watchlist_decision(source: str, listed_at: pd.Timestamp) -> RuleDecision:
    """The refusal for an applicant listed by ``source`` since ``listed_at``.

    Parameters
    ----------
    source : str
        Who listed the person (``pboc_joint_punishment``, ``bank_internal``, ...).
    listed_at : pandas.Timestamp
        The start of the listing; named as its Asia/Shanghai calendar day.
    """
    spec = _watchlist_texts()
    day = pd.Timestamp(listed_at).tz_convert(SHANGHAI).strftime("%Y-%m-%d")
    texts = {
        language: spec[language].format(source=source_name(source, language), listed_on=day)
        for language in ("zh", "en")
    }
    return RuleDecision(WATCHLIST_RULE, WATCHLIST_CODE, texts["zh"], texts["en"])


def refusal(listing: Listing) -> RuleDecision:
    """The decision for an application :meth:`duanka.data.watchlist.Watchlist.listing` found listed."""
    return watchlist_decision(listing.source, listing.listed_at)


def refuse_listed(scores: pd.DataFrame, listings: pd.DataFrame) -> pd.DataFrame:
    """Batch scores with every listed application turned into a refusal.

    Parameters
    ----------
    scores : pandas.DataFrame
        :data:`duanka.serving.batch.SCORE_COLUMNS` rows.
    listings : pandas.DataFrame
        :meth:`duanka.data.watchlist.Watchlist.listings_for` of the same applications, in the same order.

    Returns
    -------
    pandas.DataFrame
        ``scores`` with ``band`` ``blocked``, ``action`` ``refuse`` and the ``WATCHLIST``
        code and sentences on listed rows; the model's score is kept. Other rows unchanged.
    """
    listed = listings["source"].notna().to_numpy()
    if not listed.any():
        return scores
    out = scores.copy()
    decisions = [
        watchlist_decision(source, at)
        for source, at in zip(listings["source"][listed], listings["listed_at"][listed], strict=True)
    ]
    rows = np.flatnonzero(listed)
    for column, values in (
        ("band", [BLOCKED] * len(rows)),
        ("action", [REFUSE] * len(rows)),
        ("reason_codes", [d.code for d in decisions]),
        ("reasons_zh", [d.text_zh for d in decisions]),
        ("reasons_en", [d.text_en for d in decisions]),
    ):
        out.iloc[rows, out.columns.get_loc(column)] = values
    return out


def refusal_action() -> tuple[str, str, str]:
    """The ``refuse`` action and its Chinese and English text."""
    zh, en = ACTION_TEXT[REFUSE]
    return REFUSE, zh, en
