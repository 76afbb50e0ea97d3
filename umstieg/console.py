"""The terminal umstieg's commands write to: progress, tables and messages go to stderr."""

from rich.console import Console

console = Console(stderr=True)
