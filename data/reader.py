"""Reading contract files (CSV or Parquet) into strings, exactly as written.

Nothing is typed here: every contract column comes back as ``str`` or ``None``,
so that ``007`` keeps its zeros, ``X`` stays a check character and ``True`` is
judged by the validator rather than by a CSV sniffer. Typed Parquet columns are
written out as canonical strings for the same reason: one validation path then
serves both formats.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from duanka.data.contract import Table

_CONTRACT_DOC = "docs/contract.md"
# Rows per slice of :func:`iter_raw`: a slice becomes Python strings, so this bounds memory.
CHUNK_ROWS = 250_000


class UnusableFile(Exception):
    """A file that cannot be read as a contract table at all; no row of it is used.

    The message names the file, says what is wrong and what to fix, and never
    quotes the file's contents (they may be personal information).
    """


@dataclass(frozen=True)
class RawTable:
    """A contract table as read, before any validation.

    Attributes
    ----------
    frame : pandas.DataFrame
        Every contract column of the table, object dtype holding ``str`` or ``None``
        (an empty cell is ``None``), then ``row``: the 1-based data row number
        (the first row after the header is 1).
    extra_columns : tuple of str
        Columns of the file that the contract does not name; they are ignored.
    source : str
        The file's name, without its folder.
    file_rows : int
        Data rows in the whole file (a slice of :func:`iter_raw` is part of them).
    malformed : pandas.DataFrame
        CSV records with the wrong number of fields, which are not in ``frame``: ``row``,
        ``application_id`` (None: which field holds it is unknown), ``column`` (``*``, the
        whole row), ``reason`` (their width and line, never their contents). The first slice
        of :func:`iter_raw` carries all of them.
    """

    frame: pd.DataFrame
    extra_columns: tuple[str, ...]
    source: str
    file_rows: int = 0
    malformed: pd.DataFrame = field(default_factory=lambda: _malformed_lines([], 0))

    @property
    def rows_read(self) -> int:
        """Data rows this slice stands for: those read, and the records left out for their width."""
        return len(self.frame) + len(self.malformed)


class Encoding(StrEnum):
    """Text encodings a CSV export may come in: UTF-8 (a byte-order mark is skipped), or
    GB18030, what Excel writes on a Chinese Windows (a superset of GBK and GB2312)."""

    UTF8 = "utf-8"
    GB18030 = "gb18030"

    @classmethod
    def named(cls, name: str) -> Encoding:
        """The encoding ``name`` means, as people type it: any case, ``utf8``, ``utf-8-sig``,
        and GBK, GB2312 and CP936, which GB18030 reads because it is their superset.

        Raises
        ------
        ValueError
            If ``name`` is none of :data:`ENCODING_NAMES`, naming those that are.
        """
        key = name.strip().lower().replace("_", "-")
        if key in ENCODING_NAMES:
            return ENCODING_NAMES[key]
        known = ", ".join(ENCODING_NAMES)
        raise ValueError(f"unknown encoding {name!r}; known (any case): {known}")


ENCODING_NAMES: dict[str, Encoding] = {
    "utf-8": Encoding.UTF8,
    "utf8": Encoding.UTF8,
    "utf-8-sig": Encoding.UTF8,  # the byte-order mark is skipped either way
    "gb18030": Encoding.GB18030,
    "gbk": Encoding.GB18030,
    "gb2312": Encoding.GB18030,
    "cp936": Encoding.GB18030,
}
"""Every name ``--encoding`` takes, lower case, and the encoding it reads."""


def read_raw(path: Path, table: Table, encoding: Encoding = Encoding.UTF8) -> RawTable:
    """Read a CSV (UTF-8 or ``encoding``, header row) or Parquet file as strings.

    A contract column that is nullable and absent from the file altogether is
    read as all-null: a bank that never records, say, ``escort_id`` need not
    invent the column. A non-nullable column that is absent makes the file
    unusable.

    Parameters
    ----------
    path : pathlib.Path
        A ``.csv`` or ``.parquet`` file.
    table : data.contract.Table
        The contract table the file holds.
    encoding : Encoding
        Of a CSV file.

    Returns
    -------
    RawTable

    Raises
    ------
    UnusableFile
        Unknown extension, unreadable or non-UTF-8 file, a CSV value that never ends (an
        unclosed quote: the rows after it cannot be told apart), a Parquet column of a type
        that has no string form, or missing required columns. A CSV record with the wrong
        number of fields is not a reason: it goes to ``malformed`` on its own.
    """
    path = Path(path)
    parsed = _read_arrow(path, encoding)
    raw = _contract_view(parsed.data, table, path.name, parsed.kept_rows)
    return replace(raw, file_rows=parsed.file_rows, malformed=parsed.malformed)


def iter_raw(
    path: Path, table: Table, chunk_rows: int, encoding: Encoding = Encoding.UTF8
) -> Iterator[RawTable]:
    """:func:`read_raw` in slices of ``chunk_rows``, with file-wide row numbers.

    The file is parsed once into Arrow (compact); only one slice at a time becomes
    Python strings, which is what bounds memory on a ten-million-row export.
    An empty file yields one empty slice, so its header is still checked.
    """
    path = Path(path)
    parsed = _read_arrow(path, encoding)
    data, kept = parsed.data, parsed.kept_rows
    for start in range(0, max(data.num_rows, 1), chunk_rows):
        rows = kept[start : start + chunk_rows]
        part = _contract_view(data.slice(start, chunk_rows), table, path.name, rows)
        malformed = parsed.malformed if start == 0 else _malformed_lines([], 0)
        yield replace(part, file_rows=parsed.file_rows, malformed=malformed)


@dataclass(frozen=True)
class _Parsed:
    """A file's rows as Arrow, and the CSV records left out for their width."""

    data: pa.Table
    ragged: tuple[_RaggedRow, ...] = ()
    expected: int = 0  # fields in the header, where records were left out

    @property
    def file_rows(self) -> int:
        return self.data.num_rows + len(self.ragged)

    @property
    def kept_rows(self) -> np.ndarray:
        """The 1-based data-row number of each row of ``data``."""
        every = np.arange(1, self.file_rows + 1, dtype=np.int64)
        if not self.ragged:
            return every
        return np.setdiff1d(every, [r.data_row for r in self.ragged], assume_unique=True)

    @property
    def malformed(self) -> pd.DataFrame:
        return _malformed_lines(list(self.ragged), self.expected)


