"""Risk bands from an alert budget, and what each band asks of the branch.

Thresholds are quantiles of calibrated validation scores, so "critical" is the
top 0.5% of openings the bank expects, not a probability someone guessed. The
``blocked`` band and its ``refuse`` action belong to the hard rules, never to a score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# band -> share of all openings the bank is willing to alert on at that level
ALERT_BUDGET: dict[str, float] = {"critical": 0.005, "high": 0.015, "medium": 0.03}

ACTIONS: dict[str, str] = {
    "critical": "refer_to_anti_fraud_team",
    "high": "enhanced_due_diligence",
    "medium": "additional_checks",
    "low": "proceed",
}

ACTION_TEXT: dict[str, tuple[str, str]] = {
    "refer_to_anti_fraud_team": (
        "暂停办理，移交反诈团队核查",
        "Pause the opening and refer it to the anti-fraud team",
    ),
    "enhanced_due_diligence": (
        "开展强化尽职调查（核实开户意愿与用途）",
        "Enhanced due diligence: verify the purpose and the applicant's own intent",
    ),
    "additional_checks": (
        "补充核实（联系方式、住址、用途）",
        "Additional checks: contact details, address and purpose",
    ),
    "proceed": ("正常办理", "Proceed as usual"),
    "refuse": (
        "拒绝开户：申请人在惩戒期内，依规不得开立新账户",
        "Refuse the opening: the applicant is under a listing that forbids new accounts",
    ),
}

# A hard rule (serving.rules) decides before any model: its band and action are not the model's.
BLOCKED = "blocked"
REFUSE = "refuse"
RULE_ACTIONS: dict[str, str] = {BLOCKED: REFUSE}


@dataclass(frozen=True)
class Bands:
    """Lower score bounds of each band; below ``medium`` is ``low``."""

    critical: float
    high: float
    medium: float

    @classmethod
    def from_budget(cls, scores: np.ndarray, budget: dict[str, float] = ALERT_BUDGET) -> Bands:
        cumulative, cuts = 0.0, {}
        for band in ("critical", "high", "medium"):
            cumulative += budget[band]
            cuts[band] = float(np.quantile(scores, 1.0 - cumulative))
        return cls(**cuts)

    def assign(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        return np.select(
            [scores >= self.critical, scores >= self.high, scores >= self.medium],
            ["critical", "high", "medium"],
            default="low",
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
