"""What a backtest shows: a terminal table, an HTML page with plots, an MLflow run.

The page is one self-contained file (figures inline, as in the model report); the run goes
to its own experiment (``duanka-backtest``) and registers nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jinja2
import mlflow
import numpy as np
import pandas as pd
from rich.table import Table

from duanka.data.config import SHANGHAI, Settings
from duanka.training.backtest import (
    ALERT_BUDGET_HIGH,
    CRITICAL_BUDGET,
    EVIDENCE_ROW,
    EXPERIMENT,
    HEADLINE,
    BacktestConfig,
    BacktestResult,
)
from duanka.training.metrics import recall_key
from duanka.training.monitoring import calibration_bins
from duanka.training.plots import ACCENT, BAND_COLOURS, MUTED, RISK, _figure, calibration, to_data_uri
from duanka.training.tracking import code_version, experiment_id, metric_key

RECALL_1 = recall_key(0.01)

_PAGE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>duanka backtest</title>
<style>body{font:14px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1f2933}
table{border-collapse:collapse;font-size:12px}
td,th{padding:3px 8px;border-bottom:1px solid #e4e7eb;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%}</style></head><body>
<h1>Rolling backtest</h1>
<p>Each period is scored by the model that <code>duanka train --as-of</code> its start would ship,
trained only on what was known at that instant (events, confirmations, listings); scores and bands are
point in time. The last row scores the same applications with each period's
<em>evidence</em> model (fitted on the split's training months only, as <code>train</code> shipped before
refits). Labels are the outcomes the store knows now; a period whose outcome window has not
closed yet (labels complete &lt; 100 %) may still have unconfirmed mules. Intervals: 95 % bootstrap
over applications ({{ n_boot }} resamples).</p>
<p>Label policy <b>{{ policy }}</b>, calibration {{ calibration }}, seed {{ seed }}, fast mode {{ fast }};
code {{ code }}.</p>
<h2>Per period and pooled</h2>
{{ table }}
<h2>Recall at 1 % alerts and PR-AUC</h2><img src="{{ recall_plot }}" alt="recall per period">
<h2>Calibration of the shipped models' scores, pooled</h2><img src="{{ calibration_plot }}" alt="reliability">
<h2>Realised band shares against the budget</h2><img src="{{ band_plot }}" alt="band shares per period">
{% if scheme_table %}<h2>Recall at 1 % alerts (pooled) by scheme</h2>{{ scheme_table }}
<img src="{{ scheme_plot }}" alt="recall by scheme">{% endif %}
</body></html>"""
)


