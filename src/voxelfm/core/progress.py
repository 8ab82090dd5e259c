"""One progress bar for every long loop (embedding, phantom cohorts, demo stages).

``progress_bar(console)`` gives a :class:`rich.progress.Progress` with the same columns everywhere:
description, bar, ``done/total``, elapsed and remaining time, and, with ``last=True``, a free text
field ``last`` (e.g. the scan just finished: ``bar.update(task, last="s01: ok")``). It lives in
``core`` so the CLI and the demo (which must not import the CLI) share it; rich is imported on call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress


def progress_bar(console: Any = None, *, last: bool = False, disable: bool = False, auto_refresh: bool = True,
                 transient: bool = False) -> Progress:
    """The voxelfm progress bar on ``console`` (rich's default console when None).

    ``auto_refresh=False`` starts no refresh thread (call ``bar.refresh()`` after updates): needed
    before forking worker processes. ``disable`` keeps the calls but draws nothing (``--no-progress``).
    A task using ``last=True`` columns must be added with ``last=""``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("[progress.description]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    if last:
        columns.append(TextColumn("{task.fields[last]}"))
    return Progress(*columns, console=console, auto_refresh=auto_refresh, disable=disable, transient=transient)


__all__ = ["progress_bar"]
