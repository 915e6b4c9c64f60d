"""The monitoring plan: what is watched once the model serves, how often, and what trigger says watch or act.

Declared once, here: the model report prints it as its section 11
(:mod:`duanka.training.report`), and ``duanka monitor`` computes every item of it from the decision
record (:func:`duanka.serving.monitor.engine.plan_rows`), each row taking its name, its period and
its trigger from :func:`plan_item`. The thresholds the triggers name are defined here too, or in
:mod:`duanka.training.monitoring` beside the figures they bound, so the text a reader sees is the
rule the monitoring applies.

Nothing here imports the serving side: training must build its report without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from duanka.training.monitoring import (
    BUDGET_HIGH,
    BUDGET_LOW,
    MIN_NEGATIVES,
    PSI_ACT,
    PSI_WATCH,
    RATIO_LINE,
)

# A feature's missing rate moving by this much (a share, 0.05 = 5 points) says watch, then act.
MISSING_WATCH, MISSING_ACT = 0.05, 0.10
# Alerts carrying a reason code, in the month or before it, before its share's move is judged.
MIN_CODE = 20
# An FPR ratio up this much on the quarter before is rising.
RISING = 0.10
# A referred case still open this many days after its referral is a backlog.
OPEN_DAYS = 30


@dataclass(frozen=True)
class PlanItem:
    """One item of the monitoring plan.

    Attributes
    ----------
    key : str
        Stable identifier (``bands_branch``): the monitoring row's key, its page anchor and metric name.
    what : str
        What is watched, as the report and the monitoring page name it.
    how_often : str
        How often it is judged; the monitoring page adds the period it judged.
    trigger : str
        When it says watch or act, in the words the monitoring applies.
    """

    key: str
    what: str
    how_often: str
    trigger: str


MONITORING_PLAN: tuple[PlanItem, ...] = (
    PlanItem(
        key="bands_overall",
        what="alert rate per band, overall",
        how_often="daily and weekly",
        trigger=(
            f"a share outside {BUDGET_LOW:g}× to {BUDGET_HIGH:g}× its budget: act when its 95 % interval "
            "over the last 7 days lies wholly outside; watch when the share alone does, or one day's "
            "interval does"
        ),
    ),
    PlanItem(
        key="bands_branch",
        what="alert rate per band, per branch",
        how_often="daily",
        trigger=(
            "a branch's critical or alert share over the last 7 days whose Wilson interval (95 % over all "
            f"branches together) lies wholly above {BUDGET_HIGH:g}× the budget: act; wholly above the "
            "budget: watch"
        ),
    ),
    PlanItem(
        key="score_psi",
        what="score PSI against the model's reference",
        how_often="weekly and monthly",
        trigger=f"> {PSI_WATCH:.2f} watch, > {PSI_ACT:.2f} act, on the latest week and month",
    ),
    PlanItem(
        key="feature_csi",
        what="CSI of the model features",
        how_often="weekly and monthly",
        trigger=f"a feature's CSI > {PSI_WATCH:.2f} watch, > {PSI_ACT:.2f} act, on the latest week and month",
    ),
    PlanItem(
        key="missing",
        what="missing rate of every feature",
        how_often="weekly and monthly",
        trigger=(
            f"a feature's missing rate moves by {100 * MISSING_ACT:.0f} points: act; "
            f"by {100 * MISSING_WATCH:.0f}: watch "
            "(on the latest week and month, the move beyond its 95 % interval)"
        ),
    ),
    PlanItem(
        key="reason_mix",
        what="reason-code mix on alerts",
        how_often="monthly",
        trigger=(
            "a code's share of alerts moves by half against the three months before (its 95 % intervals "
            f"apart, at least {MIN_CODE} alerts): watch"
        ),
    ),
    PlanItem(
        key="fpr_ratio",
        what="FPR ratio by age band, origin, channel, account type and gender",
        how_often="quarterly, once labels mature",
        trigger=(
            f"a group's FPR ratio > {RATIO_LINE:g} (at least {MIN_NEGATIVES} legitimate openings): act; "
            f"up {RISING:g} on the quarter before: watch"
        ),
    ),
    PlanItem(
        key="origin_reliance",
        what="share of out-of-province alerts that rest on origin",
        how_often="monthly",
        trigger="rising: the month's share above the months before it (95 % intervals apart): watch",
    ),
    PlanItem(
        key="performance",
        what="recall and precision at the bands, ring catch rates",
        how_often="monthly, on months whose outcome window has closed",
        trigger=(
            "below the champion's test interval: act when the month's 95 % interval lies wholly below it, "
            "watch when the figure does"
        ),
    ),
    PlanItem(
        key="cases",
        what="case dispositions (referred, confirmed, cleared, escalated, open)",
        how_often="monthly",
        trigger=f"a referred case still open {OPEN_DAYS} days after its referral: watch",
    ),
    PlanItem(
        key="overrides",
        what="staff overrides and their outcomes",
        how_often="monthly",
        trigger="override rate > 30 % of a band",
    ),
)

_BY_KEY: dict[str, PlanItem] = {item.key: item for item in MONITORING_PLAN}


def plan_item(key: str) -> PlanItem:
    """The plan's item of ``key``.

    Parameters
    ----------
    key : str
        One of the keys of :data:`MONITORING_PLAN` (``bands_overall``, ``feature_csi``, ...).

    Returns
    -------
    PlanItem

    Raises
    ------
    KeyError
        When the plan holds no item of ``key``.
    """
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"the monitoring plan has no item {key!r}: one of {', '.join(_BY_KEY)}") from None
