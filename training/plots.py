"""Figures of the model report, each returned as a ``data:image/png`` URI.

The report is one self-contained HTML file, so figures travel inside it. They are
rendered by the Agg canvas: no display, the same picture on a laptop and in CI. Most
are drawn on a bare :class:`matplotlib.figure.Figure`, with no pyplot state.

The explanation figures are shap's own (``shap.plots.beeswarm``, ``waterfall``,
``scatter``), drawn from the ``pred_contrib`` values LightGBM already computed
(:func:`shap_explanation`). shap draws on pyplot's current figure, so those few
figures are pyplot's: made under ``plt.ioff()``, rendered to PNG by Agg like the
others, and closed before the function returns. shap is imported on first use: it
takes seconds and the rest of the report does not need it.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from duanka.training.monitoring import PSI_ACT, PSI_WATCH

if TYPE_CHECKING:
    import shap

INK = "#1f2933"
MUTED = "#7b8794"
RISK = "#c2410c"  # mules, alerts, anything that raises risk
SAFE = "#2563eb"  # legitimate applicants
ACCENT = "#0f766e"
BAND_COLOURS = {"medium": "#f59e0b", "high": "#ea580c", "critical": "#b91c1c"}
# pred_contrib is TreeSHAP on the booster's margin, before calibration: say so wherever it is drawn
SHAP_AXIS = "contribution to the raw score (log-odds); right of 0 raises risk"

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelcolor": INK,
    "axes.edgecolor": MUTED,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e7eb",
    "grid.linewidth": 0.8,
    "xtick.color": INK,
    "ytick.color": INK,
    "legend.frameon": False,
    "figure.dpi": 110,
}
# shap styles its own plots; only the resolution and the title's place follow the report's
_SHAP_STYLE = {"figure.dpi": 110, "axes.titleweight": "bold", "axes.titlelocation": "left"}


@contextmanager
def _figure(
    width: float, height: float, ncols: int = 1, layout: str | None = "constrained"
) -> Iterator[tuple[Figure, np.ndarray]]:
    with rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout=layout)
        axes = np.atleast_1d(fig.subplots(1, ncols))
        yield fig, axes


report_figure = _figure
"""A bare figure of ``ncols`` axes in the report's style: the monitoring page draws in it too (with
``layout=None`` and margins of its own where a page must draw fast)."""


def _shap() -> ModuleType:
    """shap, imported on first use."""
    if "matplotlib.pyplot" not in sys.modules:
        # importing shap imports pyplot, which settles the backend for the process: the report
        # only writes files, so Agg, not whatever display the machine happens to have. A process
        # that already uses pyplot (a notebook) keeps its backend: PNGs are rendered by Agg anyway.
        matplotlib.use("Agg")
    import shap

    return shap


@contextmanager
def _shap_figure(width: float, height: float) -> Iterator[Figure]:
    """A current pyplot figure for shap to draw on, never shown and always closed.

    Closing matters: pyplot keeps every figure it made until closed, and a report draws several.
    """
    import matplotlib.pyplot as plt

    with rc_context(_SHAP_STYLE), plt.ioff():  # ioff restores the mode shap's waterfall turns off
        fig = plt.figure(figsize=(width, height))
        try:
            yield fig
        finally:
            plt.close(fig)


def to_data_uri(fig: Figure, *, tight: bool = False) -> str:
    """The figure as an embeddable PNG data URI.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure, drawn.
    tight : bool
        Crop to what was drawn: shap lays out its own labels and colour bar without
        ``constrained`` layout, and they would otherwise spill past the edges.

    Returns
    -------
    str
        ``data:image/png;base64,...``, rendered by Agg.
    """
    buffer = io.BytesIO()
    if tight:
        fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)
    else:
        FigureCanvasAgg(fig).print_png(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def monthly_volumes(monthly: pd.DataFrame) -> str:
    """Applications per month (mature and immature) with the confirmed-mule rate on a second axis.

    ``monthly`` is the run's ``monthly.csv``: index month, columns applications, mature, label_rate.
    """
    with _figure(9.5, 3.2) as (fig, (ax,)):
        x = np.arange(len(monthly))
        mature = monthly["mature"].to_numpy()
        immature = monthly["applications"].to_numpy() - mature
        ax.bar(x, mature, color="#9fb3c8", label="mature (outcome window closed)")
        ax.bar(
            x,
            immature,
            bottom=mature,
            color="#e4e7eb",
            hatch="//",
            edgecolor="#bcccdc",
            label="immature (excluded from training)",
        )
        ax.set_ylabel("applications")
        ax.set_xticks(x, monthly.index, rotation=45, ha="right")
        ax.grid(axis="x", visible=False)
        rate = ax.twinx()
        rate.plot(x, 100 * monthly["label_rate"], color=RISK, marker="o", lw=1.8, label="confirmed mules (%)")
        rate.set_ylabel("confirmed mule rate (%)", color=RISK)
        rate.grid(False)
        rate.spines["right"].set_visible(True)
        rate.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", ncols=3, bbox_to_anchor=(0, 1.18))
        ax.set_title("Applications and confirmed-mule rate by month of application", pad=28)
        return to_data_uri(fig)


def roc_and_pr(y: np.ndarray, score: np.ndarray, roc_auc: float, pr_auc: float) -> str:
    """ROC and precision-recall curves of the out-of-time test months, side by side."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    precision, recall, _ = precision_recall_curve(y, score)
    with _figure(9.5, 3.6, ncols=2) as (fig, (roc, pr)):
        roc.plot(fpr, tpr, color=ACCENT, lw=2, label=f"model (AUC {roc_auc:.3f})")
        roc.plot([0, 1], [0, 1], color=MUTED, ls="--", lw=1, label="chance")
        roc.axvline(0.05, color=MUTED, lw=0.8, ls=":")
        roc.text(0.055, 0.05, "FPR 5%", color=MUTED)
        roc.set(
            xlabel="false-positive rate",
            ylabel="recall (true-positive rate)",
            title="ROC",
            xlim=(0, 1),
            ylim=(0, 1.01),
        )
        roc.legend(loc="lower right")
        base = float(np.mean(y))
        pr.plot(recall, precision, color=ACCENT, lw=2, label=f"model (AP {pr_auc:.3f})")
        pr.axhline(base, color=MUTED, ls="--", lw=1, label=f"prevalence {base:.2%}")
        pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
        pr.legend(loc="upper right")
        return to_data_uri(fig)


