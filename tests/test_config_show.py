"""`duanka config show`: every setting in force, and no secret."""

from __future__ import annotations

from typer.testing import CliRunner

from data.config import Settings, get_settings
from serving.cli import app

SECRETS = {
    "DUANKA_PSEUDONYM_KEY": "pseudonym-secret-0123456789abcdef0123",
    "DUANKA_AUDIT_CHAIN_KEY": "chain-secret-0123456789abcdef0123456789",
    "DUANKA_MODEL_SIGNING_KEY": "signing-secret-0123456789abcdef012345",
    "MLFLOW_TRACKING_URI": "https://team:hunter2-password@mlflow.bank.example:5000/",
}


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
