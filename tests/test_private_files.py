"""What duanka creates to hold events, state, decisions and keys is readable by its owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from duanka.data.store import EventStore
from duanka.features.online import OnlineFeatureStore
from duanka.serving.audit import DecisionLog
from duanka.serving.keys import KeyFile
from tests.factories import CHAIN_KEY


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
