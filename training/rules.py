"""The rules a branch uses today, written down, so the model is measured against them.

Each rule is a plain condition on a declared feature; the baseline's score is how
many rules fire, so at a given alert rate the applications breaking the most rules
come first (ties in arrival order, as a teller's queue would be).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from duanka.features.registry import BY_NAME

_LODGING = float(BY_NAME["address_kind"].codes.index("lodging"))


@dataclass(frozen=True)
class Rule:
    code: str
    description: str
    fires: Callable[[pd.DataFrame], pd.Series]


BRANCH_RULES: tuple[Rule, ...] = (
    Rule(
        "R_ESCORT_3_IN_30D",
        "the escort has accompanied 3 or more other applicants in the last 30 days",
        lambda f: f["escort_applicants_30d"] >= 3,
    ),
    Rule(
        "R_LODGING_3_IN_30D",
        "3 or more other applicants gave the same lodging address (hotel, guesthouse) in 30 days",
        lambda f: (f["address_kind"] == _LODGING) & (f["address_applicants_30d"] >= 3),
    ),
    Rule(
        "R_TAMPERED_PHOTO",
        "the image-forensics flag marks a photo as edited",
        lambda f: f["photo_tampered"] == 1,
    ),
    Rule(
        "R_NEW_SIM_BUNDLE_OUT_OF_PROVINCE",
        "a SIM active under 30 days, the full U-shield + mobile banking + payment bundle, "
        "and an applicant from another province",
        lambda f: (
            (f["phone_tenure_days"] < 30) & (f["full_bundle"] == 1) & (f["applicant_out_of_province"] == 1)
        ),
    ),
    Rule(
        "R_CORPORATE_NO_ONSITE",
        "a corporate account opened without an on-site due-diligence visit",
        lambda f: (f["corporate"] == 1) & (f["onsite_verified"] == 0),
    ),
)


class BranchRules:
    """Today's rule set as a scorer: the number of rules an application breaks."""

    def __init__(self, rules: tuple[Rule, ...] = BRANCH_RULES) -> None:
        self.rules = rules

    def fired(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One boolean column per rule (a NaN input never fires a rule)."""
        return pd.DataFrame({r.code: r.fires(frame).fillna(False).astype(bool) for r in self.rules})

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.fired(frame).sum(axis=1).to_numpy(dtype=float)
