"""The `umstieg` command line: the Typer app; each command lives in umstieg/commands/.

Start-up counts (a delta pass with nothing to do must finish in a few seconds): the commands
import what they need when they run, not here.
"""

from __future__ import annotations

import logging
import sys

import typer

from umstieg import console
from umstieg.commands import department
from umstieg.commands.convert import convert
from umstieg.commands.scan import scan


class _App(typer.Typer):
    """Typer, with failures told in words a person can act on (umstieg.console.tell_failure)
    instead of a traceback, whichever command they come from."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - SystemExit and Ctrl-C pass as they are
            sys.exit(console.tell_failure(exc))


app = _App(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
           help="Move a public administration from Microsoft to open source, and prove nothing was lost.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v",
                                      help="log what the pool and the flows do; show tracebacks")) -> None:
    console.verbose = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


app.command()(convert)
app.command()(scan)
app.command()(__import__("umstieg.commands.compare", fromlist=["compare"]).compare)
department.register(app)
app.command()(__import__("umstieg.commands.users", fromlist=["users"]).users)
from umstieg.commands.dashboard import dashboard  # noqa: E402 - the web face's command
app.command()(dashboard)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
