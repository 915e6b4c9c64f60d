"""Scanning what duanka wrote for raw personal identifiers.

Compressed files (Parquet) are decoded before scanning: a raw value inside a
compressed column would not show up in the file's bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from duanka.data.contract import PERSONAL_COLUMNS


def raw_identifiers(contract_file: Path) -> set[str]:
    """Every personal value in a contract CSV (address at least 6 characters long).

    Any contract table: applications, or a watchlist (whose ``id_number`` is its one personal column).
    """
    frame = pd.read_csv(contract_file, dtype=str, keep_default_na=False)
    values = set()
    for column in PERSONAL_COLUMNS:
        if column in frame.columns:
            values |= {v.strip() for v in frame[column] if len(v.strip()) >= 6}
    return values


def _texts(path: Path) -> Iterable[str]:
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        yield str(table.schema.metadata or "")
        for column in table.columns:
            yield "\n".join(str(v) for v in column.to_pylist())
    else:
        yield path.read_bytes().decode("utf-8", errors="replace")


def leaks(folder: Path, secrets: set[str], extra_texts: Iterable[str] = ()) -> list[str]:
    """Files (or 'output') that contain any of ``secrets``, case-insensitively."""
    lowered = {s.lower() for s in secrets}
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        for text in _texts(path):
            low = text.lower()
            if any(s in low for s in lowered):
                found.append(str(path))
                break
    for text in extra_texts:
        if any(s in text.lower() for s in lowered):
            found.append("output")
    return found
