"""One service per store: the store is held for the service's life, and a killed holder's hold is free.

The holder in these tests is another process that takes the hold, says so on its stdout and
waits on its stdin: each step waits for an answer from the other process, never for a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.data.store import EventStore
from duanka.data.store_lock import HOLDER_FILE, StoreHeld
from tests.conftest import SECRET

HOLD_AND_WAIT = """
import sys
from pathlib import Path
from duanka.data.store import EventStore
with EventStore(Path(sys.argv[1])).hold("serve"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextmanager
def held_elsewhere(store: EventStore) -> Iterator[subprocess.Popen]:
    """Another process holding ``store`` until the block ends (or it is killed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_WAIT, str(store.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n", "the holder never held"
        yield holder
    finally:
        if holder.poll() is None:
            holder.communicate("\n", timeout=60)  # let go, and exit
        holder.wait(timeout=60)


@pytest.fixture
def store(tmp_path) -> EventStore:
    return EventStore(tmp_path / "store")


def test_a_second_holder_is_refused_with_the_holder_s_pid(store):
    with held_elsewhere(store) as holder, pytest.raises(StoreHeld) as refused:
        store.hold("serve")
    message = str(refused.value)
    assert f"process {holder.pid} (duanka serve)" in message and "\n" not in message
    # let go by the holder: taken at once; and a second hold in one process is refused as well
    with store.hold("serve"), pytest.raises(StoreHeld, match=f"process {os.getpid()} "):
        store.hold("serve")


def test_the_hold_of_a_killed_process_is_recovered(store):
    with held_elsewhere(store) as holder:
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=60) == -signal.SIGKILL
    with store.hold("serve"):
        assert str(os.getpid()) in (store.root / HOLDER_FILE).read_text(encoding="utf-8")
    assert (store.root / HOLDER_FILE).read_text(encoding="utf-8") == ""  # no holder named once let go


def test_duanka_serve_is_refused_while_another_process_holds_the_store(store, monkeypatch):
    store.root.mkdir()
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", SECRET.decode())
    get_settings.cache_clear()

    def serve_anyway(*args: object, **kwargs: object) -> None:
        raise AssertionError("a second service started on a held store")

    monkeypatch.setattr("uvicorn.run", serve_anyway)
    try:
        with held_elsewhere(store) as holder:
            result = CliRunner().invoke(app, ["serve", "--data", str(store.root)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert f"is held by process {holder.pid} (duanka serve)" in " ".join(result.output.split())


def test_ingest_still_writes_while_the_service_holds_the_store(store, monkeypatch, tmp_path):
    """`duanka ingest --watchlist` on the running service's store is how a listing reaches it."""
    listings = tmp_path / "watchlist.csv"
    listings.write_text(
        "id_number,listed_at,expires_at,source\n"
        "11010519491231002X,2025-05-20T00:00:00+08:00,,pboc_joint_punishment\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", SECRET.decode())
    get_settings.cache_clear()
    try:
        with held_elsewhere(store):
            command = ["ingest", "--watchlist", str(listings), "--data", str(store.root)]
            result = CliRunner().invoke(app, command)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert store.watchlist().num_rows == 1


def test_the_hold_file_is_owner_only(store):
    previous = os.umask(0o022)
    try:
        with store.hold("serve"):
            pass
    finally:
        os.umask(previous)
    assert (store.root / HOLDER_FILE).stat().st_mode & 0o077 == 0
