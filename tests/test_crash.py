"""Crash safety: a `duanka serve` killed with SIGKILL mid-stream loses nothing it acknowledged.

One real service process on a free loopback port takes a stream of scoring and label requests;
it is killed at seeded points of the stream (once the N-th request of a run is acknowledged,
the moment the next one has been sent whole), restarted on the same files, and after each kill:

- both SQLite files pass ``PRAGMA integrity_check``;
- every acknowledged decision is in the audit log exactly once, and every acknowledged label
  feed is audited, at once;
- once restarted (ready), every acknowledged application is in the state exactly once, and
  every acknowledged confirmation too: the state commits about once a second, so a kill takes
  its last writes with it, and the restart redoes them from the decision record;
- the request in flight at the kill, retried, ends as one record, like any other.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from duanka.serving.keys import KeyFile
from tests.conftest import AUDIT_SECRET, REPLAY_FROM_TODAY_S, SECRET
from tests.factories import free_port

KILLS = 3
SEED = 20261127
ACKNOWLEDGED_BEFORE_KILL = (5, 40)  # per run, drawn from SEED
LABEL_SHARE = 0.2  # of requests, once an application is acknowledged
# httpcore's trace event once the request's last byte is written to the socket
SENT_WHOLE = "http11.send_request_body.complete"


@dataclass
class Stream:
    """What the client sent and what the service acknowledged."""

    acknowledged: set[str] = field(default_factory=set)
    labelled: set[str] = field(default_factory=set)
    label_requests: set[str] = field(default_factory=set)
    unacknowledged: list[tuple[str, dict]] = field(default_factory=list)


class Service:
    """`duanka serve` as a subprocess on the given state folder."""

    def __init__(self, data: Path, uri: str, env: dict[str, str]) -> None:
        self.data, self.uri, self.env = data, uri, env
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        duanka = str(Path(sys.executable).with_name("duanka"))
        command = [duanka, "serve", "--data", str(self.data), "--model", self.uri]
        self.process = subprocess.Popen(
            [*command, "--port", str(port), "--poll-seconds", "0"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the service exited while starting"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the service was not ready within 60 s")

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            self.kill()


@pytest.fixture
def service(served_bank, tmp_path):
    data = tmp_path / "store"
    shutil.copytree(served_bank.store.root, data)
    served_bank.fresh_paths(data / "serving")  # the synced state, so that a start takes seconds
    token = KeyFile(data / "serving" / "api_keys.json").create(labels=True)[1]
    env = {
        **os.environ,
        "DUANKA_MODELS_DIR": str(served_bank.settings.models_dir),
        "DUANKA_PSEUDONYM_KEY": SECRET.decode(),
        "DUANKA_AUDIT_CHAIN_KEY": AUDIT_SECRET,
        # the held-back applications of 2025, to a service on the real clock
        "DUANKA_BACKDATING_TOLERANCE_S": REPLAY_FROM_TODAY_S,
    }
    for name in ("MLFLOW_TRACKING_URI", "DUANKA_AUDIT_DB", "DUANKA_API_KEYS_FILE"):
        env.pop(name, None)
    running = Service(data, served_bank.uri, env)
    yield running, {"Authorization": f"Bearer {token}"}, data / "serving"
    running.stop()


def _send(
    client: httpx.Client, url: str, auth: dict, kind: str, body: dict, trace: Callable | None = None
) -> httpx.Response:
    path = "/v1/score" if kind == "score" else "/v1/labels"
    extensions = {} if trace is None else {"trace": trace}
    return client.post(f"{url}{path}", json=body, headers=auth, timeout=30, extensions=extensions)


def _run_until_killed(
    service: Service, auth: dict, rows: list[dict], stream: Stream, rng: random.Random, kill_after: int
) -> None:
    """Send requests one after another; once ``kill_after`` are acknowledged, SIGKILL the service
    as soon as the next one is sent whole, and note that one as unacknowledged."""

    def kill_once_sent(event: str, info: dict) -> None:
        if event == SENT_WHOLE:
            service.kill()

    with httpx.Client() as client:
        for _ in range(kill_after):
            kind, body = _next_request(rows, stream, rng)
            _acknowledge(stream, kind, body, _send(client, service.url, auth, kind, body))
        kind, body = _next_request(rows, stream, rng)
        with pytest.raises(httpx.TransportError):
            _send(client, service.url, auth, kind, body, trace=kill_once_sent)
    assert service.process is not None and service.process.returncode == -signal.SIGKILL
    # its fate is unknown to the caller: written, half-written or never read
    stream.unacknowledged.append((kind, body))


def _next_request(rows: list[dict], stream: Stream, rng: random.Random) -> tuple[str, dict]:
    """A label for an acknowledged application (sometimes), else the next application."""
    if stream.acknowledged and rng.random() < LABEL_SHARE:
        label = {"application_id": rng.choice(sorted(stream.acknowledged))}
        return "label", {"labels": [{**label, "confirmed_at": "2025-06-01", "source": "investigation"}]}
    return "score", rows.pop()


def _acknowledge(stream: Stream, kind: str, body: dict, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    if kind == "score":
        stream.acknowledged.add(body["application_id"])
    else:
        stream.labelled.add(body["labels"][0]["application_id"])
        stream.label_requests.add(response.json()["request_id"])


def _intact(folder: Path) -> None:
    for name in ("online.db", "decisions.db"):
        with sqlite3.connect(folder / name) as con:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], name


def _decided(folder: Path) -> dict[str, int]:
    with sqlite3.connect(folder / "decisions.db") as con:
        return dict(
            con.execute(
                "SELECT application_id, count(*) FROM decisions "
                "WHERE replayed = 0 AND application_id LIKE 'CRASH%' GROUP BY 1"
            )
        )


def _check_record(folder: Path, stream: Stream) -> None:
    """Right after a kill: the decision record holds everything acknowledged, once."""
    _intact(folder)
    decided = _decided(folder)
    with sqlite3.connect(folder / "decisions.db") as con:
        answered = {r[0] for r in con.execute("SELECT application_id FROM responses")}
        label_events = {
            r[0] for r in con.execute("SELECT request_id FROM events WHERE kind = 'labels_received'")
        }
    assert all(decided.get(a) == 1 for a in stream.acknowledged), (
        "an acknowledged decision is not audited once"
    )
    assert stream.acknowledged <= answered
    assert set(decided.values()) <= {1}
    assert stream.label_requests <= label_events


def _check_state(folder: Path, stream: Stream) -> None:
    """Once restarted: the state holds every acknowledged application and confirmation, once."""
    _intact(folder)
    with sqlite3.connect(folder / "online.db") as con:
        in_state = dict(
            con.execute(
                "SELECT application_id, count(*) FROM apps WHERE application_id LIKE 'CRASH%' GROUP BY 1"
            )
        )
        confirmed = {r[0] for r in con.execute("SELECT application_id FROM labels")}
    assert all(in_state.get(a) == 1 for a in stream.acknowledged), "an acknowledged application is lost"
    assert set(in_state.values()) <= {1}
    # nothing half-written: the audit holds no decision that the state lacks
    assert set(_decided(folder)) <= set(in_state)
    assert stream.labelled <= confirmed


def test_sigkill_mid_stream_loses_nothing_acknowledged(service, served_bank):
    running, auth, folder = service
    rng = random.Random(SEED)
    holdout = served_bank.holdout
    rows = [{**holdout[i % len(holdout)], "application_id": f"CRASH{i:05d}"} for i in range(2_000)][::-1]
    stream = Stream()
    sent = 0
    for _ in range(KILLS):
        running.start()
        _check_state(folder, stream)
        if stream.unacknowledged:
            # the caller retries what it never heard back about: each ends as one record
            with httpx.Client() as client:
                for kind, body in stream.unacknowledged:
                    _acknowledge(stream, kind, body, _send(client, running.url, auth, kind, body))
            stream.unacknowledged.clear()
            _check_record(folder, stream)
        kill_after = rng.randint(*ACKNOWLEDGED_BEFORE_KILL)
        _run_until_killed(running, auth, rows, stream, rng, kill_after)
        sent += kill_after + 1
        _check_record(folder, stream)
    running.start()
    _check_state(folder, stream)
    # every request was acknowledged but the one in flight at the last kill
    assert len(stream.unacknowledged) == 1
    assert len(stream.acknowledged) + len(stream.label_requests) == sent - 1
    last_was_scored = stream.unacknowledged[0][0] == "score"
    assert len(stream.acknowledged) == 2_000 - len(rows) - last_was_scored
    assert stream.label_requests  # the stream held both kinds of request