def _malformed_lines(ragged: list[_RaggedRow], expected: int) -> pd.DataFrame:
    """The quarantine lines of records with the wrong number of fields (their contents unsaid)."""
    return pd.DataFrame(
        {
            "row": pd.Series([r.data_row for r in ragged], dtype=np.int64),
            "application_id": pd.Series([None] * len(ragged), dtype=object),
            "column": pd.Series([MALFORMED_COLUMN] * len(ragged), dtype=object),
            "reason": pd.Series(
                [
                    f"has {_fields(r.fields or 0)} where the header has {expected} (line {r.line} of "
                    f"the file); {_QUOTE_ADVICE}"
                    for r in ragged
                ],
                dtype=object,
            ),
        }
    )


def _read_arrow(path: Path, encoding: Encoding) -> _Parsed:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, encoding)
    if suffix == ".parquet":
        return _Parsed(_read_parquet(path))
    raise UnusableFile(
        f"{path.name}: unknown file type {suffix or '(no extension)'!r}; "
        "export the table as .csv (UTF-8 with a header row) or .parquet"
    )


def _read_csv(path: Path, encoding: Encoding) -> _Parsed:
    header = _csv_header(path, encoding)
    try:
        return _Parsed(_parse_csv(path, header, [], encoding, use_threads=True))
    except pa.ArrowInvalid as error:
        # pyarrow's own messages quote the offending row: never pass them on
        if "UTF8" in str(error):
            raise _not_utf8(path) from None
        # line numbers are only counted single-threaded: worth a second pass on failure
        malformed: list[pv.InvalidRow] = []
        with contextlib.suppress(pa.ArrowInvalid):
            _parse_csv(path, header, malformed, encoding, use_threads=False)
        if malformed:
            kept = _without_ragged(path, header, encoding)
            if kept is not None:
                return kept
            raise UnusableFile(_ragged_message(path, header, encoding, malformed[0])) from None
        raise UnusableFile(
            f"{path.name}: not a readable CSV file; export it as UTF-8 CSV with a header row"
        ) from None
    except OSError:
        raise _unreadable(path) from None


def _without_ragged(path: Path, header: list[str], encoding: Encoding) -> _Parsed | None:
    """The file without its records of the wrong width, each named by data row and line; None
    where that cannot be done safely: a value that never ends (the rows after it cannot be told
    apart), or Python's ``csv`` and pyarrow disagreeing on which records they are."""
    found = _ragged_rows(path, encoding, len(header), keep_all=True)
    if found is None or not found.complete or not found.first:
        return None
    skipped: list[pv.InvalidRow] = []
    try:
        data = _parse_csv(path, header, skipped, encoding, use_threads=False, skip=True)
    except pa.ArrowInvalid:
        return None
    if len(skipped) != found.count:
        return None
    return _Parsed(data, tuple(found.first), len(header))


