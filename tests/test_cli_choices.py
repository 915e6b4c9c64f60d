"""Choices and optional dependencies are checked before any work, with the remedy."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from duanka.cli.app import app


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["train", "--as-of", "2025-01-01", "--calibration", "sigmoid"], "platt"),
        (["backtest", "--from", "2025-01-01", "--to", "2025-02-01", "--calibration", "sigmoid"], "isotonic"),
        (["train", "--as-of", "2025-01-01", "--engine", "spark"], "dask"),
        (["train", "--as-of", "2025-01-01", "--fit", "gpu"], "local"),
        (["ingest", "--applications", "apps.csv", "--encoding", "latin-1"], "gbk, gb2312"),
        (["score", "--applications", "apps.csv", "--out", "s.csv", "--encoding", "big5"], "utf-8-sig"),
        (["train", "--as-of", "2025-01-01", "--out-of-province-weight", "0.5"], "greater than or equal to 1"),
    ],
)
def test_an_unknown_choice_is_refused_before_anything_is_read(tmp_path, args, named):
    result = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert named in result.output
    assert not (tmp_path / "nothing").exists()


def test_tuning_without_optuna_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a)
    )
    result = CliRunner().invoke(
        app, ["train", "--as-of", "2025-01-01", "--tune-trials", "5", "--data", str(tmp_path / "nothing")]
    )
    assert result.exit_code == 1
    assert "pip install 'duanka[tune]'" in result.output
