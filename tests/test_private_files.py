"""What duanka creates to hold events, state, decisions, keys and models is readable by its owner only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.data.store import EventStore
from duanka.data.synthetic import generate_bank
from duanka.features.online import OnlineFeatureStore
from duanka.serving.audit import DecisionLog
from duanka.serving.keys import KeyFile
from tests.factories import CHAIN_KEY, free_port

SECRET = "p" * 40


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask():
    """The usual umask (group and others may read): owner-only must not depend on it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_store_state_record_and_keys_are_created_owner_only(tmp_path, permissive_umask):
    store = EventStore(tmp_path / "bank" / "store")
    with store.locked():
        pass
    serving = tmp_path / "bank" / "store" / "serving"
    with OnlineFeatureStore(serving / "online.db") as online:
        online.add_labels([])
    log = DecisionLog(serving / "decisions.db", chain_key=CHAIN_KEY)
    log.close()
    KeyFile(serving / "api_keys.json").create()

    assert mode(tmp_path / "bank") == 0o700
    assert mode(store.root) == 0o700
    assert mode(serving) == 0o700
    for name in ("online.db", "decisions.db", "api_keys.json"):
        assert mode(serving / name) == 0o600, name
    sidecars = [p for p in serving.iterdir() if p.name.endswith(("-wal", "-shm"))]
    assert all(mode(p) == 0o600 for p in sidecars), [(p.name, oct(mode(p))) for p in sidecars]


def test_a_folder_the_operator_made_keeps_its_mode(tmp_path, permissive_umask):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    with EventStore(shared).locked():
        pass
    assert mode(shared) == 0o750


def test_ingest_train_and_serve_leave_nothing_group_or_others_may_read(
    tmp_path, permissive_umask, monkeypatch
):
    """Every file under the store and the models folder is 0600 and every folder 0700 after the
    commands that write them ran under the usual umask (022), MLflow's database and artifacts
    included; and each command run in this process gives its caller's umask back."""
    bank = generate_bank(tmp_path / "bank", months=14, applications=10_000, seed=3, start=date(2024, 1, 1))
    broken = pd.read_csv(bank.applications, dtype=str, keep_default_na=False)
    broken.loc[:4, "phone"] = "1"  # a quarantine, too
    broken.to_csv(bank.applications, index=False)
    store, models = tmp_path / "store", tmp_path / "models"
    env = {"DUANKA_MODELS_DIR": str(models), "DUANKA_PSEUDONYM_KEY": SECRET, "DUANKA_AUDIT_CHAIN_KEY": SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("MLFLOW_TRACKING_URI", "DUANKA_API_KEYS_FILE", "DUANKA_AUDIT_DB"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    tracking = mlflow.get_tracking_uri()
    try:
        for verb in (
            ["ingest", "--applications", str(bank.applications), "--labels", str(bank.labels)],
            ["ingest", "--watchlist", str(bank.watchlist)],
            ["train", "--as-of", "2025-03-01", "--n-boot", "10"],
            ["keys", "create", "--admin"],
        ):
            ran = CliRunner().invoke(app, [*verb, "--data", str(store)])
            assert ran.exit_code == 0, ran.output
            assert os.umask(0o022) == 0o022  # given back
    finally:
        get_settings.cache_clear()
        mlflow.set_tracking_uri(tracking)
    admin = {"Authorization": f"Bearer {ran.output.strip().splitlines()[-1]}"}
    last = pd.read_csv(bank.applications, dtype=str, keep_default_na=False).iloc[-1].to_dict()
    row = {**last, "application_id": "NEW0000001"}  # one the store does not hold
    listing = {"id_number": row["id_number"], "listed_at": "2025-01-01", "source": "bank_internal"}

    # `duanka serve` as operators run it, in a process of its own that starts with umask 022
    serve_env = {**os.environ, "DUANKA_BACKDATING_TOLERANCE_S": str(10 * 365 * 86_400)}
    serve_env.pop("MLFLOW_TRACKING_URI", None)  # set_tracking_uri above exported the previous one
    with _serving(store, serve_env, tmp_path / "serve.log") as url:
        assert (
            httpx.post(f"{url}/v1/watchlist", json={"listings": [listing]}, headers=admin).status_code == 200
        )
        assert httpx.post(f"{url}/v1/score", json=row, headers=admin).status_code == 200

    assert (store / "quarantine.csv").exists() and (models / "mlflow.db").exists()
    assert any(models.rglob("registered_model_meta")) and (store / "serving" / "decisions.db").exists()
    readable = [
        f"{oct(mode(p))} {p.relative_to(tmp_path)}"
        for root in (store, models)
        for p in (root, *root.rglob("*"))
        if mode(p) != (0o700 if p.is_dir() else 0o600)
    ]
    assert readable == []


@contextmanager
def _serving(store: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """``duanka serve`` on ``store`` until the block ends (stopped as a service manager stops it);
    what it prints goes to ``log``."""
    url = f"http://127.0.0.1:{(port := free_port())}"
    duanka = str(Path(sys.executable).with_name("duanka"))
    with log.open("w") as printed:
        process = subprocess.Popen(
            [duanka, "serve", "--data", str(store), "--port", str(port), "--poll-seconds", "0"],
            env=env,
            stdout=printed,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            started = process.poll() is None and time.monotonic() < deadline
            assert started, f"the service did not start: {log.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
