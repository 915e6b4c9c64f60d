"""Reading the decision record for monitoring: read-only, by ``seq``, never a write.

The record (:mod:`duanka.serving.audit`) is append-only and hash-chained; the monitoring opens it
with a read-only URI connection, so it can never take the writer's lock, create a file or
change a row. Decisions are read in ``seq`` ranges after a watermark, each joined to its stored
answer for the model feature vector the model scored (``responses.response``'s ``features``)
and, for the service's decisions, the prepared application (``responses.event``). Replays are
left out: they repeat an earlier answer, and counting them would count an application twice.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from duanka.serving.audit import REFERRED_WHERE

DISPOSED = "case_disposed"  # duanka.serving.review.cases.DISPOSED, without importing the review pages
CHUNK_ROWS = 20_000
# What the monitoring reads of the prepared application the service stored with its answer, by
# SQLite's JSON functions (no Python parse of a million events): whether there is one, and the
# fields the fairness groups need.
EVENT_COLUMNS = ("has_event", "home_province", "branch_province", "gender", "event_channel")
_IDS_JSON = "SELECT value FROM json_each(?)"


@dataclass(frozen=True)
class DecisionChunk:
    """Consecutive decisions of the record, replays left out, with what their answers kept.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per decision: ``seq``, ``application_id``, ``at`` (``applied_at``, else
        ``decided_at``), ``branch_id``, ``score``, ``band``, ``rule``, ``booster_sha256``,
        ``model_version``, ``reason_codes``, then :data:`EVENT_COLUMNS`: ``has_event`` (False
        for a batch decision, which stores no application) and the application's
        ``home_province``, ``branch_province``, ``gender`` and ``event_channel``.
    X : numpy.ndarray
        The model feature vector of each decision, columns as the reader's ``features``; NaN
        where the answer held none.
    last_seq : int
        The last ``seq`` of the range read (replays included): the next watermark.
    """

    frame: pd.DataFrame
    X: np.ndarray
    last_seq: int


def _features(texts: Sequence[str | None], width: int) -> np.ndarray:
    """The feature vectors of ``json_extract``'s arrays (``[0.5,null,...]``), as one float matrix.

    One parse of the whole chunk's numbers: a row per ``json.loads`` costs twice as much on a
    cold read of a million decisions. A chunk whose numbers do not come out whole (an answer
    without features) is parsed row by row instead.
    """
    n = len(texts)
    if n == 0:
        return np.empty((0, width))
    if all(t is not None for t in texts):
        joined = ",".join(t[1:-1] for t in texts).replace("null", "nan")  # type: ignore[index]
        with warnings.catch_warnings():
            # numpy warns, rather than raises, on text it cannot read to its end: parse row by row
            warnings.simplefilter("error", DeprecationWarning)
            try:
                flat = np.fromstring(joined, dtype=float, sep=",") if joined else np.empty(0)
            except (DeprecationWarning, ValueError):
                flat = np.empty(0)
        if flat.size == n * width:
            return flat.reshape(n, width)
    out = np.full((n, width), np.nan)
    for i, text in enumerate(texts):
        if text is not None:
            out[i] = np.array(json.loads(text), dtype=float)
    return out


class DecisionRecord(AbstractContextManager["DecisionRecord"]):
    """The decision record at ``path``, opened read-only.

    Parameters
    ----------
    path : Path
        ``decisions.db`` (:class:`duanka.serving.state.ServingPaths`).
    features : sequence of str
        The model features to read from each answer, in this order.

    Raises
    ------
    sqlite3.OperationalError
        No record at ``path``.
    """

    def __init__(self, path: Path, features: Sequence[str]) -> None:
        self.path = Path(path)
        self.features = tuple(features)
        self._con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        paths = ", ".join(f"'$.features.{name}'" for name in self.features)
        # json_extract with several paths parses an answer once and returns one JSON array (with
        # one path it returns the bare value: wrapped, so that every row reads as an array)
        vector = f"json_extract(r.response, {paths})"
        if len(self.features) == 1:
            vector = f"json_array({vector})"
        self._select = (
            "SELECT d.seq, d.application_id, COALESCE(d.applied_at, d.decided_at), d.branch_id, d.score, "
            "d.band, d.rule, d.booster_sha256, d.model_version, d.reason_codes, "
            f"{vector}, r.event IS NOT NULL, json_extract(r.event, '$.home_province'), "
            "json_extract(r.event, '$.branch_province'), json_extract(r.event, '$.gender'), "
            "json_extract(r.event, '$.channel') "
            "FROM decisions d LEFT JOIN responses r ON r.application_id = d.application_id "
            "WHERE d.seq > ? AND d.seq <= ? AND d.replayed = 0 ORDER BY d.seq"
        )

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def head(self) -> int:
        """The last ``seq`` of the record (0 for none)."""
        return int(self._con.execute("SELECT COALESCE(MAX(seq), 0) FROM decisions").fetchone()[0])

    def identity(self) -> str:
        """The chain value of the record's first decision: another record at the same path differs."""
        row = self._con.execute("SELECT chain FROM decisions ORDER BY seq LIMIT 1").fetchone()
        return "" if row is None else str(row[0])

    def models_after(self, seq: int) -> list[tuple[str, str]]:
        """``(booster_sha256, model_version)`` of the models that decided after ``seq``."""
        return [
            (str(b), str(v))
            for b, v in self._con.execute(
                "SELECT DISTINCT booster_sha256, model_version FROM decisions WHERE seq > ?", (seq,)
            )
        ]

    def chunks(self, after: int, through: int, size: int = CHUNK_ROWS) -> Iterator[DecisionChunk]:
        """The decisions of ``seq`` in ``(after, through]``, ``size`` seqs at a time."""
        columns = [
            "seq",
            "application_id",
            "at",
            "branch_id",
            "score",
            "band",
            "rule",
            "booster_sha256",
            "model_version",
            "reason_codes",
        ]
        for lo in range(after, through, size):
            hi = min(lo + size, through)
            rows = self._con.execute(self._select, (lo, hi)).fetchall()
            frame = pd.DataFrame([(*r[:10], *r[11:]) for r in rows], columns=columns + list(EVENT_COLUMNS))
            frame["has_event"] = frame["has_event"].fillna(0).astype(bool)
            yield DecisionChunk(frame, _features([r[10] for r in rows], len(self.features)), hi)

    def referred(self) -> pd.DataFrame:
        """The referred decisions (critical, high, blocked; from the case queue's partial index).

        Returns
        -------
        pandas.DataFrame
            ``application_id``, ``branch_id``, ``decided_at``, ``band``, ``rule``.
        """
        return pd.read_sql_query(
            "SELECT application_id, branch_id, decided_at, band, rule FROM decisions "
            f"WHERE {REFERRED_WHERE} ORDER BY seq",
            self._con,
        )

    def dispositions(self) -> pd.DataFrame:
        """Every ``case_disposed`` event, oldest first (the ``events_kind`` index).

        Returns
        -------
        pandas.DataFrame
            ``at``, ``application_id``, ``status``, ``ring_of``; the reviewer's note is not read.
        """
        rows = []
        for at, detail in self._con.execute(
            "SELECT at, detail FROM events WHERE kind = ? ORDER BY seq", (DISPOSED,)
        ):
            found = json.loads(detail)
            rows.append((at, found.get("application_id"), found.get("status"), found.get("ring_of")))
        return pd.DataFrame(rows, columns=["at", "application_id", "status", "ring_of"])

    def events_of(self, application_ids: Sequence[str]) -> dict[str, dict]:
        """The prepared applications the service stored with its answers to ``application_ids``."""
        found = {}
        for application_id, event in self._con.execute(
            f"SELECT application_id, event FROM responses WHERE application_id IN ({_IDS_JSON}) "
            "AND event IS NOT NULL",
            (json.dumps(list(application_ids)),),
        ):
            found[str(application_id)] = json.loads(event)
        return found
