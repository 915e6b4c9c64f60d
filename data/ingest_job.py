"""A bank's contract files ingested into the event store in one run: what ``duanka ingest`` does.

:func:`duanka.data.ingest.ingest_file` takes one file; this module orders a run's files (a label is
checked against its stored application, so applications go first) and says how each went.
It prints nothing: the caller shows progress and outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST, Table
from duanka.data.ingest import ingest_file
from duanka.data.ingest_report import IngestReport
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import Encoding
from duanka.data.store import EventStore

RowsDone = Callable[[int, int], None]
"""Told ``(rows done, rows in the file)`` as a file goes through."""

FileProgress = Callable[[Path], AbstractContextManager[RowsDone]]
"""Opened for each file as its ingest starts, closed when the file is stored."""


@dataclass(frozen=True)
class IngestedFile:
    """One file of a run and what its ingest did."""

    path: Path
    report: IngestReport

    @property
    def quarantined_share(self) -> float:
        """The share of the file's rows that went to quarantine (0 for an empty file)."""
        return self.report.quarantined_rows / max(1, self.report.rows_read)


def contract_files(
    applications: Path | None = None, labels: Path | None = None, watchlist: Path | None = None
) -> list[tuple[Path, Table]]:
    """The files given, each with its contract table, in the order they must be ingested.

    Applications come before labels, which are refused when they confirm an application
    not stored or before it applied.
    """
    given = ((applications, APPLICATIONS), (labels, LABELS), (watchlist, WATCHLIST))
    return [(path, table) for path, table in given if path is not None]


def ingest_files(
    files: list[tuple[Path, Table]],
    store: EventStore,
    keys: Pseudonymiser,
    *,
    encoding: Encoding = Encoding.UTF8,
    progress: FileProgress | None = None,
) -> Iterator[IngestedFile]:
    """Ingest ``files`` into ``store`` one after another, yielding each once it is stored.

    A file is read only when the iteration reaches it, so a caller can show each outcome
    before the next file starts, and an unusable file stops the run with the earlier files
    stored.

    Parameters
    ----------
    files : list of (pathlib.Path, data.contract.Table)
        In ingest order (:func:`contract_files`).
    store : data.store.EventStore
        Where the events go; created on the first append.
    keys : data.pseudonym.Pseudonymiser
        The pseudonym secret; it must be the store's.
    encoding : data.reader.Encoding
        Of CSV files.
    progress : callable, optional
        ``progress(path)`` is entered around each file and gives the rows-done callback.

    Raises
    ------
    data.reader.UnusableFile
        A file that cannot be read as its contract table.
    data.store.StoreKeyMismatch
        The store was pseudonymised under another secret.
    """
    for path, table in files:
        if progress is None:
            report = ingest_file(path, table, store, keys, encoding=encoding)
        else:
            with progress(path) as rows_done:
                report = ingest_file(path, table, store, keys, encoding=encoding, progress=rows_done)
        yield IngestedFile(path, report)
