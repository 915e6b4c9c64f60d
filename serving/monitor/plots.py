"""The monitoring page's figures, each a ``data:image/png`` URI drawn in the model report's style
(:func:`duanka.training.plots.report_figure`, rendered by Agg), so the page is one file.

Drawn for speed as well as looks: fixed margins rather than a constrained layout, and at most a
dozen labelled ticks an axis, since laying out labels is most of what a figure costs. Rows call
these by name through :meth:`duanka.serving.monitor.context.Context.draw`, which draws only
what changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from duanka.training.monitoring import BUDGET_HIGH, BUDGET_LOW, PSI_ACT, PSI_WATCH
from duanka.training.plots import ACCENT, BAND_COLOURS, INK, MUTED, RISK, report_figure, to_data_uri

STATUS_COLOURS = {"ok": ACCENT, "watch": "#d97706", "act": "#b91c1c"}
_SHARE_COLOURS = {**BAND_COLOURS, "alert": RISK}
BRANCHES_SHOWN = 25
MOST_TICKS = 12
WIDTH = 10.5
DPI = 90  # the report's 110 costs a third more time per figure, for a page read on a screen


@contextmanager
def _figure(
    height: float, ncols: int = 1, *, left: float = 0.07, bottom: float = 0.2, top: float = 0.86
) -> Iterator[tuple[Figure, np.ndarray]]:
    with report_figure(WIDTH, height, ncols, layout=None) as (fig, axes):
        fig.set_dpi(DPI)
        fig.subplots_adjust(left=left, right=0.98, bottom=bottom, top=top, wspace=0.3)
        yield fig, axes


def _ticks(ax: object, labels: Sequence[str], *, axis: str = "x", most: int = MOST_TICKS) -> None:
    """At most ``most`` of ``labels`` at integer positions, evenly spread."""
    n = len(labels)
    positions = np.unique(np.linspace(0, max(n - 1, 0), min(n, most)).round().astype(int)) if n else []
    shown = [str(labels[i]) for i in positions]
    if axis == "x":
        ax.set_xticks(positions, shown, rotation=30, ha="right", fontsize=7)  # type: ignore[attr-defined]
    else:
        ax.set_yticks(positions, shown, fontsize=7)  # type: ignore[attr-defined]


def _key(period: str) -> str:
    """``w:2025-06-02`` as ``2025-06-02``, a plain key as itself."""
    return period.partition(":")[2] or period


def band_shares(daily: pd.DataFrame, weekly: pd.DataFrame, shares: Sequence[str]) -> str:
    """Each band's share per day (line) and per week (dots) as a multiple of its budget, on one scale.

    ``daily`` and ``weekly`` are :func:`~duanka.training.monitoring.shares_against_budget` tables with
    ``day`` and ``week`` columns. On one axis as ratios, the three bands read against the same
    bounds: half and double the budget.
    """
    days = sorted(daily["day"].unique())
    position = {d: i for i, d in enumerate(days)}
    with _figure(3.2, left=0.06) as (fig, (ax,)):
        ax.axhspan(BUDGET_LOW, BUDGET_HIGH, color="#f0fdfa", zorder=0)
        ax.axhline(1.0, color=INK, lw=1.1)
        top = BUDGET_HIGH * 1.5
        for share in shares:
            d = daily.loc[daily["share"] == share].sort_values("day")
            w = weekly.loc[weekly["share"] == share]
            colour = _SHARE_COLOURS.get(share, INK)
            ax.plot(d["day"].map(position).to_numpy(), d["ratio"], color=colour, lw=0.8, alpha=0.7)
            # a week's dot on its Thursday, or its first day with decisions
            wx = [position.get(str(np.datetime64(k) + 3), position.get(k, 0)) for k in w["week"]]
            ax.plot(wx, w["ratio"], "o", color=colour, ms=4, label=f"{share} (week: dot)")
            top = max(top, float(d["ratio"].max()) * 1.05 if len(d) else 0.0)
        ax.set_ylim(0, top)
        _ticks(ax, days)
        ax.set(
            ylabel="share / budget",
            title=f"Band shares per day (line) and week (dot) against the budget; shaded: {BUDGET_LOW:g}× to "
            f"{BUDGET_HIGH:g}×",
        )
        ax.legend(loc="upper left", fontsize=7, ncols=3)
        return to_data_uri(fig)


def branch_shares(shares: pd.DataFrame, judged: Sequence[str]) -> str:
    """The branches with the highest lower bounds: each judged share and its interval, as a multiple of
    its budget, budget and double marked."""
    ranked = (
        shares.loc[shares["share"].isin(judged)]
        .assign(top=lambda f: f["low"] / f["budget"])
        .groupby("branch")["top"]
        .max()
        .sort_values(ascending=False, kind="stable")
    )
    branches = list(ranked.index[:BRANCHES_SHOWN])[::-1]
    row = {b: i for i, b in enumerate(branches)}
    height = 0.22 * len(branches) + 1.3
    with _figure(height, left=0.14, bottom=0.55 / height, top=1 - 0.35 / height) as (fig, (ax,)):
        for k, share in enumerate(judged):
            mine = shares.loc[(shares["share"] == share) & shares["branch"].isin(row)]
            y = mine["branch"].map(row).to_numpy() + (k - (len(judged) - 1) / 2) * 0.3
            colours = [STATUS_COLOURS[s] for s in mine["status"]]
            budget = mine["budget"].to_numpy()
            ax.hlines(y, mine["low"] / budget, mine["high"] / budget, colors=colours, lw=2, alpha=0.7)
            ax.scatter(mine["rate"] / budget, y, c=colours, s=16, marker="os"[k % 2], zorder=3, label=share)
        ax.axvline(1.0, color=INK, lw=1.1)
        ax.axvline(BUDGET_HIGH, color=RISK, lw=1, ls="--")
        # a small branch's interval reaches far: the axis stops past the shares and lower bounds
        shown = shares.loc[shares["share"].isin(judged) & shares["branch"].isin(row)]
        reach = max((shown[["rate", "low"]].max(axis=1) / shown["budget"]).max() * 1.25, 4 * BUDGET_HIGH)
        ax.set_xlim(-0.1 * reach / 4, reach)
        n = shares.loc[shares["share"] == judged[0]].set_index("branch")["n"]
        ax.set_yticks(range(len(branches)), [f"{b} (n={n.get(b, 0)})" for b in branches], fontsize=7)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("share / budget over the last 7 days: budget (line), double (dashed)", fontsize=8)
        ax.set_title("Branches with the highest lower bounds: " + ", ".join(judged))
        ax.legend(loc="lower right", fontsize=7)
        return to_data_uri(fig)


def drift(table: pd.DataFrame, title: str) -> str:
    """PSI per period: one line per ``label`` (week, month) of ``period`` and ``value``, watch and act bands.

    Periods are placed by their first day, weeks and months on one axis.
    """
    starts = sorted({_key(p) if len(_key(p)) > 7 else f"{_key(p)}-01" for p in table["period"]})
    position = {s: i for i, s in enumerate(starts)}
    with _figure(3.0) as (fig, (ax,)):
        top = max(0.3, float(table["value"].max()) * 1.1) if len(table) else 0.3
        ax.axhspan(PSI_WATCH, PSI_ACT, color="#fef3c7", zorder=0)
        ax.axhspan(PSI_ACT, top, color="#fee2e2", zorder=0)
        for i, (label, rows) in enumerate(table.groupby("label", sort=False)):
            x = [position[_key(p) if len(_key(p)) > 7 else f"{_key(p)}-01"] for p in rows["period"]]
            style = (
                {"color": INK, "lw": 2.0, "marker": "o", "ms": 3}
                if i == 0
                else {"lw": 1.1, "marker": "s", "ms": 4}
            )
            ax.plot(x, rows["value"], label=label, **style)
        ax.text(
            1.0,
            PSI_WATCH,
            f"{PSI_WATCH:.2f} watch ",
            ha="right",
            va="bottom",
            color="#b45309",
            transform=ax.get_yaxis_transform(),
        )
        ax.text(
            1.0,
            PSI_ACT,
            f"{PSI_ACT:.2f} act ",
            ha="right",
            va="bottom",
            color="#b91c1c",
            transform=ax.get_yaxis_transform(),
        )
        _ticks(ax, starts)
        ax.set(ylabel="PSI", ylim=(0, top), title=title)
        ax.legend(loc="upper left", ncols=4, fontsize=7)
        return to_data_uri(fig)


def heatmap(matrix: pd.DataFrame, title: str, vmax: float) -> str:
    """Rows (features) × columns (periods) coloured by value from 0 to ``vmax``, larger values written in."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("drift", ["#f0fdfa", "#fef3c7", "#fdba74", "#b91c1c"])
    height = 0.2 * len(matrix) + 1.3
    with _figure(height, left=0.27, bottom=0.9 / height, top=1 - 0.35 / height) as (fig, (ax,)):
        values = matrix.to_numpy(dtype=float)
        ax.imshow(values, aspect="auto", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
        _ticks(ax, [_key(c) for c in matrix.columns])
        ax.grid(False)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v) and v >= vmax / 2:
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=6, color=INK)
        # the scale in words rather than a colour bar: a bar is an axes of its own to lay out
        ax.set_title(f"{title} (white 0, dark red {vmax:g} or more)")
        return to_data_uri(fig)


