"""Figures of the model report, each returned as a ``data:image/png`` URI.

The report is one self-contained HTML file, so figures travel inside it. They are
drawn on :class:`matplotlib.figure.Figure` with the Agg canvas directly: no pyplot
state, no display, the same picture on a laptop and in CI.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

INK = "#1f2933"
MUTED = "#7b8794"
RISK = "#c2410c"  # mules, alerts, anything that raises risk
SAFE = "#2563eb"  # legitimate applicants
ACCENT = "#0f766e"
BAND_COLOURS = {"medium": "#f59e0b", "high": "#ea580c", "critical": "#b91c1c"}
# Traffic-light thresholds of the PSI convention: below 0.10 stable, above 0.25 act.
PSI_WATCH, PSI_ACT = 0.10, 0.25
FEW_VALUES = 12

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


@contextmanager
def _figure(width: float, height: float, ncols: int = 1) -> Iterator[tuple[Figure, np.ndarray]]:
    with rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, ncols))
        yield fig, axes


def to_data_uri(fig: Figure) -> str:
    """The figure as an embeddable PNG data URI."""
    buffer = io.BytesIO()
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

    ``table`` has columns predicted, observed, n (one row per bin, see ``report.calibration_bins``).
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


def shap_beeswarm(contrib: np.ndarray, X: np.ndarray, names: list[str]) -> str:
    """One row of dots per feature (SHAP value on x), coloured by the feature's value percentile.

    Features arrive already ordered by importance, most important first. Missing values are grey.
    """
    rng = np.random.default_rng(0)
    with _figure(9.5, 0.32 * len(names) + 1.2) as (fig, (ax,)):
        for row in range(len(names)):
            phi, x = contrib[:, row], X[:, row]
            colour = np.full(len(x), np.nan)
            finite = np.isfinite(x)
            if finite.any():
                colour[finite] = pd.Series(x[finite]).rank(pct=True).to_numpy()
            # jitter proportional to local density keeps the swarm readable without a layout solver
            hist, edges = np.histogram(phi, bins=60)
            density = hist[np.clip(np.searchsorted(edges, phi) - 1, 0, len(hist) - 1)] / max(hist.max(), 1)
            y = len(names) - 1 - row + rng.uniform(-0.38, 0.38, len(phi)) * density
            ax.scatter(phi[~finite], y[~finite], s=5, color="#cbd2d9", alpha=0.7, lw=0)
            points = ax.scatter(
                phi[finite],
                y[finite],
                c=colour[finite],
                cmap="coolwarm",
                vmin=0,
                vmax=1,
                s=5,
                alpha=0.8,
                lw=0,
            )
        ax.axvline(0, color=MUTED, lw=0.8)
        ax.set_yticks(np.arange(len(names))[::-1], names)
        ax.grid(axis="y", visible=False)
        ax.set(
            xlabel="SHAP contribution to the margin (log-odds); right of 0 raises risk",
            title="What drives the score: TreeSHAP on a sample of test applications",
        )
        bar = fig.colorbar(points, ax=ax, fraction=0.025, pad=0.01, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value (percentile; grey = none)")
        return to_data_uri(fig)


def dependence(contrib: np.ndarray, X: np.ndarray, names: list[str]) -> str:
    """SHAP dependence of the given features: value on x, contribution on y, one panel each.

    Flags and small counts get horizontal jitter, or their dots would hide each other in a line.
    """
    rng = np.random.default_rng(0)
    with _figure(9.5, 3.0, ncols=len(names)) as (fig, axes):
        for ax, name, phi, x in zip(axes, names, contrib.T, X.T, strict=True):
            finite = np.isfinite(x)
            shown = x[finite]
            if len(np.unique(shown)) <= FEW_VALUES:
                shown = shown + rng.uniform(-0.12, 0.12, len(shown))
            ax.scatter(shown, phi[finite], s=6, color=ACCENT, alpha=0.35, lw=0)
            if (~finite).any():
                ax.text(
                    0.02,
                    0.95,
                    f"none: {(~finite).mean():.0%} of rows, mean {phi[~finite].mean():+.2f}",
                    transform=ax.transAxes,
                    va="top",
                    color=MUTED,
                )
            ax.axhline(0, color=MUTED, lw=0.8)
            ax.set(xlabel=name, title=name)
        axes[0].set_ylabel("SHAP contribution (log-odds)")
        return to_data_uri(fig)


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
        ax.text(x[-1], PSI_WATCH, "0.10 watch ", ha="right", va="bottom", color="#b45309")
        ax.text(x[-1], PSI_ACT, "0.25 act ", ha="right", va="bottom", color="#b91c1c")
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