def calibration(table: pd.DataFrame, title: str = "Calibration on the test months") -> str:
    """Reliability diagram on log axes: mean score against observed mule rate per score bin.

    ``table`` has columns predicted, observed, n: one row per bin, as
    :func:`duanka.training.monitoring.calibration_bins` gives them.
    """
    with _figure(5.2, 4.2) as (fig, (ax,)):
        lo = max(1e-5, float(min(table["predicted"].min(), table["observed"][table["observed"] > 0].min())))
        ax.plot([lo, 1], [lo, 1], color=MUTED, ls="--", lw=1, label="perfect calibration")
        sizes = 20 + 180 * table["n"] / table["n"].max()
        shown = table["observed"].clip(lower=lo / 2)
        ax.scatter(
            table["predicted"],
            shown,
            s=sizes,
            color=ACCENT,
            alpha=0.8,
            edgecolor="white",
            label="score bin (size = rows)",
            zorder=3,
        )
        ax.plot(table["predicted"], shown, color=ACCENT, lw=1, alpha=0.6)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="mean calibrated score",
            ylabel="observed mule rate",
            title=title,
        )
        ax.legend(loc="upper left")
        return to_data_uri(fig)


def score_distributions(y: np.ndarray, score: np.ndarray, thresholds: Mapping[str, float]) -> str:
    """Score histograms of mules and legitimate applicants (log score axis) with the band cut-offs."""
    with _figure(9.5, 3.2) as (fig, (ax,)):
        logs = np.log10(np.clip(score, 1e-6, 1))
        bins = np.linspace(logs.min(), 0, 50)
        ax.hist(logs[y == 0], bins=bins, density=True, color=SAFE, alpha=0.45, label="legitimate")
        ax.hist(logs[y == 1], bins=bins, density=True, color=RISK, alpha=0.6, label="confirmed mule")
        for band, cut in thresholds.items():
            ax.axvline(np.log10(cut), color=BAND_COLOURS[band], lw=1.5, ls="--")
            ax.text(
                np.log10(cut),
                ax.get_ylim()[1] * 0.95,
                f" {band}",
                color=BAND_COLOURS[band],
                va="top",
                fontweight="bold",
            )
        ticks = np.arange(np.floor(logs.min()), 1)
        ax.set_xticks(ticks, [f"{10**t:g}" for t in ticks])
        ax.set(
            xlabel="calibrated score (log scale)",
            ylabel="density",
            title="Score distribution by outcome, test months",
        )
        ax.legend(loc="upper left")
        return to_data_uri(fig)