def _parse_csv(
    path: Path,
    header: list[str],
    malformed: list[pv.InvalidRow],
    encoding: Encoding,
    *,
    use_threads: bool,
    skip: bool = False,
) -> pa.Table:
    """Every column as strings; a row of the wrong width is recorded, then fails the read
    (``skip``: is left out)."""

    def record(row: pv.InvalidRow) -> str:
        malformed.append(row)
        return "skip" if skip else "error"

    return pv.read_csv(
        path,
        read_options=pv.ReadOptions(
            column_names=header, skip_rows=1, use_threads=use_threads, encoding=str(encoding)
        ),
        parse_options=pv.ParseOptions(newlines_in_values=True, invalid_row_handler=record),
        convert_options=pv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


@dataclass(frozen=True)
class _RaggedRow:
    """A CSV record whose number of fields is not the header's.

    Attributes
    ----------
    data_row : int
        1-based among the records after the header, blank lines not counted: the
        number :class:`RawTable` and the quarantine give the row once it is mended.
    line : int
        Where the record starts, counting the file's physical lines from 1 (the
        header's first line), as an editor shows them.
    fields : int or None
        How many fields the record has; None where a value of it runs on past the
        ``csv`` module's field limit (an unclosed quote), which ends the count.
    """

    data_row: int
    line: int
    fields: int | None


@dataclass(frozen=True)
class _RaggedRows:
    """What one pass over a CSV file found of the wrong width.

    Attributes
    ----------
    count : int
        Ragged records (the last one unending where ``complete`` is false).
    first : list of _RaggedRow
        The first :data:`_SHOWN_RAGGED_ROWS` of them, in file order.
    complete : bool
        False where the pass stopped at a value that does not end: ``count`` is then
        a lower bound.
    """

    count: int
    first: list[_RaggedRow]
    complete: bool


_SHOWN_RAGGED_ROWS = 5
MALFORMED_COLUMN = "*"  # a quarantine line about the whole record
_QUOTE_ADVICE = "quote values that contain commas or line breaks"


def _ragged_message(path: Path, header: list[str], encoding: Encoding, first: pv.InvalidRow) -> str:
    """The refusal of a CSV file with rows of the wrong width: which rows, and how many.

    Parameters
    ----------
    path : pathlib.Path
        The CSV file.
    header : list of str
        Its column names, as :func:`_csv_header` read them.
    encoding : Encoding
        Of the file.
    first : pyarrow.csv.InvalidRow
        The first row pyarrow refused. Its ``number`` is not used: pyarrow documents
        it as a physical line but counts records, and not at all when multithreaded.
        Its width is said only where Python's reading of the file finds no ragged row.

    Returns
    -------
    str
        Never quotes the file's contents.
    """
    expected = len(header)
    found = _ragged_rows(path, encoding, expected)
    if found is None or not found.first:
        return (
            f"{path.name}: a row has {_fields(first.actual_columns)} where the header has "
            f"{first.expected_columns}; {_QUOTE_ADVICE}"
        )
    head = found.first[0]
    message = f"{path.name}: data row {head.data_row} (line {head.line} of the file) " + (
        f"has {_fields(head.fields)} where the header has {expected}"
        if head.fields is not None
        else f"has a value over {csv.field_size_limit():,} characters long (a quote never closed?)"
    )
    if found.count > 1:
        shown = (
            f"data rows {', '.join(str(r.data_row) for r in found.first)} "
            f"(lines {', '.join(str(r.line) for r in found.first)} of the file)"
        )
        total = f"{found.count:,}" if found.complete else f"at least {found.count:,}"
        if found.count > len(found.first):
            message += (
                f"; {total} rows in all have the wrong number of fields, "
                f"the first {len(found.first)} of them {shown}"
            )
        else:
            message += f"; {total} rows in all have the wrong number of fields: {shown}"
    return f"{message}; {_QUOTE_ADVICE}"


def _ragged_rows(
    path: Path, encoding: Encoding, expected: int, *, keep_all: bool = False
) -> _RaggedRows | None:
    """Every record of a CSV file whose width is not ``expected``: how many, and the first few.

    One streaming pass with Python's ``csv`` module, which splits records as pyarrow
    does (quoted commas and line breaks stay in their value; LF, CRLF or CR ends a
    line; a blank line is no record, as pyarrow skips it).

    Parameters
    ----------
    path : pathlib.Path
        The CSV file.
    encoding : Encoding
        Of the file; a UTF-8 byte-order mark is skipped. Undecodable bytes are
        replaced: they cannot hide a comma, a quote or a line break.
    expected : int
        Fields in the header.
    keep_all : bool
        Keep every ragged record in ``first``, not only the first few.

    Returns
    -------
    _RaggedRows or None
        None where the file cannot be opened or has no header record.
    """
    count = 0
    shown: list[_RaggedRow] = []
    data_row = 0

    def found(row: _RaggedRow) -> None:
        nonlocal count
        count += 1
        if keep_all or len(shown) < _SHOWN_RAGGED_ROWS:
            shown.append(row)

    try:
        with path.open(encoding=_text_encoding(encoding), errors="replace", newline="") as handle:
            records = csv.reader(handle)
            if next(records, None) is None:
                return None
            lines_read = records.line_num
            try:
                for fields in records:
                    start, lines_read = lines_read + 1, records.line_num
                    if not fields:
                        continue
                    data_row += 1
                    if len(fields) != expected:
                        found(_RaggedRow(data_row, start, len(fields)))
            except csv.Error:
                # a value past the field limit: an unclosed quote swallowing the rest
                found(_RaggedRow(data_row + 1, lines_read + 1, None))
                return _RaggedRows(count, shown, complete=False)
    except (csv.Error, OSError):
        return None
    return _RaggedRows(count, shown, complete=True)


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"


def _text_encoding(encoding: Encoding) -> str:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark
    return "utf-8-sig" if encoding is Encoding.UTF8 else str(encoding)


def _csv_header(path: Path, encoding: Encoding) -> list[str]:
    try:
        with path.open(encoding=_text_encoding(encoding), newline="") as handle:
            names = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise _not_utf8(path) if encoding is Encoding.UTF8 else _not_encoded(path, encoding) from None
    except OSError:
        raise _unreadable(path) from None
    if not names:
        raise UnusableFile(f"{path.name}: the file is empty; it must start with a header row")
    return [name.strip() for name in names]


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError):
        raise UnusableFile(
            f"{path.name}: not a readable Parquet file; write it again with a Parquet writer "
            "or export the table as UTF-8 CSV"
        ) from None


