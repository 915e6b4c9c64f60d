"""Excel workbooks of the tables people open: identifiers as text, Chinese intact, a sheet each.

A CSV opened in Excel turns an 18-digit application or ID number into ``2.02507E+17`` and reads
UTF-8 as the local code page; an ``.xlsx`` written here keeps every text column as text (Excel's
own type for it, so nothing is re-read as a number), timestamps as Beijing time, and refuses to
turn a value into a formula or a link.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from duanka.data.config import SHANGHAI

# A value starting with "=" stays text (no formula injection); a URL stays text (no link).
_CELL_OPTIONS = {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
_MAX_WIDTH = 60


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as Excel holds it: aware timestamps as Beijing-time text, text as text."""
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            local = column.dt.tz_convert(SHANGHAI)
            out[name] = local.dt.strftime("%Y-%m-%d %H:%M:%S+08:00").where(column.notna(), None)
        elif column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            out[name] = (
                column.astype(object)
                .where(column.notna(), None)
                .map(lambda v: v if v is None or isinstance(v, str) else str(v))
            )
    return out


def write_workbook(sheets: Mapping[str, pd.DataFrame], out: Path) -> Path:
    """Write each frame to its own sheet of the ``.xlsx`` file ``out``; returns ``out``.

    Parameters
    ----------
    sheets : mapping
        Sheet name (at most 31 characters, Excel's limit) -> table, in the order to show them.
    out : pathlib.Path
        The workbook; its suffix must be ``.xlsx``.

    Raises
    ------
    ValueError
        Another suffix, or a sheet name Excel would refuse.
    """
    out = Path(out)
    if out.suffix.lower() != ".xlsx":
        raise ValueError(f"{out}: an Excel workbook is written as .xlsx")
    for name in sheets:
        if not 0 < len(name) <= 31 or any(c in name for c in "[]:*?/\\"):
            raise ValueError(f"{name!r} is not a sheet name Excel accepts")
    out.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(out, engine="xlsxwriter", engine_kwargs={"options": _CELL_OPTIONS}) as writer:
        for name, frame in sheets.items():
            cells = _cells(frame)
            cells.to_excel(writer, sheet_name=name, index=False)
            sheet = writer.sheets[name]
            sheet.freeze_panes(1, 0)  # the header stays in view
            for i, column in enumerate(cells.columns):
                longest = cells[column].astype(str).str.len().max() if len(cells) else 0
                if pd.isna(longest):  # a column with no value at all (pandas' str dtype keeps NaN)
                    longest = 0
                sheet.set_column(i, i, min(_MAX_WIDTH, max(len(str(column)), int(longest)) + 2))
    return out
