"""The terminal umstieg's commands write to: progress, tables and messages go to stderr."""

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)

#: Set by `umstieg -v`: failures then show their traceback too.
verbose = False


def print_error(message: object) -> None:
    """An error a person acts on: never wrapped (paths stay whole and copyable), never read as markup."""
    console.print(f"[red]error:[/red] {escape(str(message))}", soft_wrap=True)


def tell_failure(exc: BaseException) -> int:
    """Say what went wrong in a line or two and return the exit status: 2 for what a person must
    change first (configuration, a refused login, a full disk, a dead ledger), 1 for anything
    unexpected. The traceback only with -v."""
    from core.errors import ConfigError, FatalError
    if verbose:
        console.print_exception(show_locals=False)
    if isinstance(exc, (ConfigError, FatalError)):
        print_error(exc)
        return 2
    print_error(f"{type(exc).__name__}: {exc}")
    if not verbose:
        console.print("this was not expected: `umstieg -v ...` shows where it happened", soft_wrap=True)
    return 1
