"""Batches: many images in one call, from a BIDS dataset or from files and glob patterns.

Library entry points (the CLI is a thin shell over them)::

    from sctgm.batch import BatchSettings, segment_bids, segment_files

    result = segment_bids("ds", BatchSettings(model="large"), participants=["01"], n_jobs=4)
    result.records          # one JobRecord per image: status ok | skipped | failed, message, GM volume
    result.summary          # ds/derivatives/sct-gm/summary.tsv

The steps are public too: :func:`plan_bids` / :func:`plan_files` make the jobs, :func:`run_batch`
runs them on an executor (:mod:`sctgm.batch.executors`) and writes the summary and the metrics table.
A failure on one image is recorded and the batch goes on; valid outputs are skipped unless
``settings.overwrite`` (see :mod:`sctgm.batch.jobs`).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..exceptions import DatasetError, InvalidOptionError, OutputError
from ..filesystem import folder_lock
from ..naming import (FLOAT_DIGITS, GM_SUFFIX, WM_SUFFIX, bids_entities, bids_outputs, escape_controls,
                      is_sctgm_output, listed, sct_outputs, split_nifti_name)
from ..writing import atomic_path, remove_leftover_parts
from . import bids, guards
from .jobs import BatchSettings, Job, JobRecord

__all__ = ["BatchResult", "BatchSettings", "Job", "JobRecord", "plan_bids", "plan_files", "run_batch",
           "segment_bids", "segment_files"]

#: Columns of summary.tsv (BIDS tabular conventions: tab-separated, ``n/a`` for a missing value).
SUMMARY_COLUMNS = ("subject", "session", "input", "status", "message", "gm_volume_mm3", "seconds")
SUMMARY_NAME = "summary.tsv"
METRICS_NAME = "morphometry.csv"

log = logging.getLogger(__name__)

Progress = Callable[[int, int, JobRecord], None]  # (done, total, record just finished)


@dataclass
class BatchResult:
    """The records of a batch (in job order) and the files written for the whole batch."""

    records: list[JobRecord]
    derivatives: Path | None = None
    summary: Path | None = None
    metrics: Path | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def failed(self) -> list[JobRecord]:
        return [r for r in self.records if r.status == "failed"]


# ------------------------------------------------------------------------------------ planning

def expand_inputs(patterns: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Paths as given, glob patterns expanded (sorted; ``**`` recurses), duplicates dropped, and
    sct-gm's own outputs left out (a shell's ``*.nii.gz`` also matches the masks of a previous run).
    A pattern that matches nothing raises :class:`DatasetError`."""
    out: list[Path] = []
    for pattern in listed(patterns):
        text = os.fspath(pattern)
        if Path(text).exists() or not glob.has_magic(text):
            out.append(Path(text))
            continue
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))
                   if Path(m).is_file() and split_nifti_name(m)[1]]
        if not matches:
            raise DatasetError(f"{text}: the pattern matches no NIfTI file")
        out += matches
    unique: dict[str, Path] = {}
    looped: list[Path] = []
    for p in out:
        # by the folder itself (a link loop, "d/loop/loop/x.nii.gz", names one folder many times) and the
        # name in it: not by the file's target, which files of a git-annex dataset with equal content share
        # (the folder resolved as the system resolves it: "link/.." is the link target's parent)
        key = os.path.normcase(os.path.join(os.path.realpath(os.path.dirname(p) or "."), p.name))
        if key in unique and str(unique[key]) != str(p):
            looped.append(p)
        unique.setdefault(key, p)
    if looped:
        log.warning("left out %d paths that name the same file as another input through linked folders: %s",
                    len(looped), ", ".join(map(str, looped[:3])) + (", ..." if len(looped) > 3 else ""))
    kept = [p for p in unique.values() if not is_sctgm_output(p)]
    if len(kept) < len(unique):
        log.warning("left out %d inputs that are sct-gm outputs (*%s, *%s)", len(unique) - len(kept), GM_SUFFIX,
                    WM_SUFFIX)
    if not kept:
        raise DatasetError(f"every input ({', '.join(map(str, unique.values()))}) is an sct-gm output "
                           f"(*{GM_SUFFIX}, *{WM_SUFFIX}); nothing to segment")
    return kept


