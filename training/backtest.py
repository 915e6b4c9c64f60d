"""Rolling-origin backtest: train as of each period's start, score the period point in time.

For every period ``(T, T']`` the models are fitted exactly as ``duanka train --as-of T``
would fit them (:func:`duanka.training.run.fit_as_of`, on the training set as of ``T``: events,
confirmations and listings known at ``T`` and nothing later), and the shipped model
scores the period's applications with their point-in-time features; bands come from cuts
refreshed each day from the scores of the days before (:class:`duanka.training.bands.DailyBands`),
as the service and batch scoring assign them.
Each period is judged against the outcomes the store knows now; periods whose outcome
window has not closed yet are marked, since some of their mules are still unconfirmed.

The features are built once, as of the last period's end, and cut per period
(:func:`duanka.features.training_set.training_set_at`): point-in-time features do not depend
on the build's as-of date, and a test checks a period's model equals ``train --as-of``'s.
Nothing is registered and no alias moves; runs go to the MLflow experiment
``duanka-backtest``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI
from duanka.data.store import EventStore
from duanka.features.training_set import TrainingSet, build_training_set, training_set_at
from duanka.training.bands import ALERT_BANDS, ALERT_BUDGET, DailyBands, RefreshPolicy, local_days
from duanka.training.fit import Fitted
from duanka.training.groups import load_truth
from duanka.training.metrics import ALERT_RATES, Evaluation, evaluate, recall_key
from duanka.training.monitoring import band_shares, false_positive_rate_ratio
from duanka.training.periods import Every, earliest_start, period_starts
from duanka.training.run import TrainConfig, evidence_comparison, fit_as_of, out_of_time_parts
from duanka.training.split import TimeSplit

EXPERIMENT = "duanka-backtest"
# Realised band shares are read against these budgets: critical alone, and critical + high.
CRITICAL_BUDGET = ALERT_BUDGET["critical"]
ALERT_BUDGET_HIGH = ALERT_BUDGET["critical"] + ALERT_BUDGET["high"]
EVIDENCE_ROW = "pooled, evidence model"
HEADLINE = ("pr_auc", *(recall_key(r) for r in ALERT_RATES))


class StoreTooYoung(ValueError):
    """The first period has too little labelled history behind it."""


@dataclass(frozen=True)
class BacktestConfig:
    """A backtest: the periods, and the training run each period repeats (``train``'s ``as_of``
    is set per period)."""

    start: pd.Timestamp
    end: pd.Timestamp
    train: TrainConfig
    every: Every = Every.MONTH
    n_boot: int = 200


@dataclass
class PeriodResult:
    start: pd.Timestamp
    end: pd.Timestamp
    scored: pd.DataFrame  # application_id, applied_at, label, score, band, labels_complete
    evaluation: Evaluation | None  # None when the period holds no mule or no legitimate row
    rule_refused: int
    comparison: pd.DataFrame | None  # the period's training run's evidence table (not in fast mode)
    fitted: Fitted  # the models trained as of the period's start


@dataclass
class BacktestResult:
    periods: list[PeriodResult]
    pooled: Evaluation
    table: pd.DataFrame  # one row per period, then "pooled" and "pooled, evidence model"
    by_scheme: pd.DataFrame | None  # with --truth: recall at 1 % alerts (pooled) per scheme


def _evaluated(scored: pd.DataFrame, n_boot: int, seed: int) -> Evaluation | None:
    y = scored["label"].to_numpy()
    if len(y) == 0 or y.min() == y.max():
        return None
    return evaluate(y, scored["score"].to_numpy(), n_boot=n_boot, seed=seed)


def _outcomes(frame: pd.DataFrame, labels: pd.DataFrame, window_days: int, known_until: pd.Timestamp):
    """The label each row has with every confirmation the store holds, and whether it is final."""
    first = labels.groupby("application_id")["confirmed_at"].min()
    confirmed = frame["application_id"].map(first)
    window = pd.Timedelta(days=window_days)
    label = (confirmed.notna() & (confirmed - frame["applied_at"] <= window)).astype(np.int8)
    return label.to_numpy(), (frame["applied_at"] + window <= known_until).to_numpy()


def run_period(
    built: TrainingSet,
    labels: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    cfg: BacktestConfig,
    outcome_window_days: int,
    *,
    reviewed: pd.DataFrame | None = None,
) -> PeriodResult:
    """Fit as of ``start`` on what was known then; score ``(start, end]`` point in time.

    ``reviewed``: case reviewers' dispositions (:func:`duanka.training.run.fit_as_of`); those
    made by ``start`` give the period's refit its reviewed negatives. None: none.
    """
    train_cfg = replace(cfg.train, as_of=start)
    ts = training_set_at(built, labels, start)
    split = TimeSplit.before_maturity(
        start,
        outcome_window_days=outcome_window_days,
        valid_months=train_cfg.valid_months,
        test_months=train_cfg.test_months,
        train_months=train_cfg.train_months,
    )
    parts = out_of_time_parts(ts, split)
    # confirmed_us and reviewed_us keep what was known at start
    fitted = fit_as_of(ts, parts, split, labels, train_cfg, reviewed=reviewed)
    comparison = None if train_cfg.fast else evidence_comparison(parts, fitted, train_cfg)[1]

    def in_period(frame: pd.DataFrame) -> np.ndarray:
        applied = frame["applied_at"]
        return ((applied > start) & (applied <= end)).to_numpy() if len(frame) else np.zeros(0, bool)

    rows = built.frame.loc[in_period(built.frame)]
    X = rows.loc[:, fitted.names].to_numpy(dtype=np.float64)
    score = fitted.score(X)
    daily = _daily_bands(built.frame, fitted, start, rows["applied_at"], score)
    evidence_score = fitted.evidence_score(X)
    label, complete = _outcomes(rows, labels, outcome_window_days, labels["confirmed_at"].max())
    scored = pd.DataFrame(
        {
            "application_id": rows["application_id"].to_numpy(),
            "applied_at": rows["applied_at"].to_numpy(),
            "label": label,
            "score": score,
            "band": daily.assign(score, rows["applied_at"]),
            "fixed_band": fitted.bands.assign(score),
            "labels_complete": complete,
            # The evidence model, fitted on the split's training months only: what a run
            # registered before shipped models were refits, beside it on the same rows.
            "evidence_score": evidence_score,
            "evidence_band": fitted.evidence_bands.assign(evidence_score),
            "out_of_province": rows["applicant_out_of_province"].to_numpy() == 1,
            # whether anyone shared a link key with the applicant before: what a ring leaves
            "linked": rows["linked_group_size"].to_numpy() > 0,
        }
    )
    return PeriodResult(
        start=start,
        end=end,
        scored=scored,
        evaluation=_evaluated(scored, 0 if train_cfg.fast else cfg.n_boot, train_cfg.seed),
        rule_refused=int(in_period(built.refused).sum()),
        comparison=comparison,
        fitted=fitted,
    )


def _daily_bands(
    frame: pd.DataFrame, fitted: Fitted, start: pd.Timestamp, applied_at: pd.Series, score: np.ndarray
) -> DailyBands:
    """The cuts the service and batch scoring would use on each day of the period: refreshed
    from the period model's scores of the openings of the days before (those before ``start``
    included, which the model scores point in time as well)."""
    policy = RefreshPolicy.configured()
    reach = start - policy.window - pd.Timedelta(days=1)  # from the first local midnight's window on
    before = frame.loc[(frame["applied_at"] > reach) & (frame["applied_at"] <= start)]
    earlier = fitted.score(before.loc[:, fitted.names].to_numpy(dtype=np.float64))
    return DailyBands.from_scores(
        fitted.bands,
        pd.concat([before["applied_at"], applied_at], ignore_index=True),
        np.concatenate([earlier, score]),
        np.unique(local_days(applied_at)),
        policy,
    )


def out_of_province_ratio(scored: pd.DataFrame) -> float:
    """How much more often legitimate out-of-province applicants are alerted than legitimate
    locals: the over-refusal risk 断卡 enforcement warns of."""
    outsider = scored["out_of_province"].to_numpy(dtype=bool)
    alerted = np.isin(scored["band"].to_numpy(), ALERT_BANDS)
    return false_positive_rate_ratio(scored["label"].to_numpy(), alerted, outsider, ~outsider)


def _row(name: str, scored: pd.DataFrame, ev: Evaluation | None, complete: float) -> dict[str, object]:
    row: dict[str, object] = {
        "period": name,
        "applications": len(scored),
        "mules": int(scored["label"].sum()),
        # Calibration in the large: what the calibrated scores expected against what came.
        "expected_mules": float(scored["score"].sum()),
        "brier": ev.point["brier"] if ev is not None else np.nan,
        "labels_complete": complete,
        **band_shares(scored["band"].to_numpy()),
        # the cuts fixed at training, for comparison with the refreshed ones above
        **{f"fixed_{k}": v for k, v in band_shares(scored["fixed_band"].to_numpy()).items()},
        "out_of_province_ratio": out_of_province_ratio(scored),
    }
    for key in HEADLINE:
        row[key] = ev.point[key] if ev is not None else np.nan
        row[f"{key}_ci_low"] = ev.ci_low[key] if ev is not None else np.nan
        row[f"{key}_ci_high"] = ev.ci_high[key] if ev is not None else np.nan
    return row


def scheme_recall(scored: pd.DataFrame, truth: pd.DataFrame, rate: float = 0.01) -> pd.DataFrame:
    """Per scheme of the generated bank's truth: its mules among the pooled top ``rate`` of scores.

    Where ``scored`` says whether each application was ``linked`` (its linked group not empty),
    the mules with no link at their time and the recall on each side are added
    (``unlinked``, ``recall_linked``, ``recall_unlinked``): a ring's misses are mostly the
    recruits that no earlier application links to, whom no link feature can see.
    """
    flagged_n = int(np.ceil(rate * len(scored)))
    order = np.argsort(-scored["score"].to_numpy(), kind="stable")
    flagged = np.zeros(len(scored), bool)
    flagged[order[:flagged_n]] = True
    frame = scored.assign(flagged=flagged).merge(truth, on="application_id", how="left")
    mules = frame.loc[frame["is_mule"] == 1]
    table = mules.groupby("scheme").agg(mules=("flagged", "size"), caught=("flagged", "sum"))
    table.loc["all"] = [len(mules), int(mules["flagged"].sum())]
    table["recall"] = table["caught"] / table["mules"]
    if "linked" in mules:
        for side, chosen in (("linked", mules["linked"]), ("unlinked", ~mules["linked"].astype(bool))):
            part = mules.loc[chosen]
            caught = part.groupby("scheme")["flagged"].agg(["size", "sum"])
            caught.loc["all"] = [len(part), int(part["flagged"].sum())]
            caught = caught.reindex(table.index, fill_value=0)
            if side == "unlinked":
                table["unlinked"] = caught["size"].astype(int)
            table[f"recall_{side}"] = (caught["sum"] / caught["size"].where(caught["size"] > 0)).astype(float)
    return table


def backtest(
    store: EventStore,
    cfg: BacktestConfig,
    outcome_window_days: int,
    *,
    truth_path: Path | None = None,
    on_period: Callable[[PeriodResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Run every period; see the module docstring.

    Raises
    ------
    StoreTooYoung
        When the first period starts before the earliest date with enough history.
    """
    note = progress or (lambda _: None)
    first_applied = store.applications(["applied_at"]).to_pandas()["applied_at"].min()
    if pd.isna(first_applied):
        raise StoreTooYoung("the event store holds no applications: run duanka ingest first")
    t = cfg.train
    earliest = earliest_start(
        first_applied, outcome_window_days, t.valid_months, t.test_months, t.train_months
    )
    if cfg.start < earliest:
        day = earliest.tz_convert(SHANGHAI).date()
        raise StoreTooYoung(
            f"the store is too young for a first period at {cfg.start.tz_convert(SHANGHAI).date()}: "
            f"its first application is of {first_applied.tz_convert(SHANGHAI).date()}, and a "
            f"{outcome_window_days}-day outcome window, {cfg.train.valid_months} validation and "
            f"{cfg.train.test_months} test months and a month of training need the earliest start"
            f" {day} (--from {day})"
        )
    starts = period_starts(cfg.start, cfg.end, cfg.every)
    note(f"point-in-time features as of {cfg.end.tz_convert(SHANGHAI).date()}")
    built = build_training_set(
        store.applications(),
        store.labels(),
        listings=store.watchlist(),
        as_of=cfg.end,
        outcome_window_days=outcome_window_days,
    )
    labels = store.labels(["application_id", "confirmed_at"]).to_pandas()
    periods = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else cfg.end
        note(
            f"period {i + 1}/{len(starts)}: train as of {start.tz_convert(SHANGHAI).date()}, "
            f"score to {end.tz_convert(SHANGHAI).date()} (Beijing dates)"
        )
        result = run_period(built, labels, start, end, cfg, outcome_window_days)
        periods.append(result)
        if on_period is not None:
            on_period(result)
    return summarise(periods, cfg, truth_path)


