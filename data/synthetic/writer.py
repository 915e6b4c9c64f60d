"""CSV files written a month at a time: UTF-8, one header row, ``true``/``false``,
empty cells for nulls, no quoting (no generated value holds a comma, quote or
line break; Arrow refuses to write one that does)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.csv as pacsv

_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="none")


class CsvFile:
    """A CSV file open for appending tables with the given columns; a context manager."""

    def __init__(self, path: Path, names: Sequence[str]) -> None:
        self._names = list(names)
        self._sink = pa.OSFile(str(path), "wb")
        # Arrow quotes header names whatever the quoting style: write the header here.
        self._sink.write((",".join(self._names) + "\n").encode("utf-8"))
        self._writer: pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        """Append ``table``'s rows; its columns must be the file's, in order."""
        if table.column_names != self._names:
            raise ValueError(f"columns {table.column_names} do not match {self._names}")
        if self._writer is None:
            self._writer = pacsv.CSVWriter(self._sink, table.schema, write_options=_OPTIONS)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._sink.close()

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
