"""``duanka serve`` on a store or state made under another pseudonym key: one line saying what to
do, before the service starts, not its traceback (issue #26)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.data.pseudonym import Pseudonymiser
from tests.factories import free_port

OTHER_SECRET = "o" * 40


@pytest.fixture
def other_key(duanka_env, tmp_path):
    """The served bank's registry, an audit chain key, and a pseudonym key file of another secret."""
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(OTHER_SECRET, encoding="utf-8")
    key_file.chmod(0o600)
    duanka_env.delenv("DUANKA_PSEUDONYM_KEY", raising=False)
    duanka_env.setenv("DUANKA_PSEUDONYM_KEY_FILE", str(key_file))
    duanka_env.setenv("DUANKA_AUDIT_CHAIN_KEY", "c" * 40)
    get_settings.cache_clear()
    return Pseudonymiser.from_secret(OTHER_SECRET.encode()).key_id


def _serve(store) -> str:
    ran = CliRunner().invoke(app, ["serve", "--data", str(store), "--demo", "--port", str(free_port())])
    said = " ".join(ran.output.split())  # one message, however the terminal wraps it
    assert ran.exit_code == 1, ran.output
    assert "Traceback" not in said and said.startswith("error:") and said.count("error:") == 1, said
    return said


def test_a_demo_store_served_with_a_key_file_set_says_to_unset_it(tmp_path, other_key):
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text(json.dumps({"key_id": "demo-0123456789ab", "rows": {}}))
    said = _serve(store)
    assert f"pseudonymised with key demo-0123456789ab, the service's key is {other_key}" in said
    assert "unset DUANKA_PSEUDONYM_KEY and DUANKA_PSEUDONYM_KEY_FILE" in said


def test_a_state_made_under_another_key_says_to_rebuild_it(tmp_path, other_key):
    store = tmp_path / "store"
    (store / "serving").mkdir(parents=True)
    (store / "manifest.json").write_text(json.dumps({"key_id": other_key, "rows": {}}))
    (store / "serving" / "online.sync.json").write_text(json.dumps({"key_id": "0123456789ab", "rows": {}}))
    said = _serve(store)
    assert "holds online state made with key 0123456789ab" in said
    assert f"remove{store / 'serving' / 'online.db'}" in said.replace(" ", "")  # a path wraps anywhere
