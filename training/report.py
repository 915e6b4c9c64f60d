"""The model report: one self-contained HTML file per registered model, built from its run alone.

Everything here reads what a training run logged (parameters, metrics and artifacts,
above all ``evaluation_frame.parquet``) and the verified bundle: no event store, no
network. Figures are embedded as PNG data URIs and the CSS is inline, so the file
can be mailed to a model-risk reviewer as is. The report is also logged to the
model's run as ``report.html``.

Privacy: the evaluation frame holds one row per application with its id; the report
prints aggregates only, never a row-level id. The example waterfalls show single
applications, named by rank, score and band only.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import jinja2
import mlflow
import numpy as np
import pandas as pd
from markupsafe import Markup
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from duanka.data.config import SHANGHAI
from duanka.features.registry import BY_NAME, CONFIRMED_WINDOW_DAYS, LINK_WINDOW_DAYS
from duanka.training import plots
from duanka.training.bands import ACTION_TEXT, ACTIONS, ALERT_BUDGET
from duanka.training.bundle import MODEL_NAME, RegisteredModel, load_registered
from duanka.training.explain import Reason, ReasonExplainer, format_value, load_catalogue
from duanka.training.metrics import ALERT_RATES, HEADLINE_METRICS, threshold_table
from duanka.training.promote import RECALL_TOLERANCE
from duanka.training.promote import __doc__ as PROMOTION_RULE
from duanka.training.split import TEST, TRAIN
from duanka.training.tracking import metric_key

REPORT_NAME = "report.html"
TEMPLATE = "report.html.j2"
SECTIONS: tuple[tuple[str, str], ...] = (
    ("purpose", "Purpose and intended use"),
    ("data", "Data"),
    ("features", "Features"),
    ("method", "Method"),
    ("performance", "Performance on the out-of-time test months"),
    ("explanations", "Explanations"),
    ("stability", "Stability"),
    ("fairness", "Fairness"),
    ("comparison", "Champion and challenger"),
    ("limitations", "Limitations"),
    ("monitoring", "Monitoring plan"),
    ("lineage", "Lineage"),
)
ALERT_BANDS = ("high", "critical")  # an alert asks for at least enhanced due diligence
# shap's beeswarm lays out every dot: a seeded sample keeps the report's time flat in test rows
SHAP_SAMPLE = 2_000
SHAP_SEED = 0
TOP_FEATURES = 15
DEPENDENCE_FEATURES = 3
EXAMPLE_ALERTS = 3
STABILITY_FEATURES = 5
BINS = 10
# Below this many legitimate rows a group's false-positive rate is too noisy to rank.
MIN_NEGATIVES = 100
AGE_BANDS = ((0, 25, "under 25"), (25, 35, "25-34"), (35, 45, "35-44"), (45, 60, "45-59"), (60, 200, "60+"))


@dataclass(frozen=True)
class RunRecord:
    """What one training run logged, read back from MLflow."""

    params: dict[str, str]
    metrics: dict[str, float]
    comparison: pd.DataFrame
    evaluations: dict[str, list[dict]]
    fingerprint: dict
    monthly: pd.DataFrame
    frame: pd.DataFrame
    rules: list[dict]
    group_catch: pd.DataFrame | None
    artifact_sha256: dict[str, str]


def read_run(run_id: str, client: mlflow.MlflowClient, folder: Path) -> RunRecord:
    """Download a run's artifacts into ``folder`` and parse them."""
    local = Path(client.download_artifacts(run_id, "", str(folder)))
    hashes = {
        p.relative_to(local).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(local.rglob("*"))
        if p.is_file() and p.name != REPORT_NAME
    }
    run = client.get_run(run_id)
    catch = local / "group_catch.csv"
    return RunRecord(
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        comparison=pd.read_csv(local / "comparison.csv", index_col=0),
        evaluations=json.loads((local / "evaluations.json").read_text(encoding="utf-8")),
        fingerprint=json.loads((local / "data_fingerprint.json").read_text(encoding="utf-8")),
        monthly=pd.read_csv(local / "monthly.csv", index_col=0),
        frame=pd.read_parquet(local / "evaluation_frame.parquet"),
        rules=json.loads((local / "rules.json").read_text(encoding="utf-8"))["rules"],
        group_catch=pd.read_csv(catch, index_col=0) if catch.exists() else None,
        artifact_sha256=hashes,
    )


