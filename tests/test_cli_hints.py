"""Hints the command line prints run as they are printed."""

from __future__ import annotations

import pytest

from duanka.cli.app import app
from duanka.cli.output import invoked_as


def test_printed_hints_name_the_command_as_it_can_be_typed(monkeypatch, tmp_path):
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "duanka").write_text("#!/bin/sh\n")
    (venv_bin / "duanka").chmod(0o755)
    monkeypatch.setattr("sys.argv", [str(venv_bin / "duanka")])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the virtual environment is not on PATH
    assert invoked_as() == ".venv/bin/duanka"
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert invoked_as() == "duanka"


def test_a_store_made_with_the_public_demo_key_is_served_only_with_demo(tmp_path):
    from typer.testing import CliRunner

    from duanka.data.pseudonym import Pseudonymiser
    from duanka.data.store import EventStore

    store = EventStore(tmp_path / "store")
    with store.locked():
        store._write_manifest({"key_id": Pseudonymiser.demo().key_id})
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--data", str(store.root), "--model", "models:/duanka@nobody"])
    assert refused.exit_code == 1
    assert "public demo key" in refused.output and "--demo" in refused.output
    allowed = runner.invoke(
        app, ["serve", "--data", str(store.root), "--model", "models:/duanka@nobody", "--demo"]
    )
    assert allowed.exit_code == 1  # no such model: it got past the key
    assert "public demo key" not in allowed.output


def test_help_keeps_every_default_its_text_names():
    """Help is plain text: "[default: data/store]" is shown, not taken for markup and dropped."""
    import typer.main
    from typer.testing import CliRunner

    group = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, command in _commands(group):
        for option in command.params:
            text = getattr(option, "help", None) or ""
            if "[default:" not in text:
                continue
            shown = " ".join(runner.invoke(app, [*path, "--help"], terminal_width=400).output.split())
            assert text.split("[default:")[1].split("]")[0].strip() in shown, (path, option.name)
            checked += 1
    assert checked >= 10


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_setting_is_documented_in_docs_configuration():
    from pathlib import Path

    from duanka.data.config import Settings

    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        variable = "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"DUANKA_{name.upper()}"
        assert f"`{variable}`" in page, variable


def test_score_in_an_empty_folder_says_what_to_do_first_and_creates_nothing(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from duanka.data.config import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DUANKA_MODELS_DIR", raising=False)
    monkeypatch.delenv("DUANKA_DATA_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    try:
        run = ["score", "--data", "store", "--from", "2025-01-01", "--to", "2025-02-01", "--out", "s.csv"]
        no_store = CliRunner().invoke(app, run, terminal_width=400)
        (tmp_path / "store").mkdir()
        no_model = CliRunner().invoke(app, run, terminal_width=400)
    finally:
        get_settings.cache_clear()
    assert no_store.exit_code == 1 and "no event store at store: ingest" in no_store.output
    assert (
        no_model.exit_code == 1
        and "no model registry at models/mlflow.db: train a model first" in no_model.output
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no MLflow store made on the way


@pytest.mark.parametrize(
    "verb",
    [
        ["features", "--as-of", "2025-01-01"],
        ["train", "--as-of", "2025-01-01"],
        ["backtest", "--from", "2025-01-01", "--to", "2025-02-01"],
    ],
)
def test_a_store_folder_with_nothing_ingested_gets_the_one_ingest_first_hint(monkeypatch, tmp_path, verb):
    """The same runnable hint as for a missing folder, naming the command as it can be typed."""
    from typer.testing import CliRunner

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "duanka").write_text("#!/bin/sh\n")
    monkeypatch.setattr("sys.argv", [str(venv_bin / "duanka")])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    (tmp_path / "empty").mkdir()
    ran = CliRunner().invoke(app, [*verb, "--data", "empty"], terminal_width=400)
    assert ran.exit_code == 1
    assert (
        "no event store at empty: ingest the bank's files first (.venv/bin/duanka ingest "
        "--applications FILE --labels FILE --data empty)" in " ".join(ran.output.split())
    )
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == []


def test_hints_of_python_m_duanka_cli_name_the_interpreter(monkeypatch, tmp_path):
    import sys

    monkeypatch.setattr("sys.argv", [str(tmp_path / "duanka" / "cli" / "__main__.py")])
    assert invoked_as() == f"{sys.executable} -m duanka.cli"


def test_python_m_duanka_cli_is_the_duanka_command():
    import subprocess
    import sys

    ran = subprocess.run(
        [sys.executable, "-m", "duanka.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("Usage: duanka [OPTIONS] COMMAND")
    assert "quickstart" in ran.stdout


def test_library_info_lines_stay_out_unless_verbose(monkeypatch):
    import logging

    from typer.testing import CliRunner

    mlflow_log = logging.getLogger("mlflow")
    monkeypatch.setattr(mlflow_log, "level", logging.INFO)
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "INFO")
    CliRunner().invoke(app, ["--verbose", "config", "show"])
    assert mlflow_log.level == logging.INFO
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL")
    CliRunner().invoke(app, ["config", "show"])
    assert mlflow_log.level == logging.WARNING
    import os

    assert os.environ.pop("MLFLOW_LOGGING_LEVEL") == "WARNING"
