"""Risk bands from an alert budget, and what each band asks of the branch.

Thresholds are quantiles of calibrated scores of recent openings, so "critical" is the
top 0.5% of openings the bank expects, not a probability someone guessed. The
``blocked`` band and its ``refuse`` action belong to the hard rules, never to a score.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI, default_of, get_settings

# band -> share of all openings the bank is willing to alert on at that level
ALERT_BUDGET: dict[str, float] = {"critical": 0.005, "high": 0.015, "medium": 0.03}
# An alert asks for at least enhanced due diligence: what reports, backtests and fairness tables count.
ALERT_BANDS: tuple[str, ...] = ("high", "critical")
# Training cuts the shipped model's bands from its scores of the openings of these last days.
BAND_WINDOW_DAYS = 61

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


def local_days(instants: pd.Series | np.ndarray) -> np.ndarray:
    """The Asia/Shanghai calendar day (``datetime64[D]``) of each UTC instant."""
    stamps = pd.DatetimeIndex(pd.to_datetime(instants, utc=True))
    return stamps.tz_convert(SHANGHAI).tz_localize(None).to_numpy(dtype="datetime64[D]")


def day_start(day: np.datetime64 | date) -> pd.Timestamp:
    """The UTC instant of local midnight opening ``day``."""
    return pd.Timestamp(np.datetime64(day, "D")).tz_localize(SHANGHAI).tz_convert("UTC")


@dataclass(frozen=True)
class RefreshPolicy:
    """How band cuts are refreshed: from the scores of ``window_days`` before each local
    midnight, once that window holds ``min_scores`` of them.

    The defaults were measured by ``bench/bench_band_refresh.py``: a 14-day window held every
    month within half of the budget where cuts fixed at training let single months drift from
    0.04 % to 1.2 % critical. Below 2,000 scores the critical cut would rest on the 10th highest
    opening, too noisy; such a day keeps the cuts fixed at training.
    """

    window_days: int = default_of("band_refresh_days")
    min_scores: int = default_of("band_refresh_min_scores")

    @classmethod
    def configured(cls) -> RefreshPolicy:
        """The policy of the configuration (``DUANKA_BAND_REFRESH_DAYS``, ``_MIN_SCORES``)."""
        settings = get_settings()
        return cls(settings.band_refresh_days, settings.band_refresh_min_scores)

    @property
    def window(self) -> pd.Timedelta:
        return pd.Timedelta(days=self.window_days)


@dataclass(frozen=True)
class DailyBands:
    """Band cuts per local calendar day, refreshed from the scores of the days before it.

    A day's cuts are the budget's quantiles (:meth:`Bands.from_budget`) of the scores the
    shipped model gave to the openings of the days before that day's local midnight
    (:class:`RefreshPolicy`), so the share of each band follows the budget as the mix of
    openings drifts after training. Cuts need no labels, only scores. A day whose window
    holds too few scores keeps ``fallback``, the cuts fixed at training.

    Parameters
    ----------
    fallback : Bands
        The shipped model's cuts, from training.
    by_day : mapping of numpy.datetime64 to Bands
        Refreshed cuts, by local day (``datetime64[D]``).
    """

    fallback: Bands
    by_day: Mapping[np.datetime64, Bands] = field(default_factory=dict)

    @classmethod
    def from_scores(
        cls,
        fallback: Bands,
        applied_at: pd.Series | np.ndarray,
        scores: np.ndarray,
        days: Iterable[np.datetime64],
        policy: RefreshPolicy | None = None,
        budget: dict[str, float] = ALERT_BUDGET,
    ) -> DailyBands:
        """Cuts for each of ``days`` from the scores of the openings before it.

        Parameters
        ----------
        fallback : Bands
            Cuts for a day with too few scores in its window.
        applied_at : array of UTC instants
            When each scored opening was made.
        scores : numpy.ndarray
            The shipped model's score of each opening, row for row.
        days : iterable of numpy.datetime64
            The local days to cut for.
        policy : RefreshPolicy, optional
            Window and fewest scores; the configured policy when not given.
        budget : dict
            Share of openings per band.
        """
        policy = RefreshPolicy.configured() if policy is None else policy
        at = pd.DatetimeIndex(pd.to_datetime(applied_at, utc=True)).as_unit("ns").asi8
        order = np.argsort(at, kind="stable")
        at, ranked = at[order], np.asarray(scores, dtype=float)[order]
        window = policy.window.value
        by_day: dict[np.datetime64, Bands] = {}
        for day in sorted(set(np.asarray(list(days), dtype="datetime64[D]"))):
            midnight = day_start(day).value
            lo, hi = np.searchsorted(at, [midnight - window, midnight], side="left")
            if hi - lo >= policy.min_scores:
                by_day[day] = Bands.from_budget(ranked[lo:hi], budget)
        return cls(fallback, by_day)

    def for_day(self, day: np.datetime64) -> Bands:
        """The cuts in force on local ``day``."""
        return self.by_day.get(np.datetime64(day, "D"), self.fallback)

    def assign(self, scores: np.ndarray, applied_at: pd.Series | np.ndarray) -> np.ndarray:
        """Each score's band under the cuts of its opening's local day."""
        scores = np.asarray(scores, dtype=float)
        band = self.fallback.assign(scores).astype(object)
        if not self.by_day or len(scores) == 0:
            return band
        days = local_days(applied_at)
        for day in np.unique(days):
            cuts = self.by_day.get(day)
            if cuts is not None:
                rows = days == day
                band[rows] = cuts.assign(scores[rows])
        return band

    def describe(self) -> dict[str, object]:
        """How many days were refreshed, and the range of their critical cut."""
        critical = [b.critical for b in self.by_day.values()]
        return {
            "refreshed_days": len(critical),
            "critical_cut_min": min(critical, default=self.fallback.critical),
            "critical_cut_max": max(critical, default=self.fallback.critical),
        }
