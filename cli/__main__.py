"""``python -m duanka.cli``: the same command line as the ``duanka`` script."""

from duanka.cli.app import app

app(prog_name="duanka")
