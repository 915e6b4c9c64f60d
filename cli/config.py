"""``duanka config show``: the configuration in force and where each value came from."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from duanka.cli.options import PLAIN_HELP
from duanka.cli.output import console
from duanka.cli.prerequisites import checked_settings

config_app = typer.Typer(
    **PLAIN_HELP, help="The configuration in force (docs/configuration.md).", no_args_is_help=True
)


@config_app.command("show")
def config_show() -> None:
    """Every setting's value in force and where it came from (environment, the DUANKA_CONFIG_FILE
    file, or the default); secrets only as set or not."""
    from duanka.data.config import effective_settings

    settings = checked_settings()
    table = RichTable(title="duanka settings (docs/configuration.md)")
    table.add_column("variable", overflow="fold")
    table.add_column("value", overflow="fold")  # a long path folds onto the next line, never cut short
    table.add_column("from", overflow="fold")
    for shown in effective_settings(settings):
        table.add_row(shown.variable, escape(shown.value), shown.source)
    console.print(table)
