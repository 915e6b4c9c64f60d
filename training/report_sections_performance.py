"""The model report's evidence sections: performance on the test months, and explanations.

Privacy: the example waterfalls show single applications, named by rank, score and band only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from markupsafe import Markup

from duanka.training import plots
from duanka.training.bands import ALERT_BANDS
from duanka.training.explain import format_value, load_catalogue
from duanka.training.metrics import ALERT_RATES, HEADLINE_METRICS, threshold_table
from duanka.training.monitoring import calibration_bins
from duanka.training.report_context import SHAP_SEED, ReportContext
from duanka.training.report_format import html_table, number, percent

TOP_FEATURES = 15
DEPENDENCE_FEATURES = 3
EXAMPLE_ALERTS = 3


def estimate_branches(frame: pd.DataFrame, days: float) -> float:
    """Active branches estimated from ``branch_applications_7d`` (the frame has no branch id).

    Each application contributes ``1 / (its branch's applications in the period)``, with the
    period's count read from the branch's last-7-day rate: the sum counts each branch once.

    Parameters
    ----------
    frame : pandas.DataFrame
        The period's applications with ``branch_applications_7d``.
    days : float
        The period's length.

    Returns
    -------
    float
    """
    per_week = frame["branch_applications_7d"].fillna(0).clip(lower=1).to_numpy()
    return float((7.0 / (days * per_week)).sum())


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
    alert_bands : tuple of str
        The bands that count as a model alert.

    Returns
    -------
    pandas.DataFrame
        ``decided by``, ``decision``, ``applications``, ``confirmed mules``,
        ``model alone would alert``; every application on exactly one row.
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


def _evaluation_table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows).set_index("metric")
    frame = frame.loc[[m for m in HEADLINE_METRICS if m in frame.index]]
    return pd.DataFrame(
        {
            "metric": frame.index,
            "value": frame["value"].map(number),
            "95% CI": [
                f"[{number(lo)}, {number(hi)}]"
                for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)
            ],
        }
    )


def _group_table(groups: pd.DataFrame) -> Markup:
    whole = {"groups": _whole, "members": _whole, "median_opened_before_first_flag": _whole}
    shares = {"caught_any": lambda v: percent(v, 0), "caught_half": lambda v: percent(v, 0)}
    return html_table(groups.reset_index(names="scheme"), {**whole, **shares})


def _whole(x: float) -> str:
    return number(x, 0)


def _branches(c: ReportContext, days: float) -> tuple[int, str]:
    """The branch count alerts per branch per day divide by, and where it came from."""
    if c.branches:
        return c.branches, "given when the report was built"
    return (
        max(1, round(estimate_branches(c.test, days))),
        "estimated from the test rows' branch volumes (the evaluation frame holds no branch id)",
    )


def _band_cuts(c: ReportContext, days: float, branches: int) -> pd.DataFrame:
    """What each band's cut would flag on the test rows, as rows of the threshold table."""
    bands = c.model.bundle.bands.to_dict()
    rows = []
    for band in ("critical", "high", "medium"):
        flagged = c.score >= bands[band]
        rows.append(
            {
                "alert_rate": flagged.mean(),
                "threshold": bands[band],
                "alerts": int(flagged.sum()),
                "alerts_per_branch_day": flagged.sum() / (days * branches),
                "precision": c.y[flagged].mean() if flagged.any() else math.nan,
                "recall": c.y[flagged].sum() / c.y.sum(),
            }
        )
    table = pd.DataFrame(rows)
    table.insert(0, "cut", [f"band ≥ {b}" for b in ("critical", "high", "medium")])
    return table


def performance_section(c: ReportContext) -> dict:
    """Curves, calibration, thresholds, baselines and ring catch rates on the test months."""
    params = c.run.params
    start, end = pd.Timestamp(params["split_test_start"]), pd.Timestamp(params["split_test_end"])
    days = (end - start).total_seconds() / 86_400
    branches, branch_source = _branches(c, days)
    table = threshold_table(c.y, c.score, alert_rates=ALERT_RATES, days=days, branches=branches)
    table.insert(0, "cut", [f"top {percent(r, 1)}" for r in table["alert_rate"]])
    formats = {
        "alert_rate": lambda v: percent(v, 2),
        "threshold": lambda v: number(v, 4),
        "alerts_per_branch_day": lambda v: number(v, 2),
        "precision": lambda v: percent(v, 1),
        "recall": lambda v: percent(v, 1),
    }
    bands = c.model.bundle.bands.to_dict()
    lightgbm = {r["metric"]: r for r in c.run.evaluations["lightgbm"]}
    groups = c.run.group_catch
    decided = None if c.rule is None else rule_and_model_decisions(c.rule, c.rule_bands, c.rule_y)
    refused = 0 if c.rule is None else int((c.rule != "").sum())
    return {
        "decisions": html_table(decided) if decided is not None else None,
        "rule_refusals": refused,
        "model_alerts": int(c.alert.sum()),
        "curves": plots.roc_and_pr(c.y, c.score, lightgbm["roc_auc"]["value"], lightgbm["pr_auc"]["value"]),
        "calibration_plot": plots.calibration(calibration_bins(c.y, c.score)),
        "distributions": plots.score_distributions(
            c.y, c.score, {b: bands[b] for b in ("medium", "high", "critical")}
        ),
        "metrics": html_table(_evaluation_table(c.run.evaluations["lightgbm"])),
        "thresholds": html_table(
            pd.concat([_band_cuts(c, days, branches), table], ignore_index=True), formats
        ),
        "comparison": html_table(c.run.comparison.reset_index()),
        "groups": _group_table(groups) if groups is not None else None,
        "test_rows": len(c.y),
        "test_mules": int(c.y.sum()),
        "days": number(days, 0),
        "branches": branches,
        "branch_source": branch_source,
        "n_boot": params.get("n_boot", "?"),
    }


def _highest_scored(c: ReportContext) -> list[dict]:
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
                "score": number(float(score[row]), 3),
                "band": str(bands[k]),
                "reasons": [r.code for r in reasons[k]],
                "plot": plots.shap_waterfall(explanation[k], title),
            }
        )
    return examples


def explanations_section(c: ReportContext) -> dict:
    """SHAP beeswarm, dependence and example waterfalls, and the reason codes alerts show."""
    sample = plots.shap_explanation(c.sample_contrib, c.X[c.sample], c.names)
    codes = pd.Series([r.code for row in c.alert_reasons for r in row], dtype="object")
    frequency = codes.value_counts() / max(len(c.alert_reasons), 1)
    catalogue = load_catalogue()["codes"]
    reason_table = pd.DataFrame(
        {
            "reason code": frequency.index,
            "share of alerts": [percent(v, 1) for v in frequency.to_numpy()],
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
        "reasons": html_table(reason_table),
        "sample": len(c.sample),
        "population": len(c.X),
        "seed": SHAP_SEED,
        "alerts": int(c.alert.sum()),
        "top_k": c.explainer.top_k,
    }