def plan_files(inputs: Sequence[str | os.PathLike[str]], settings: BatchSettings, *,
               output: str | os.PathLike[str] | None = None,
               cord_masks: Sequence[str | os.PathLike[str]] = ()) -> list[Job]:
    """Jobs for files and glob patterns: outputs beside each input with SCT's names (``_gmseg``,
    ``_wmseg``, ``_gmseg_prob`` and the ``_gmseg.json`` sidecar). ``output`` only with one input;
    ``cord_masks``: none, or one per input in the same order."""
    paths = expand_inputs(inputs)
    if output is not None and len(paths) != 1:
        raise OutputError(f"one output file name given for {len(paths)} inputs; give none and the outputs "
                          f"go beside each input (<input>{GM_SUFFIX}.nii.gz)", parameter="output")
    cord_masks = listed(cord_masks)
    if cord_masks and len(cord_masks) != len(paths):
        raise DatasetError(f"{len(cord_masks)} cord masks for {len(paths)} inputs; give one per input, "
                           f"in the same order", parameter="cord_masks")
    if settings.wm and not cord_masks:
        raise InvalidOptionError("the WM mask is cord minus GM and needs a cord mask per input", parameter="cord_masks")
    jobs = []
    for i, path in enumerate(paths):
        out = sct_outputs(path, output, kinds=settings.kinds)
        subject, session = bids_entities(path.absolute())  # as QC reads it: links as named
        jobs.append(Job(input=path, outputs=out, label=str(path), cord=Path(cord_masks[i]) if cord_masks else None,
                        subject=subject, session=session))
    return jobs


def plan_bids(root: str | os.PathLike[str], settings: BatchSettings, *,
              derivatives: str | os.PathLike[str] | None = None, suffixes: Sequence[str] = bids.DEFAULT_SUFFIXES,
              participants: Sequence[str] = (), sessions: Sequence[str] = (),
              cord_labels: bool = True) -> tuple[list[Job], Path]:
    """Jobs for the matching raw images of a BIDS dataset, and the derivatives folder (default
    ``<root>/derivatives/sct-gm``). With ``cord_labels``, a manual cord mask found in
    ``<root>/derivatives/labels`` guides the crop and, with ``settings.wm``, gives the WM mask."""
    images = bids.find_images(root, suffixes=suffixes, participants=participants, sessions=sessions)
    base = images[0].root
    deriv = Path(derivatives).absolute() if derivatives is not None else base / "derivatives" / bids.PIPELINE_NAME
    guards.check_derivatives_folder(base, deriv, base / "derivatives" / bids.PIPELINE_NAME)
    labels = base / "derivatives" / "labels"
    jobs = []
    for im in images:
        cord = bids.find_cord_label(im, labels) if cord_labels else None
        note = "no cord mask in derivatives/labels, so no WM mask" if settings.wm and cord is None else ""
        sources = (im.uri,) + ((bids.bids_uri(cord.relative_to(base).as_posix()),) if cord else ())
        kinds = [k for k in settings.kinds if k != "wm" or cord is not None]
        jobs.append(Job(input=im.path, cord=cord, label=im.relpath, subject=f"sub-{im.subject}",
                        session=f"ses-{im.session}" if im.session else None, qc_subject=im.qc_subject,
                        sources=sources, note=note,
                        outputs=bids_outputs(im, deriv, kinds=kinds)))
    return jobs, deriv


# ------------------------------------------------------------------------------------- running

