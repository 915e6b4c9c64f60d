"""Options several verbs share, with their help texts, and the parsing of dates and instants."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from duanka.data.config import SHANGHAI
from duanka.data.reader import Encoding
from duanka.training.calibration import CalibrationKind
from duanka.training.labels import LabelPolicy

# Help is plain text: rich's markup would read "[default: data/store]" as a tag and drop it.
PLAIN_HELP = {"rich_markup_mode": None}
EXCEL_HELP = (
    "Write an Excel workbook (.xlsx, the --out name with that suffix): identifiers stay text, "
    "Chinese stays readable, one sheet per table."
)

DATA_DEFAULT = "[default: $DUANKA_DATA_DIR, else data/store]"
DataOption = Annotated[Path | None, typer.Option(help=f"Event store folder {DATA_DEFAULT}.")]
ServiceDataOption = Annotated[
    Path | None, typer.Option(help=f"Event store folder the service runs on {DATA_DEFAULT}.")
]
ModelOption = Annotated[
    str | None,
    typer.Option(help="Registered model URI [default: models:/duanka@champion, else @challenger]."),
]
RegisteredModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="The registered model whose aliases move: its name or a models:/ URI (models:/duanka).",
    ),
]
ExcelOption = Annotated[bool, typer.Option(help=EXCEL_HELP)]
MaxQuarantineShareOption = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Exit 1 when a file has more of its rows rejected (quarantined) than this; what passed "
        "is still stored or scored.",
    ),
]


def _encoding(name: str) -> Encoding:
    try:
        return Encoding.named(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


EncodingOption = Annotated[
    Encoding,
    typer.Option(
        parser=_encoding,
        metavar="ENCODING",
        help="Of CSV files: utf-8 (a byte-order mark is skipped) or gb18030, which also reads GBK and "
        "GB2312 (Excel on a Chinese Windows); any case, utf8 and utf-8-sig too.",
    ),
]
CalibrationOption = Annotated[CalibrationKind, typer.Option(help="How margins become probabilities.")]
LabelPolicyOption = Annotated[
    LabelPolicy,
    typer.Option(
        help="Rows and labels of the shipped refit: mature (outcome window closed), delay-weighted "
        "(every row; an unconfirmed one weighted by the chance its label has arrived), horizon "
        "(a shorter outcome horizon, --horizon-days)."
    ),
]
OutOfProvinceWeightOption = Annotated[
    float,
    typer.Option(
        "--out-of-province-weight",
        min=1.0,
        help="How much a legitimate out-of-province application weighs in the fit against "
        "over-alerting migrants (docs/model.md); 1 turns it off.",
    ),
]
HorizonOption = Annotated[
    int, typer.Option(min=1, help="The outcome horizon of --label-policy horizon, in days.")
]


def parse_instant(value: str) -> pd.Timestamp:
    """``YYYY-MM-DD`` (start of that day, Asia/Shanghai) or a full ISO 8601 timestamp, as UTC."""
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither YYYY-MM-DD nor an ISO 8601 timestamp") from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(SHANGHAI)
    return stamp.tz_convert("UTC")


def parse_date(value: str) -> date:
    """``YYYY-MM-DD`` as a date."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None
