"""The plan's drift rows: PSI of the score, CSI of each model feature, and every feature's missing rate.

PSI and CSI are read against the reference stored with the model that made most of the period's
decisions (:mod:`duanka.training.monitoring_reference`), over its own bins, with
:meth:`~duanka.training.monitoring_reference.Binned.divergence`: the same figure
:func:`duanka.training.monitoring.population_stability` gives on the rows themselves. Each is
judged on the latest week and the latest month that hold at least :data:`MIN_ROWS` decisions:
fewer, and sampling noise alone reads as drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from duanka.serving.monitor.baselines import NO_REFERENCE, Baseline
from duanka.serving.monitor.context import Context
from duanka.serving.monitor.counts import ROWS, SCORE
from duanka.serving.monitor.periods import MONTH, WEEK
from duanka.serving.monitor.plan_row import PlanRow, Status, not_computed
from duanka.training.monitoring import PSI_ACT, PSI_WATCH, binned_divergences, wilson_interval
from duanka.training.monitoring_plan import MISSING_ACT, MISSING_WATCH, plan_item
from duanka.training.report_format import html_table, number, percent

MIN_ROWS = 200  # decisions a period needs before its PSI is judged: 12 bins' noise is about 11 / rows
WEEKS_SHOWN = 16
FEATURES_SHOWN = 20
SCORE_PSI = plan_item("score_psi")
FEATURE_CSI = plan_item("feature_csi")
MISSING = plan_item("missing")


def _status(value: float) -> Status:
    return Status.ACT if value > PSI_ACT else Status.WATCH if value > PSI_WATCH else Status.OK


def _label(period: str) -> str:
    kind, _, key = period.partition(":")
    return f"week of {key}" if kind == WEEK else f"month {key}"


@dataclass(frozen=True)
class Divergences:
    """PSI of the score and CSI of each feature per period, against the period's dominant model.

    Attributes
    ----------
    table : pandas.DataFrame
        ``period``, ``feature`` (:data:`SCORE` for the score), ``value``, ``rows``.
    judged : list of str
        The latest week and month with at least :data:`MIN_ROWS` decisions of a model with a reference.
    baselines : dict of str to Baseline
        The dominant model of each judged period.
    """

    table: pd.DataFrame
    judged: list[str]
    baselines: dict[str, Baseline]


def _latest(ctx: Context, periods: pd.Series, rows: pd.Series) -> list[str]:
    """The latest whole week and whole month (:meth:`Context.whole`) with enough rows."""
    whole = periods.map(ctx.whole).to_numpy(dtype=bool)
    enough = periods.loc[(rows >= MIN_ROWS).to_numpy() & whole]
    return [max(p) for kind in (WEEK, MONTH) if (p := [x for x in enough if x.startswith(f"{kind}:")])]


def _weeks(ctx: Context, periods: object) -> list[str]:
    """The latest whole weeks among ``periods``, oldest first: what the heat maps show."""
    return sorted(p for p in set(periods) if p.startswith(f"{WEEK}:") and ctx.whole(p))[-WEEKS_SHOWN:]  # type: ignore[call-overload]


def _against(baseline: Baseline, bins: pd.DataFrame) -> pd.DataFrame:
    """PSI and CSI of each period of ``bins`` (one model's) against the model's reference, at once."""
    reference = baseline.reference
    assert reference is not None
    variables = [(SCORE, reference.score), *reference.features.items()]
    index = {name: i for i, (name, _) in enumerate(variables)}
    expected = np.zeros((len(variables), max(len(b.counts) for _, b in variables)))
    for i, (_, binned) in enumerate(variables):
        expected[i, : len(binned.counts)] = binned.counts
    bins = bins.loc[bins["feature"].isin(index).to_numpy()]
    period, periods = pd.factorize(bins["period"])
    actual = np.zeros((len(periods), *expected.shape))
    for p, f, counts in zip(period, bins["feature"].map(index).to_numpy(), bins["counts"], strict=True):
        actual[p, f, : len(counts)] = counts
    rows = actual.sum(axis=-1)
    p, f = np.nonzero(rows > 0)
    values = binned_divergences(expected[None], actual)
    return pd.DataFrame(
        {
            "period": np.asarray(periods, dtype=object)[p],
            "feature": np.array([name for name, _ in variables], dtype=object)[f],
            "value": values[p, f],
            "rows": rows[p, f].astype(int),
        }
    )


def divergences(ctx: Context) -> Divergences:
    """Every period's PSI and CSI of its dominant model with a reference."""
    scores = ctx.periods_until("bins", feature=SCORE)
    rows = scores.assign(n=[int(c.sum()) for c in scores["counts"]])[["period", "booster", "n"]]
    if rows.empty:
        return Divergences(pd.DataFrame(columns=["period", "feature", "value", "rows"]), [], {})
    dominant = rows.sort_values(["n", "booster"], ascending=[False, True]).drop_duplicates("period")
    dominant = dominant.set_index("period")
    parts = []
    for booster, mine in dominant.groupby("booster"):
        # only the dominant model's bins of its periods are read: most of the table is not
        bins = ctx.periods_until("bins", booster=booster)
        parts.append(_against(ctx.baselines[booster], bins.loc[bins["period"].isin(mine.index).to_numpy()]))
    judged = _latest(ctx, dominant.index.to_series(), dominant["n"])
    return Divergences(
        pd.concat(parts, ignore_index=True),
        judged,
        {p: ctx.baselines[dominant.loc[p, "booster"]] for p in judged},
    )


def _no_reference(ctx: Context) -> str:
    """Why no period has a reference: the note of the latest model that decided."""
    if ctx.models.empty:
        return "no decision in the record"
    latest = ctx.models.sort_values("day").iloc[-1]
    baseline = ctx.baselines.get(latest["booster"])
    note = baseline.note if baseline is not None and baseline.note else NO_REFERENCE
    return f"model version {latest['version']}: {note}"


def score_row(ctx: Context, d: Divergences) -> PlanRow:
    """PSI of the score per week and month."""
    what, period = SCORE_PSI.what, SCORE_PSI.how_often
    score = d.table.loc[d.table["feature"] == SCORE]
    judged = score.loc[score["period"].isin(d.judged)]
    if judged.empty:
        return not_computed("score_psi", what, period, SCORE_PSI.trigger, _no_reference(ctx))
    status = max(_status(v) for v in judged["value"])
    whole = score.loc[score["period"].map(ctx.whole).to_numpy(dtype=bool)]  # as judged: whole periods
    drawn = whole.assign(label=whole["period"].map(lambda p: "week" if p.startswith(WEEK) else "month"))
    drawn = drawn.sort_values(["label", "period"], ascending=[False, True])
    return PlanRow(
        key="score_psi",
        what=what,
        period=f"{period}; judged: {', '.join(_label(p) for p in d.judged)}",
        value=" · ".join(
            f"{_label(p)} {v:.3f}" for p, v in zip(judged["period"], judged["value"], strict=True)
        ),
        trigger=SCORE_PSI.trigger,
        status=status,
        finding="the score's distribution is where the reference put it"
        if status == Status.OK
        else "the score's distribution has moved from the reference",
        figure=ctx.draw("score_psi", "drift", drawn, "Score PSI against the reference stored with the model"),
        details=html_table(
            score.assign(period=score["period"].map(_label)).sort_values("period"),
            {"value": lambda v: number(v, 3)},
        ),
        gauges={"psi:score": float(judged["value"].max())},
    )


def feature_row(ctx: Context, d: Divergences) -> PlanRow:
    """CSI of every model feature per week and month."""
    what, period = FEATURE_CSI.what, FEATURE_CSI.how_often
    features = d.table.loc[d.table["feature"] != SCORE]
    judged = features.loc[features["period"].isin(d.judged)]
    if judged.empty:
        return not_computed("feature_csi", what, period, FEATURE_CSI.trigger, _no_reference(ctx))
    worst = judged.groupby("feature")["value"].max().sort_values(ascending=False, kind="stable")
    status = _status(float(worst.iloc[0]))
    over = worst.loc[worst > PSI_WATCH]
    weeks = _weeks(ctx, features["period"].unique())
    shown = worst.index[:FEATURES_SHOWN]
    matrix = (
        features.loc[features["period"].isin(weeks) & features["feature"].isin(shown)]
        .pivot_table(index="feature", columns="period", values="value")
        .reindex(index=shown, columns=weeks)
    )
    table = judged.pivot_table(index="feature", columns="period", values="value").reindex(worst.index)
    table.columns = [_label(c) for c in table.columns]
    return PlanRow(
        key="feature_csi",
        what=what,
        period=f"{period}; judged: {', '.join(_label(p) for p in d.judged)}",
        value=f"worst {worst.index[0]} {worst.iloc[0]:.3f}; {int((worst > PSI_ACT).sum())} above "
        f"{PSI_ACT:.2f}, {len(over)} above {PSI_WATCH:.2f} of {len(worst)}",
        trigger=FEATURE_CSI.trigger,
        status=status,
        finding=f"drifting: {', '.join(over.index[:6])}{' …' if len(over) > 6 else ''}"
        if len(over)
        else "every feature where the reference put it",
        figure=ctx.draw(
            "feature_csi",
            "heatmap",
            matrix,
            "CSI by week, the features that moved most",
            2 * PSI_ACT,
        ),
        details=html_table(
            table.head(FEATURES_SHOWN),
            index=True,
            formats={c: (lambda v: number(v, 3)) for c in table.columns},
        ),
        gauges={"psi:features": float(worst.iloc[0])},
    )


def missing_row(ctx: Context, d: Divergences) -> PlanRow:
    """Missing rate of every feature per week and month, against the reference (or earlier weeks)."""
    what, period = MISSING.what, MISSING.how_often
    missing = ctx.periods_until("missing")
    totals = missing.loc[missing["feature"] == ROWS].set_index("period")["n"]
    judged = _latest(ctx, totals.index.to_series(), totals)
    if not judged:
        return not_computed(
            "missing", what, period, MISSING.trigger, f"no week with {MIN_ROWS} decisions yet"
        )
    rates = missing.loc[missing["feature"] != ROWS].pivot_table(
        index="feature", columns="period", values="n", fill_value=0
    )
    rates = rates.reindex(columns=totals.index, fill_value=0).div(totals, axis=1)
    baseline = next((b for p, b in d.baselines.items() if p in judged), None)
    if baseline is not None and baseline.reference is not None:
        against = "the reference stored with the model"
        expected = pd.Series({n: b.missing_rate for n, b in baseline.reference.features.items()})
        rates = rates.reindex(expected.index, fill_value=0.0)
    else:
        earlier = [p for p in totals.index if p.startswith(f"{WEEK}:") and p < judged[0]]
        if sum(totals[p] for p in earlier) < MIN_ROWS:
            return not_computed(
                "missing",
                what,
                period,
                MISSING.trigger,
                f"{_no_reference(ctx)}, and too few earlier weeks to compare",
            )
        against = (
            f"the record's weeks before {judged[0].partition(':')[2]} (no reference stored with the model)"
        )
        expected = (rates[earlier] * totals[earlier]).sum(axis=1) / totals[earlier].sum()
    moves = rates.loc[:, judged].sub(expected, axis=0)
    # a move counts when the period's 95 % interval leaves the expected rate out: a week's few
    # hundred decisions move a rate by a few points by chance alone
    n = np.broadcast_to(totals[judged].to_numpy(dtype=float), moves.shape)
    low, high = wilson_interval(rates.loc[:, judged].to_numpy() * n, n)
    outside = (low > expected.to_numpy()[:, None]) | (high < expected.to_numpy()[:, None])
    # ties in name order, whatever order the reference listed its features in
    worst = (
        moves.abs().where(outside, 0.0).max(axis=1).sort_index().sort_values(ascending=False, kind="stable")
    )
    top = float(worst.iloc[0]) if len(worst) else 0.0
    status = Status.ACT if top >= MISSING_ACT else Status.WATCH if top >= MISSING_WATCH else Status.OK
    weeks = _weeks(ctx, rates.columns)
    shown = worst.index[:FEATURES_SHOWN]
    table = pd.DataFrame({"expected": expected.reindex(worst.index)})
    for p in judged:
        table[_label(p)] = rates.loc[worst.index, p]
    return PlanRow(
        key="missing",
        what=what,
        period=f"{period}; judged: {', '.join(_label(p) for p in judged)}",
        value=f"largest move {100 * top:.1f} points ({worst.index[0] if len(worst) else '—'})",
        trigger=MISSING.trigger,
        status=status,
        finding=f"against {against}",
        figure=ctx.draw(
            "missing",
            "heatmap",
            100 * rates.loc[shown, weeks].sub(expected.reindex(shown), axis=0).abs(),
            "Missing rate: points from the expected rate, by week",
            100 * 2 * MISSING_ACT,
        ),
        details=html_table(
            table.head(FEATURES_SHOWN), {c: (lambda v: percent(v, 1)) for c in table.columns}, index=True
        ),
    )
