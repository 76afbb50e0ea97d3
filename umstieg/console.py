"""The terminal umstieg's commands write to: progress, tables and messages go to stderr."""

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def print_error(message: object) -> None:
    """An error a person acts on: never wrapped (paths stay whole and copyable), never read as markup."""
    console.print(f"[red]error:[/red] {escape(str(message))}", soft_wrap=True)
