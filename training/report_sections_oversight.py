"""The model report's oversight sections: stability, fairness, champion and challenger, lineage."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI
from duanka.features.registry import BY_NAME
from duanka.training import plots
from duanka.training.bundle import MODEL_NAME
from duanka.training.metrics import HEADLINE_METRICS
from duanka.training.monitoring import (
    MIN_NEGATIVES,
    PSI_ACT,
    PSI_WATCH,
    RATIO_LINE,
    age_band,
    error_rates,
    false_positive_rate_ratio,
    population_stability,
)
from duanka.training.report_context import ReportContext
from duanka.training.report_format import html_table, local_time, number, percent
from duanka.training.split import TRAIN
from duanka.training.tracking import metric_key

STABILITY_FEATURES = 5
DRIVERS = 3
OPEN = ("open", "not reviewed yet: the model-risk team decides whether to accept or mitigate it")
# What is done about a group over the line, reviewed text; a group not listed is open.
DISPOSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("origin", "out of province"): (
        "mitigated",
        "origin is no model feature, and every fit weighs a legitimate out-of-province application "
        "8 times (training/fairness.py, docs/model.md); what remains comes from features that find "
        "recruits from far away, monitored monthly",
    ),
    ("account type", "corporate"): (
        "accepted",
        "shell companies and insider openings make corporate openings riskier; the bands' actions "
        "are checks (on-site verification), not refusals",
    ),
}


def _coded(values: pd.Series, feature: str) -> pd.Series:
    codes = BY_NAME[feature].codes
    return values.map(lambda v: codes[int(v)] if pd.notna(v) and 0 <= v < len(codes) else pd.NA)


def stability_section(c: ReportContext) -> dict:
    """PSI of the score and CSI of the most important features, month by month, against training."""
    frame = c.run.frame
    if "rule" in frame.columns:  # what the model decides, as the volume table counts it
        frame = frame.loc[frame["rule"].fillna("") == ""]
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
        "table": html_table(table, {column: (lambda v: number(v, 3)) for column in columns}),
        "reference_rows": len(reference),
        "train_sampled": len(reference) < (c.run.metrics.get("train_rows") or len(reference)),
        "worst": {k: number(v, 3) for k, v in worst.items()} if worst is not None else {},
        "watch": PSI_WATCH,
        "act": PSI_ACT,
    }


def fairness_section(c: ReportContext) -> dict:
    """Alert rate, FPR, recall and FPR ratios by age band, origin, channel, account type and gender."""
    t = c.test
    dimensions = {
        "age band": age_band(t["applicant_age"]),
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
        "alert_rate": lambda v: percent(v, 2),
        "fpr": lambda v: percent(v, 2),
        "recall": lambda v: percent(v, 1),
        "fpr_ratio": lambda v: number(v, 2),
    }
    return {
        "plot": plots.fairness(table),
        "table": html_table(table.drop(columns="negatives"), formats),
        "above_line": _above_line(c, table, dimensions),
        "line": RATIO_LINE,
        "gender_missing": gender_missing,
        "min_negatives": MIN_NEGATIVES,
        "out_of_province": _out_of_province(c),
    }


def _above_line(c: ReportContext, table: pd.DataFrame, dimensions: dict[str, pd.Series]) -> list[dict]:
    """Each group whose FPR ratio is above the line: the features that push its false positives up
    more than the other groups' false positives (mean TreeSHAP contribution, log-odds), and what
    is done about it (:data:`DISPOSITIONS`; a group not listed there is open)."""
    legit_alerts = c.alert & (c.y == 0)
    found = []
    for _, row in table.loc[table["fpr_ratio"] > RATIO_LINE].iterrows():
        groups = dimensions[row["dimension"]].reset_index(drop=True).astype(object).fillna("none")
        mine = legit_alerts & (groups == row["group"]).to_numpy()
        others = legit_alerts & ~mine
        if not mine.any():
            continue
        excess = _mean_contribution(c, mine) - _mean_contribution(c, others)
        top = np.argsort(-excess, kind="stable")[:DRIVERS]
        status, why = DISPOSITIONS.get((row["dimension"], row["group"]), OPEN)
        found.append(
            {
                "dimension": row["dimension"],
                "group": row["group"],
                "ratio": number(row["fpr_ratio"], 2),
                "false_positives": int(mine.sum()),
                "drivers": ", ".join(f"{c.names[i]} (+{excess[i]:.2f})" for i in top if excess[i] > 0) or "—",
                "status": status,
                "why": why,
            }
        )
    return found


def _mean_contribution(c: ReportContext, rows: np.ndarray) -> np.ndarray:
    """Each feature's mean TreeSHAP contribution over ``rows`` of the test frame; 0 without rows."""
    if not rows.any():
        return np.zeros(len(c.names))
    return c.model.bundle.contributions(c.X[rows])[:, :-1].mean(axis=0)


def _out_of_province(c: ReportContext) -> dict:
    """Over-refusal risk under 断卡: how much of the alerting rests on where applicants come from."""
    origin = c.test["applicant_out_of_province"].to_numpy()
    outsider = origin == 1
    alerted = c.alert & outsider
    flips = 0  # a model that does not read origin cannot change its mind over it
    if "applicant_out_of_province" in c.names and alerted.any():
        column = c.names.index("applicant_out_of_province")
        as_local = c.X[alerted].copy()
        as_local[:, column] = 0
        # the same applications with only the origin flag changed: alerts that rest on origin itself
        flips = int((c.model.bundle.score(as_local) < c.model.bundle.bands.high).sum())
    shown = sum(any(r.code == "APPLICANT_OUT_OF_PROVINCE" for r in row) for row in c.alert_reasons)
    ratio = false_positive_rate_ratio(c.y, c.alert, outsider, origin == 0)
    return {
        "share": percent(float(outsider.mean()), 1),
        "alert_share": percent(float(alerted.sum() / max(c.alert.sum(), 1)), 1),
        "fpr_ratio": number(ratio, 2),
        "alerts": int(alerted.sum()),
        "flips": flips,
        "flip_share": percent(flips / alerted.sum(), 1) if alerted.any() else "—",
        "reason_share": percent(shown / c.alert.sum(), 1) if c.alert.any() else "—",
    }


def comparison_section(client: mlflow.MlflowClient) -> dict:
    """The champion's and the challenger's headline metrics side by side, when they differ."""
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
        "table": html_table(pd.DataFrame(columns), index=True),
        "versions": {k: v.version for k, v in versions.items()},
    }


def lineage_section(c: ReportContext) -> dict:
    """The model's identity, the code and data it came from, and every artifact's sha256."""
    params = c.run.params
    return {
        "rows": html_table(
            pd.DataFrame(
                [
                    {"item": "model", "value": c.model.uri},
                    {"item": "model version", "value": c.model.version},
                    {"item": "run id", "value": c.model.run_id},
                    {"item": "booster sha256", "value": c.model.bundle.booster_sha256},
                    {"item": "feature set version", "value": c.model.bundle.feature_set_version},
                    {"item": "code version", "value": params.get("code_version", "?")},
                    {"item": "as of (Beijing time)", "value": local_time(params.get("as_of"), "?")},
                ]
            )
        ),
        "artifacts": html_table(
            pd.DataFrame([{"artifact": k, "sha256": v} for k, v in c.run.artifact_sha256.items()])
        ),
    }
