"""API keys: shown once, stored only as hashes, scoped to branches, revocable while serving."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import get_settings
from duanka.serving.keys import KeyFile, UnknownKey


@pytest.fixture
def keyfile(tmp_path) -> KeyFile:
    return KeyFile(tmp_path / "serving" / "api_keys.json")


def test_a_new_key_authenticates_and_only_its_hash_is_stored(keyfile):
    record, token = keyfile.create()
    assert keyfile.authenticate(token) == record
    stored = keyfile.path.read_text(encoding="utf-8")
    # the secret is URL-safe base64 and may itself hold "_": it is everything after the key id
    secret = token.removeprefix(f"dk_{record.key_id}_")
    assert len(secret) >= 40 and token not in stored and secret not in stored
    assert record.sha256 in stored
    assert stat.S_IMODE(keyfile.path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "mangle", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), lambda t: "", lambda t: "x" + t]
)
def test_a_wrong_or_malformed_key_is_refused(keyfile, mangle):
    _, token = keyfile.create()
    assert keyfile.authenticate(mangle(token)) is None


def test_a_key_scoped_to_branches_scores_only_for_them(keyfile):
    record, _ = keyfile.create(("B2", "B1", "B1"))
    assert record.branches == ("B1", "B2")
    assert record.may_score_for("B1") and not record.may_score_for("B3")
    everywhere, _ = keyfile.create()
    assert everywhere.may_score_for("B3")


def test_a_revoked_key_stops_working_for_a_reader_that_loaded_it_before(keyfile):
    record, token = keyfile.create()
    service_view = KeyFile(keyfile.path)
    assert service_view.authenticate(token) is not None
    keyfile.revoke(record.key_id)
    assert service_view.authenticate(token) is None
    assert [k.revoked_at is not None for k in service_view.records()] == [True]
    with pytest.raises(UnknownKey):
        keyfile.revoke("nosuchkey")


def test_the_cli_creates_lists_and_revokes_keys(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    monkeypatch.setenv("DUANKA_API_KEYS_FILE", str(path))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(app, ["keys", "create", "--branches", "B1,B2", "--admin"])
        assert created.exit_code == 0, created.output
        token = created.output.strip().splitlines()[-1]
        (record,) = KeyFile(path).records()
        assert KeyFile(path).authenticate(token) == record
        assert record.branches == ("B1", "B2") and record.admin

        listed = runner.invoke(app, ["keys", "list"])
        assert record.key_id in listed.output and token not in listed.output

        revoked = runner.invoke(app, ["keys", "revoke", record.key_id])
        assert revoked.exit_code == 0 and KeyFile(path).authenticate(token) is None
        assert runner.invoke(app, ["keys", "revoke", "nosuchkey"]).exit_code != 0
    finally:
        get_settings.cache_clear()


def _create_keys(path: str, n: int) -> None:
    for _ in range(n):
        KeyFile(Path(path)).create()


def test_operators_changing_keys_at_once_lose_nothing(tmp_path):
    """Each change reads what is stored under the lock: no process writes over another's key."""
    path = tmp_path / "keys.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_create_keys, args=(str(path), 15)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0] * 6
    assert len(KeyFile(path).records()) == 90
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def no_key_file_setting(monkeypatch):
    """Keys found through the event store, as without DUANKA_API_KEYS_FILE."""
    monkeypatch.delenv("DUANKA_API_KEYS_FILE", raising=False)
    monkeypatch.delenv("DUANKA_DATA_DIR", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "verb", [["keys", "create"], ["keys", "list"], ["keys", "revoke", "k1"]], ids=["create", "list", "revoke"]
)
@pytest.mark.parametrize("given", [True, False], ids=["--data TYPO", "no --data"])
def test_keys_refuse_a_folder_that_holds_no_event_store(
    tmp_path, monkeypatch, no_key_file_setting, verb, given
):
    monkeypatch.chdir(tmp_path)  # without --data: data/store here, as in a checkout
    typo = tmp_path / "stroe"
    ran = CliRunner().invoke(app, [*verb, *(["--data", str(typo)] if given else [])], terminal_width=400)
    assert ran.exit_code == 1, ran.output
    said = " ".join(ran.output.split())  # one message, however the terminal wraps it
    assert said.startswith("error: no event store at") and said.count("error:") == 1
    assert "Traceback" not in said and " ingest --applications" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder made, no key written