def lines(table: pd.DataFrame, title: str, ylabel: str) -> str:
    """One line per column of ``table``, in percent (index: months)."""
    with _figure(3.0) as (fig, (ax,)):
        x = np.arange(len(table))
        for column in table.columns:
            ax.plot(x, 100 * table[column].to_numpy(dtype=float), marker="o", ms=3, lw=1.3, label=str(column))
        _ticks(ax, [str(i) for i in table.index])
        ax.set(ylabel=ylabel, title=title, ylim=(0, None))
        ax.legend(loc="upper left", ncols=4, fontsize=7)
        return to_data_uri(fig)


def ratios(table: pd.DataFrame, line: float, title: str) -> str:
    """False-positive-rate ratio of each group (``dimension``, ``group``, ``fpr_ratio``) with the line."""
    shown = table.dropna(subset=["fpr_ratio"]).iloc[::-1]
    labels = [f"{d}: {g}" for d, g in zip(shown["dimension"], shown["group"], strict=True)]
    height = 0.24 * len(shown) + 1.2
    with _figure(height, left=0.22, bottom=0.6 / height, top=1 - 0.35 / height) as (fig, (ax,)):
        colours = [RISK if r > line else ACCENT for r in shown["fpr_ratio"]]
        ax.barh(np.arange(len(shown)), shown["fpr_ratio"], color=colours, alpha=0.85)
        ax.set_yticks(np.arange(len(shown)), labels, fontsize=7)
        ax.axvline(1, color=MUTED, lw=1)
        ax.axvline(line, color=RISK, lw=1, ls="--")
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("false-positive rate / lowest group's false-positive rate", fontsize=8)
        ax.set_title(title)
        return to_data_uri(fig)


