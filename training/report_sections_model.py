"""The model report's first sections: what the model is for, its data, its features, its method."""

from __future__ import annotations

import numpy as np
import pandas as pd

from duanka.data.config import SHANGHAI
from duanka.features.registry import BY_NAME, CONFIRMED_WINDOW_DAYS, LINK_WINDOW_DAYS
from duanka.training import plots
from duanka.training.bands import ACTION_TEXT, ACTIONS, ALERT_BUDGET, BAND_WINDOW_DAYS
from duanka.training.explain import load_catalogue
from duanka.training.monitoring import information_value, information_value_strength
from duanka.training.report_context import ReportContext
from duanka.training.report_format import html_table, local_time, number, percent


def purpose_section(c: ReportContext) -> dict:
    """The bands, their budgets and what staff are asked to do in each."""
    bands = c.model.bundle.bands.to_dict()
    rows = [
        {
            "band": band,
            "from score": number(bands[band], 4),
            "budget": percent(ALERT_BUDGET[band], 1),
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
    return {"bands": html_table(pd.DataFrame(rows)), "band_window_days": BAND_WINDOW_DAYS}


def data_section(c: ReportContext) -> dict:
    """Monthly volumes and label delays, the rows of each part, and the inputs' fingerprint."""
    monthly = c.run.monthly
    shown = monthly.assign(
        label_rate=monthly["label_rate"].map(lambda v: percent(v, 2)),
        median_label_delay_days=monthly["median_label_delay_days"].map(lambda v: number(v, 0)),
    ).reset_index()
    frame = c.run.frame
    parts = frame.groupby("part").agg(
        rows=("label", "size"),
        mules=("label", "sum"),
        first=("applied_at", "min"),
        last=("applied_at", "max"),
    )
    parts["mule_rate"] = (parts["mules"] / parts["rows"]).map(lambda v: percent(v, 2))
    for column in ("first", "last"):
        parts[column] = parts[column].dt.tz_convert(SHANGHAI).dt.strftime("%Y-%m-%d")
    parts = parts.reindex([p for p in ("train", "valid", "test") if p in parts.index])
    counts = c.run.fingerprint.get("counts", {})
    delays = monthly["median_label_delay_days"].dropna()
    return {
        "monthly_plot": plots.monthly_volumes(monthly),
        "monthly": html_table(shown),
        "parts": html_table(parts.reset_index()),
        "counts": counts,
        "outcome_window_days": c.run.params.get("outcome_window_days", "?"),
        "median_delay": number(float(delays.median()), 0) if len(delays) else "—",
        "max_delay": number(float(delays.max()), 0) if len(delays) else "—",
        "as_of": local_time(c.run.params.get("as_of"), "?") + " (Beijing time)",
        "inputs_sha256": c.run.fingerprint.get("inputs_sha256", {}),
        "train_rows": int(c.run.metrics.get("train_rows") or len(c.train)),
        "train_sampled": len(c.train) < (c.run.metrics.get("train_rows") or len(c.train)),
        "confirmed_window_days": CONFIRMED_WINDOW_DAYS,
        "link_window_days": LINK_WINDOW_DAYS,
    }


def features_section(c: ReportContext) -> dict:
    """Every model feature with its window, sentence, missing share, IV and reason code."""
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
                "missing": percent(float(np.isnan(x).mean()), 1),
                "IV": number(iv, 3),
                "strength": information_value_strength(iv),
                "reason code": code_of.get(name, "—"),
            }
        )
    families = list(dict.fromkeys(str(BY_NAME[name].family) for name in c.names))
    return {
        "features": html_table(pd.DataFrame(rows), css="grid features"),
        "families": families,
        "train_rows": len(c.train),
        "n_features": len(c.names),
    }


def shipped_rows(params: dict[str, str]) -> pd.DataFrame:
    """Which rows each of the run's two models saw: the evidence model and the shipped refit."""

    def window(prefix: str) -> str:
        start, end = params.get(f"{prefix}_from"), params.get(f"{prefix}_to")
        return f"{local_time(start, '?')} – {local_time(end, '?')}"

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


def method_section(c: ReportContext) -> dict:
    """The out-of-time split, the two models, the learner's parameters and the baselines' rules."""
    params = c.run.params
    bounds = [params.get(f"split_{k}_start") for k in ("train", "valid", "test")]
    bounds.append(params.get("split_test_end"))
    split = pd.DataFrame(
        {
            "part": ["train", "valid", "test"],
            "from (Asia/Shanghai)": [local_time(b, "earliest mature application") for b in bounds[:-1]],
            "to, excluded": [local_time(b, "?") for b in bounds[1:]],
        }
    )
    lgb = {k.removeprefix("lgb_"): v for k, v in sorted(params.items()) if k.startswith("lgb_")}
    negative_rate = float(params.get("negative_rate", "nan"))
    return {
        "split": html_table(split),
        "shipped": html_table(shipped_rows(params)),
        "label_policy": params.get("label_policy", "mature"),
        "lgb": lgb,
        "negative_rate": negative_rate,
        "negative_weight": number(1 / negative_rate, 1) if negative_rate > 0 else "—",
        "calibration": params.get("calibration", "?"),
        "best_iteration": params.get("best_iteration", "?"),
        "rules": c.run.rules,
    }
