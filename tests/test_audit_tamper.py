"""Every way of tampering with a stopped service's decision record is caught by ``audit verify``,
and no restart of the service launders it.

The record is built directly with :class:`DecisionLog` under an audit key, anchored once with
``duanka audit anchor`` into an anchor file, and then changed as someone holding the file (and
the pseudonym key, as every ingest and batch operator does) could change it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import Settings, get_settings
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.store import EventStore
from duanka.serving.audit import DecisionLog
from duanka.serving.chain import backfill, chain_key
from tests.test_audit_chain import TRIGGERS, _decision, _response

PSEUDONYM_SECRET = "pseudonym-secret-0123456789abcdef0123"
AUDIT_SECRET = "audit-secret-0123456789abcdef0123456789"
KEYS = Pseudonymiser.from_secret(PSEUDONYM_SECRET.encode())
AUDIT_KEY = chain_key(Settings(audit_chain_key=AUDIT_SECRET), KEYS)
REQUESTS = 10  # of 3 decisions each: seq 1 to 30


@pytest.fixture(name="env")
def env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The environment of an auditor: both keys, an anchor file, lines as wide as they are."""
    for name in (
        "DUANKA_CONFIG_FILE",
        "DUANKA_AUDIT_DB",
        "DUANKA_AUDIT_CHAIN_KEY_FILE",
        "DUANKA_AUDIT_ANCHOR_SYSLOG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", PSEUDONYM_SECRET)
    monkeypatch.setenv("DUANKA_AUDIT_CHAIN_KEY", AUDIT_SECRET)
    monkeypatch.setenv("DUANKA_AUDIT_ANCHOR_FILE", str(tmp_path / "anchors.jsonl"))
    monkeypatch.setenv("DUANKA_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("COLUMNS", "1000")  # a one-line message stays one line
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture(name="store")
def store_fixture(env, tmp_path: Path) -> EventStore:
    """A store whose service's record holds 30 decisions, their responses, two events and a synced
    state, anchored once into the anchor file."""
    store = EventStore(tmp_path / "store")
    (store.root / "serving").mkdir(parents=True)
    with DecisionLog(_record(store), chain_key=AUDIT_KEY) as log:
        log.event("model_loaded", {"version": "3"}, key_id=None, request_id=None)
        for request in range(REQUESTS):
            ids = range(3 * request, 3 * request + 3)
            last = log.record([_decision(i) for i in ids], {f"A{i:04d}": _response(i) for i in ids})
        log.state_synced(last)
        log.event("labels_received", {"received": 2}, key_id="k", request_id="r9")
    anchored = _duanka("audit", "anchor", "--data", str(store.root))
    assert anchored.exit_code == 0, anchored.output
    return store


def _record(store: EventStore) -> Path:
    return store.root / "serving" / "decisions.db"


def _duanka(*args: str):
    return CliRunner().invoke(app, list(args))


def _verify(store: EventStore, *anchors: str):
    return _duanka("audit", "verify", "--data", str(store.root), *anchors)


def _restart(store: EventStore) -> Exception | None:
    """Start and stop the service's record as ``duanka serve`` would; what it refused with."""
    try:
        DecisionLog(_record(store), chain_key=AUDIT_KEY).close()
    except Exception as exc:  # which one is the test's to say
        return exc
    return None


def _tampered(path: Path, change: Callable[[sqlite3.Connection], None]) -> None:
    """What someone holding the file can do: drop the triggers, change it, put them back."""
    con = sqlite3.connect(path)
    triggers = con.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for name in TRIGGERS:
        con.execute(f"DROP TRIGGER {name}")
    change(con)
    for (sql,) in triggers:
        con.execute(sql)
    con.commit()
    con.close()


def _run(*statements: str) -> Callable[[sqlite3.Connection], None]:
    def change(con: sqlite3.Connection) -> None:
        for statement in statements:
            con.execute(statement)

    return change


def _reinsert_at_the_end(con: sqlite3.Connection) -> None:
    """Delete a row, then put it back, with its chain value, after the others."""
    row = con.execute("SELECT * FROM decisions WHERE seq = 10").fetchone()
    con.execute("DELETE FROM decisions WHERE seq = 10")
    con.execute(f"INSERT INTO decisions VALUES (NULL{', ?' * (len(row) - 1)})", row[1:])


def _rechained_with_the_pseudonym_key(con: sqlite3.Connection) -> None:
    """Edit a row, then write every chain value and seal again with a key derived from the pseudonym
    key: what its holders could do while the chain was keyed by it."""
    derived = KEYS.audit_chain_key()
    con.execute("UPDATE decisions SET score = 0.99, band = 'critical' WHERE seq = 7")
    backfill(con, derived)
    from duanka.serving.chain import meta_seal

    for name, value in con.execute("SELECT name, value FROM meta").fetchall():
        con.execute("UPDATE meta SET seal = ? WHERE name = ?", (meta_seal(derived, name, value), name))


TAMPERING = {
    "edit-row": (
        _run("UPDATE decisions SET score = 0.99, band = 'critical' WHERE seq = 7"),
        "decisions: row seq 7 (the 7th row) does not follow",
    ),
    "delete-middle-row": (
        _run("DELETE FROM decisions WHERE seq = 12"),
        "decisions: row seq 13 (the 12th row)",
    ),
    "delete-tail": (
        _run("DELETE FROM decisions WHERE seq > 25", "DELETE FROM responses WHERE rowid > 25"),
        "does not reach the anchor on line 1 of",
    ),
    "reorder": (
        _run(
            "UPDATE decisions SET seq = -1 WHERE seq = 3",
            "UPDATE decisions SET seq = 3 WHERE seq = 4",
            "UPDATE decisions SET seq = 4 WHERE seq = -1",
        ),
        "decisions: row seq 3 (the 3rd row)",
    ),
    "re-insert-deleted-row": (_reinsert_at_the_end, "decisions: row seq 11 (the 10th row)"),
    # the case: a score raised, a row deleted, one row's chain emptied to have it re-chained
    "empty-chain-then-restart": (
        _run(
            "UPDATE decisions SET score = 0.99, band = 'critical' WHERE seq = 7",
            "DELETE FROM decisions WHERE seq = 20",
            "UPDATE decisions SET chain = '' WHERE seq = 15",
        ),
        "decisions: row seq 7 (the 7th row) does not follow",
    ),
    "edit-meta": (
        _run("UPDATE meta SET value = value + 1000 WHERE name = 'state_synced_through'"),
        "meta: state_synced_through does not match its seal",
    ),
    "rechain-with-the-pseudonym-key": (
        _rechained_with_the_pseudonym_key,
        "decisions: row seq 1 (the 1st row) does not follow",
    ),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_audit_verify_catches_every_tampering_and_no_restart_launders_it(store, how):
    change, named = TAMPERING[how]
    anchors = ("--anchors", str(get_settings().audit_anchor_file))
    assert _verify(store, *anchors).exit_code == 0
    _tampered(_record(store), change)

    caught = _verify(store, *anchors)
    assert caught.exit_code == 1, caught.output
    assert named in caught.stderr and len(caught.stderr.strip().splitlines()) == 1, caught.stderr
    refused = _restart(store)
    again = _verify(store, *anchors)
    assert again.exit_code == 1 and named in again.stderr, again.output
    if how in ("empty-chain-then-restart", "edit-meta"):
        assert type(refused).__name__ == "RecordTampered", refused
    else:
        assert refused is None or type(refused).__name__ == "RecordTampered", refused


def test_a_record_with_an_emptied_chain_value_is_refused_at_start_with_one_line(store):
    from duanka.serving.audit import RecordTampered

    _tampered(_record(store), _run("UPDATE decisions SET chain = '' WHERE seq = 15"))
    caught = _verify(store)
    assert caught.exit_code == 1
    assert (
        "decisions: row seq 15 (the 15th row) holds no chain value though the record is chained"
        in caught.stderr
    )
    with pytest.raises(RecordTampered, match=r"decisions row seq 15 holds no chain value"):
        DecisionLog(_record(store), chain_key=AUDIT_KEY)
    served = _duanka("serve", "--data", str(store.root), "--model", "models:/duanka@nobody")
    assert served.exit_code == 1
    (line,) = served.stderr.strip().splitlines()
    assert "decisions row seq 15 holds no chain value" in line and "does not open a tampered" in line
    with sqlite3.connect(_record(store)) as con:  # nothing was chained again, or written
        assert con.execute("SELECT COUNT(*) FROM events WHERE kind = 'chain_started'").fetchone() == (0,)
        assert con.execute("SELECT chain FROM decisions WHERE seq = 15").fetchone() == ("",)


def test_a_record_without_any_chain_value_is_chained_once_and_that_is_audited(tmp_path):
    """Truly from before chains: the tables were laid out without the column."""
    path = tmp_path / "old.db"
    with DecisionLog(path, chain_key=AUDIT_KEY) as log:
        log.record([_decision(1)], {"A0001": _response(1)})

    def without_chains(con: sqlite3.Connection) -> None:
        for table in ("decisions", "responses"):
            con.execute(f"ALTER TABLE {table} DROP COLUMN chain")

    _tampered(path, without_chains)
    with DecisionLog(path, chain_key=AUDIT_KEY) as log:
        log.record([_decision(2)], {"A0002": _response(2)})
    con = sqlite3.connect(path)
    (detail,) = con.execute("SELECT detail FROM events WHERE kind = 'chain_started'").fetchone()
    con.close()
    assert json.loads(detail) == {"rows_chained_on_open": {"decisions": 1, "responses": 1}}


def test_meta_rows_from_before_seals_are_dropped_unread_and_the_state_redone(store):
    """A meta row without a seal (an older record, or its seal removed) is never trusted: the
    service drops it and redoes every answered application into the state."""
    _tampered(_record(store), _run("UPDATE meta SET value = value + 1000, seal = ''"))
    assert "meta: state_synced_through holds no seal" in _verify(store).stderr
    with DecisionLog(_record(store), chain_key=AUDIT_KEY) as log:
        assert len(log.unsynced_events()) == 3 * REQUESTS
    with sqlite3.connect(_record(store)) as con:
        (detail,) = con.execute("SELECT detail FROM events WHERE kind = 'meta_unsealed_dropped'").fetchone()
    assert json.loads(detail) == {"state_synced_through": 3 * REQUESTS + 1000}
    assert _verify(store).exit_code == 0


def test_outside_a_demo_the_audit_key_is_required(store, env):
    from duanka.serving.chain import MissingChainKey

    env.delenv("DUANKA_AUDIT_CHAIN_KEY")
    get_settings.cache_clear()
    with pytest.raises(MissingChainKey, match="no audit key configured"):
        chain_key(get_settings(), KEYS)
    for command in (
        ("audit", "verify", "--data", str(store.root)),
        ("audit", "anchor", "--data", str(store.root)),
        ("serve", "--data", str(store.root), "--model", "models:/duanka@nobody"),
    ):
        refused = _duanka(*command)
        assert refused.exit_code == 1, (command, refused.output)
        (line,) = refused.stderr.strip().splitlines()
        assert "no audit key configured" in line and "DUANKA_AUDIT_CHAIN_KEY" in line, line


def test_a_demo_store_derives_its_key_from_the_demo_key_and_says_it_proves_nothing(env, tmp_path):
    demo = Pseudonymiser.demo()
    env.delenv("DUANKA_AUDIT_CHAIN_KEY")
    env.delenv("DUANKA_PSEUDONYM_KEY")  # a configured key would win over the demo key
    get_settings.cache_clear()
    assert chain_key(get_settings(), demo) == demo.audit_chain_key()
    store = EventStore(tmp_path / "demo-store")
    with store.locked():
        store._write_manifest({"key_id": demo.key_id})
    (store.root / "serving").mkdir()
    with DecisionLog(_record(store), chain_key=demo.audit_chain_key()) as log:
        log.record([_decision(1)], {"A0001": _response(1)})
    verified = _verify(store)
    assert verified.exit_code == 0 and "intact" in verified.stdout
    assert "DEMO chain key" in verified.stderr and "prove nothing" in " ".join(verified.stderr.split())