def summarise(
    periods: list[PeriodResult], cfg: BacktestConfig, truth_path: Path | None = None
) -> BacktestResult:
    """The per-period table, the pooled evaluation with bootstrap intervals and, with a truth file,
    the recall per scheme."""
    rows = []
    for p in periods:
        local = p.start.tz_convert(SHANGHAI)
        rows.append(
            _row(
                local.strftime("%Y-%m-%d"), p.scored, p.evaluation, float(p.scored["labels_complete"].mean())
            )
        )
    pooled_rows = pd.concat([p.scored for p in periods], ignore_index=True)
    y = pooled_rows["label"].to_numpy()
    if y.min() == y.max():
        raise ValueError("the backtest's periods hold no confirmed mule: nothing to measure")
    pooled = evaluate(y, pooled_rows["score"].to_numpy(), n_boot=cfg.n_boot, seed=cfg.train.seed)
    complete = float(pooled_rows["labels_complete"].mean())
    rows.append(_row("pooled", pooled_rows, pooled, complete))
    evidence = pooled_rows.assign(
        score=pooled_rows["evidence_score"],
        band=pooled_rows["evidence_band"],
        fixed_band=pooled_rows["evidence_band"],
    )
    evidence_ev = evaluate(y, evidence["score"].to_numpy(), n_boot=cfg.n_boot, seed=cfg.train.seed)
    rows.append(_row(EVIDENCE_ROW, evidence, evidence_ev, complete))
    by_scheme = None
    if truth_path is not None:
        by_scheme = scheme_recall(pooled_rows, load_truth(truth_path))
    return BacktestResult(periods, pooled, pd.DataFrame(rows).set_index("period"), by_scheme)
