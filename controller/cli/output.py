"""How the commands print tables: rich on a terminal at its width; piped or redirected (a file, grep, a cron
mail) 200 columns wide unless COLUMNS says otherwise, where rich would fold every cell to fit 80."""

from __future__ import annotations

import os

from rich.console import Console

__all__ = ["wide_console"]


def wide_console() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)
    return console
