"""The TOML configuration file (``DUANKA_CONFIG_FILE``): read only when named, below the
environment, and refused (naming the file, line and key) when it holds what it may not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.config import CONFIG_FILE_VARIABLE, ConfigFileError, Settings, get_settings, is_secret

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_duanka_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment with no duanka setting (a developer's shell may have some)."""
    import os

    for variable in list(os.environ):
        if variable.startswith("DUANKA_") or variable == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(variable)


def write(folder: Path, text: str, name: str = "duanka.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_file_sets_what_the_environment_does_not_and_arguments_win_over_both(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        'data_dir = "/srv/duanka/store"\n'
        "max_in_flight = 7\n"
        'rate_limit = "5/second"\n'
        "backdating_tolerance_s = 120\n",
    )
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(path))
    monkeypatch.setenv("DUANKA_RATE_LIMIT", "9/second")
    settings = Settings(backdating_tolerance_s=30)

    assert settings.config_file == path
    assert settings.data_dir == Path("/srv/duanka/store") and settings.source_of("data_dir") == "file"
    assert settings.max_in_flight == 7 and settings.source_of("max_in_flight") == "file"
    assert settings.rate_limit == "9/second" and settings.source_of("rate_limit") == "environment"
    assert (
        settings.backdating_tolerance_s == 30 and settings.source_of("backdating_tolerance_s") == "argument"
    )
    assert settings.seed == 20240101 and settings.source_of("seed") == "default"
    assert settings.source_of("config_file") == "environment"


def test_a_value_equal_to_its_default_still_names_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(write(tmp_path, "max_in_flight = 32\n")))
    monkeypatch.setenv("DUANKA_SEED", "20240101")
    settings = Settings()
    assert settings.source_of("max_in_flight") == "file"
    assert settings.source_of("seed") == "environment"
    with pytest.raises(KeyError):
        settings.source_of("no_such_setting")


def test_no_file_is_read_unless_named(tmp_path, monkeypatch):
    # a duanka.toml in the folder a command runs from changes nothing: only the variable names a file
    write(tmp_path, 'data_dir = "/elsewhere"\nmax_in_flight = 1\n')
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.config_file is None and settings.data_dir == Path("data/store")
    assert all(settings.source_of(name) == "default" for name in Settings.model_fields)
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, "")  # set but empty: still no file
    assert Settings().config_file is None and Settings().max_in_flight == 32


def test_an_argument_names_or_suppresses_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(write(tmp_path, "max_in_flight = 3\n", "env.toml")))
    assert Settings().max_in_flight == 3
    assert Settings(config_file=write(tmp_path, "max_in_flight = 4\n", "arg.toml")).max_in_flight == 4
    assert Settings(config_file=None).max_in_flight == 32


def test_the_tracking_uri_is_written_by_its_setting_name_and_secret_files_by_path(tmp_path, monkeypatch):
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text("k" * 40)
    path = write(
        tmp_path,
        'mlflow_tracking_uri = "https://mlflow.bank.example"\n'
        f'pseudonym_key_file = "{key_file}"\n'
        'audit_chain_key_file = "/run/secrets/chain"\n',
    )
    settings = Settings(config_file=path)
    assert settings.tracking_uri() == "https://mlflow.bank.example"
    assert settings.source_of("mlflow_tracking_uri") == "file"
    assert settings.pseudonym_key_file == key_file and settings.pseudonym_key is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://other.example")
    assert Settings(config_file=path).tracking_uri() == "https://other.example"


SECRET_FIELDS = [name for name, field in Settings.model_fields.items() if is_secret(field)]


def test_the_secrets_are_the_three_keys():
    assert SECRET_FIELDS == ["pseudonym_key", "audit_chain_key", "model_signing_key"]
    assert all(Settings.model_fields[n].annotation == SecretStr | None for n in SECRET_FIELDS)


@pytest.mark.parametrize("name", SECRET_FIELDS)
def test_a_secret_in_the_file_is_refused_naming_it_and_not_showing_it(tmp_path, name):
    secret = "do-not-print-me-0123456789abcdef0123456789"
    path = write(tmp_path, f'seed = 1\n{name} = "{secret}"\n')
    with pytest.raises(ConfigFileError) as raised:
        Settings(config_file=path)
    message = str(raised.value)
    assert str(path) in message and f"line 2: {name} is a secret" in message
    assert f"DUANKA_{name.upper()}_FILE" in message
    assert secret not in message


def test_a_tracking_uri_holding_a_password_is_refused(tmp_path):
    path = write(tmp_path, 'mlflow_tracking_uri = "https://team:hunter2@mlflow.bank.example/"\n')
    with pytest.raises(ConfigFileError, match="line 1: mlflow_tracking_uri holds a password") as raised:
        Settings(config_file=path)
    assert "hunter2" not in str(raised.value)


