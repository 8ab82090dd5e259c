"""Shared CLI helpers: turn voxelfm errors into one-line messages and non-zero exits."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from voxelfm.core.errors import VoxelFMError

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)


def guarded(fn: F) -> F:
    """Print a ``VoxelFMError`` as ``error: <message>`` (no traceback) and exit with code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VoxelFMError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


PARTIAL_FAILURE_EXIT = 2


def exit_if_some_failed(n_failed: int, where: str) -> None:
    """End a batch command that carried on past bad inputs with exit status 2, so that scripts can
    tell "finished, but N inputs failed" from success (0) and from an error that stopped it (1)."""
    if n_failed:
        console.print(f"[yellow]{n_failed} input(s) failed[/]; everything else is in {escape(where)} "
                      f"(exit status {PARTIAL_FAILURE_EXIT})", highlight=False, soft_wrap=True)
        raise typer.Exit(code=PARTIAL_FAILURE_EXIT)


def setup_logging(verbose: bool = False) -> None:
    """Rich logging to stderr; INFO by default, DEBUG with --verbose."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, markup=False)],
        force=True,
    )
