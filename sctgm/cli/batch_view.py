"""How ``sct-gm segment`` shows a batch: what its progress bar says of a job, then a summary table."""

from __future__ import annotations

import sys
from typing import Any

import click

_STATUS_STYLE = {"ok": "green", "skipped": "cyan", "failed": "bold red"}


def describe_record(record: Any) -> str:
    """What the batch's progress bar shows after a job: its input, and whether it failed."""
    return f"{record.input}{' (failed)' if record.status == 'failed' else ''}"  # escaped where shown


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def render_summary(result: Any, quiet: bool) -> None:
    """The summary table on stdout (a rich table on a terminal, tab-separated lines otherwise), then
    one line of counts on stderr. With ``quiet``, only the failures, one line each on stderr."""
    records = result.records
    from . import one_line

    if quiet:
        for r in records:
            if r.status == "failed":
                click.echo(f"sct-gm: error: {one_line(r.input)}: {one_line(r.message)}", err=True)
        return
    columns = ("subject", "session", "input", "status", "message", "gm_volume_mm3", "seconds")
    rows = [[one_line(_cell(getattr(r, c))) for c in columns] for r in records]
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for c in columns:
            table.add_column({"gm_volume_mm3": "GM mm3", "seconds": "s"}.get(c, c),
                             justify="right" if c in ("gm_volume_mm3", "seconds") else "left",
                             overflow="fold")
        for r, row in zip(records, rows):
            row = [escape(c) for c in row]  # a file name is not markup ("a[red]b.nii.gz")
            row[3] = f"[{_STATUS_STYLE.get(r.status, '')}]{row[3]}[/]"
            table.add_row(*row)
        Console().print(table)
    else:
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(row))  # control characters escaped: one line, one cell each
    counts = ", ".join(f"{result.count(s)} {s}" for s in ("ok", "skipped", "failed"))
    where = f"; summary: {result.summary}" if result.summary else ""
    where += f"; metrics: {result.metrics}" if result.metrics else ""
    from . import plural

    click.echo(f"sct-gm: {plural(len(records), 'image')}: {counts}{where}", err=True)


def resume_message(finished: list[Any], total: int | None, overwrite: bool) -> str:
    """What running the interrupted batch's command again does, exactly (the batch's resume rules:
    docs/batch.md, "Resume")."""
    from . import plural

    done = sum(r.status == "ok" for r in finished)
    of = f"{len(finished)} of {plural(total, 'image')}" if total is not None else plural(len(finished), "image")
    head = (f"{of} finished ({done} segmented) and unfinished ones left nothing behind")
    if not overwrite:
        return (f"{head}: run the same command again to resume (valid outputs are skipped, the rest "
                f"segmented)")
    return (f"{head}: the same command (with --overwrite) segments every image again; without --overwrite it "
            f"resumes: the {done} segmented now are kept, and of the others only those whose outputs are "
            f"missing, invalid or made with other settings or another model are segmented again")
