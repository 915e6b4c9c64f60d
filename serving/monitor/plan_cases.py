"""The plan's rows on what people did with the alerts: the case reviewers' dispositions, and staff
overrides (which duanka does not record)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from duanka.features.values import DAY_US
from duanka.serving.monitor.context import Context
from duanka.serving.monitor.outcomes import end_of_day_us
from duanka.serving.monitor.periods import instants_us, local_day_numbers, month_keys
from duanka.serving.monitor.plan_row import PlanRow, Status, not_computed
from duanka.training.monitoring_plan import OPEN_DAYS, plan_item
from duanka.training.report_format import html_table, number

OUTCOMES = ("confirmed", "cleared", "escalated", "open")
CASES = plan_item("cases")
OVERRIDES = plan_item("overrides")
_COLOURS = {"confirmed": "#b91c1c", "cleared": "#0f766e", "escalated": "#d97706", "open": "#bcccdc"}


def cases_row(ctx: Context) -> PlanRow:
    """Referred, confirmed, cleared, escalated and still open cases, and the time to a disposition."""
    what, period = CASES.what, CASES.how_often
    known_by = end_of_day_us(ctx.as_of)
    referred = ctx.record.referred()
    referred = referred.assign(decided_us=instants_us(referred["decided_at"].tolist()))
    referred = referred.loc[referred["decided_us"] < known_by].drop_duplicates("application_id")
    if referred.empty:
        return PlanRow(
            "cases", what, period, "no referred case", CASES.trigger, Status.OK, "nothing was referred"
        )
    disposed = ctx.dispositions
    disposed = disposed.assign(at_us=instants_us(disposed["at"].tolist()))
    disposed = disposed.loc[disposed["at_us"] < known_by]
    latest = disposed.drop_duplicates("application_id", keep="last").set_index("application_id")["status"]
    first = disposed.drop_duplicates("application_id", keep="first").set_index("application_id")["at_us"]
    status = latest.reindex(referred["application_id"]).fillna("open").to_numpy()
    waited = (
        first.reindex(referred["application_id"]).to_numpy() - referred["decided_us"].to_numpy()
    ) / DAY_US
    age = (known_by - referred["decided_us"].to_numpy()) / DAY_US
    stale = int(((status == "open") & (age > OPEN_DAYS)).sum())
    month = month_keys(local_day_numbers(referred["decided_us"].to_numpy()))
    table = pd.crosstab(pd.Series(month, name="month referred"), pd.Series(status, name="status")).reindex(
        columns=list(OUTCOMES), fill_value=0
    )
    table.columns.name = None  # the statuses head their columns: no header row of their own
    done = waited[np.isfinite(waited)]
    median, p90 = (np.median(done), np.quantile(done, 0.9)) if len(done) else (np.nan, np.nan)
    counts = {s: int((status == s).sum()) for s in OUTCOMES}
    return PlanRow(
        key="cases",
        what=what,
        period=f"{period}; as of {ctx.as_of}",
        value=f"{len(referred)} referred: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; days to a disposition: median {number(median, 1)}, 90th percentile {number(p90, 1)}",
        trigger=CASES.trigger,
        status=Status.WATCH if stale else Status.OK,
        finding=f"{stale} case(s) open more than {OPEN_DAYS} days"
        if stale
        else f"no case open more than {OPEN_DAYS} days",
        figure=ctx.draw(
            "cases", "stacked", table, "Referred cases by month of referral and their status", _COLOURS
        ),
        details=html_table(table.reset_index()),
    )


def overrides_row(ctx: Context) -> PlanRow:
    """Staff overrides and their outcomes: not recorded by duanka, said so."""
    return not_computed(
        "overrides",
        OVERRIDES.what,
        OVERRIDES.how_often,
        OVERRIDES.trigger,
        "not recorded: duanka keeps no record of a branch going against an alert's action, so there is "
        "nothing to count; the row stays watch until overrides are recorded",
    )