def _fmt(value: float, ci: tuple[float, float] | None = None, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    text = f"{value:.2%}" if pct else f"{value:.3f}"
    if ci is not None and not any(np.isnan(c) for c in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def display_rows(result: BacktestResult, intervals: bool = True) -> list[list[str]]:
    """The table's rows as text: recalls and PR-AUC (with their intervals unless ``intervals``
    is false), band shares in percent."""
    rows = []
    for name, r in result.table.iterrows():
        rows.append(
            [
                str(name),
                f"{int(r['applications']):,}",
                f"{int(r['mules']):,}",
                f"{r['expected_mules']:,.0f}",
                f"{r['labels_complete']:.0%}",
                *(_fmt(r[k], (r[f"{k}_ci_low"], r[f"{k}_ci_high"]) if intervals else None) for k in HEADLINE),
                _fmt(r["critical_share"], pct=True),
                _fmt(r["alert_share"], pct=True),
                "–" if pd.isna(r["out_of_province_ratio"]) else f"{r['out_of_province_ratio']:.2f}",
            ]
        )
    return rows


COLUMNS = (
    "period",
    "applications",
    "mules",
    "expected mules (sum of scores)",
    "labels complete",
    *HEADLINE,
    f"critical (budget {CRITICAL_BUDGET:.1%})",
    f"critical+high (budget {ALERT_BUDGET_HIGH:.1%})",
    "out-of-province ratio (legitimate applicants alerted, out of province / local)",
)


SHORT = (
    "period",
    "apps",
    "mules",
    "expected",
    "labels",
    "PR-AUC",
    "r@0.5%",
    "r@1%",
    "r@2%",
    "r@5%",
    "crit",
    "crit+high",
)


def terminal_table(result: BacktestResult) -> Table:
    """The table in a terminal's width: intervals go to lines of their own under it, and the
    evidence models' pooled row is called ``evidence``."""
    table = Table(
        title="rolling backtest, point in time (r@k: recall at k alerts; budgets: critical "
        f"{CRITICAL_BUDGET:.1%}, critical+high {ALERT_BUDGET_HIGH:.1%})"
    )
    for column in SHORT:
        if column == "period":
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right", overflow="fold")
    for name, *cells in display_rows(result, intervals=False):
        table.add_row("evidence" if name == EVIDENCE_ROW else name, *cells)
    return table


def interval_lines(result: BacktestResult) -> list[str]:
    """The pooled figures with their 95 % bootstrap intervals, one line each."""
    lines = []
    for name in ("pooled", EVIDENCE_ROW):
        r = result.table.loc[name]
        parts = [f"{k} {_fmt(r[k], (r[f'{k}_ci_low'], r[f'{k}_ci_high']))}" for k in ("pr_auc", RECALL_1)]
        lines.append(f"{name}: " + ", ".join(parts))
    return lines


def _recall_plot(result: BacktestResult) -> str:
    periods = result.table.drop(index=["pooled", EVIDENCE_ROW])
    x = np.arange(len(periods))
    with _figure(9, 3.2, ncols=2) as (fig, axes):
        for ax, key, title in ((axes[0], RECALL_1, "recall at 1 % alerts"), (axes[1], "pr_auc", "PR-AUC")):
            low = (periods[key] - periods[f"{key}_ci_low"]).clip(lower=0)
            high = (periods[f"{key}_ci_high"] - periods[key]).clip(lower=0)
            ax.errorbar(
                x, periods[key], yerr=[low.fillna(0), high.fillna(0)], fmt="o-", color=RISK, capsize=3
            )
            pooled = result.table.loc["pooled"]
            ax.axhline(pooled[key], color=ACCENT, linestyle="--", label=f"pooled {pooled[key]:.3f}")
            ax.set_xticks(x, periods.index, rotation=45, ha="right")
            ax.set_ylim(0, 1)
            ax.set_title(title)
            ax.legend(loc="lower left")
        return to_data_uri(fig)


def _calibration_plot(result: BacktestResult) -> str:
    pooled = pd.concat([p.scored for p in result.periods], ignore_index=True)
    bins = calibration_bins(pooled["label"].to_numpy(), pooled["score"].to_numpy())
    return calibration(bins, "Calibration over every backtest period (point in time)")


def _band_plot(result: BacktestResult) -> str:
    periods = result.table.drop(index=EVIDENCE_ROW)
    x = np.arange(len(periods))
    with _figure(9, 3.2) as (fig, axes):
        ax = axes[0]
        ax.bar(
            x - 0.2, periods["critical_share"] * 100, 0.4, color=BAND_COLOURS["critical"], label="critical"
        )
        ax.bar(
            x + 0.2, periods["alert_share"] * 100, 0.4, color=BAND_COLOURS["high"], label="critical + high"
        )
        for budget, colour in (
            (CRITICAL_BUDGET, BAND_COLOURS["critical"]),
            (ALERT_BUDGET_HIGH, BAND_COLOURS["high"]),
        ):
            ax.axhline(budget * 100, color=colour, linestyle="--")
            ax.axhspan(budget * 75, budget * 125, color=colour, alpha=0.08)
        ax.set_xticks(x, periods.index, rotation=45, ha="right")
        ax.set_ylabel("% of applications")
        ax.set_title("realised band shares (dashed: budget, shaded: ±25 %)")
        ax.legend(loc="upper left")
        return to_data_uri(fig)


def _scheme_plot(by_scheme: pd.DataFrame) -> str:
    with _figure(6, 0.4 * len(by_scheme) + 1) as (fig, axes):
        ax = axes[0]
        ax.barh(
            by_scheme.index,
            by_scheme["recall"],
            color=[MUTED if i == "all" else RISK for i in by_scheme.index],
        )
        ax.set_xlim(0, 1)
        ax.set_title("recall at 1 % alerts by scheme (pooled)")
        return to_data_uri(fig)


def html_page(result: BacktestResult, cfg: BacktestConfig) -> str:
    table = pd.DataFrame(display_rows(result), columns=list(COLUMNS)).to_html(index=False, escape=True)
    scheme_table = scheme_plot = None
    if result.by_scheme is not None:
        scheme_table = result.by_scheme.round(3).to_html()
        scheme_plot = _scheme_plot(result.by_scheme)
    return _PAGE.render(
        n_boot=cfg.n_boot,
        policy=cfg.train.label_policy,
        calibration=cfg.train.calibration,
        seed=cfg.train.seed,
        fast=cfg.train.fast,
        code=code_version(),
        table=table,
        recall_plot=_recall_plot(result),
        calibration_plot=_calibration_plot(result),
        band_plot=_band_plot(result),
        scheme_table=scheme_table,
        scheme_plot=scheme_plot,
    )


def log_backtest(
    result: BacktestResult, cfg: BacktestConfig, page: str, outcome_window_days: int, settings: Settings
) -> str:
    """One run in the ``duanka-backtest`` experiment; returns its id. Nothing is registered."""
    t = cfg.train
    with (
        mlflow.start_run(experiment_id=experiment_id(EXPERIMENT, settings)) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        mlflow.log_params(
            {
                "from": cfg.start.isoformat(),
                "to": cfg.end.isoformat(),
                "every": str(cfg.every),
                "periods": len(result.periods),
                "label_policy": str(t.label_policy),
                "horizon_days": t.horizon_days,
                "calibration": t.calibration,
                "negative_rate": t.negative_rate,
                "seed": t.seed,
                "fast": t.fast,
                "n_boot": cfg.n_boot,
                "outcome_window_days": outcome_window_days,
                "code_version": code_version(),
            }
        )
        for step, (_, row) in enumerate(result.table.drop(index=["pooled", EVIDENCE_ROW]).iterrows()):
            names = (
                *HEADLINE,
                "critical_share",
                "alert_share",
                "brier",
                "expected_mules",
                "mules",
                "out_of_province_ratio",
            )
            values = {k: row[k] for k in names if not pd.isna(row[k])}
            mlflow.log_metrics({metric_key(f"period.{k}"): float(v) for k, v in values.items()}, step=step)
        for name, prefix in (("pooled", "pooled"), (EVIDENCE_ROW, "pooled_evidence")):
            row = result.table.loc[name]
            keys = (*HEADLINE, *(f"{h}_ci_{side}" for h in HEADLINE for side in ("low", "high")))
            extra = ("critical_share", "alert_share", "out_of_province_ratio")
            values = {k: row[k] for k in (*keys, *extra) if not pd.isna(row[k])}
            mlflow.log_metrics({metric_key(f"{prefix}.{k}"): float(v) for k, v in values.items()})
        folder = Path(tmp)
        result.table.to_csv(folder / "backtest.csv")
        (folder / "backtest.html").write_text(page, encoding="utf-8")
        if result.by_scheme is not None:
            result.by_scheme.to_csv(folder / "by_scheme.csv")
            mlflow.log_metrics(
                {
                    metric_key(f"scheme.{s}.recall@1.0%"): float(r)
                    for s, r in result.by_scheme["recall"].items()
                }
            )
        for p in result.periods:
            if p.comparison is not None:
                p.comparison.to_csv(folder / f"evidence_{p.start.tz_convert(SHANGHAI):%Y-%m-%d}.csv")
        pd.DataFrame([{"period": str(p.start), **p.fitted.describe()} for p in result.periods]).to_csv(
            folder / "shipped_models.csv", index=False
        )
        mlflow.log_artifacts(str(folder))
        return run.info.run_id
