"""Command line of the defocus toolchain: ``python cli.py --help``.

Thin by design: each command parses its options, calls into the packages, and prints with
rich. Errors that a user can fix are raised as ``UserError`` (or a subclass of ``ValueError``
from the packages) and printed as one clear line, with exit code 2.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="Defocus-control toolchain: synthesise DP data, train RDPD/DC2/UiD, export to phones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit (no traceback for user errors)."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# --- commands ----------------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