# ---------------------------------------------------------------- formatting


def _pct(x: float, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def _num(x: float, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _local(stamp: str | None, missing: str) -> str:
    """A logged UTC boundary as the Beijing-time moment staff would name it."""
    try:
        return pd.Timestamp(stamp).tz_convert(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return missing


def _table(
    frame: pd.DataFrame,
    formats: dict[str, Callable[[object], str]] | None = None,
    index: bool = False,
    css: str = "grid",
) -> Markup:
    """A DataFrame as an escaped HTML table; ``formats`` maps columns to cell formatters."""
    html = frame.to_html(
        index=index,
        border=0,
        classes=css,
        na_rep="—",
        escape=True,
        formatters=formats or {},
        justify="left",
    )
    return Markup(html)


# ---------------------------------------------------------------- statistics


def quantile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (ties merged); NaN is binned apart."""
    finite = reference[np.isfinite(reference)]
    if finite.size == 0:
        return np.array([])
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin ``(edge[i-1], edge[i]]``; the last bin holds the missing values.

    Closed on the right so a 0/1 flag whose only edge is 0 still splits into two bins.
    """
    finite = np.isfinite(values)
    index = np.where(finite, np.searchsorted(edges, values, side="left"), len(edges) + 1)
    return np.bincount(index, minlength=len(edges) + 2)


def _divergence(expected: np.ndarray, actual: np.ndarray) -> float:
    # bins empty on both sides carry no information; half a row keeps an empty side finite
    keep = (expected + actual) > 0
    e = (expected[keep] + 0.5) / (expected[keep].sum() + 0.5 * keep.sum())
    a = (actual[keep] + 0.5) / (actual[keep].sum() + 0.5 * keep.sum())
    return float(((a - e) * np.log(a / e)).sum())


def population_stability(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """PSI (CSI for a feature) of ``current`` against ``reference`` on the reference's decile bins."""
    edges = quantile_edges(reference, bins)
    return _divergence(bin_counts(reference, edges), bin_counts(current, edges))


def information_value(x: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Information value of a feature on decile bins (missing values as their own bin)."""
    edges = quantile_edges(x, bins)
    return _divergence(bin_counts(x[y == 0], edges), bin_counts(x[y == 1], edges))


def calibration_bins(y: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Mean score and observed rate per bin, finer at the top where the bands cut."""
    edges = np.unique(np.quantile(score, [0.5, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995]))
    index = np.searchsorted(edges, score, side="right")
    frame = pd.DataFrame({"bin": index, "y": y, "score": score})
    return frame.groupby("bin").agg(predicted=("score", "mean"), observed=("y", "mean"), n=("y", "size"))


def estimate_branches(frame: pd.DataFrame, days: float) -> float:
    """Active branches estimated from ``branch_applications_7d`` (the frame has no branch id).

    Each application contributes ``1 / (its branch's applications in the period)``, with the
    period's count read from the branch's last-7-day rate: the sum counts each branch once.
    """
    per_week = frame["branch_applications_7d"].fillna(0).clip(lower=1).to_numpy()
    return float((7.0 / (days * per_week)).sum())


def error_rates(y: np.ndarray, alert: np.ndarray, groups: pd.Series, dimension: str) -> pd.DataFrame:
    """Alert rate, false-positive rate and recall per group, with FPR ratios to the lowest group."""
    groups = groups.reset_index(drop=True)  # positions of y and alert, whatever the caller's index
    rows = []
    for group, index in groups.groupby(groups, sort=True, dropna=False, observed=True).groups.items():
        yy, aa = y[index], alert[index]
        negatives, positives = int((yy == 0).sum()), int(yy.sum())
        rows.append(
            {
                "dimension": dimension,
                "group": "none" if pd.isna(group) else str(group),
                "applications": len(yy),
                "mules": positives,
                "alert_rate": aa.mean(),
                "fpr": aa[yy == 0].mean() if negatives else math.nan,
                "recall": aa[yy == 1].mean() if positives else math.nan,
                "negatives": negatives,
            }
        )
    table = pd.DataFrame(rows)
    ranked = table.loc[(table["negatives"] >= MIN_NEGATIVES) & (table["fpr"] > 0), "fpr"]
    table["fpr_ratio"] = table["fpr"] / ranked.min() if len(ranked) else math.nan
    table.loc[table["negatives"] < MIN_NEGATIVES, "fpr_ratio"] = math.nan
    return table


def _age_band(age: pd.Series) -> pd.Series:
    labels = [label for _, _, label in AGE_BANDS]
    edges = [low for low, _, _ in AGE_BANDS] + [AGE_BANDS[-1][1]]
    return pd.cut(age, edges, right=False, labels=labels)


def _coded(values: pd.Series, feature: str) -> pd.Series:
    codes = BY_NAME[feature].codes
    return values.map(lambda v: codes[int(v)] if pd.notna(v) and 0 <= v < len(codes) else pd.NA)


# ---------------------------------------------------------------- sections


class _Context:
    """What the sections share: the model, its run, the test rows and a SHAP sample of them."""

    def __init__(self, model: RegisteredModel, run: RunRecord, branches: int | None) -> None:
        self.model = model
        self.run = run
        self.branches = branches
        self.explainer = ReasonExplainer(model.bundle)
        frame = run.frame
        self.names = model.bundle.feature_names
        every = frame.loc[frame["part"] == TEST].reset_index(drop=True)
        # runs from before hard rules recorded no rule column: nothing is known to be refused
        self.rule = every["rule"].fillna("").to_numpy(dtype=object) if "rule" in every.columns else None
        self.rule_bands = model.bundle.bands.assign(every["score"].to_numpy())
        self.rule_y = every["label"].to_numpy().astype(int)
        # What the model decides: the rows the logged metrics measure, and every table and figure here.
        self.test = every if self.rule is None else every.loc[self.rule == ""].reset_index(drop=True)
        self.train = frame.loc[frame["part"] == TRAIN].reset_index(drop=True)
        self.y = self.test["label"].to_numpy().astype(int)
        self.score = self.test["score"].to_numpy()
        self.X = self.test.loc[:, self.names].to_numpy(dtype=float)
        self.alert = np.isin(model.bundle.bands.assign(self.score), ALERT_BANDS)

    @cached_property
    def sample(self) -> np.ndarray:
        """Test rows whose contributions the global explanations show (seeded)."""
        rng = np.random.default_rng(SHAP_SEED)
        return np.sort(rng.choice(len(self.X), size=min(SHAP_SAMPLE, len(self.X)), replace=False))

    @cached_property
    def sample_contrib(self) -> np.ndarray:
        """``pred_contrib`` of the sample, as the request path computes it: the base value last."""
        return self.model.bundle.contributions(self.X[self.sample])

    @cached_property
    def importance(self) -> np.ndarray:
        """Feature positions by mean absolute SHAP on the sample, most important first."""
        return np.argsort(-np.abs(self.sample_contrib[:, :-1]).mean(axis=0), kind="stable")

    @cached_property
    def alert_reasons(self) -> list[list[Reason]]:
        return self.explainer.explain(self.X[self.alert])[1] if self.alert.any() else []


def _purpose(c: _Context) -> dict:
    bands = c.model.bundle.bands.to_dict()
    rows = [
        {
            "band": band,
            "from score": _num(bands[band], 4),
            "budget": _pct(ALERT_BUDGET[band], 1),
            "action": ACTIONS[band],
            "staff see (zh)": ACTION_TEXT[ACTIONS[band]][0],
            "staff see (en)": ACTION_TEXT[ACTIONS[band]][1],
        }
        for band in ("critical", "high", "medium")
    ]
    rows.append(
        {
            "band": "low",
            "from score": "below medium",
            "budget": "—",
            "action": ACTIONS["low"],
            "staff see (zh)": ACTION_TEXT[ACTIONS["low"]][0],
            "staff see (en)": ACTION_TEXT[ACTIONS["low"]][1],
        }
    )
    return {"bands": _table(pd.DataFrame(rows))}


def _data(c: _Context) -> dict:
    monthly = c.run.monthly
    shown = monthly.assign(
        label_rate=monthly["label_rate"].map(lambda v: _pct(v, 2)),
        median_label_delay_days=monthly["median_label_delay_days"].map(lambda v: _num(v, 0)),
    ).reset_index()
    frame = c.run.frame
    parts = frame.groupby("part").agg(
        rows=("label", "size"),
        mules=("label", "sum"),
        first=("applied_at", "min"),
        last=("applied_at", "max"),
    )
    parts["mule_rate"] = (parts["mules"] / parts["rows"]).map(lambda v: _pct(v, 2))
    for column in ("first", "last"):
        parts[column] = parts[column].dt.tz_convert(SHANGHAI).dt.strftime("%Y-%m-%d")
    parts = parts.reindex([p for p in ("train", "valid", "test") if p in parts.index])
    counts = c.run.fingerprint.get("counts", {})
    delays = monthly["median_label_delay_days"].dropna()
    return {
        "monthly_plot": plots.monthly_volumes(monthly),
        "monthly": _table(shown),
        "parts": _table(parts.reset_index()),
        "counts": counts,
        "outcome_window_days": c.run.params.get("outcome_window_days", "?"),
        "median_delay": _num(float(delays.median()), 0) if len(delays) else "—",
        "max_delay": _num(float(delays.max()), 0) if len(delays) else "—",
        "as_of": c.run.params.get("as_of", "?"),
        "inputs_sha256": c.run.fingerprint.get("inputs_sha256", {}),
        "train_rows": int(c.run.metrics.get("train_rows") or len(c.train)),
        "train_sampled": len(c.train) < (c.run.metrics.get("train_rows") or len(c.train)),
        "confirmed_window_days": CONFIRMED_WINDOW_DAYS,
        "link_window_days": LINK_WINDOW_DAYS,
    }


def _features(c: _Context) -> dict:
    catalogue = load_catalogue()["codes"]
    code_of = {f: code for code, spec in catalogue.items() for f in spec["features"]}
    y = c.train["label"].to_numpy().astype(int)
    rows = []
    for name in c.names:
        feature = BY_NAME[name]
        x = c.train[name].to_numpy(dtype=float)
        iv = information_value(x, y)
        rows.append(
            {
                "feature": name,
                "window": f"{feature.window_days} d" if feature.window_days else "—",
                "zh": feature.zh.replace("{value}", "…"),
                "en": feature.en.replace("{value}", "…"),
                "missing": _pct(float(np.isnan(x).mean()), 1),
                "IV": _num(iv, 3),
                "strength": _iv_strength(iv),
                "reason code": code_of.get(name, "—"),
            }
        )
    families = list(dict.fromkeys(str(BY_NAME[name].family) for name in c.names))
    return {
        "features": _table(pd.DataFrame(rows), css="grid features"),
        "families": families,
        "train_rows": len(c.train),
        "n_features": len(c.names),
    }


def _iv_strength(iv: float) -> str:
    # Siddiqi's conventions; the template warns that above 0.5 often means leakage
    for bound, label in ((0.02, "none"), (0.1, "weak"), (0.3, "medium"), (0.5, "strong")):
        if iv < bound:
            return label
    return "very strong"


def _shipped_rows(params: dict[str, str]) -> pd.DataFrame:
    """Which rows each of the run's two models saw: the evidence model and the shipped refit."""

    def window(prefix: str) -> str:
        start, end = params.get(f"{prefix}_from"), params.get(f"{prefix}_to")
        return f"{_local(start, '?')} – {_local(end, '?')}"

    return pd.DataFrame(
        [
            {
                "model": "evidence (every figure in sections 5–8)",
                "fitted on": "the train part",
                "stopped and calibrated on": "the valid part",
                "judged on": "the test part, never fitted on",
            },
            {
                "model": "shipped (registered, served)",
                "fitted on": f"{window('refit')}: {params.get('refit_rows', '?')} rows, "
                f"{params.get('refit_positives', '?')} confirmed mules, label policy "
                f"{params.get('label_policy', 'mature')}",
                "stopped and calibrated on": f"{params.get('shipped_rounds', '?')} rounds (the evidence's "
                f"best); calibrated on {window('calibration')}",
                "judged on": f"rolling backtests (duanka backtest); bands cut on {window('bands')} "
                f"({params.get('bands_rows', '?')} openings)",
            },
        ]
    )


def _method(c: _Context) -> dict:
    params = c.run.params
    bounds = [params.get(f"split_{k}_start") for k in ("train", "valid", "test")]
    bounds.append(params.get("split_test_end"))
    split = pd.DataFrame(
        {
            "part": ["train", "valid", "test"],
            "from (Asia/Shanghai)": [_local(b, "earliest mature application") for b in bounds[:-1]],
            "to, excluded": [_local(b, "?") for b in bounds[1:]],
        }
    )
    lgb = {k.removeprefix("lgb_"): v for k, v in sorted(params.items()) if k.startswith("lgb_")}
    negative_rate = float(params.get("negative_rate", "nan"))
    return {
        "split": _table(split),
        "shipped": _table(_shipped_rows(params)),
        "label_policy": params.get("label_policy", "mature"),
        "lgb": lgb,
        "negative_rate": negative_rate,
        "negative_weight": _num(1 / negative_rate, 1) if negative_rate > 0 else "—",
        "calibration": params.get("calibration", "?"),
        "best_iteration": params.get("best_iteration", "?"),
        "rules": c.run.rules,
    }


def _evaluation_table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows).set_index("metric")
    frame = frame.loc[[m for m in HEADLINE_METRICS if m in frame.index]]
    return pd.DataFrame(
        {
            "metric": frame.index,
            "value": frame["value"].map(_num),
            "95% CI": [
                f"[{_num(lo)}, {_num(hi)}]" for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)
            ],
        }
    )


def _group_table(groups: pd.DataFrame) -> Markup:
    counts = {"groups": _whole, "members": _whole, "median_opened_before_first_flag": _whole}
    shares = {"caught_any": lambda v: _pct(v, 0), "caught_half": lambda v: _pct(v, 0)}
    return _table(groups.reset_index(names="scheme"), {**counts, **shares})


def _whole(x: float) -> str:
    return _num(x, 0)


def rule_and_model_decisions(
    rule: np.ndarray, band: np.ndarray, y: np.ndarray, alert_bands: tuple[str, ...] = ALERT_BANDS
) -> pd.DataFrame:
    """Test applications by what decided them: each hard rule first, then the model's bands.

    A rule refusal is not a model alert: it is counted on its own row, with how many of
    those applications the model alone would have alerted on.

    Parameters
    ----------
    rule : numpy.ndarray
        Per application, the rule that refused it (``"watchlist"``) or ``""``.
    band : numpy.ndarray
        Per application, the model's band.
    y : numpy.ndarray
        Confirmed mule (1) or not.
    """
    refused = rule != ""
    alert = np.isin(band, alert_bands)
    rows = [
        {
            "decided by": f"rule: {name}",
            "decision": "refuse",
            "applications": int((rule == name).sum()),
            "confirmed mules": int(y[rule == name].sum()),
            "model alone would alert": int(alert[rule == name].sum()),
        }
        for name in sorted(set(rule[refused]))
    ]
    for label, chosen in (
        (f"model: alert ({' or '.join(alert_bands)})", alert),
        ("model: medium", band == "medium"),
        ("model: low", band == "low"),
    ):
        mask = chosen & ~refused
        rows.append(
            {
                "decided by": label,
                "decision": "by band",
                "applications": int(mask.sum()),
                "confirmed mules": int(y[mask].sum()),
                "model alone would alert": int((alert & mask).sum()),
            }
        )
    return pd.DataFrame(rows)


def _performance(c: _Context) -> dict:
    params = c.run.params
    start, end = pd.Timestamp(params["split_test_start"]), pd.Timestamp(params["split_test_end"])
    days = (end - start).total_seconds() / 86_400
    branches, branch_source = (
        (c.branches, "given when the report was built")
        if c.branches
        else (
            max(1, round(estimate_branches(c.test, days))),
            "estimated from the test rows' branch volumes (the evaluation frame holds no branch id)",
        )
    )
    table = threshold_table(c.y, c.score, alert_rates=ALERT_RATES, days=days, branches=branches)
    bands = c.model.bundle.bands.to_dict()
    band_rows = []
    for band in ("critical", "high", "medium"):
        flagged = c.score >= bands[band]
        band_rows.append(
            {
                "alert_rate": flagged.mean(),
                "threshold": bands[band],
                "alerts": int(flagged.sum()),
                "alerts_per_branch_day": flagged.sum() / (days * branches),
                "precision": c.y[flagged].mean() if flagged.any() else math.nan,
                "recall": c.y[flagged].sum() / c.y.sum(),
            }
        )
    table.insert(0, "cut", [f"top {_pct(r, 1)}" for r in table["alert_rate"]])
    bands_table = pd.DataFrame(band_rows)
    bands_table.insert(0, "cut", [f"band ≥ {b}" for b in ("critical", "high", "medium")])
    formats = {
        "alert_rate": lambda v: _pct(v, 2),
        "threshold": lambda v: _num(v, 4),
        "alerts_per_branch_day": lambda v: _num(v, 2),
        "precision": lambda v: _pct(v, 1),
        "recall": lambda v: _pct(v, 1),
    }
    lightgbm = {r["metric"]: r for r in c.run.evaluations["lightgbm"]}
    groups = c.run.group_catch
    decided = None
    if c.rule is not None:
        decided = rule_and_model_decisions(c.rule, c.rule_bands, c.rule_y)
    refused = 0 if c.rule is None else int((c.rule != "").sum())
    return {
        "decisions": _table(decided) if decided is not None else None,
        "rule_refusals": refused,
        "model_alerts": int(c.alert.sum()),
        "curves": plots.roc_and_pr(c.y, c.score, lightgbm["roc_auc"]["value"], lightgbm["pr_auc"]["value"]),
        "calibration_plot": plots.calibration(calibration_bins(c.y, c.score)),
        "distributions": plots.score_distributions(
            c.y, c.score, {b: bands[b] for b in ("medium", "high", "critical")}
        ),
        "metrics": _table(_evaluation_table(c.run.evaluations["lightgbm"])),
        "thresholds": _table(pd.concat([bands_table, table], ignore_index=True), formats),
        "comparison": _table(c.run.comparison.reset_index()),
        "groups": _group_table(groups) if groups is not None else None,
        "test_rows": len(c.y),
        "test_mules": int(c.y.sum()),
        "days": _num(days, 0),
        "branches": branches,
        "branch_source": branch_source,
        "n_boot": params.get("n_boot", "?"),
    }


def _highest_scored(c: _Context) -> list[dict]:
    """Waterfalls of the test applications the registered model scores highest: example alerts.

    Ranked, scored and banded by the model the waterfalls explain (the registered one,
    whose ``pred_contrib`` they draw), so each plot's margin is its title's score. An
    application is named by its rank, score and band: never by an id.
    """
    score = c.model.bundle.score(c.X)
    rows = np.argsort(-score, kind="stable")[:EXAMPLE_ALERTS]
    X = c.X[rows]
    contrib = c.model.bundle.contributions(X)
    labels = load_catalogue().get("labels", {})
    # the values as the reason sentences print them: "none" for a missing entity, flags as yes/no
    shown = np.array(
        [
            [format_value(name, x, "en", labels.get(name)) for name, x in zip(c.names, row, strict=True)]
            for row in X
        ],
        dtype=object,
    )
    explanation = plots.shap_explanation(contrib, X, c.names, display=shown)
    bands = c.model.bundle.bands.assign(score[rows])
    reasons = c.explainer.reasons_from_contributions(X, contrib)
    examples = []
    for k, row in enumerate(rows):
        title = f"Highest-scored test application no. {k + 1}: score {score[row]:.3f}, band {bands[k]}"
        examples.append(
            {
                "rank": k + 1,
                "score": _num(float(score[row]), 3),
                "band": str(bands[k]),
                "reasons": [r.code for r in reasons[k]],
                "plot": plots.shap_waterfall(explanation[k], title),
            }
        )
    return examples


def _explanations(c: _Context) -> dict:
    sample = plots.shap_explanation(c.sample_contrib, c.X[c.sample], c.names)
    codes = pd.Series([r.code for row in c.alert_reasons for r in row], dtype="object")
    frequency = codes.value_counts() / max(len(c.alert_reasons), 1)
    catalogue = load_catalogue()["codes"]
    reason_table = pd.DataFrame(
        {
            "reason code": frequency.index,
            "share of alerts": [_pct(v, 1) for v in frequency.to_numpy()],
            "sentence (zh)": [catalogue[code]["zh"] for code in frequency.index],
            "sentence (en)": [catalogue[code]["en"] for code in frequency.index],
        }
    )
    return {
        "beeswarm": plots.shap_beeswarm(sample, max_display=TOP_FEATURES),
        "waterfalls": _highest_scored(c),
        "dependence": plots.shap_dependence(sample, c.importance[:DEPENDENCE_FEATURES].tolist()),
        "dependence_features": DEPENDENCE_FEATURES,
        "reason_plot": plots.reason_frequency(frequency) if len(frequency) else None,
        "reasons": _table(reason_table),
        "sample": len(c.sample),
        "population": len(c.X),
        "seed": SHAP_SEED,
        "alerts": int(c.alert.sum()),
        "top_k": c.explainer.top_k,
    }


def _stability(c: _Context) -> dict:
    frame = c.run.frame
    month = frame["applied_at"].dt.tz_convert(SHANGHAI).dt.strftime("%Y-%m")
    reference = frame.loc[frame["part"] == TRAIN]
    features = [c.names[i] for i in c.importance[:STABILITY_FEATURES]]
    rows = []
    for key, rows_of_month in frame.groupby(month, sort=True):
        row = {
            "month": key,
            "part": "/".join(sorted(rows_of_month["part"].unique())),
            "rows": len(rows_of_month),
            "score PSI": population_stability(
                reference["score"].to_numpy(), rows_of_month["score"].to_numpy()
            ),
        }
        for name in features:
            row[name] = population_stability(
                reference[name].to_numpy(dtype=float), rows_of_month[name].to_numpy(dtype=float)
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    columns = ["score PSI", *features]
    worst = table.loc[table["part"] != TRAIN, columns].max() if (table["part"] != TRAIN).any() else None
    return {
        "plot": plots.stability(table, columns),
        "table": _table(table, {c_: (lambda v: _num(v, 3)) for c_ in columns}),
        "reference_rows": len(reference),
        "worst": {k: _num(v, 3) for k, v in worst.items()} if worst is not None else {},
        "watch": plots.PSI_WATCH,
        "act": plots.PSI_ACT,
    }


def _fairness(c: _Context) -> dict:
    t = c.test
    dimensions = {
        "age band": _age_band(t["applicant_age"]),
        "origin": t["applicant_out_of_province"].map({0.0: "local", 1.0: "out of province"}),
        "channel": _coded(t["channel"], "channel"),
        "account type": t["corporate"].map({0.0: "personal", 1.0: "corporate"}),
    }
    gender_missing = "applicant_gender" not in t.columns
    if not gender_missing:
        dimensions["gender"] = _coded(t["applicant_gender"], "applicant_gender")
    table = pd.concat(
        [error_rates(c.y, c.alert, groups, name) for name, groups in dimensions.items()], ignore_index=True
    )
    formats = {
        "alert_rate": lambda v: _pct(v, 2),
        "fpr": lambda v: _pct(v, 2),
        "recall": lambda v: _pct(v, 1),
        "fpr_ratio": lambda v: _num(v, 2),
    }
    return {
        "plot": plots.fairness(table),
        "table": _table(table.drop(columns="negatives"), formats),
        "gender_missing": gender_missing,
        "min_negatives": MIN_NEGATIVES,
        "out_of_province": _out_of_province(c, table),
    }


def _out_of_province(c: _Context, table: pd.DataFrame) -> dict:
    """Over-refusal risk under 断卡: how much of the alerting rests on where applicants come from."""
    origin = table.loc[table["dimension"] == "origin"].set_index("group")
    outsider = c.test["applicant_out_of_province"].to_numpy() == 1
    alerted = c.alert & outsider
    flips = 0  # a model that does not read origin cannot change its mind over it
    if "applicant_out_of_province" in c.names and alerted.any():
        column = c.names.index("applicant_out_of_province")
        as_local = c.X[alerted].copy()
        as_local[:, column] = 0
        # the same applications with only the origin flag changed: alerts that rest on origin itself
        flips = int((c.model.bundle.score(as_local) < c.model.bundle.bands.high).sum())
    shown = sum(any(r.code == "APPLICANT_OUT_OF_PROVINCE" for r in row) for row in c.alert_reasons)
    ratio = math.nan
    if {"local", "out of province"} <= set(origin.index) and origin.loc["local", "fpr"] > 0:
        ratio = origin.loc["out of province", "fpr"] / origin.loc["local", "fpr"]
    return {
        "share": _pct(float(outsider.mean()), 1),
        "alert_share": _pct(float(alerted.sum() / max(c.alert.sum(), 1)), 1),
        "fpr_ratio": _num(ratio, 2),
        "alerts": int(alerted.sum()),
        "flips": flips,
        "flip_share": _pct(flips / alerted.sum(), 1) if alerted.any() else "—",
        "reason_share": _pct(shown / c.alert.sum(), 1) if c.alert.any() else "—",
    }


def _comparison(c: _Context, client: mlflow.MlflowClient) -> dict:
    versions = {}
    for alias in ("champion", "challenger"):
        try:
            versions[alias] = client.get_model_version_by_alias(MODEL_NAME, alias)
        except mlflow.exceptions.MlflowException:
            continue
    if len(versions) < 2 or versions["champion"].version == versions["challenger"].version:
        return {"table": None, "versions": {k: v.version for k, v in versions.items()}}
    columns = {}
    for alias, version in versions.items():
        run = client.get_run(version.run_id)
        m, p = run.data.metrics, run.data.params
        cells = {
            "version": str(version.version),
            "test months": f"{p.get('split_test_start', '?')[:10]} → {p.get('split_test_end', '?')[:10]}",
            "feature set": p.get("feature_set_version", "?"),
            "best iteration": p.get("best_iteration", "?"),
        }
        for metric in HEADLINE_METRICS:
            key = metric_key(f"lightgbm.test_{metric}")
            if key in m:
                cells[metric] = (
                    f"{m[key]:.3f} [{m.get(key + '_ci_low', math.nan):.3f}, "
                    f"{m.get(key + '_ci_high', math.nan):.3f}]"
                )
        columns[f"{alias} (v{version.version})"] = cells
    return {
        "table": _table(pd.DataFrame(columns), index=True),
        "versions": {k: v.version for k, v in versions.items()},
    }


def _lineage(c: _Context) -> dict:
    params = c.run.params
    return {
        "rows": _table(
            pd.DataFrame(
                [
                    {"item": "model", "value": c.model.uri},
                    {"item": "model version", "value": c.model.version},
                    {"item": "run id", "value": c.model.run_id},
                    {"item": "booster sha256", "value": c.model.bundle.booster_sha256},
                    {"item": "feature set version", "value": c.model.bundle.feature_set_version},
                    {"item": "code version", "value": params.get("code_version", "?")},
                    {"item": "as of", "value": params.get("as_of", "?")},
                ]
            )
        ),
        "artifacts": _table(
            pd.DataFrame([{"artifact": k, "sha256": v} for k, v in c.run.artifact_sha256.items()])
        ),
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def build_report(
    model_uri: str,
    out: Path,
    client: mlflow.MlflowClient,
    *,
    branches: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the model report for a registered model and log it to the model's run.

    Parameters
    ----------
    model_uri : str
        ``models:/duanka@champion``, ``models:/duanka/3``, ...
    out : Path
        The HTML file to write; its folder is created.
    client : mlflow.MlflowClient
        Registry and tracking client of the store that holds the model.
    branches : int, optional
        Branches the bank runs, for alerts per branch per day; estimated from the
        evaluation frame when not given (the report says which).
    progress : bool
        Show a progress bar over the sections.

    Returns
    -------
    Path
        ``out``.
    """
    model = load_registered(model_uri, client)
    out = Path(out)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(
            TextColumn("[bold]report[/] {task.description:<28}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            disable=not progress,
        ) as bar,
    ):
        task = bar.add_task("reading the run", total=len(SECTIONS) + 2)
        run = read_run(model.run_id, client, Path(tmp))
        c = _Context(model, run, branches)
        bar.advance(task)
        builders: dict[str, Callable[[], dict]] = {
            "purpose": lambda: _purpose(c),
            "data": lambda: _data(c),
            "features": lambda: _features(c),
            "method": lambda: _method(c),
            "performance": lambda: _performance(c),
            "explanations": lambda: _explanations(c),
            "stability": lambda: _stability(c),
            "fairness": lambda: _fairness(c),
            "comparison": lambda: _comparison(c, client),
            "limitations": dict,
            "monitoring": dict,
            "lineage": lambda: _lineage(c),
        }
        context: dict[str, object] = {}
        for key, title in SECTIONS:
            bar.update(task, description=title.lower()[:28])
            context[key] = builders[key]()
            bar.advance(task)
        bar.update(task, description="writing")
        html = (
            _environment()
            .get_template(TEMPLATE)
            .render(
                sections=SECTIONS,
                model=model,
                params=run.params,
                built_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                alert_bands=ALERT_BANDS,
                promotion_rule=(PROMOTION_RULE or "").strip(),
                recall_tolerance=RECALL_TOLERANCE,
                **context,
            )
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
        logged = Path(tmp) / "logged" / REPORT_NAME
        logged.parent.mkdir()
        shutil.copyfile(out, logged)
        client.log_artifact(model.run_id, str(logged))
        bar.advance(task)
    return out
