"""`duanka config show`: every setting in force, where it came from, and no secret."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from duanka.cli import output
from duanka.cli.app import app
from duanka.data.config import Settings, get_settings

SECRETS = {
    "DUANKA_PSEUDONYM_KEY": "pseudonym-secret-0123456789abcdef0123",
    "DUANKA_AUDIT_CHAIN_KEY": "chain-secret-0123456789abcdef0123456789",
    "DUANKA_MODEL_SIGNING_KEY": "signing-secret-0123456789abcdef012345",
    "MLFLOW_TRACKING_URI": "https://team:hunter2-password@mlflow.bank.example:5000/",
}


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console wide enough that no value wraps: rich sizes the module's console when it is made,
    so CliRunner's terminal width does not reach it (``_width`` is what Console(width=...) sets)."""
    monkeypatch.setattr(output.console, "_width", 240)


def test_config_show_lists_every_setting_and_shows_no_secret(monkeypatch):
    for variable, value in SECRETS.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("DUANKA_MAX_IN_FLIGHT", "7")
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(app, ["config", "show"], terminal_width=200)
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    for name in Settings.model_fields:
        variable = "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"DUANKA_{name.upper()}"
        assert variable in shown.output, variable
    assert "DUANKA_MAX_IN_FLIGHT" in shown.output and " 7 " in shown.output
    assert "hunter2-password" not in shown.output and "mlflow.bank.example:5000" in shown.output
    for value in list(SECRETS.values())[:3]:
        assert value not in shown.output
    assert shown.output.count("(set, not shown)") == 3


def _rows(output: str) -> dict[str, tuple[str, str]]:
    """The table's rows: variable -> (value, source)."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 3 and cells[0]:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_config_show_names_where_each_value_came_from(monkeypatch, tmp_path):
    for variable in list(os.environ):
        if variable.startswith("DUANKA_") or variable == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(variable)
    config = tmp_path / "duanka.toml"
    config.write_text(
        'rate_limit = "50/second;2000/minute"\n'
        "backdating_tolerance_s = 120\n"
        "max_in_flight = 8\n"
        'model_signing_key_file = "/run/secrets/signing"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("DUANKA_CONFIG_FILE", str(config))
    monkeypatch.setenv("DUANKA_MAX_IN_FLIGHT", "9")  # the environment wins over the file
    monkeypatch.setenv("DUANKA_AUDIT_CHAIN_KEY", SECRETS["DUANKA_AUDIT_CHAIN_KEY"])
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(app, ["config", "show"])
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    rows = _rows(shown.output)
    assert rows["DUANKA_CONFIG_FILE"] == (str(config), "environment")
    assert rows["DUANKA_RATE_LIMIT"] == ("50/second;2000/minute", "file")
    assert rows["DUANKA_BACKDATING_TOLERANCE_S"] == ("120.0", "file")
    assert rows["DUANKA_MAX_IN_FLIGHT"] == ("9", "environment")
    assert rows["DUANKA_MODEL_SIGNING_KEY_FILE"] == ("/run/secrets/signing", "file")
    assert rows["DUANKA_AUDIT_CHAIN_KEY"] == ("(set, not shown)", "environment")
    assert rows["DUANKA_MODEL_SIGNING_KEY"] == ("(not set)", "default")
    assert rows["DUANKA_PSEUDONYM_KEY"] == ("(not set)", "default")
    assert rows["DUANKA_SEED"] == ("20240101", "default")
    assert SECRETS["DUANKA_AUDIT_CHAIN_KEY"] not in shown.output
    assert len(rows) == len(Settings.model_fields)
