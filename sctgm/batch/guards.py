"""What a BIDS batch must not write, and must not leave behind.

- :func:`check_derivatives_folder`: the derivative dataset is a folder of its own: not the raw data,
  nor the dataset's ``derivatives/`` itself, nor the manual labels' ``derivatives/labels``.
- :func:`check_outside_raw`: the batch's tables are refused inside the raw dataset, except under its
  ``derivatives/`` (or the run's own derivatives folder), as the derivatives folder is.
- :func:`removing_new_empty_folders`: the output folders a run creates and leaves empty (an
  interruption before an image's outputs were renamed into place, an image that failed) are removed.
- :func:`check_distinct_outputs`: no two images of a batch write the same file (``x.nii`` and
  ``x.nii.gz`` share the sidecar ``x_gmseg.json``).
- :func:`metrics_tables`: the derivative's own morphometry table is kept describing the masks that are
  there: a run that segments images again measures them, with or without ``--metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..exceptions import DatasetError, OutputError

log = logging.getLogger(__name__)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_derivatives_folder(root: Path, derivatives: Path, example: Path) -> None:
    """Refuse, before any work, a derivatives folder that is the raw data (the dataset or a subject's
    folder), the dataset's ``derivatives/`` itself, or the manual labels' (``derivatives/labels``, which
    training reads as truth). Compared where the folders really are (``ds/x/..``, links)."""
    real, raw = Path(os.path.realpath(derivatives)), Path(os.path.realpath(root))
    inside = real.relative_to(raw).parts if raw in real.parents else ()
    if real == raw or (inside and inside[0].startswith("sub-")):
        raise OutputError(f"{derivatives}: derivatives must not be written into the raw data; use a folder such "
                          f"as {example}")
    if inside == ("derivatives",) or inside[:2] == ("derivatives", "labels"):
        what = "the dataset's derivatives folder itself" if len(inside) == 1 else "where the manual labels live"
        raise OutputError(f"{derivatives}: is {what}; sct-gm's derivatives go in a folder of their own, such as "
                          f"{example}")


def check_outside_raw(root: str | os.PathLike[str], derivatives: str | os.PathLike[str],
                      tables: Iterable[tuple[str, str, str | os.PathLike[str] | None]]) -> None:
    """Refuse, before any work, a table location that lies in the raw dataset ``root`` but
    neither under ``root/derivatives`` nor under the run's ``derivatives`` folder (wherever a link or
    ``..`` takes it). ``tables``: (parameter, what, path or None) triples. A table is renamed onto its
    name, so where its *folder* resolves is what counts (a link named like the table is replaced, not
    followed)."""
    raw = os.path.realpath(Path(root).absolute())
    allowed = (os.path.join(raw, "derivatives"), os.path.realpath(Path(derivatives).absolute()))
    for parameter, what, path in tables:
        if path is None:
            continue
        real = _where(path)
        if _inside(real, raw) and not any(_inside(real, a) and real != a for a in allowed):
            raise OutputError(f"{path}: the {what} must not be written into the raw data; put it outside the "
                              f"dataset or under {Path(root) / 'derivatives'}", parameter=parameter)


def metrics_tables(settings_metrics: bool, requested: Path | None, derivatives: Path, name: str) -> list[Path]:
    """The morphometry tables a BIDS run writes: the one asked for (``requested``, with metrics on),
    and the derivative's own ``derivatives/name`` whenever an sct-gm table is there, so that it never
    keeps the rows of a mask this run replaces."""
    own = derivatives / name
    tables = [requested] if settings_metrics and requested is not None else []
    if (settings_metrics and requested is None) or (not any(_same(t, own) for t in tables) and _batch_table(own)):
        tables.append(own)
    return tables


def _batch_table(path: Path) -> bool:
    """True for a morphometry table a batch wrote (sct-gm's metrics header with the batch's
    ``subject``/``session``/``input`` columns first); a table of ``sct-gm metrics`` saved under that
    name (compare mode, per level) holds no row a batch could keep, and is left alone."""
    from ..metrics.table import is_metrics_csv, table_header

    header = table_header(path, ",") if is_metrics_csv(path) else None
    return header is not None and tuple(header[:3]) == ("subject", "session", "input")


def _same(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def say_measured(tables: Sequence[Path], asked: Path | None, segmented: int) -> None:
    """One warning when images segmented again were measured into a table that was not asked for."""
    unasked = [t for t in tables if asked is None or not _same(t, asked)]
    if unasked and segmented:
        log.warning("%s: the %d image%s segmented by this run %s measured into it too, so that it describes the "
                    "masks now in the dataset (sct-gm keeps this table current while it exists)", unasked[0],
                    segmented, "" if segmented == 1 else "s", "was" if segmented == 1 else "were")


def _missing_folders(folders: Iterable[Path]) -> set[Path]:
    """``folders`` and their ancestors that do not exist yet (a dangling link counts as existing)."""
    missing: set[Path] = set()
    for folder in {Path(os.path.abspath(f)) for f in folders}:
        for f in (folder, *folder.parents):
            if f in missing or f.exists() or f.is_symlink():
                break
            missing.add(f)
    return missing


@contextlib.contextmanager
def removing_new_empty_folders(folders: Iterable[Path]) -> Iterator[None]:
    """Note which of ``folders`` (and their ancestors) do not exist yet; when the block ends, however it
    ends (Ctrl-C included), remove those of them that exist and are empty, deepest first. Only folders
    that were not there at the start, and only empty ones (``os.rmdir`` removes nothing else)."""
    created = _missing_folders(folders)
    try:
        yield
    finally:
        for f in sorted(created, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not made, not empty, or not a folder: left as it is
                if f.is_dir() and not f.is_symlink():
                    os.rmdir(f)


def check_distinct_outputs(jobs: Sequence[Any]) -> None:
    """Refuse, before any work, two images that would write one file (compared as
    :func:`check_tables_apart` compares): the second would replace the first's, leaving a mask without
    its sidecar."""
    writers: dict[str, Path] = {}
    for job in jobs:
        for path in job.outputs.values():
            other = writers.setdefault(_where(path), job.input)
            if other != job.input:
                raise DatasetError(f"{other} and {job.input}: both would write {path} (one name, two extensions or "
                                   f"folders); segment one of them, or rename it", parameter="inputs")


def output_folders(jobs: Sequence[Any], summary: str | os.PathLike[str] | None,
                   tables: Sequence[str | os.PathLike[str]]) -> set[Path]:
    """The folders a batch writes into (each job's outputs, the tables)."""
    return {p.parent for j in jobs for p in j.outputs.values()} | {Path(t).parent for t in (summary, *tables) if t}


def check_tables_apart(jobs: Sequence[Any], tables: Iterable[tuple[str, str, Path | None]],
                       qc_dir: Path | None = None) -> None:
    """Refuse, before any work, a table location that is an image's input, cord mask or output (a
    sidecar included, or an output of another run's options), is one of the QC report's files, or is
    another table's: a table written there would replace it. Paths are compared where their folders
    resolve (links and ``..`` included; a table is renamed onto its own name, not followed).
    ``tables``: (parameter, what, path or None) triples."""
    taken: dict[str, str] = {}
    for job in jobs:
        for path in (job.input, job.cord, *job.outputs.values(), *job.outputs.others.values()):
            if path is not None:
                taken[_where(path)] = "an image's input or output"
    report: list[str] = []
    if qc_dir is not None:
        from ..qc.report import ASSETS_DIR, ENTRIES_DIR, INDEX_HTML, INDEX_JS, REPORT_JSON, report_folder

        folder = _where(report_folder(qc_dir))
        report = [os.path.join(folder, name) for name in (INDEX_HTML, INDEX_JS, REPORT_JSON, ASSETS_DIR, ENTRIES_DIR)]
    for parameter, what, path in tables:
        if path is None:
            continue
        here = _where(path)
        clash = taken.get(here) or ("a file of the QC report" if any(_inside(here, r) for r in report) else None)
        if clash:
            raise OutputError(f"{path}: the {what} would replace {clash}; give it another name", parameter=parameter)
        taken[here] = f"the {what} given before"


def _where(path: str | os.PathLike[str]) -> str:
    """Where a file written at ``path`` lands: its folder resolved (links, ``..``), its own name kept."""
    p = Path(path).absolute()
    return os.path.join(os.path.realpath(p.parent), p.name)