def run_batch(jobs: Sequence[Job], settings: BatchSettings, *, n_jobs: int = 1, scheduler: Any = None,
              summary: str | os.PathLike[str] | None = None, metrics_csv: str | os.PathLike[str] | None = None,
              progress: Progress | None = None, download_progress: Any = None) -> BatchResult:
    """Run ``jobs`` (see :func:`sctgm.batch.executors.run_jobs`), then write ``summary`` (TSV) and, with
    ``settings.metrics``, ``metrics_csv`` (per-slice morphometry of every image in one CSV). Output
    locations are checked and, on a local executor, the model is installed before any job starts
    (:func:`prepare_batch`); output folders the run made and left empty are removed when it ends."""
    if settings.metrics and metrics_csv is None:
        raise OutputError("per-slice metrics need a CSV path for the whole batch (metrics_csv)",
                          parameter="metrics_csv")
    tables = [Path(metrics_csv)] if settings.metrics and metrics_csv is not None else []
    check_tables(jobs, summary, tables, overwrite=settings.overwrite, qc_dir=settings.qc_dir)
    prepare_batch(settings, scheduler=scheduler, download_progress=download_progress)
    with guards.removing_new_empty_folders(guards.output_folders(jobs, summary, tables)):
        return _run(jobs, settings, n_jobs, scheduler, summary, tables, progress)


def check_tables(jobs: Sequence[Any], summary: str | os.PathLike[str] | None,
                 metrics_tables: Sequence[str | os.PathLike[str]], *, overwrite: bool, qc_dir: Path | None) -> None:
    """Refuse, before any work, two jobs writing one file (:func:`guards.check_distinct_outputs`), and a
    table location on a job's file, another table or the QC report's (:func:`guards.check_tables_apart`),
    unwritable, or holding a file not sct-gm's (unless ``overwrite``)."""
    from ..metrics.table import check_table_path, is_metrics_csv

    guards.check_distinct_outputs(jobs)
    guards.check_tables_apart(jobs, [("summary", "summary table", summary),
                                     *(("metrics_csv", "metrics table", t) for t in metrics_tables)], qc_dir)
    for path, kind, ours, example in ((summary, "tsv", is_summary, "summary"),
                                      *((m, "csv", is_metrics_csv, "morphometry") for m in metrics_tables)):
        if path is not None:
            check_table_path(path, kind, ours=ours, overwrite=overwrite, example=example)


def prepare_batch(settings: BatchSettings, *, scheduler: Any = None, download_progress: Any = None) -> None:
    """What :func:`run_batch` does before any job after :func:`check_tables`, writing nothing: check the
    QC folder and, on a local executor, install the model (one that cannot be found fails here)."""
    if settings.qc_dir is not None:
        from ..qc.report import check_qc_dir

        check_qc_dir(settings.qc_dir)
    if scheduler is None:
        from ..model.install import ensure_model

        ensure_model(settings.model, mirror=settings.mirror, cache_dir=settings.cache_dir, progress=download_progress)


def _run(jobs: Sequence[Job], settings: BatchSettings, n_jobs: int, scheduler: Any,
         summary: str | os.PathLike[str] | None, metrics_tables: Sequence[Path],
         progress: Progress | None) -> BatchResult:
    from .executors import run_jobs

    done = [0]

    def on_record(_: int, record: JobRecord) -> None:
        done[0] += 1
        if progress:
            progress(done[0], len(jobs), record)

    records = run_jobs(jobs, settings, n_jobs=n_jobs, scheduler=scheduler, on_record=on_record)
    records = [replace(r, message="; ".join(filter(None, [r.message, j.note]))) if j.note and r.status != "failed"
               else r for r, j in zip(records, jobs)]
    result = BatchResult(records)
    if summary is not None:
        result.summary = write_summary(records, summary)
    for table in metrics_tables if settings.metrics else ():
        written = write_metrics(records, table)
        result.metrics = result.metrics or written  # the table asked for (listed first)
    return result


