"""Hints the command line prints run as they are printed."""

from __future__ import annotations

from serving import cli


def test_printed_hints_name_the_command_as_it_can_be_typed(monkeypatch, tmp_path):
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "duanka").write_text("#!/bin/sh\n")
    (venv_bin / "duanka").chmod(0o755)
    monkeypatch.setattr("sys.argv", [str(venv_bin / "duanka")])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the virtual environment is not on PATH
    assert cli.invoked_as() == ".venv/bin/duanka"
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert cli.invoked_as() == "duanka"
