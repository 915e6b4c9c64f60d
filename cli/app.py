"""The ``duanka`` application: every verb, in the order ``duanka --help`` lists them, and the
global ``--verbose`` option and configuration check that run before any of them."""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from typing import Annotated

import typer

from duanka.cli import data, scoring, training
from duanka.cli.audit import audit_app
from duanka.cli.config import config_app
from duanka.cli.keys import keys_app
from duanka.cli.models import models_app
from duanka.cli.monitor import monitor
from duanka.cli.options import PLAIN_HELP
from duanka.cli.prerequisites import checked_settings
from duanka.cli.quickstart import quickstart
from duanka.cli.review import review_app
from duanka.data.private import owner_only_umask

app = typer.Typer(
    **PLAIN_HELP,
    name="duanka",
    help="Money-mule risk scoring for account openings (断卡): ingest, features, train, score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def check_configuration(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the libraries' own INFO messages (MLflow, alembic).")
    ] = False,
) -> None:
    """Money-mule risk scoring for account openings (断卡): ingest, features, train, score."""
    # What a verb creates holds pseudonymised events, models, scores or keys: owner-only, whatever
    # umask the shell gave (MLflow and the other libraries create their files with it). Put back
    # when the command ends, for a process that runs commands in turn (the tests' runner).
    ctx.call_on_close(partial(os.umask, owner_only_umask()))
    if not verbose:
        # MLflow reads this when it is first imported; a user sees duanka's lines and warnings
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # Every verb reads the settings; a bad file or variable is one line here, not a traceback
    # later. Help reads none, and must stay readable while the configuration is being fixed.
    # (click parses a verb's --help after this callback, so the command line is read here)
    if "--help" not in sys.argv[1:]:
        checked_settings()


for verb in (
    data.generate,
    data.ingest,
    training.features,
    training.train,
    training.backtest,
    training.promote,
    training.report,
    quickstart,
    scoring.score,
    scoring.serve,
    monitor,
):
    app.command()(verb)
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(config_app, name="config")
app.add_typer(review_app, name="review")
app.add_typer(models_app, name="models")
