"""How the model report writes numbers, moments and tables: one look across its sections."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
from markupsafe import Markup

from duanka.data.config import SHANGHAI

MISSING = "—"


def _absent(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def percent(x: float | None, digits: int = 1) -> str:
    """``0.0123`` as ``1.2%``; a dash for a missing value."""
    return MISSING if _absent(x) else f"{100 * x:.{digits}f}%"


def number(x: float | None, digits: int = 3) -> str:
    """A number with thousands separators and ``digits`` decimals; a dash for a missing value."""
    return MISSING if _absent(x) else f"{x:,.{digits}f}"


def local_time(stamp: str | None, missing: str) -> str:
    """A logged UTC boundary as the Beijing-time moment staff would name it, else ``missing``."""
    try:
        return pd.Timestamp(stamp).tz_convert(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return missing


def html_table(
    frame: pd.DataFrame,
    formats: dict[str, Callable[[object], str]] | None = None,
    index: bool = False,
    css: str = "grid",
) -> Markup:
    """A DataFrame as an escaped HTML table.

    Parameters
    ----------
    frame : pandas.DataFrame
    formats : dict, optional
        Column name to cell formatter.
    index : bool
        Print the index as the first column.
    css : str
        The table's classes.

    Returns
    -------
    markupsafe.Markup
        Safe to place in the autoescaped template as is: every cell is escaped here.
    """
    html = frame.to_html(
        index=index,
        border=0,
        classes=css,
        na_rep=MISSING,
        escape=True,
        formatters=formats or {},
        justify="left",
    )
    return Markup(html)