def shap_explanation(
    contrib: np.ndarray,
    X: np.ndarray,
    names: Sequence[str],
    display: np.ndarray | None = None,
) -> shap.Explanation:
    """A :class:`shap.Explanation` of contributions LightGBM has already computed.

    ``shap.TreeExplainer`` on a LightGBM booster would only call the same
    ``pred_contrib`` again (the request path's), so the report wraps the matrix it
    has rather than computing it twice.

    Parameters
    ----------
    contrib : numpy.ndarray
        ``booster.predict(X, pred_contrib=True)``: one column per feature, the base value last.
    X : numpy.ndarray
        The rows explained, columns in ``names`` order.
    names : sequence of str
        The model's feature names.
    display : numpy.ndarray, optional
        The values as a reader should see them (text, same shape as ``X``); waterfalls print
        them beside the feature names.

    Returns
    -------
    shap.Explanation
        ``values`` the contribution columns, ``base_values`` the last column, ``data`` ``X``:
        raw-score (log-odds) space, so each row's values and base value add up to its margin.

    Raises
    ------
    ValueError
        ``contrib`` is not one column per feature of ``X`` plus the base value.
    """
    shap = _shap()
    contrib, X = np.atleast_2d(contrib), np.atleast_2d(np.asarray(X, dtype=float))
    if contrib.shape != (X.shape[0], X.shape[1] + 1) or X.shape[1] != len(names):
        raise ValueError(
            f"contributions {contrib.shape} are not rows {X.shape} of {len(names)} features"
            " plus the base value"
        )
    return shap.Explanation(
        values=contrib[:, :-1],
        base_values=contrib[:, -1],
        data=X,
        display_data=display,
        feature_names=list(names),
    )


def shap_beeswarm(explanation: shap.Explanation, max_display: int) -> str:
    """shap's beeswarm of a sample: one row of dots per feature, most important first.

    Parameters
    ----------
    explanation : shap.Explanation
        The sample, as :func:`shap_explanation` builds it.
    max_display : int
        Rows drawn; the last sums every remaining feature.

    Returns
    -------
    str
        The figure as a PNG data URI.
    """
    shap = _shap()
    with _shap_figure(9.5, 0.36 * max_display + 1.6) as fig:
        ax = fig.add_subplot()
        shap.plots.beeswarm(
            explanation,
            max_display=max_display,
            ax=ax,
            plot_size=None,  # the figure is sized above; shap refuses a size with an axis
            s=10,
            color_bar_label="feature value (grey = none)",
            show=False,
        )
        ax.set_xlabel(f"SHAP value: {SHAP_AXIS}", fontsize=11)
        ax.set_title(
            "What drives the score: TreeSHAP on a sample of test applications", loc="left", fontsize=11
        )
        return to_data_uri(fig, tight=True)


def shap_waterfall(explanation: shap.Explanation, title: str, max_display: int = 10) -> str:
    """shap's waterfall of one application: from the base value to its margin, feature by feature.

    Parameters
    ----------
    explanation : shap.Explanation
        One row of :func:`shap_explanation`, best with ``display`` text.
    title : str
        Printed above the plot; it must name no applicant or application.
    max_display : int
        Bars drawn; the last sums every remaining feature.

    Returns
    -------
    str
        The figure as a PNG data URI.
    """
    shap = _shap()
    with _shap_figure(8, 0.5 * max_display + 1.5) as fig:
        # the waterfall takes no axes: it draws on pyplot's current figure, which is ``fig``
        shap.plots.waterfall(explanation, max_display=max_display, show=False)
        main = fig.axes[0]  # shap marks E[f(X)] below it and f(x) above it, on twin axes
        main.set_xlabel(
            "raw score (log-odds): the base value E[f(X)] plus each feature's contribution"
            " (red raises risk) is the margin f(x)",
            fontsize=10,
            labelpad=26,  # below shap's E[f(X)] mark, which sits where a label would
        )
        fig.suptitle(title, x=0.02, ha="left", fontsize=11, fontweight="bold")
        return to_data_uri(fig, tight=True)