def segment_bids(root: str | os.PathLike[str], settings: BatchSettings, *,
                 derivatives: str | os.PathLike[str] | None = None, suffixes: Sequence[str] = bids.DEFAULT_SUFFIXES,
                 participants: Sequence[str] = (), sessions: Sequence[str] = (), cord_labels: bool = True,
                 n_jobs: int = 1, scheduler: Any = None, summary: str | os.PathLike[str] | None = None,
                 metrics_csv: str | os.PathLike[str] | None = None, progress: Progress | None = None,
                 download_progress: Any = None) -> BatchResult:
    """Segment the matching raw images of the BIDS dataset ``root`` into a BIDS derivative dataset
    (default ``<root>/derivatives/sct-gm``, with its ``dataset_description.json``), then write
    ``summary.tsv`` and, with ``settings.metrics``, ``morphometry.csv`` there (or where given).

    Nothing is written before every check has passed and the model is installed (a local executor), and
    no table into the raw dataset outside its ``derivatives/``. An sct-gm
    ``morphometry.csv`` already in the derivative folder is kept current even without
    ``settings.metrics``: this run's images are measured into it too (one warning when some were
    segmented again), so it never describes a mask that was replaced."""
    jobs, deriv = plan_bids(root, settings, derivatives=derivatives, suffixes=suffixes, participants=participants,
                            sessions=sessions, cord_labels=cord_labels)
    summary = summary if summary is not None else deriv / SUMMARY_NAME
    requested = Path(metrics_csv) if metrics_csv is not None else None
    tables = guards.metrics_tables(settings.metrics, requested, deriv, METRICS_NAME)
    guards.check_outside_raw(root, deriv, [("summary", "summary table", summary),
                                           *(("metrics_csv", "metrics table", t) for t in tables)])
    check_tables(jobs, summary, tables, overwrite=settings.overwrite, qc_dir=settings.qc_dir)
    bids.check_dataset_description(deriv, overwrite=settings.overwrite)
    asked = (requested or deriv / METRICS_NAME) if settings.metrics else None
    if tables:
        settings = replace(settings, metrics=True)
    prepare_batch(settings, scheduler=scheduler, download_progress=download_progress)
    with guards.removing_new_empty_folders({deriv} | guards.output_folders(jobs, summary, tables)):
        bids.write_dataset_description(root, deriv, overwrite=settings.overwrite)
        result = _run(jobs, settings, n_jobs, scheduler, summary, tables, progress)
    guards.say_measured(tables, asked, result.count("ok"))
    result.derivatives = deriv
    return result


def segment_files(inputs: Sequence[str | os.PathLike[str]], settings: BatchSettings, *,
                  output: str | os.PathLike[str] | None = None, cord_masks: Sequence[str | os.PathLike[str]] = (),
                  n_jobs: int = 1, scheduler: Any = None, summary: str | os.PathLike[str] | None = None,
                  metrics_csv: str | os.PathLike[str] | None = None, progress: Progress | None = None,
                  download_progress: Any = None) -> BatchResult:
    """Segment files and glob patterns, outputs beside each input (:func:`plan_files`)."""
    jobs = plan_files(inputs, settings, output=output, cord_masks=cord_masks)
    return run_batch(jobs, settings, n_jobs=n_jobs, scheduler=scheduler, summary=summary, metrics_csv=metrics_csv,
                     progress=progress, download_progress=download_progress)


# -------------------------------------------------------------------------------------- tables

def is_summary(path: Path) -> bool:
    """True when ``path`` is a summary table sct-gm wrote: its first line is :data:`SUMMARY_COLUMNS`."""
    from ..metrics.table import table_header

    return table_header(path, "\t") == SUMMARY_COLUMNS


def _tsv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return format(value, f".{FLOAT_DIGITS}g")  # float32 voxel sizes: no 17.99999995
    # no tab or newline inside a cell, escaped rather than collapsed ("my  scan" and "my scan" stay two
    # rows), backslashes doubled so that an escape reads back as what it was (a name holding "\t")
    return escape_controls(str(value).replace("\\", "\\\\")) or "n/a"


