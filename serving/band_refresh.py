"""The service's band cuts: refreshed at each local midnight from the scores it gave.

The cuts fixed at training follow the budget only as long as the mix of openings does;
a month in which confident mules come in a wave gets many times the critical share the
bank staffed for. So the service, like batch scoring, cuts each local day's bands from
the scores the shipped model gave in the days before it (:class:`duanka.training.bands.DailyBands`,
:class:`duanka.training.bands.RefreshPolicy`). Its scores are the decision record's: they survive
restarts, and a model switch starts over from the new booster's own decisions. Until a
window holds the policy's fewest scores, the cuts fixed at training stay. The day is the
server clock's: the service scores openings as they happen, so an application's day and
its decision's day are one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from duanka.serving.audit import DecisionLog
from duanka.training.bands import Bands, DailyBands, RefreshPolicy, day_start, local_days


class RecentScores:
    """The scores one booster gave over the last days, and the cuts they set for today.

    Parameters
    ----------
    fallback : Bands
        The cuts fixed at training.
    decided_at : sequence of datetime
        When each earlier score was given (UTC).
    scores : sequence of float
        The earlier scores, in the order given.
    policy : RefreshPolicy
        Window and fewest scores.
    """

    def __init__(
        self, fallback: Bands, decided_at: list[datetime], scores: list[float], policy: RefreshPolicy
    ) -> None:
        self.fallback = fallback
        self.policy = policy
        self._at: list[datetime] = list(decided_at)
        self._scores: list[float] = list(scores)
        self._day: np.datetime64 | None = None
        # the UTC instants opening and closing that local day: most calls fall inside it, and
        # comparing two datetimes costs nothing where finding the local day costs pandas' parsing
        self._day_opens: datetime | None = None
        self._day_closes: datetime | None = None
        self._cuts = fallback

    @classmethod
    def from_log(
        cls, log: DecisionLog, booster_sha256: str, fallback: Bands, now: datetime | None = None
    ) -> RecentScores:
        """The booster's scores in the decision record over the window before today."""
        now = datetime.now(UTC) if now is None else now
        policy = RefreshPolicy.configured()
        midnight = day_start(local_days(pd.Series([now]))[0]).to_pydatetime()
        at, scores = log.scores_since(booster_sha256, midnight - timedelta(days=policy.window_days))
        return cls(fallback, at, scores, policy)

    def add(self, at: datetime, scores: list[float]) -> None:
        """Scores given at ``at``; they count from the next local day on."""
        self._at.extend([at] * len(scores))
        self._scores.extend(scores)

    def cuts_at(self, now: datetime) -> tuple[Bands, dict[str, object] | None]:
        """The cuts in force at ``now``, and, on the first call of a new day, what to audit."""
        if self._day_opens is not None and self._day_opens <= now < self._day_closes:
            return self._cuts, None
        (day,) = local_days(pd.Series([now]))
        if day == self._day:
            return self._cuts, None
        reach = (day_start(day) - self.policy.window).to_pydatetime()
        keep = next((i for i, at in enumerate(self._at) if at >= reach), len(self._at))
        del self._at[:keep], self._scores[:keep]
        daily = DailyBands.from_scores(
            self.fallback,
            pd.Series(self._at, dtype="datetime64[ns, UTC]"),
            np.asarray(self._scores, dtype=float),
            [day],
            self.policy,
        )
        self._day, self._cuts = day, daily.for_day(day)
        midnight = day_start(day)
        self._day_opens = midnight.to_pydatetime()
        self._day_closes = day_start(day + np.timedelta64(1, "D")).to_pydatetime()
        return self._cuts, {
            "day": str(day),
            "source": "refreshed" if day in daily.by_day else "training",
            "scores_in_window": sum(1 for at in self._at if at < midnight),
            **self._cuts.to_dict(),
        }
