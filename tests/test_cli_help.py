"""Every verb's help agrees with itself: what a default is and where it comes from, one meaning
of --model, readable in an 80-column terminal."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from duanka.cli.app import app

ROOT = typer.main.get_command(app)


def _verbs(group: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    found = []
    for name, command in sorted(group.commands.items()):  # type: ignore[attr-defined]
        if hasattr(command, "commands"):  # a group of verbs (keys, audit, config)
            found += _verbs(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


VERBS = _verbs(ROOT)
OPTIONS = [(path, option) for path, command in VERBS for option in command.params if option.name != "help"]


def test_every_verb_is_walked():
    names = {" ".join(path) for path, _ in VERBS}
    assert {
        "ingest",
        "train",
        "score",
        "serve",
        "promote",
        "keys create",
        "audit verify",
        "config show",
    } <= names


@pytest.mark.parametrize("path", [p for p, _ in VERBS], ids=" ".join)
def test_help_fits_an_80_column_terminal(path):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80


@pytest.mark.parametrize(
    ("path", "option"), OPTIONS, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x.name
)
def test_a_default_says_where_it_comes_from(path, option):
    text = option.help or ""
    assert "[default: settings]" not in text
    if option.name == "data":
        # DUANKA_DATA_DIR overrides data/store for every verb that reads or writes a store
        assert "$DUANKA_DATA_DIR" in text, " ".join(path)
    if option.name == "model":
        assert "models:/" in text, " ".join(path)  # a URI everywhere (promote takes a name too)


@pytest.mark.parametrize("given", ["other", "models:/other", "models:/other@champion"])
def test_promote_reads_its_model_as_a_name_or_a_uri(given):
    result = CliRunner().invoke(app, ["promote", "--model", given])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert f"only the registered model 'duanka' is managed by duanka, not '{given}'" in said
