"""The plan's rows that need outcomes: false-positive-rate ratios by group, and recall and precision at
the bands with ring catch rates, on the months whose outcome window has closed.

Both read counts the sidecar keeps for every decision (decisions and alerts per month and group,
per month and band) and the mules among them (:mod:`duanka.serving.monitor.outcomes`), through
the same definitions the model report uses (:func:`duanka.training.monitoring.error_rates_from_counts`,
:func:`duanka.training.groups.group_catch_rates`).
"""

from __future__ import annotations

import math
from datetime import date

import pandas as pd

from duanka.serving.monitor.attributes import DIMENSIONS
from duanka.serving.monitor.baselines import BAND_RATES
from duanka.serving.monitor.context import Context
from duanka.serving.monitor.counts import NO_GROUP
from duanka.serving.monitor.outcomes import Outcomes, rings
from duanka.serving.monitor.periods import month_last_day
from duanka.serving.monitor.plan_row import PlanRow, Status, not_computed
from duanka.training.groups import group_catch_rates
from duanka.training.monitoring import RATIO_LINE, error_rates_from_counts, wilson_interval
from duanka.training.monitoring_plan import RISING, plan_item
from duanka.training.report_format import html_table, number, percent

QUARTER = 3  # matured months pooled for the ratios: one month's false positives are too few
MONTHS_SHOWN = 12
FAIRNESS = plan_item("fpr_ratio")
PERFORMANCE = plan_item("performance")
# Each band set whose recall and precision are read, and the bands it holds.
BAND_SETS: dict[str, tuple[str, ...]] = {
    "critical": ("critical",),
    "alert": ("high", "critical"),
    "medium+": ("medium", "high", "critical"),
}
_COLUMN = {
    "age band": "age_band",
    "origin": "origin",
    "channel": "channel",
    "account type": "account_type",
    "gender": "gender",
}


def _no_month(ctx: Context) -> str:
    return (
        f"no month of decisions whose {ctx.outcome_window_days}-day outcome window has closed by {ctx.as_of}"
    )


def error_table(ctx: Context, o: Outcomes, months: list[str]) -> pd.DataFrame:
    """Error rates and FPR ratios per group over ``months``, every dimension."""
    groups = ctx.groups
    groups = groups.loc[groups["month"].isin(months)].groupby(["dimension", "grp"])[["n", "alerts"]].sum()
    mules = o.mules.loc[o.mules["month"].isin(months)]
    parts = []
    for dimension in DIMENSIONS:
        if dimension not in groups.index.get_level_values(0):
            continue
        mine = groups.loc[dimension]
        labelled = mules[_COLUMN[dimension]].fillna(NO_GROUP).astype(str)
        found = pd.DataFrame(
            {"mules": labelled.value_counts(), "alerted_mules": labelled[mules["alert"]].value_counts()}
        )
        counts = (
            mine.join(found.reindex(mine.index), how="left")
            .fillna(0)
            .rename(columns={"n": "applications"})
            .rename_axis("group")
            .reset_index()
            .sort_values("group")
        )
        parts.append(error_rates_from_counts(counts, dimension))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def fairness_row(ctx: Context, o: Outcomes) -> PlanRow:
    """FPR ratios by age band, origin, channel, account type and gender over the latest matured quarter."""
    what = FAIRNESS.what
    period = FAIRNESS.how_often
    if not o.matured:
        return not_computed("fpr_ratio", what, period, FAIRNESS.trigger, _no_month(ctx))
    quarter, before = o.matured[-QUARTER:], o.matured[-2 * QUARTER : -QUARTER]
    table = error_table(ctx, o, quarter)
    over = table.loc[table["fpr_ratio"] > RATIO_LINE]
    rising: list[str] = []
    if before:
        previous = error_table(ctx, o, before).set_index(["dimension", "group"])["fpr_ratio"]
        now = table.set_index(["dimension", "group"])["fpr_ratio"]
        up = (now - previous.reindex(now.index)) >= RISING
        rising = [f"{d}: {g}" for d, g in now.index[up.fillna(False).to_numpy()]]
    status = Status.ACT if len(over) else Status.WATCH if rising else Status.OK
    worst = table["fpr_ratio"].max()
    finding = (
        "above the line: "
        + ", ".join(
            f"{d}: {g} {r:.2f}"
            for d, g, r in over[["dimension", "group", "fpr_ratio"]].itertuples(index=False)
        )
        if len(over)
        else f"rising: {', '.join(rising)}"
        if rising
        else f"every ratio at or below {RATIO_LINE:g}"
    )
    return PlanRow(
        key="fpr_ratio",
        what=what,
        period=f"{period}; judged: {quarter[0]} to {quarter[-1]}",
        value=f"highest ratio {number(worst, 2)}",
        trigger=FAIRNESS.trigger,
        status=status,
        finding=finding,
        figure=ctx.draw(
            "fpr_ratio",
            "ratios",
            table,
            RATIO_LINE,
            f"Who bears the false alerts, {quarter[0]} to {quarter[-1]}",
        ),
        details=html_table(
            table.drop(columns="negatives"),
            {
                "alert_rate": lambda v: percent(v, 2),
                "fpr": lambda v: percent(v, 2),
                "recall": lambda v: percent(v, 1),
                "fpr_ratio": lambda v: number(v, 2),
            },
        ),
    )