def test_keys_are_made_for_an_event_store(tmp_path, no_key_file_setting):
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text('{"key_id": "k", "rows": {}}', encoding="utf-8")
    ran = CliRunner().invoke(app, ["keys", "create", "--data", str(store)], terminal_width=400)
    assert ran.exit_code == 0, ran.output
    assert len(KeyFile(store / "serving" / "api_keys.json").records()) == 1


def test_a_reviewer_key_has_no_other_power(keyfile):
    record, _ = keyfile.create(("B1",), reviewer=True)
    assert record.reviewer and not record.admin and not record.labels
    assert keyfile.active_key(record.key_id) == record
    for other in ({"admin": True}, {"labels": True}):
        with pytest.raises(ValueError, match="no other power"):
            keyfile.create(reviewer=True, **other)
    keyfile.revoke(record.key_id)
    assert keyfile.active_key(record.key_id) is None


def test_the_cli_never_prints_a_reviewers_key_but_how_to_sign_them_in(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    monkeypatch.setenv("DUANKA_API_KEYS_FILE", str(path))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(app, ["keys", "create", "--reviewer", "--branches", "B1"])
        assert created.exit_code == 0, created.output
        (record,) = KeyFile(path).records()
        assert record.reviewer and record.branches == ("B1",)
        assert f"review link --key-id {record.key_id}" in created.output
        assert f"dk_{record.key_id}_" not in created.output
        refused = runner.invoke(app, ["keys", "create", "--reviewer", "--labels"])
        assert refused.exit_code != 0 and "no other power" in refused.output
        assert len(KeyFile(path).records()) == 1
    finally:
        get_settings.cache_clear()


def test_a_model_reviewer_key_has_no_other_power_and_no_branches(keyfile):
    record, _ = keyfile.create(model_reviewer=True)
    assert record.model_reviewer and not (record.reviewer or record.admin or record.labels)
    assert record.branches is None and keyfile.active_key(record.key_id) == record
    for other in ({"admin": True}, {"labels": True}, {"reviewer": True}):
        with pytest.raises(ValueError, match="no other power"):
            keyfile.create(model_reviewer=True, **other)
    with pytest.raises(ValueError, match="not scoped to branches"):
        keyfile.create(("B1",), model_reviewer=True)


def test_the_cli_prints_a_model_reviewers_key_for_offline_approval_and_how_to_sign_them_in(
    tmp_path, monkeypatch
):
    path = tmp_path / "keys.json"
    monkeypatch.setenv("DUANKA_API_KEYS_FILE", str(path))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(app, ["keys", "create", "--model-reviewer"], terminal_width=400)
        assert created.exit_code == 0, created.output
        (record,) = KeyFile(path).records()
        assert record.model_reviewer
        assert f"review link --key-id {record.key_id}" in created.output
        assert "models approve" in created.output and "DUANKA_API_KEY" in created.output
        assert KeyFile(path).authenticate(created.output.strip().splitlines()[-1]) == record
        for mixed in (["--reviewer"], ["--admin"], ["--branches", "B1"]):
            refused = runner.invoke(app, ["keys", "create", "--model-reviewer", *mixed], terminal_width=400)
            assert refused.exit_code != 0, mixed
        listed = runner.invoke(app, ["keys", "list"], terminal_width=80)
        assert "model reviewer" in listed.output and record.key_id in listed.output
        assert len(KeyFile(path).records()) == 1
    finally:
        get_settings.cache_clear()
