"""Each decision row names its application's branch and time (``branch_id``, ``applied_at``), under
the chain; a record written before those columns existed keeps verifying."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from duanka.features.online import OnlineFeatureStore
from duanka.serving.audit import DecisionLog, DecisionRow, export, iso_utc
from duanka.serving.chain import DECISION_COLUMNS, genesis, verify
from duanka.serving.model_source import ModelSource
from duanka.serving.prepare import prepare_applications
from duanka.serving.scorer import Scorer
from tests.conftest import REPLAY_TOLERANCE, replay_clock
from tests.factories import CHAIN_KEY

# the decision columns as they were before branch_id and applied_at, in their order
OLD_COLUMNS = DECISION_COLUMNS[: DECISION_COLUMNS.index("branch_id")]
TYPES = {"score": "REAL", "latency_ms": "REAL", "replayed": "INTEGER"}


def test_the_two_columns_are_appended_at_the_end_of_a_decision_row():
    assert DECISION_COLUMNS[-2:] == ("branch_id", "applied_at")
    assert list(DecisionRow.__dataclass_fields__) == list(DECISION_COLUMNS)


def test_an_application_time_is_written_as_utc_iso_8601_and_a_naive_one_is_refused():
    shanghai = timezone(timedelta(hours=8))
    at = datetime(2025, 3, 1, 10, 30, 5, 250, tzinfo=shanghai)
    assert iso_utc(at) == "2025-03-01T02:30:05.000250+00:00"
    # the service's datetime and the batch's Timestamp of one instant are one text
    assert iso_utc(pd.Timestamp(at)) == iso_utc(at)
    with pytest.raises(ValueError, match="no time zone"):
        iso_utc(datetime(2025, 3, 1, 10, 30))


def _old_row(i: int) -> tuple:
    """A decision row as the code before these columns wrote it (every column up to bundle_sha256)."""
    return (
        f"r{i}",
        f"A{i:04d}",
        "branch-key",
        f"2025-03-01T02:00:{i:02d}.000000+00:00",
        "duanka",
        "3",
        "b" * 64,
        0.25,
        "low",
        "",
        4.2,
        0,
        "",
        f"caller-{i}" if i % 3 == 0 else None,  # written with and without the caller's id
        "c" * 64 if i % 2 == 0 else None,  # and with and without the bundle's hash
    )


def _old_chain(rows: list[tuple]) -> list[str]:
    """The chain values the code before these columns gave ``rows``, computed here from the format it
    documented: HMAC(key, previous | table | position | JSON of the columns), where the last two
    columns (``client_request_id``, ``bundle_sha256``) were covered only when they held a value."""
    values, previous = [], genesis(CHAIN_KEY, "decisions")
    for position, row in enumerate(rows):
        covered = list(row)
        for _ in range(2):
            if covered[-1] is None:
                covered.pop()
        body = json.dumps(covered, ensure_ascii=False, separators=(",", ":"))
        message = b"\x1f".join([previous.encode(), b"decisions", str(position).encode(), body.encode()])
        previous = hmac.new(CHAIN_KEY, message, hashlib.sha256).hexdigest()
        values.append(previous)
    return values


@pytest.fixture
def old_record(tmp_path) -> Path:
    """A chained record whose decisions table was laid out, and chained, before branch_id and applied_at."""
    path = tmp_path / "decisions.db"
    DecisionLog(path, chain_key=CHAIN_KEY).close()
    rows = [_old_row(i) for i in range(12)]
    con = sqlite3.connect(path)
    con.execute("DROP TABLE decisions")
    con.execute(
        "CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        + ", ".join(f"{c} {TYPES.get(c, 'TEXT')}" for c in OLD_COLUMNS)
        + ", chain TEXT NOT NULL DEFAULT '')"
    )
    marks = ", ".join("?" * (len(OLD_COLUMNS) + 1))
    con.executemany(
        f"INSERT INTO decisions ({', '.join(OLD_COLUMNS)}, chain) VALUES ({marks})",
        [(*row, chain) for row, chain in zip(rows, _old_chain(rows), strict=True)],
    )
    con.commit()
    con.close()
    return path


def _verify(path: Path) -> str | None:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return verify(con, CHAIN_KEY).problem
    finally:
        con.close()


def _change(path: Path, statement: str) -> None:
    """Edit a row as someone holding a copy of the file could: the append-only triggers dropped."""
    con = sqlite3.connect(path)
    triggers = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'decisions'"
    ).fetchall()
    for name, _ in triggers:
        con.execute(f"DROP TRIGGER {name}")
    con.execute(statement)
    for _, sql in triggers:
        con.execute(sql)
    con.commit()
    con.close()


def _new_decision(**fields: object) -> DecisionRow:
    return DecisionRow(
        request_id="r-new",
        application_id="A0500",
        key_id="branch-key",
        decided_at="2025-03-02T02:00:00.000000+00:00",
        model_name="duanka",
        model_version="3",
        booster_sha256="b" * 64,
        score=0.5,
        band="high",
        reason_codes="ESC_VELOCITY",
        latency_ms=3.0,
        replayed=False,
        bundle_sha256="c" * 64,
        **fields,  # type: ignore[arg-type]
    )


def test_a_record_from_before_the_columns_verifies_read_only_and_after_open(old_record):
    # audit verify opens the record read-only and adds nothing: the missing columns read as NULL
    assert _verify(old_record) is None
    DecisionLog(old_record, chain_key=CHAIN_KEY).close()
    with sqlite3.connect(old_record) as con:
        columns = [row[1] for row in con.execute("PRAGMA table_info(decisions)")]
        assert columns[-2:] == ["branch_id", "applied_at"]
        assert con.execute("SELECT COUNT(*) FROM decisions WHERE branch_id IS NOT NULL").fetchone() == (0,)
    assert _verify(old_record) is None


def test_a_new_rows_branch_and_time_are_covered_by_the_chain(old_record):
    with DecisionLog(old_record, chain_key=CHAIN_KEY) as log:
        log.record([_new_decision(branch_id="B0101", applied_at="2025-03-02T01:59:58.000000+00:00")])
    assert _verify(old_record) is None
    for statement in (
        "UPDATE decisions SET branch_id = 'B0202' WHERE application_id = 'A0500'",
        "UPDATE decisions SET branch_id = NULL WHERE application_id = 'A0500'",
        "UPDATE decisions SET applied_at = '2025-02-01T00:00:00.000000+00:00' WHERE application_id = 'A0500'",
        "UPDATE decisions SET applied_at = NULL WHERE application_id = 'A0500'",
        # an old row given a branch it never had
        "UPDATE decisions SET branch_id = 'B0101' WHERE application_id = 'A0003'",
    ):
        _change(old_record, statement)
        assert "does not follow" in _verify(old_record), statement
        _change(
            old_record,
            "UPDATE decisions SET branch_id = CASE application_id WHEN 'A0500' THEN 'B0101' END, "
            "applied_at = CASE application_id WHEN 'A0500' THEN '2025-03-02T01:59:58.000000+00:00' END",
        )
        assert _verify(old_record) is None


def test_the_export_carries_branch_and_time_also_of_a_record_not_opened_since(old_record, tmp_path):
    written = tmp_path / "old.csv"
    assert export(old_record, written) == 12
    frame = pd.read_csv(written, keep_default_na=False)
    assert list(frame.columns[-5:]) == ["branch_id", "applied_at", "chain", "reasons_zh", "reasons_en"]
    assert (frame["branch_id"] == "").all()
    with DecisionLog(old_record, chain_key=CHAIN_KEY) as log:
        log.record([_new_decision(branch_id="B0101", applied_at="2025-03-02T01:59:58.000000+00:00")])
    export(old_record, written)
    last = pd.read_csv(written, keep_default_na=False).iloc[-1]
    assert (last["branch_id"], last["applied_at"]) == ("B0101", "2025-03-02T01:59:58.000000+00:00")


def test_the_service_writes_each_decisions_branch_and_time_replays_included(served_bank, tmp_path):
    model = ModelSource(served_bank.uri, served_bank.client()).load()
    paths = served_bank.fresh_paths(tmp_path / "serving")
    events = prepare_applications(served_bank.holdout[:3], served_bank.keys)
    with OnlineFeatureStore(paths.online) as online, DecisionLog(paths.decisions, chain_key=CHAIN_KEY) as log:
        scorer = Scorer(model, online, log, served_bank.keys, clock=replay_clock, tolerance=REPLAY_TOLERANCE)
        scorer.score(events[:2], key_id="k", request_id="first")
        scorer.score(events, key_id="k", request_id="again")  # two replays and one new
    with sqlite3.connect(paths.decisions) as con:
        rows = con.execute("SELECT application_id, replayed, branch_id, applied_at FROM decisions").fetchall()
    assert len(rows) == 5 and sum(replayed for _, replayed, _, _ in rows) == 2
    by_id = {e["application_id"]: e for e in events}
    for application_id, _, branch_id, applied_at in rows:
        assert branch_id == by_id[application_id]["branch_id"] != ""
        assert applied_at == by_id[application_id]["applied_at"].astimezone(UTC).isoformat(
            timespec="microseconds"
        )