def _month_bands(ctx: Context, months: list[str]) -> pd.DataFrame:
    """Decisions per matured month (index) and band (columns)."""
    days = ctx.day_bands
    return days.groupby(days.index.str[:7]).sum().reindex(index=months, fill_value=0)


def performance_table(ctx: Context, o: Outcomes, months: list[str]) -> pd.DataFrame:
    """Recall and precision at each band set per month, with intervals and the champion's."""
    bands = _month_bands(ctx, months)
    rows = []
    for month in months:
        mules = o.mules.loc[o.mules["month"] == month]
        first = date.fromisoformat(f"{month}-01")
        baseline = ctx.dominant(first, month_last_day(month))
        expected = {} if baseline is None else baseline.expected
        for name, members in BAND_SETS.items():
            hits = int(mules["band"].isin(members).sum())
            flagged = int(bands.loc[month].reindex(list(members), fill_value=0).sum())
            for kind, n in (("recall", len(mules)), ("precision", flagged)):
                low, high = wilson_interval(hits, n)
                value, e_low, e_high = expected.get(f"{kind} {name}", (math.nan, math.nan, math.nan))
                rows.append(
                    {
                        "month": month,
                        "figure": f"{kind} {name}",
                        "hits": hits,
                        "of": n,
                        "value": hits / n if n else math.nan,
                        "low": float(low),
                        "high": float(high),
                        "expected": value,
                        "expected_low": e_low,
                        "expected_high": e_high,
                        "rate": BAND_RATES[name],
                    }
                )
    return pd.DataFrame(rows)


def performance_row(ctx: Context, o: Outcomes) -> PlanRow:
    """Recall and precision at the bands on the latest matured month, and ring catch rates."""
    what = PERFORMANCE.what
    period = PERFORMANCE.how_often
    if not o.matured:
        return not_computed("performance", what, period, PERFORMANCE.trigger, _no_month(ctx))
    shown = o.matured[-MONTHS_SHOWN:]
    table = performance_table(ctx, o, shown)
    month = shown[-1]
    judged = table.loc[(table["month"] == month) & table["of"].gt(0) & table["expected_low"].notna()]
    ring_frame = rings(ctx, o.mules.loc[o.mules["month"].isin(o.matured[-QUARTER:])])
    caught = (
        group_catch_rates(
            ring_frame, o.mules.loc[o.mules["month"].isin(o.matured[-QUARTER:]), "alert"].to_numpy()
        )
        if ring_frame["group_id"].notna().any()
        else None
    )
    ring_text = (
        f"; rings of {o.matured[-QUARTER:][0]} to {month}: {int(caught.overall['groups'])}, "
        f"{percent(caught.overall['caught_any'], 0)} with a member alerted"
        if caught is not None
        else "; no ring of two or more confirmed mules"
    )
    recall = table.loc[(table["month"] == month) & (table["figure"] == "recall alert")].iloc[0]
    value = f"{month}: alert recall {percent(recall['value'], 1)} of {int(recall['of'])} mules" + ring_text
    if judged.empty:
        why = (
            f"no confirmed mule among the decisions of {month}"
            if int(recall["of"]) == 0
            else "the model's run logged no test figures to compare with"
        )
        return PlanRow(
            "performance",
            what,
            f"{period}; judged: {month}",
            value,
            PERFORMANCE.trigger,
            Status.WATCH,
            why,
            computed=False,
            details=_details(table),
        )
    below = judged.loc[judged["value"] < judged["expected_low"]]
    wholly = below.loc[below["high"] < below["expected_low"]]
    status = Status.ACT if len(wholly) else Status.WATCH if len(below) else Status.OK
    return PlanRow(
        key="performance",
        what=what,
        period=f"{period}; judged: {month}",
        value=value,
        trigger=PERFORMANCE.trigger,
        status=status,
        finding="below the champion's interval: " + ", ".join(below["figure"])
        if len(below)
        else "within or above the champion's interval",
        figure=ctx.draw(
            "performance",
            "against_expected",
            table.loc[table["figure"].str.startswith("recall")],
            "Recall at the bands against the champion's test interval",
        ),
        details=_details(table),
    )


def _details(table: pd.DataFrame) -> object:
    shown = table.assign(
        figure=table["figure"] + " (top " + (100 * table["rate"]).map(lambda r: f"{r:g}") + " %)"
    ).drop(columns="rate")
    formats = {
        c: (lambda v: percent(v, 1))
        for c in ("value", "low", "high", "expected", "expected_low", "expected_high")
    }
    return html_table(shown, formats)
