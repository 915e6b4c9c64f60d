"""From one decision back to what made it: the model version, its hashes, its report, the approval.

``duanka audit chain --application-id ID`` prints it. The decision record says which model
version decided (with the booster's and the bundle's SHA-256 as the service verified them) and,
as chained events, who reviewed that version on which report and who promoted it
(:mod:`duanka.training.approval`); the registry says what the version's hashes, report and
latest review are now. Both are read here, the record through a read-only connection; the
comparison of the two is the caller's to print.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow

from duanka.training.approval import FORCED_BY_TAG, PROMOTED, REVIEWED, Review, report_sha256
from duanka.training.bundle import MODEL_NAME


@dataclass(frozen=True)
class RecordedDecision:
    """One row of the record's ``decisions`` table for the application."""

    seq: int
    decided_at: str
    key_id: str
    request_id: str
    model_version: str
    booster_sha256: str
    bundle_sha256: str | None
    band: str
    score: float
    rule: str
    replayed: bool


@dataclass(frozen=True)
class RecordedEvent:
    """A ``model_reviewed`` or ``model_promoted`` event of the record."""

    seq: int
    at: str
    kind: str
    key_id: str | None
    detail: dict


@dataclass(frozen=True)
class RegistryEntry:
    """What the registry holds of a version now (None throughout for a version it lacks)."""

    run_id: str | None
    booster_sha256: str | None
    bundle_sha256: str | None
    report_sha256: str | None
    review: Review | None
    forced_by: str | None


def decisions_of(con: sqlite3.Connection, application_id: str) -> list[RecordedDecision]:
    """Every decision row of ``application_id``, in record order (a replay has its own row)."""
    rows = con.execute(
        "SELECT seq, decided_at, key_id, request_id, model_version, booster_sha256, bundle_sha256, band, "
        "score, rule, replayed FROM decisions WHERE application_id = ? ORDER BY seq",
        (application_id,),
    ).fetchall()
    return [RecordedDecision(*row[:10], bool(row[10])) for row in rows]


def model_events(con: sqlite3.Connection, version: str) -> list[RecordedEvent]:
    """The reviews and promotions of ``version`` the record holds, in record order."""
    rows = con.execute(
        "SELECT seq, at, kind, key_id, detail FROM events WHERE kind IN (?, ?) "
        "AND json_extract(detail, '$.version') = ? ORDER BY seq",
        (REVIEWED, PROMOTED, version),
    ).fetchall()
    return [RecordedEvent(seq, at, kind, key, json.loads(detail)) for seq, at, kind, key, detail in rows]


def before(events: list[RecordedEvent], kind: str, moment: str) -> RecordedEvent | None:
    """The last event of ``kind`` appended at or before ``moment`` (ISO 8601): the one in force then."""
    when = datetime.fromisoformat(moment)
    earlier = [e for e in events if e.kind == kind and datetime.fromisoformat(e.at) <= when]
    return earlier[-1] if earlier else None


def read_record(
    path: Path, application_id: str
) -> tuple[list[RecordedDecision], dict[str, list[RecordedEvent]]]:
    """The application's decisions and, per model version that decided it, that version's events."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        decisions = decisions_of(con, application_id)
        events = {d.model_version: model_events(con, d.model_version) for d in decisions}
    finally:
        con.close()
    return decisions, events


def registry_entry(client: mlflow.MlflowClient, version: str) -> RegistryEntry:
    """The version's hashes, current report and latest review, as the registry holds them now."""
    try:
        registered = client.get_model_version(MODEL_NAME, version)
    except mlflow.exceptions.MlflowException:
        return RegistryEntry(None, None, None, None, None, None)
    tags = registered.tags
    return RegistryEntry(
        registered.run_id,
        tags.get("booster_sha256"),
        tags.get("bundle_sha256"),
        report_sha256(client, registered.run_id),
        Review.from_tags(version, tags),
        tags.get(FORCED_BY_TAG),
    )
