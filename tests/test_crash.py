"""Crash safety: a `duanka serve` killed with SIGKILL mid-stream loses nothing it acknowledged.

One real service process on a free loopback port takes a stream of scoring and label requests;
it is killed at seeded random moments, restarted on the same files, and after each kill:

- both SQLite files pass ``PRAGMA integrity_check``;
- every acknowledged application is in the state and the audit log exactly once;
- every acknowledged label feed is in the state and audited;
- the request in flight at the kill, retried, ends as one record, like any other.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from duanka.serving.keys import KeyFile
from tests.conftest import SECRET

KILLS = 3
SEED = 20261127


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        port = _free_port()
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
    }
    for name in ("MLFLOW_TRACKING_URI", "DUANKA_AUDIT_DB", "DUANKA_API_KEYS_FILE"):
        env.pop(name, None)
    running = Service(data, served_bank.uri, env)
    yield running, {"Authorization": f"Bearer {token}"}, data / "serving"
    running.stop()


def _send(client: httpx.Client, url: str, auth: dict, kind: str, body: dict) -> httpx.Response:
    path = "/v1/score" if kind == "score" else "/v1/labels"
    return client.post(f"{url}{path}", json=body, headers=auth, timeout=30)


def _run_until_killed(
    service: Service, auth: dict, rows: list[dict], stream: Stream, kill_after: float
) -> None:
    """Send requests one after another until a SIGKILL, ``kill_after`` seconds in, cuts one off."""
    rng = random.Random(kill_after)
    killer = threading.Timer(kill_after, service.kill)
    killer.start()
    try:
        with httpx.Client() as client:
            while True:
                if stream.acknowledged and rng.random() < 0.2:
                    label = {"application_id": rng.choice(sorted(stream.acknowledged))}
                    kind, body = (
                        "label",
                        {"labels": [{**label, "confirmed_at": "2025-06-01", "source": "investigation"}]},
                    )
                else:
                    kind, body = "score", rows.pop()
                try:
                    response = _send(client, service.url, auth, kind, body)
                except httpx.TransportError:
                    # its fate is unknown to the caller: written, half-written or never read
                    stream.unacknowledged.append((kind, body))
                    return
                _acknowledge(stream, kind, body, response)
    finally:
        killer.join()


def _acknowledge(stream: Stream, kind: str, body: dict, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    if kind == "score":
        stream.acknowledged.add(body["application_id"])
    else:
        stream.labelled.add(body["labels"][0]["application_id"])
        stream.label_requests.add(response.json()["request_id"])


def _check(folder: Path, stream: Stream) -> None:
    for name in ("online.db", "decisions.db"):
        with sqlite3.connect(folder / name) as con:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], name
    with sqlite3.connect(folder / "online.db") as con:
        in_state = dict(
            con.execute(
                "SELECT application_id, count(*) FROM apps WHERE application_id LIKE 'CRASH%' GROUP BY 1"
            )
        )
        confirmed = {r[0] for r in con.execute("SELECT application_id FROM labels")}
    with sqlite3.connect(folder / "decisions.db") as con:
        decided = dict(
            con.execute(
                "SELECT application_id, count(*) FROM decisions "
                "WHERE replayed = 0 AND application_id LIKE 'CRASH%' GROUP BY 1"
            )
        )
        answered = {r[0] for r in con.execute("SELECT application_id FROM responses")}
        label_events = {
            r[0] for r in con.execute("SELECT request_id FROM events WHERE kind = 'labels_received'")
        }
    assert all(in_state.get(a) == 1 for a in stream.acknowledged), "an acknowledged application is lost"
    assert all(decided.get(a) == 1 for a in stream.acknowledged), (
        "an acknowledged decision is not audited once"
    )
    assert stream.acknowledged <= answered
    assert set(in_state.values()) <= {1} and set(decided.values()) <= {1}
    # nothing half-written: the audit holds no decision that the state lacks
    assert set(decided) <= set(in_state)
    assert stream.labelled <= confirmed
    assert stream.label_requests <= label_events


def test_sigkill_at_random_moments_loses_nothing_acknowledged(service, served_bank):
    running, auth, folder = service
    rng = random.Random(SEED)
    holdout = served_bank.holdout
    rows = [{**holdout[i % len(holdout)], "application_id": f"CRASH{i:05d}"} for i in range(2_000)][::-1]
    stream = Stream()
    for _ in range(KILLS):
        running.start()
        if stream.unacknowledged:
            # the caller retries what it never heard back about: each ends as one record
            with httpx.Client() as client:
                for kind, body in stream.unacknowledged:
                    _acknowledge(stream, kind, body, _send(client, running.url, auth, kind, body))
            stream.unacknowledged.clear()
            _check(folder, stream)
        _run_until_killed(running, auth, rows, stream, kill_after=rng.uniform(0.3, 1.5))
        _check(folder, stream)
    assert len(stream.acknowledged) >= KILLS  # the stream really ran between the kills
