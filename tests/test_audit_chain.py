"""The decision record's hash chain: every change to a copy of it is caught, an intact one passes."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.serving.audit import DecisionLog, DecisionRow, export
from duanka.serving.chain import DECISION_COLUMNS, Head, verify
from tests.factories import CHAIN_KEY

TRIGGERS = [f"{table}_no_{verb}" for table in ("decisions", "events") for verb in ("update", "delete")]


def _decision(i: int) -> DecisionRow:
    return DecisionRow(
        request_id=f"r{i}",
        application_id=f"A{i:04d}",
        key_id="branch-key",
        decided_at=f"2025-03-01T02:{i // 60:02d}:{i % 60:02d}.000000+00:00",
        model_name="duanka",
        model_version="3",
        booster_sha256="b" * 64,
        score=0.01 * (i % 90),
        band="low" if i % 7 else "high",
        reason_codes="ESC_VELOCITY" if i % 7 == 0 else "",
        latency_ms=4.2,
        replayed=i % 11 == 0,
    )


def _response(i: int) -> tuple[str, dict, dict]:
    from datetime import UTC, datetime

    reasons = [{"code": "ESC_VELOCITY", "text_zh": "陪同人", "text_en": "escort"}] if i % 7 == 0 else []
    return (
        f"digest-{i}",
        {"score": 0.01 * (i % 90), "reasons": reasons},
        {
            "application_id": f"A{i:04d}",
            "applied_at": datetime(2025, 3, 1, 2, tzinfo=UTC),
        },
    )


@pytest.fixture
def record(tmp_path) -> Path:
    """A record of 40 requests of 3 decisions each, with their responses and a few events."""
    path = tmp_path / "decisions.db"
    with DecisionLog(path, chain_key=CHAIN_KEY) as log:
        log.event("model_loaded", {"version": "3"}, key_id=None, request_id=None)
        for request in range(40):
            ids = range(3 * request, 3 * request + 3)
            log.record([_decision(i) for i in ids], {f"A{i:04d}": _response(i) for i in ids})
            if request % 10 == 0:
                log.event("labels_received", {"received": request}, key_id="k", request_id=f"r{request}")
    return path


def _verify(path: Path, anchor: Head | None = None, key: bytes = CHAIN_KEY) -> str | None:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return verify(con, key, anchor).problem
    finally:
        con.close()


def _tamper(path: Path, *statements: str, keep_triggers: bool = False) -> None:
    """What someone holding a copy of the file can do: drop the triggers, edit, put them back."""
    con = sqlite3.connect(path)
    triggers = con.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    if not keep_triggers:
        for name in TRIGGERS:
            con.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in statements:
        con.execute(statement)
    if not keep_triggers:
        for (sql,) in triggers:
            con.execute(sql)
    con.commit()
    con.close()


def test_an_intact_record_verifies_and_reaches_its_own_anchor(record):
    con = sqlite3.connect(record)
    head = verify(con, CHAIN_KEY).head
    con.close()
    assert head.tables["decisions"].rows == 120 and head.tables["responses"].rows == 120
    assert head.tables["events"].rows == 5
    assert _verify(record) is None
    assert _verify(record, Head.parse(head.text())) is None


@pytest.mark.parametrize(
    ("statements", "named"),
    [
        (["UPDATE decisions SET band = 'low', score = 0.0 WHERE seq = 57"], "decisions: row seq 57 "),
        (["DELETE FROM decisions WHERE seq BETWEEN 10 AND 100"], "decisions: row seq 101 "),
        (
            [
                "INSERT INTO decisions SELECT 1000, request_id, application_id, key_id, decided_at, "
                "model_name, model_version, booster_sha256, score, band, reason_codes, latency_ms, replayed, "
                "rule, chain, client_request_id, bundle_sha256, branch_id, applied_at FROM decisions "
                "WHERE seq = 5",
                "UPDATE decisions SET seq = seq + 2000 WHERE seq > 5 AND seq < 1000",
                "UPDATE decisions SET seq = 6 WHERE seq = 1000",
            ],
            "decisions: row seq 6 ",
        ),
        (
            [
                "UPDATE decisions SET seq = -1 WHERE seq = 30",
                "UPDATE decisions SET seq = 30 WHERE seq = 31",
                "UPDATE decisions SET seq = 31 WHERE seq = -1",
            ],
            "decisions: row seq 30 ",
        ),
        (
            [
                "UPDATE events SET detail = '{\"received\": 0}' WHERE kind = 'labels_received'"
            ],  # the first one said 0 already,
            "events: row seq 3 ",
        ),
        (
            [
                'UPDATE responses SET response = \'{"score": 0.0, "reasons": []}\' '
                "WHERE application_id = 'A0077'"
            ],
            "responses: row rowid 78 ",
        ),
        (["DELETE FROM responses WHERE application_id = 'A0003'"], "responses: row rowid 5 "),
    ],
    ids=[
        "changed",
        "deleted",
        "inserted",
        "reordered",
        "event-changed",
        "response-changed",
        "response-deleted",
    ],
)
def test_a_changed_inserted_reordered_or_removed_row_is_named(record, statements, named):
    _tamper(record, *statements)
    problem = _verify(record)
    assert problem is not None and problem.startswith(named), problem


def test_the_responses_table_needs_no_trigger_to_be_caught(record):
    _tamper(record, "UPDATE responses SET row_digest = 'x' WHERE rowid = 3", keep_triggers=True)
    assert _verify(record).startswith("responses: row rowid 3 ")


def test_a_cut_tail_or_an_older_copy_is_caught_only_by_the_anchor(record, tmp_path):
    older = tmp_path / "older.db"
    shutil.copy(record, older)
    with DecisionLog(record, chain_key=CHAIN_KEY) as log:
        log.record([_decision(500)], {"A0500": _response(500)})
        anchor = log.head()
    shutil.copy(older, record)  # the whole file rolled back
    assert _verify(record) is None  # a chain alone cannot tell
    assert _verify(record, anchor).startswith("decisions: holds 120 rows, the anchor 121: rows were cut")
    with DecisionLog(record, chain_key=CHAIN_KEY) as log:  # and rewritten past the anchor
        log.record([_decision(501)], {"A0501": _response(501)})
    assert _verify(record, anchor).startswith(
        "decisions: row 121 has another chain value than the anchor's: the record was rewritten"
    )
    _tamper(older, "DELETE FROM decisions WHERE seq > 100")  # the tail cut
    assert _verify(older) is None
    cut_anchor = Head.parse(anchor.text())
    assert _verify(older, cut_anchor).startswith("decisions: holds 100 rows, the anchor 121: rows were cut")


def test_another_key_cannot_vouch_for_the_record(record):
    assert "chain key" in _verify(record, key=b"another-key-0123456789abcdef0123")


def test_a_record_from_before_chains_is_chained_on_open_and_that_is_audited(tmp_path):
    path = tmp_path / "old.db"
    with DecisionLog(path, chain_key=CHAIN_KEY) as log:
        log.record([_decision(1)], {"A0001": _response(1)})
    _tamper(path, "UPDATE decisions SET chain = ''", "UPDATE responses SET chain = ''")
    with DecisionLog(path, chain_key=CHAIN_KEY) as log:
        log.record([_decision(2)], {"A0002": _response(2)})
    assert _verify(path) is None
    con = sqlite3.connect(path)
    (detail,) = con.execute("SELECT detail FROM events WHERE kind = 'chain_started'").fetchone()
    assert '"decisions": 1' in detail


def test_the_export_carries_chain_values_and_reason_texts(record, tmp_path):
    out = tmp_path / "audit.csv"
    assert export(record, out) == 120
    frame = pd.read_csv(out, keep_default_na=False)
    with sqlite3.connect(record) as con:
        chains = [chain for (chain,) in con.execute("SELECT chain FROM decisions ORDER BY seq")]
    assert frame["chain"].tolist() == chains
    assert frame["chain"].str.fullmatch(r"[0-9a-f]{64}").all()
    with_reason = frame["application_id"].isin([f"A{i:04d}" for i in range(0, 120, 7)])
    assert with_reason.sum() == 18
    assert (frame.loc[with_reason, "reason_codes"] == "ESC_VELOCITY").all()
    assert (frame.loc[with_reason, "reasons_en"] == "escort").all()
    assert (frame.loc[~with_reason, ["reason_codes", "reasons_en"]] == "").all().all()


def test_audit_verify_and_anchor_commands(record, tmp_path, monkeypatch):
    secret = "audit-chain-secret-0123456789abcdef"
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", "pseudonym-secret-0123456789abcdef")
    monkeypatch.setenv("DUANKA_AUDIT_CHAIN_KEY", secret)
    get_settings.cache_clear()
    try:
        from duanka.serving.chain import chain_key

        store = EventStore(tmp_path / "store")
        store.root.mkdir(parents=True, exist_ok=True)
        (store.root / "serving").mkdir()
        key = chain_key(get_settings(), Pseudonymiser.from_secret(b"pseudonym-secret-0123456789abcdef"))
        path = store.root / "serving" / "decisions.db"
        with DecisionLog(path, chain_key=key) as log:
            log.record([_decision(i) for i in range(5)], {f"A{i:04d}": _response(i) for i in range(5)})
        runner = CliRunner()
        anchored = runner.invoke(app, ["audit", "anchor", "--data", str(store.root)])
        assert anchored.exit_code == 0, anchored.output
        head = anchored.stdout.strip()
        ok = runner.invoke(app, ["audit", "verify", "--data", str(store.root), "--anchor", head])
        assert ok.exit_code == 0 and "intact and reaches the anchor" in ok.stdout
        _tamper(path, "UPDATE decisions SET band = 'critical' WHERE seq = 3")
        broken = runner.invoke(app, ["audit", "verify", "--data", str(store.root)])
        assert broken.exit_code == 1 and "row seq 3" in broken.stderr
    finally:
        get_settings.cache_clear()


TYPES = {"score": "REAL", "latency_ms": "REAL", "replayed": "INTEGER"}  # as the record declares them


@pytest.mark.parametrize(
    ("missing", "added"),
    [
        (
            ("client_request_id", "bundle_sha256"),
            {"client_request_id": "caller-7", "bundle_sha256": "b" * 64},
        ),
        (("bundle_sha256",), {"bundle_sha256": "b" * 64}),
    ],
)
def test_a_record_from_before_a_column_was_added_still_verifies(record, missing, added):
    """A record laid out before ``client_request_id`` or ``bundle_sha256`` existed gets the columns on
    open; its rows, which read NULL there, keep their chain values, and the new values are covered
    from then on."""
    columns = ", ".join(c for c in DECISION_COLUMNS if c not in missing)
    _tamper(
        record,
        "CREATE TABLE old_layout (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        + ", ".join(f"{c} {TYPES.get(c, 'TEXT')}" for c in columns.split(", "))
        + ", chain TEXT NOT NULL DEFAULT '')",
        f"INSERT INTO old_layout SELECT seq, {columns}, chain FROM decisions",
        "DROP TABLE decisions",
        "ALTER TABLE old_layout RENAME TO decisions",
    )
    with DecisionLog(record, chain_key=CHAIN_KEY) as log:
        log.record([replace(_decision(500), **added)])
    assert _verify(record) is None
    for column in added:
        _tamper(record, f"UPDATE decisions SET {column} = 'someone-else' WHERE application_id = 'A0500'")
        assert "does not follow" in _verify(record)
        _tamper(record, f"UPDATE decisions SET {column} = '{added[column]}' WHERE application_id = 'A0500'")
    assert _verify(record) is None
