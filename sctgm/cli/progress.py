"""The CLI's progress display, in one place: rich bars on stderr, only on a terminal and not with -q.

The library reports progress through callbacks; each helper here is a context manager that gives
the callback to pass (or None, to stay silent).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..model.download import Progress, ProgressCallback


def _shown(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def progress_lines_shown(quiet: bool) -> bool:
    """Where a bar is not shown (stderr is a file or a pipe) and not -q: progress as plain lines."""
    return not quiet and not sys.stderr.isatty()


@contextlib.contextmanager
def counting_bar(quiet: bool, label: str, unit: str,
                 describe: Callable[..., str] | None = None) -> Iterator[Optional[Callable[..., None]]]:
    """A bar counting ``unit`` (slices, images) after ``label``. The callback is
    ``update(done, total, *extra)``; with ``describe``, ``describe(*extra)`` is shown after the bar
    (e.g. the image just finished)."""
    if not _shown(quiet):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rich.markup import escape

    from . import one_line

    shown = escape(one_line(label)).replace("{", "{{").replace("}", "}}")  # a file name is neither markup nor a format
    bar = Progress(TextColumn(shown), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(),
                   TextColumn("{task.description}"), console=Console(stderr=True), transient=True)
    task = bar.add_task("", total=None)

    def update(done: int, total: int, *extra: Any) -> None:
        # a file name in the description is neither markup ("scan[/b]" broke the bar) nor a control character
        shown_extra = escape(one_line(describe(*extra))) if describe else ""
        bar.update(task, completed=done, total=total, description=shown_extra)

    with bar:
        yield update


@contextlib.contextmanager
def download_progress(quiet: bool = False) -> Iterator[Optional[ProgressCallback]]:
    """A progress callback for :func:`sctgm.model.install.ensure_model`: one bar per file downloaded
    (these stay on screen)."""
    if not _shown(quiet):
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress as Bars, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    bars = Bars(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    tasks: dict[str, int] = {}

    def report(p: Progress) -> None:
        if p.label not in tasks:
            tasks[p.label] = bars.add_task(p.label, total=p.total)
        bars.update(tasks[p.label], completed=p.done, total=p.total)

    with bars:
        yield report