def shap_dependence(explanation: shap.Explanation, features: Sequence[int]) -> str:
    """shap's dependence scatter of the given features, one panel each.

    Value on x (shap jitters features with few values), contribution on y; rows without
    the feature's entity are the ticks on the left edge, summarised top right.

    Parameters
    ----------
    explanation : shap.Explanation
        The sample, as :func:`shap_explanation` builds it.
    features : sequence of int
        Positions of the features to draw, in the explanation's feature order.

    Returns
    -------
    str
        The figure as a PNG data URI.
    """
    shap = _shap()
    with _shap_figure(9.5, 3.4) as fig:
        axes = np.atleast_1d(fig.subplots(1, len(features)))
        for ax, i in zip(axes, features, strict=True):
            column = explanation[:, i]
            shap.plots.scatter(column, ax=ax, dot_size=8, alpha=0.5, show=False)
            missing = np.isnan(column.data)
            if missing.any():
                ax.text(
                    0.98,
                    0.97,
                    f"none: {missing.mean():.0%} of rows, mean {column.values[missing].mean():+.2f}",
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    color=MUTED,
                    fontsize=8,
                )
            ax.set_title(column.feature_names, loc="left", fontsize=10)
            ax.set_xlabel("feature value", fontsize=9)
            ax.set_ylabel("")
            ax.tick_params(labelsize=9)
        axes[0].set_ylabel("SHAP value (log-odds)", fontsize=9)
        return to_data_uri(fig, tight=True)


def reason_frequency(shares: pd.Series) -> str:
    """Share of alerts on which each reason code is among the shown reasons."""
    shares = shares.sort_values()
    with _figure(9.5, 0.3 * len(shares) + 1.0) as (fig, (ax,)):
        ax.barh(shares.index, 100 * shares.to_numpy(), color=RISK, alpha=0.8)
        for y, value in enumerate(shares.to_numpy()):
            ax.text(100 * value + 0.5, y, f"{value:.0%}", va="center", color=INK)
        ax.grid(axis="y", visible=False)
        ax.set(
            xlabel="% of alerts (band high or critical) showing this reason",
            xlim=(0, 105),
            title="Reason codes shown to branch staff on alerts, test months",
        )
        return to_data_uri(fig)


def stability(table: pd.DataFrame, columns: list[str]) -> str:
    """PSI of the score and CSI of the given features by month, against the training months.

    ``table`` has a ``month`` column and one column per index in ``columns``.
    """
    with _figure(9.5, 3.4) as (fig, (ax,)):
        x = np.arange(len(table))
        ax.axhspan(PSI_WATCH, PSI_ACT, color="#fef3c7", zorder=0)
        ax.axhspan(PSI_ACT, max(0.3, float(table[columns].max().max()) * 1.1), color="#fee2e2", zorder=0)
        for i, column in enumerate(columns):
            style = {"color": INK, "lw": 2.4, "marker": "o"} if i == 0 else {"lw": 1.2, "alpha": 0.8}
            ax.plot(x, table[column], label=column, **style)
        ax.text(x[-1], PSI_WATCH, f"{PSI_WATCH:.2f} watch ", ha="right", va="bottom", color="#b45309")
        ax.text(x[-1], PSI_ACT, f"{PSI_ACT:.2f} act ", ha="right", va="bottom", color="#b91c1c")
        ax.set_xticks(x, table["month"], rotation=45, ha="right")
        ax.set(
            ylabel="population stability index",
            ylim=(0, None),
            title="Drift against the training months (PSI of the score, CSI of top features)",
        )
        ax.legend(loc="upper left", ncols=3, fontsize=8)
        return to_data_uri(fig)


def fairness(table: pd.DataFrame) -> str:
    """False-positive-rate ratio of each group to the lowest group of its dimension."""
    shown = table.dropna(subset=["fpr_ratio"]).iloc[::-1]
    labels = [f"{d}: {g}" for d, g in zip(shown["dimension"], shown["group"], strict=True)]
    with _figure(9.5, 0.28 * len(shown) + 1.2) as (fig, (ax,)):
        colours = [RISK if r > 1.25 else ACCENT for r in shown["fpr_ratio"]]
        ax.barh(labels, shown["fpr_ratio"], color=colours, alpha=0.85)
        ax.axvline(1, color=MUTED, lw=1)
        ax.axvline(1.25, color=RISK, lw=1, ls="--")
        ax.text(1.25, 1.0, " 1.25", color=RISK, va="bottom", transform=ax.get_xaxis_transform())
        ax.grid(axis="y", visible=False)
        ax.set(
            xlabel="false-positive rate / lowest group's false-positive rate",
            title="Who bears the false alerts (predictive equality, test months)",
        )
        return to_data_uri(fig)