def _contract_view(data: pa.Table, table: Table, source: str, rows: np.ndarray) -> RawTable:
    present = set(data.column_names)
    missing = [c.name for c in table.columns if c.name not in present and not c.nullable]
    if missing:
        raise UnusableFile(
            f"{source}: missing required column(s) {', '.join(missing)}; the header must name "
            f"every contract column (see {_CONTRACT_DOC})"
        )
    # only now, with the contract's names found, is the first row known to be a header
    # and not data: its cells may then be quoted
    names = data.column_names
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UnusableFile(
            f"{source}: column(s) {', '.join(repeated)} appear more than once in the header; "
            "each column must be named once"
        )
    contract = set(table.names)
    frame = pd.DataFrame(
        {
            c.name: _as_python_strings(data.column(c.name), source, c.name)
            if c.name in present
            else np.full(data.num_rows, None, dtype=object)
            for c in table.columns
        },
        dtype=object,
    )
    frame["row"] = np.asarray(rows, dtype=np.int64)  # data-row numbers, gaps where records were left out
    extra = tuple(name for name in data.column_names if name not in contract)
    return RawTable(frame=frame, extra_columns=extra, source=source)


def _as_python_strings(column: pa.ChunkedArray, source: str, name: str) -> np.ndarray:
    text = _canonical_strings(column, source, name)
    # an empty string in Parquet is as empty as an empty CSV cell
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    return text.to_numpy(zero_copy_only=False).astype(object, copy=False)


def _canonical_strings(column: pa.ChunkedArray, source: str, name: str) -> pa.ChunkedArray:
    """The column's values as the strings a CSV export would hold."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _canonical_strings(column.cast(kind.value_type), source, name)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return column.cast(pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(column, "true", "false")
    if pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return column.cast(pa.string())
    if pa.types.is_floating(kind):
        # repr keeps "12.0" as written, so the validator rejects it rather than
        # reading a float column as whole numbers
        values = column.to_pylist()
        return pa.chunked_array([[None if v is None else repr(v) for v in values]], pa.string())
    if pa.types.is_timestamp(kind):
        layout = "%Y-%m-%dT%H:%M:%S%z" if kind.tz is not None else "%Y-%m-%dT%H:%M:%S"
        return pc.strftime(column, format=layout)
    if pa.types.is_date(kind):
        return pc.strftime(column, format="%Y-%m-%d")
    raise UnusableFile(
        f"{source}: column {name} has Parquet type {kind}, which has no contract reading; "
        "write it as a string column"
    )


def _not_utf8(path: Path) -> UnusableFile:
    return UnusableFile(
        f"{path.name}: the file is not UTF-8 text; a GBK or GB18030 export (Excel on a Chinese "
        "Windows) is read with --encoding gb18030"
    )


def _not_encoded(path: Path, encoding: Encoding) -> UnusableFile:
    return UnusableFile(f"{path.name}: the file is not {encoding} text; check --encoding")


def _unreadable(path: Path) -> UnusableFile:
    return UnusableFile(f"{path.name}: the file cannot be opened; check the path and permissions")