def _kept_rows(path: Path, delimiter: str, inputs: set[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of a dataset table written before, without the rows of ``inputs`` (this run
    writes those again): a run on a subset (``--participant-label``) keeps the other images' rows.
    Nothing when there is no such table, or it is not one of sct-gm's (:func:`is_summary`,
    :func:`sctgm.metrics.table.is_metrics_csv`: a file replaced with ``overwrite``)."""
    import csv

    from ..metrics.table import is_metrics_csv

    if not (is_summary(path) if delimiter == "\t" else is_metrics_csv(path)):
        return [], []  # none, or another file (replaced with --overwrite; never a FIFO: not opened)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            # the summary is written cell by cell, unquoted: a '"' in a name is a character, not a quote
            reader = csv.DictReader(fh, delimiter=delimiter,
                                    quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
            columns = list(reader.fieldnames or [])
            rows = [row for row in reader] if "input" in columns else []
    except (OSError, UnicodeDecodeError, csv.Error):
        return [], []
    return columns, [row for row in rows if row.get("input") not in inputs]


#: How long a run waits for another run's merge of the same dataset table (a merge takes well under a
#: second; runs of one dataset side by side, e.g. one per participant on a cluster, take turns).
TABLE_LOCK_TIMEOUT_S = 300.0


@contextlib.contextmanager
def _merging(path: Path) -> Iterator[None]:
    """Hold the lock of a dataset table's folder (:func:`sctgm.filesystem.folder_lock`: no file left
    in the dataset) while the table is read, merged and replaced: runs side by side would each keep
    the rows they read and lose the other's."""
    held = contextlib.ExitStack()
    try:  # only taking the lock is translated here: what the merge itself raises passes through
        path.parent.mkdir(parents=True, exist_ok=True)
        held.enter_context(folder_lock(path.parent, TABLE_LOCK_TIMEOUT_S))
    except TimeoutError:
        raise OutputError(f"{path}: another sct-gm run has held its folder's lock for {TABLE_LOCK_TIMEOUT_S:.0f} s; "
                          f"is one still running?") from None
    except OSError as exc:  # the folder cannot be made or opened: the table cannot be written either
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    with held:
        yield


def write_summary(records: Sequence[JobRecord], path: str | os.PathLike[str]) -> Path:
    """``summary.tsv``: one row per image (:data:`SUMMARY_COLUMNS`), written atomically; the rows of
    images that this run did not plan are kept from the table before (merged by ``input``, under a
    lock: runs of one dataset side by side take turns)."""
    with _merging(Path(path)):
        remove_leftover_parts([path])  # a killed run's temporary table: nobody else writes it under the lock
        return _write_summary(records, Path(path))


def _write_summary(records: Sequence[JobRecord], p: Path) -> Path:
    lines = ["\t".join(SUMMARY_COLUMNS)]
    new = {_tsv_cell(r.input): "\t".join(_tsv_cell(v) for v in (r.subject, r.session, r.input, r.status, r.message,
                                                          r.gm_volume_mm3, r.seconds)) for r in records}
    # (a row an earlier version wrote for a name with a backslash or runs of spaces stays once: its
    # encoding then is this version's encoding of another name, which must not lose its row)
    columns, kept = _kept_rows(p, "\t", set(new))
    if tuple(columns) == SUMMARY_COLUMNS:
        lines += ["\t".join(row[c] or "n/a" for c in SUMMARY_COLUMNS) for row in kept]
    lines += list(new.values())
    if kept:  # by input (as BIDS jobs are planned); a table of this run alone keeps the jobs' order
        lines[1:] = sorted(lines[1:], key=lambda line: line.split("\t")[2])
    try:
        with atomic_path(p) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{p}: cannot be written ({exc.strerror or exc})") from None
    return p


def write_metrics(records: Sequence[JobRecord], path: str | os.PathLike[str]) -> Path:
    """The per-slice GM morphometry of every segmented (or skipped) image in one CSV, with
    ``subject``, ``session`` and ``input`` columns first; written atomically, merged under a lock as
    :func:`write_summary` is."""
    with _merging(Path(path)):
        remove_leftover_parts([path])
        return _write_metrics(records, path)


def _write_metrics(records: Sequence[JobRecord], path: str | os.PathLike[str]) -> Path:
    from ..metrics.table import write_rows_csv

    columns: tuple[str, ...] = ("subject", "session", "input", "file", "sctgm_version", "soft", "scope", "slice",
                                "position_mm", "gm_area_mm2")
    for r in records:
        if len(r.metrics_columns) > len(columns):
            columns = r.metrics_columns
    old_columns, kept = _kept_rows(Path(path), ",", {str(r.input) for r in records})
    columns = (*columns, *(c for c in old_columns if c not in columns))
    rows = [*kept, *(row for r in records for row in r.metrics_rows)]
    if kept:  # stable: each image's rows stay in their order
        rows.sort(key=lambda row: str(row.get("input")))
    return write_rows_csv(columns, rows, path)
