"""The plan's first row: each band's share of openings against the alert budget, overall and per branch.

Shares are judged over the last seven days of decisions with Wilson 95 % intervals
(:func:`duanka.training.monitoring.wilson_interval`), never raw: a branch with forty openings and
one critical alert has a raw critical share five times the budget and no evidence of anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from duanka.serving.monitor.context import RECENT_DAYS, Context
from duanka.serving.monitor.periods import week_keys
from duanka.serving.monitor.plan_row import PlanRow, Status, not_computed
from duanka.training.monitoring import BUDGET_HIGH, BUDGET_LOW, shares_against_budget, simultaneous_z
from duanka.training.monitoring_plan import plan_item
from duanka.training.report_format import html_table, percent

JUDGED = ("critical", "high", "medium", "alert")  # the overall shares judged against the budget
BRANCH_JUDGED = ("critical", "alert")  # per branch: few high or medium alerts a week say little more
OVERALL = plan_item("bands_overall")
BRANCH = plan_item("bands_branch")
_FORMATS = {
    "rate": lambda v: percent(v, 2),
    "low": lambda v: percent(v, 2),
    "high": lambda v: percent(v, 2),
    "budget": lambda v: percent(v, 2),
    "ratio": lambda v: f"{v:.2f}×" if pd.notna(v) else "—",
}


def _window(frame: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    first, last = ctx.recent  # type: ignore[misc]
    return frame.loc[(frame.index >= first.isoformat()) & (frame.index <= last.isoformat())]


def _outside(shares: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Whether each share's interval lies wholly outside its bounds, and whether the share itself does."""
    lower, upper = BUDGET_LOW * shares["budget"], BUDGET_HIGH * shares["budget"]
    wholly = (shares["high"] < lower) | (shares["low"] > upper)
    point = (shares["rate"] < lower) | (shares["rate"] > upper)
    return wholly.to_numpy(), point.to_numpy()


def overall_row(ctx: Context) -> PlanRow:
    """Band shares of all openings, per day and over the last seven days."""
    what, period = OVERALL.what, f"{OVERALL.how_often}; judged over the last {RECENT_DAYS} days"
    if ctx.recent is None:
        return not_computed("bands_overall", what, period, OVERALL.trigger, "no decision in the record")
    days = ctx.day_bands
    recent = _window(days, ctx)
    total = recent.sum().to_frame(f"last {RECENT_DAYS} days").T.rename_axis("window")
    pooled = shares_against_budget(total, ctx.budget)
    pooled = pooled.loc[pooled["share"].isin(JUDGED)]
    # the days' intervals hold together: seven days of four shares would leave one out by chance
    daily = shares_against_budget(recent, ctx.budget, simultaneous_z(len(recent) * len(JUDGED)))
    daily = daily.loc[daily["share"].isin(JUDGED)]
    wholly, point = _outside(pooled)
    day_wholly, _ = _outside(daily)
    status, found = Status.OK, []
    for i, share in enumerate(pooled["share"]):
        if wholly[i]:
            status = Status.ACT
            found.append(f"{share} share {percent(pooled['rate'].iloc[i], 2)} is out of line (interval)")
        elif point[i]:
            status = max(status, Status.WATCH)
            found.append(f"{share} share {percent(pooled['rate'].iloc[i], 2)} is outside its bounds")
    for share in sorted(set(daily.loc[day_wholly, "share"])):
        status = max(status, Status.WATCH)
        found.append(f"a day's {share} share is out of line")
    first, last = ctx.recent  # type: ignore[misc]
    weekly = days.groupby(week_keys(np.asarray(days.index, dtype="datetime64[D]").astype(np.int64))).sum()
    weekly.index.name = "week"
    return PlanRow(
        key="bands_overall",
        what=what,
        period=f"{period} ({first} to {last})",
        value=" · ".join(
            f"{s} {percent(r, 2)}" for s, r in zip(pooled["share"], pooled["rate"], strict=True)
        ),
        trigger=OVERALL.trigger,
        status=status,
        finding="; ".join(found) or "every band within half to double its budget",
        figure=ctx.draw(
            "bands_overall",
            "band_shares",
            shares_against_budget(days, ctx.budget),
            shares_against_budget(weekly, ctx.budget),
            JUDGED[:3],
        ),
        details=html_table(
            pooled.drop(columns="window").rename(columns={"count": "decisions in band", "n": "decisions"}),
            _FORMATS,
        ),
        gauges={
            f"band_share:{share}": float(rate)
            for share, rate in zip(pooled["share"], pooled["rate"], strict=True)
        },
    )


def branch_row(ctx: Context) -> PlanRow:
    """Critical and alert shares of each branch over the last seven days, with Wilson intervals."""
    what, period = BRANCH.what, f"{BRANCH.how_often}; judged over the last {RECENT_DAYS} days"
    if ctx.recent is None:
        return not_computed("bands_branch", what, period, BRANCH.trigger, "no decision in the record")
    first, last = ctx.recent
    rows = ctx.sidecar.table("branch_bands", "day >= ? AND day <= ?", [first.isoformat(), last.isoformat()])
    counts = rows.pivot_table(index="branch", columns="band", values="n", aggfunc="sum", fill_value=0)
    # every branch is read against the line at once: their intervals hold together, or a bank of a
    # hundred branches would see five of them above their budget each week by chance alone
    z = simultaneous_z(len(counts) * len(BRANCH_JUDGED))
    shares = shares_against_budget(counts, ctx.budget, z)
    shares = shares.loc[shares["share"].isin(BRANCH_JUDGED)].reset_index(drop=True)
    act = shares["low"] > BUDGET_HIGH * shares["budget"]
    watch = ~act & (shares["low"] > shares["budget"])
    shares["status"] = np.where(act, "act", np.where(watch, "watch", "ok"))
    status = Status.ACT if act.any() else Status.WATCH if watch.any() else Status.OK
    flagged = shares.loc[shares["status"] != "ok"].sort_values("low", ascending=False)
    above = sorted(set(flagged.loc[flagged["status"] == "act", "branch"]))
    return PlanRow(
        key="bands_branch",
        what=what,
        period=f"{period} ({first} to {last})",
        value=f"{len(set(flagged['branch']))} of {len(counts)} branches above their budget",
        trigger=BRANCH.trigger,
        status=status,
        finding=(
            f"far above the budget: {', '.join(above[:8])}{' …' if len(above) > 8 else ''}"
            if above
            else "no branch clearly above its budget"
            if flagged.empty
            else "some branches above the budget, none clearly above double"
        ),
        figure=ctx.draw("bands_branch", "branch_shares", shares, BRANCH_JUDGED),
        details=html_table(
            flagged.rename(columns={"count": "decisions in band", "n": "decisions"}).loc[
                :,
                [
                    "branch",
                    "share",
                    "decisions",
                    "decisions in band",
                    "rate",
                    "low",
                    "high",
                    "budget",
                    "status",
                ],
            ],
            _FORMATS,
        )
        if not flagged.empty
        else None,
    )
