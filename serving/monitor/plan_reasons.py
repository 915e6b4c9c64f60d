"""The plan's rows on why the model alerts: the reason-code mix on alerts, and how much of the
out-of-province applicants' alerting rests on where they come from.

A change in the reasons is a question, not a verdict: the codes explain the alerts, and a new
scheme or a drifting feature moves them. These rows say watch, never act.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from duanka.serving.monitor.context import Context
from duanka.serving.monitor.counts import OUTSIDERS, RESTING, ROWS
from duanka.serving.monitor.plan_row import PlanRow, Status, not_computed
from duanka.training.monitoring import wilson_interval
from duanka.training.monitoring_plan import MIN_CODE, plan_item
from duanka.training.report_format import html_table, percent

BEFORE_MONTHS = 3  # the months a month's mix is compared with
CODES_SHOWN = 8
MIX = plan_item("reason_mix")
ORIGIN = plan_item("origin_reliance")


def _months(ctx: Context, table: pd.DataFrame) -> pd.DataFrame:
    return table.loc[table["month"] <= ctx.as_of.isoformat()[:7]]


def _apart(k1: float, n1: float, k0: float, n0: float) -> bool:
    """Whether two shares' Wilson intervals do not overlap."""
    lo1, hi1 = wilson_interval(k1, n1)
    lo0, hi0 = wilson_interval(k0, n0)
    return bool(lo1 > hi0 or hi1 < lo0)


def mix_row(ctx: Context) -> PlanRow:
    """Each reason code's share of the month's alerts against the months before."""
    what, period = MIX.what, MIX.how_often
    table = _months(ctx, ctx.sidecar.table("reasons"))
    counts = table.pivot_table(index="month", columns="code", values="n", aggfunc="sum", fill_value=0)
    if ROWS not in counts.columns or len(counts) < 2:
        return not_computed("reason_mix", what, period, MIX.trigger, "fewer than two months with alerts")
    alerts = counts.pop(ROWS)
    month, before = counts.index[-1], list(counts.index[-1 - BEFORE_MONTHS : -1])
    now, then = counts.loc[month], counts.loc[before].sum()
    n_now, n_then = float(alerts[month]), float(alerts[before].sum())
    moved = []
    for code in counts.columns:
        if max(now[code], then[code]) < MIN_CODE:
            continue
        share_now, share_then = now[code] / n_now, then[code] / n_then
        relative = share_now / share_then if share_then else np.inf
        if (relative >= 1.5 or relative <= 0.5) and _apart(now[code], n_now, then[code], n_then):
            moved.append(f"{code} {percent(share_then, 0)} → {percent(share_now, 0)}")
    shares = counts.div(alerts, axis=0)
    top = shares.sum().sort_values(ascending=False, kind="stable").index[:CODES_SHOWN]
    return PlanRow(
        key="reason_mix",
        what=what,
        period=f"{period}; judged: {month} against {before[0]} to {before[-1]}",
        value=f"{int(n_now)} alerts in {month}; most given: "
        + ", ".join(f"{c} {percent(shares.loc[month, c], 0)}" for c in top[:3]),
        trigger=MIX.trigger,
        status=Status.WATCH if moved else Status.OK,
        finding="moved: " + "; ".join(moved) if moved else "no code's share moved by half",
        figure=ctx.draw(
            "reason_mix",
            "lines",
            shares.loc[:, top],
            "Share of alerts giving each reason code",
            "% of alerts",
        ),
        details=html_table(
            shares.loc[:, top].T.rename_axis("code"),
            {m: (lambda v: percent(v, 1)) for m in shares.index},
            index=True,
        ),
    )


def origin_row(ctx: Context) -> PlanRow:
    """Share of out-of-province applicants' alerts with a reason read from origin."""
    what, period = ORIGIN.what, ORIGIN.how_often
    table = _months(ctx, ctx.sidecar.table("origin"))
    counts = table.pivot_table(index="month", columns="kind", values="n", aggfunc="sum", fill_value=0)
    if OUTSIDERS not in counts.columns or counts[OUTSIDERS].sum() == 0:
        return not_computed(
            "origin_reliance",
            what,
            period,
            ORIGIN.trigger,
            "no alert of an applicant known to be from out of province (origin comes from the "
            "service's stored "
            "application or the event store)",
        )
    counts = counts.reindex(columns=[OUTSIDERS, RESTING], fill_value=0)
    share = counts[RESTING] / counts[OUTSIDERS].where(counts[OUTSIDERS] > 0)
    month = counts.index[-1]
    rising = len(counts) > 1 and _apart(
        counts.loc[month, RESTING],
        counts.loc[month, OUTSIDERS],
        counts[RESTING].iloc[:-1].sum(),
        counts[OUTSIDERS].iloc[:-1].sum(),
    )
    rising = rising and share[month] > counts[RESTING].iloc[:-1].sum() / max(
        counts[OUTSIDERS].iloc[:-1].sum(), 1
    )
    low, high = wilson_interval(counts[RESTING].to_numpy(), counts[OUTSIDERS].to_numpy())
    details = counts.assign(share=share, low=low, high=high).rename(
        columns={OUTSIDERS: "out-of-province alerts", RESTING: "with an origin reason"}
    )
    return PlanRow(
        key="origin_reliance",
        what=what,
        period=f"{period}; judged: {month}",
        value=f"{percent(share[month], 1)} of {int(counts.loc[month, OUTSIDERS])} "
        f"out-of-province alerts in {month}",
        trigger=ORIGIN.trigger,
        status=Status.WATCH if rising else Status.OK,
        finding="rising against the months before" if rising else "not rising",
        figure=ctx.draw(
            "origin_reliance",
            "lines",
            share.to_frame("resting on origin"),
            "Out-of-province alerts with an origin reason",
            "%",
        ),
        details=html_table(
            details,
            {
                "share": lambda v: percent(v, 1),
                "low": lambda v: percent(v, 1),
                "high": lambda v: percent(v, 1),
            },
            index=True,
        ),
    )