def test_unknown_keys_are_refused_naming_each_with_its_line(tmp_path):
    path = write(
        tmp_path,
        "# a checked-in file\nmax_in_fligth = 7\nDUANKA_SEED = 3\n\"rate limit\" = '1/second'\n",
    )
    with pytest.raises(ConfigFileError) as raised:
        Settings(config_file=path)
    message = str(raised.value)
    assert message.startswith(f"configuration file {path}: ")
    assert "line 2: max_in_fligth is no setting" in message
    assert "line 3: DUANKA_SEED is no setting; write seed, without DUANKA_" in message
    assert "line 4: rate limit is no setting" in message


def test_tables_and_the_file_naming_itself_are_refused(tmp_path):
    path = write(tmp_path, 'config_file = "other.toml"\n\n[serve]\nmax_in_flight = 3\n')
    with pytest.raises(ConfigFileError) as raised:
        Settings(config_file=path)
    message = str(raised.value)
    assert f"line 1: config_file names the file itself: set {CONFIG_FILE_VARIABLE}" in message
    assert "line 3: [serve] is a table; settings are top-level keys" in message


def test_a_value_of_the_wrong_type_is_refused_naming_file_line_and_key(tmp_path):
    path = write(tmp_path, 'seed = 1\nmax_in_flight = 0\nrate_limit = 200\nheader_timeout_s = "soon"\n')
    with pytest.raises(ConfigFileError) as raised:
        Settings(config_file=path)
    message = str(raised.value)
    assert "line 2: max_in_flight = 0: Input should be greater than 0" in message
    assert "line 3: rate_limit = 200: Input should be a valid string" in message
    assert "line 4: header_timeout_s = 'soon'" in message


def test_a_missing_folder_or_malformed_file_is_named(tmp_path):
    with pytest.raises(
        ConfigFileError, match=rf"{re.escape(str(tmp_path / 'absent.toml'))} .* does not exist"
    ):
        Settings(config_file=tmp_path / "absent.toml")
    with pytest.raises(ConfigFileError, match="is a folder"):
        Settings(config_file=tmp_path)
    broken = write(tmp_path, "seed = 1\nmax_in_flight = \n", "broken.toml")
    with pytest.raises(ConfigFileError, match=r"broken\.toml") as raised:
        Settings(config_file=broken)
    assert "is not valid TOML" in str(raised.value) and "line 2" in str(raised.value)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('data_dir = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigFileError, match=r"latin\.toml is not UTF-8"):
        Settings(config_file=latin)


def test_the_example_in_docs_configuration_md_is_a_valid_file(tmp_path):
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", page, flags=re.DOTALL)
    assert blocks, "docs/configuration.md shows an example file"
    settings = Settings(config_file=write(tmp_path, blocks[0]))
    given = [name for name in Settings.model_fields if settings.source_of(name) == "file"]
    assert len(given) >= 5, given
    assert {"rate_limit", "backdating_tolerance_s", "model_signing_key_file"} <= set(given)


def test_config_show_refuses_a_bad_file_in_one_line(tmp_path, monkeypatch):
    path = write(tmp_path, "typo = 1\n")
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(path))
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(app, ["config", "show"], terminal_width=400)
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 1
    assert "Traceback" not in shown.output
    assert f"configuration file {path}: line 1: typo is no setting" in " ".join(shown.output.split())


@pytest.mark.parametrize(
    ("verb", "setting"),
    [
        (["keys", "list"], "typo = 1\n"),
        (["train", "--data", "x", "--as-of", "2025-01-01"], "seed = 'many'\n"),
    ],
)
def test_every_verb_refuses_a_bad_file_in_one_line_before_any_work(tmp_path, monkeypatch, verb, setting):
    path = write(tmp_path, setting)
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(path))
    get_settings.cache_clear()
    try:
        ran = CliRunner().invoke(app, verb, terminal_width=400)
    finally:
        get_settings.cache_clear()
    assert ran.exit_code == 1
    assert "Traceback" not in ran.output
    assert f"configuration file {path}: line 1:" in " ".join(ran.output.split())


def test_help_stays_readable_while_the_file_is_bad(tmp_path):
    import os
    import subprocess
    import sys

    path = write(tmp_path, "typo = 1\n")
    env = {**os.environ, CONFIG_FILE_VARIABLE: str(path)}
    duanka = Path(sys.executable).parent / "duanka"
    shown = subprocess.run([duanka, "score", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "Usage" in shown.stdout
