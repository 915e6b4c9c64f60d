"""What one ingest run of a contract file did, in counts: the answer of every ingest function."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class IngestReport:
    """What one ingest run did, in counts (no row contents)."""

    table: str
    source: str
    rows_read: int = 0
    stored: int = 0
    already_stored: int = 0
    duplicates_in_file: int = 0
    quarantined_rows: int = 0
    quarantine_lines_new: int = 0
    awaiting_application: int = 0  # labels stored for applications the store does not hold yet
    extra_columns: tuple[str, ...] = ()
    parts: list[Path] = field(default_factory=list)
