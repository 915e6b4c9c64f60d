"""What the command line writes: results on stdout, warnings and the one-line reason of a failure
on stderr, and hints that name the command as it can be typed again."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=False)
err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """One-line reason on stderr, non-zero exit (the reason as written: "duanka[tune]" is no markup)."""
    # soft_wrap: a path or a command in the reason is never broken over lines (terminals wrap it)
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=1)


def invoked_as() -> str:
    """How to type this command again: ``duanka`` when that is on PATH, else the path that ran it
    (``.venv/bin/duanka`` after ``make demo``), so printed hints run as they are printed;
    ``python -m duanka.cli`` names the interpreter that ran it."""
    if Path(sys.argv[0]).name == "__main__.py":
        return f"{sys.executable} -m duanka.cli"
    ran = Path(sys.argv[0]).resolve()
    found = shutil.which("duanka")
    if found is not None and Path(found).resolve() == ran:
        return "duanka"
    try:
        return str(ran.relative_to(Path.cwd()))
    except ValueError:
        return str(ran)