def against_expected(table: pd.DataFrame, title: str) -> str:
    """Per month and figure (``figure``): the live value with its interval (``value``, ``low``,
    ``high``) and the champion's test interval (``expected_low``, ``expected_high``)."""
    figures = list(dict.fromkeys(table["figure"]))
    with _figure(3.0, max(len(figures), 1), left=0.05, top=0.82) as (fig, axes):
        for ax, name in zip(axes, figures, strict=False):
            rows = table.loc[table["figure"] == name]
            x = np.arange(len(rows))
            ax.bar(
                x,
                100 * (rows["expected_high"] - rows["expected_low"]),
                bottom=100 * rows["expected_low"],
                width=0.7,
                color=ACCENT,
                alpha=0.2,
                label="champion's test interval",
            )
            ax.errorbar(
                x,
                100 * rows["value"],
                yerr=[100 * (rows["value"] - rows["low"]), 100 * (rows["high"] - rows["value"])],
                fmt="o",
                color=INK,
                ms=4,
                capsize=2,
                label="month, 95 % interval",
            )
            _ticks(ax, list(rows["month"]), most=6)
            ax.set_xlim(-0.5, len(rows) - 0.5)
            ax.set(title=name, ylim=(0, 100))
        axes[0].set_ylabel("%")
        axes[0].legend(loc="upper left", fontsize=7)
        fig.suptitle(title, fontsize=10, fontweight="bold", x=0.01, ha="left")
        return to_data_uri(fig)


def stacked(table: pd.DataFrame, title: str, colours: dict[str, str]) -> str:
    """Stacked bars: index on x, one stack per column."""
    with _figure(3.0) as (fig, (ax,)):
        x = np.arange(len(table))
        bottom = np.zeros(len(table))
        for column in table.columns:
            values = table[column].to_numpy(dtype=float)
            ax.bar(x, values, bottom=bottom, color=colours.get(str(column), MUTED), label=str(column))
            bottom += values
        _ticks(ax, [str(i) for i in table.index])
        ax.grid(axis="x", visible=False)
        ax.set_title(title)
        ax.legend(loc="upper left", ncols=5, fontsize=7)
        return to_data_uri(fig)
