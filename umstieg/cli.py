"""The `umstieg` command line: the Typer app; each command lives in umstieg/commands/."""

from __future__ import annotations

import logging
import sys

import typer

from umstieg.commands import department
from umstieg.commands.convert import convert
from umstieg.commands.scan import scan

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Move a public administration from Microsoft to open source, and prove nothing was lost.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log what the pool does")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


app.command()(convert)
app.command()(scan)
department.register(app)
from umstieg.commands.dashboard import dashboard  # noqa: E402 - the web face's command
app.command()(dashboard)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
