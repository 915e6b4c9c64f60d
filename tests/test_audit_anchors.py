"""Signed anchors: ``duanka audit anchor`` and the service make them, a file or syslog takes them off
the host, and ``duanka audit verify --anchors`` checks every one."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from duanka.serving.anchor import AnchorOutlet, SignedAnchor, read_anchors, sign
from duanka.serving.audit import DecisionLog
from duanka.serving.chain import Head, TableHead
from duanka.serving.lifecycle import Service, ServiceConfig
from duanka.serving.state import ServingPaths
from tests.test_audit_chain import _decision, _response
from tests.test_audit_tamper import (
    AUDIT_KEY,
    _duanka,
    _record,
    _verify,
    env_fixture,  # noqa: F401 - the fixture env
    store_fixture,  # noqa: F401 - the fixture store
)


def _anchor_file() -> Path:
    from duanka.data.config import get_settings

    return get_settings().audit_anchor_file


def _anchors(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_audit_anchor_prints_a_signed_head_and_appends_it_to_the_anchor_file(store):
    anchored = _duanka("audit", "anchor", "--data", str(store.root))
    assert anchored.exit_code == 0, anchored.output
    line = anchored.stdout.strip()
    assert _anchors(_anchor_file()) == [_anchors(_anchor_file())[0], line]  # the fixture's, then this one
    signed = SignedAnchor.parse(line)
    assert signed.problem(AUDIT_KEY) is None
    assert signed.head.tables["decisions"] == TableHead(30, signed.head.tables["decisions"].value)
    fields = json.loads(line)
    assert set(fields) == {"duanka_anchor", "at", "key", "head", "mac"}
    assert "anchor sent to" in anchored.stderr
    verified = _verify(store, "--anchors", str(_anchor_file()))
    assert verified.exit_code == 0 and "intact and reaches all 2 anchors" in verified.stdout
    # --anchor takes the printed line (its signature checked) as it took a bare head
    assert _verify(store, "--anchor", line).exit_code == 0
    assert _verify(store, "--anchor", signed.head.text()).exit_code == 0


def test_an_altered_or_foreign_anchor_is_refused(store, tmp_path):
    (line,) = _anchors(_anchor_file())
    fields = json.loads(line)
    altered = tmp_path / "altered.jsonl"
    altered.write_text(
        line
        + "\n"
        + json.dumps({**fields, "head": fields["head"].replace("decisions=30:", "decisions=29:")})
        + "\n"
    )
    refused = _verify(store, "--anchors", str(altered))
    assert refused.exit_code == 1
    assert f"{altered}, line 2: its signature does not verify" in refused.stderr
    foreign = tmp_path / "foreign.jsonl"
    other_key = b"another-audit-key-0123456789abcdef"
    foreign.write_text(sign(Head.parse(fields["head"]), other_key).line() + "\n")
    refused = _verify(store, "--anchors", str(foreign))
    assert refused.exit_code == 1 and "line 1: signed with another audit key" in refused.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("no anchors here\n")
    refused = _verify(store, "--anchors", str(empty))
    assert refused.exit_code == 1 and "holds no signed audit anchor" in refused.stderr


def test_verify_names_the_first_anchor_the_record_no_longer_reaches(store, tmp_path):
    older = tmp_path / "older.db"
    shutil.copy(_record(store), older)
    with DecisionLog(_record(store), chain_key=AUDIT_KEY) as log:
        log.record([_decision(100)], {"A0100": _response(100)})
    anchors = _anchor_file()
    with anchors.open("a", encoding="utf-8") as file:  # a syslog file: other lines, and prefixes
        file.write("Dec  4 09:00:00 host sshd[1]: session opened\n")
    assert _duanka("audit", "anchor", "--data", str(store.root)).exit_code == 0
    first, other, second = _anchors(anchors)
    anchors.write_text(f"{first}\n{other}\nDec  4 09:10:00 host duanka-anchor: {second}\n")
    assert _verify(store, "--anchors", str(anchors)).exit_code == 0

    shutil.copy(older, _record(store))  # the whole file rolled back to before the second anchor
    assert _verify(store).exit_code == 0  # a chain alone cannot tell
    caught = _verify(store, "--anchors", str(anchors))
    assert caught.exit_code == 1
    taken = SignedAnchor.parse(second).at
    assert f"does not reach the anchor on line 3 of {anchors} (taken {taken})" in caught.stderr
    assert "decisions: holds 30 rows, the anchor 31: rows were cut" in caught.stderr


def test_anchors_go_to_syslog():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    head = Head({t: TableHead(1, "a" * 64) for t in ("decisions", "events", "responses")})
    signed = sign(head, AUDIT_KEY)
    outlet = AnchorOutlet(syslog=f"127.0.0.1:{receiver.getsockname()[1]}")
    try:
        outlet.emit(signed)
        message = receiver.recv(65536).decode()
    finally:
        outlet.close()
        receiver.close()
    assert message.startswith("<")  # a syslog priority, then the tag
    assert "duanka-anchor: " in message and SignedAnchor.parse(message) == signed


def test_the_service_emits_signed_anchors_on_schedule_and_at_stop(tmp_path):
    """Every ``anchor_every_s`` and once more at stop, after the last decision, to the anchor file."""
    anchors = tmp_path / "off-host" / "anchors.jsonl"
    anchors.parent.mkdir()
    paths = ServingPaths(root=tmp_path, decisions=tmp_path / "decisions.db", keys=tmp_path / "keys.json")
    log = DecisionLog(paths.decisions, chain_key=AUDIT_KEY)
    scorer = SimpleNamespace(log=log, close=lambda: None, online=SimpleNamespace(close=lambda: None))
    config = ServiceConfig(
        source=None, model=None, keys=None, store=None, paths=paths, chain_key=AUDIT_KEY,
        anchor_every_s=0.05, anchor_file=anchors,
    )  # fmt: skip

    async def run() -> None:
        service = Service(config)
        await service.scoring.start(lambda: scorer)
        service._tasks = [asyncio.create_task(service.log_anchor())]
        while not anchors.exists() or len(_anchors(anchors)) < 3:
            await asyncio.sleep(0.01)
        await service.scoring.run(lambda s: s.log.record([_decision(1)], {"A0001": _response(1)}))
        await service.stop()

    asyncio.run(run())
    found = read_anchors(anchors)
    assert len(found) >= 4
    assert all(signed.problem(AUDIT_KEY) is None for _, signed in found)
    last = found[-1][1].head
    assert last.tables["decisions"].rows == 1  # the stop's anchor holds the last decision
    with DecisionLog(paths.decisions, chain_key=AUDIT_KEY) as reopened:
        assert reopened.head() == last


@pytest.mark.parametrize("address", ["logs.bank:70000", "logs.bank:x", ":514"])
def test_a_wrong_syslog_address_is_refused_in_one_line(env, address):
    env.setenv("DUANKA_AUDIT_ANCHOR_SYSLOG", address)
    from duanka.data.config import get_settings

    get_settings.cache_clear()
    refused = _duanka("config", "show")
    assert refused.exit_code == 1
    assert "DUANKA_AUDIT_ANCHOR_SYSLOG" in refused.stderr and "not a syslog address" in refused.stderr
