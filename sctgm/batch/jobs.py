"""One unit of batch work: segment one image and write its outputs, or skip it when they are valid.

A :class:`Job` says what to read and exactly which files to write; :class:`BatchSettings` holds what
is the same for every job (model, options, threads). :func:`run_job` never raises for a problem with
its image: it returns a :class:`JobRecord` with status ``ok``, ``skipped`` or ``failed`` (Ctrl-C still
propagates). Jobs and settings are small frozen records that pickle, so any executor (a loop, a process
pool, Dask) can run them. Outputs are written by :func:`sctgm.segment.outputs.segment_and_write`, the
write path of single-file runs too.

Resume, by content: outputs are valid when the GM sidecar exists and records the same model sha256,
the same segmentation parameters (:data:`COMPARED_PARAMETERS`) and the same source files, the sha256
of each source file is the one recorded (an input replaced by another image, even on the same grid,
is segmented again), and every output's sha256 is the one recorded (a damaged, truncated or zeroed
output is redone). The outputs of a job are written as a set (:mod:`sctgm.segment.outputs`), so a
job interrupted at any point leaves nothing that passes this check. Sidecars of sct-gm versions that
recorded no sha256 are checked as those versions did: every output loads completely and lies on
the input's grid.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import OutputError, SctGmError
from ..geometry import voxel_volume_mm3
from ..filesystem import file_sha256, read_small_json
from ..recipe import DEFAULT_TO_NATIVE
from ..io import load_image, load_mask_image, read_grid, read_nifti
from ..nifti_header import nibabel_messages
from ..naming import NIFTI_KEYS, OutputSet, output_kinds
from ..segment.outputs import segment_and_write
from ..segment.pipeline import SegmentOptions
from ..segment.preprocess import check_axial
from ..writing import remove_leftover_parts

if TYPE_CHECKING:
    from ..segment.pipeline import Segmenter

log = logging.getLogger(__name__)

#: Parameters that change the masks; outputs made with other values are redone ("enhancement": the
#: denoising, bias correction and CLAHE settings, as the sidecar records them).
COMPARED_PARAMETERS = ("threshold", "keep_largest", "fill_holes", "tta", "crop_px", "enhancement")


@dataclass(frozen=True)
class BatchSettings:
    """What every job of a batch shares. ``engine``: the network engine (see
    :func:`sctgm.engines.choose_engine`); ``threads``: CPU threads for the network per job (None:
    see :func:`sctgm.batch.executors.job_threads`, which keeps every way of running a batch bit-identical)."""

    model: str | None = None
    device: str = "auto"
    engine: str = "auto"
    precision: str | None = None  # None: the model recipe's; "bf16": see sctgm.engines.choice.cpu_precision
    options: SegmentOptions = field(default_factory=SegmentOptions)
    prob: bool = False
    wm: bool = False
    overwrite: bool = False  # segment again where valid outputs exist, and replace files sct-gm did not write
    threads: int | None = None
    qc_dir: Path | None = None
    qc_dataset: str | None = None  # shown beside the subject in the QC report
    metrics: bool = False
    mirror: str | None = None
    cache_dir: str | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The NIfTI outputs each job writes (:func:`sctgm.naming.output_kinds`): what the planners
        turn into each job's :class:`~sctgm.naming.OutputSet`, once."""
        return output_kinds(prob=self.prob, wm=self.wm)


@dataclass(frozen=True)
class Job:
    """One image and its outputs, one :class:`~sctgm.naming.OutputSet` whose layout is ``"bids"``
    (BIDS sidecars, ``sources`` as BIDS URIs) or ``"sct"`` (SCT names beside the input, the
    single-file sidecar)."""

    input: Path
    outputs: OutputSet
    cord: Path | None = None
    label: str = ""  # how the input is named in the summary (path in the dataset, or as given)
    subject: str | None = None
    session: str | None = None
    qc_subject: str | None = None
    sources: tuple[str, ...] = ()  # BIDS layout: URIs of the input (and cord mask)
    note: str = ""  # added to the record's message (e.g. why no WM mask was written)

    @property
    def name(self) -> str:
        return self.label or str(self.input)


@dataclass(frozen=True)
class JobRecord:
    """The outcome of one job. ``status``: ``ok`` (segmented now), ``skipped`` (valid outputs were
    already there) or ``failed`` (``message`` says why, ``error_type`` is the exception's class)."""

    input: str
    subject: str | None
    session: str | None
    status: str
    message: str = ""
    gm_volume_mm3: float | None = None
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    error_type: str | None = None
    metrics_columns: tuple[str, ...] = ()
    metrics_rows: tuple[dict[str, Any], ...] = ()


def run_job(segmenter: Segmenter, job: Job, settings: BatchSettings) -> JobRecord:
    """Segment ``job.input`` with ``segmenter`` and write ``job.outputs`` (or skip, see the module
    docstring). Errors are recorded in the returned record, never raised (except Ctrl-C)."""
    t0 = time.perf_counter()
    with captured_warnings() as warnings:
        try:
            status, reason = "ok", None
            if not settings.overwrite:
                reason = invalid_reason(job, settings, segmenter)
                status = "ok" if reason else "skipped"
            if status == "ok":
                log.debug("%s: segmenting (%s)", job.name, reason or "overwrite")
                _segment_and_write(segmenter, job, settings)
            else:  # what a run killed while replacing these outputs left (segmenting removes it too)
                remove_leftover_parts(job.outputs.values())
            volume = gm_volume_mm3(job.outputs["gm"])
            columns, rows = _metrics(job) if settings.metrics else ((), ())
        except SctGmError as exc:
            return failed_record(job, exc, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a batch records every failure and goes on
            log.debug("%s: unexpected error", job.name, exc_info=True)
            return failed_record(job, exc, time.perf_counter() - t0)
    message = "outputs present and valid" if status == "skipped" else "; ".join(dict.fromkeys(warnings))
    return JobRecord(job.name, job.subject, job.session, status, message, round(volume, 3),
                     round(time.perf_counter() - t0, 2), {k: str(v) for k, v in job.outputs.items()},
                     metrics_columns=columns, metrics_rows=rows)


def failed_record(job: Job, exc: BaseException, seconds: float = 0.0) -> JobRecord:
    """A ``failed`` record; unexpected exceptions (not :class:`SctGmError`) keep their type in the
    message."""
    raw = str(exc) if isinstance(exc, SctGmError) else f"{type(exc).__name__}: {exc}"
    # the input's name taken off before the whitespace is collapsed: a name may hold a newline
    message = " ".join(_without_input(job, raw).split())
    return JobRecord(job.name, job.subject, job.session, "failed", message,
                     seconds=round(seconds, 2), error_type=type(exc).__name__)


def _without_input(job: Job, message: str) -> str:
    """``message`` without a leading ``<input path>: `` (the record names the input already, so the
    summary line reads ``input: what is wrong`` rather than ``input: input: what is wrong``)."""
    for name in dict.fromkeys((str(job.input), job.name, str(job.input.absolute()))):
        if message.startswith(f"{name}: "):
            return message[len(name) + 2:]
    return message


@contextlib.contextmanager
def captured_warnings(mark: bool = True) -> Iterator[list[str]]:
    """Collect the ``sctgm`` logger's warnings while a job runs (they go into its record's message).
    Collected records are marked ``sctgm_captured`` (unless not ``mark``) so that a console handler
    can leave them out."""
    logger = logging.getLogger("sctgm")
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())
            record.sctgm_captured = mark

    handler, level = _Collect(logging.WARNING), logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.handlers.insert(0, handler)  # first, so that it marks records before other handlers see them
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _segment_and_write(segmenter: Segmenter, job: Job, settings: BatchSettings) -> None:
    image = load_image(job.input)
    check_axial(image)  # a batch refuses a sagittal or coronal image (a single-file run only warns)
    cord = load_mask_image(job.cord, what="cord mask") if job.cord is not None else None
    for p in job.outputs.values():
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{p.parent}: cannot create the output folder ({exc.strerror or exc})") from None
    from ..qc import QcEntryWriter  # only when asked: the QC renderer is not needed otherwise

    entry = QcEntryWriter(settings.qc_dir, job.qc_subject, settings.qc_dataset) if settings.qc_dir is not None else None
    segment_and_write(segmenter, image, job.outputs, cord=cord, options=settings.options,
                      sources=job.sources if job.outputs.layout == "bids" else None, entry=entry,
                      overwrite=settings.overwrite)


def provenance(sidecar: dict[str, Any]) -> tuple[str | None, dict[str, Any], list[str]]:
    """(model sha256, parameters, source file names) from a sidecar (:func:`sctgm.segment.outputs.sidecar`;
    the flat single-file schema of sct-gm 0.1 is read too, so its outputs are still recognised)."""
    gen = sidecar.get("GeneratedBy")
    block = gen[0] if isinstance(gen, list) and gen and isinstance(gen[0], dict) else sidecar
    model = block.get("Model") or {}
    params = block.get("Parameters") or {}
    listed = sidecar.get("Sources")
    # a path's last part (POSIX or Windows separators); a BIDS URI ("bids:raw:sub-01/anat/x.nii.gz")
    # without its scheme and dataset first (a ':' in a file name is a character of the name)
    names = [re.split(r"[/\\]", str(s).split(":", 2)[-1] if str(s).startswith("bids:") else str(s))[-1]
             for s in (listed if isinstance(listed, list) else [])]
    return (model.get("Sha256") if isinstance(model, dict) else None,
            params if isinstance(params, dict) else {}, names)


def expected_parameters(options: SegmentOptions, segmenter: Segmenter) -> dict[str, Any]:
    """The :data:`COMPARED_PARAMETERS` a sidecar of this run records (the model's values filled in)."""
    prep = segmenter.model.preprocessing
    params = {**asdict(options.effective(prep)), "enhancement": options.enhancement(prep).to_dict()}
    return json.loads(json.dumps({k: params[k] for k in COMPARED_PARAMETERS}))  # as a sidecar reads back


def invalid_reason(job: Job, settings: BatchSettings, segmenter: Segmenter) -> str | None:
    """Why the outputs of ``job`` must be (re)made, or None when they are all present and valid."""
    out = job.outputs
    path = out["gm_sidecar"]
    if not path.exists() and not path.is_symlink():
        return "not segmented yet"
    sidecar = read_small_json(path)  # a regular file of bounded size, never waited on (a FIFO)
    if sidecar is None:
        return "unreadable sidecar (not a regular JSON file of at most a few MiB)"
    sha, params, sources = provenance(sidecar if isinstance(sidecar, dict) else {})
    if sha != segmenter.identity.sha256:
        return "made with another model"
    if {k: params.get(k) for k in COMPARED_PARAMETERS} != expected_parameters(settings.options, segmenter) \
            or params.get("to_native", DEFAULT_TO_NATIVE) != segmenter.model.preprocessing.to_native:
        return "made with other parameters"  # sidecars before 'to_native': the reference's rule
    if params.get("precision", "fp32") != segmenter.network.precision \
            or params.get("precision_fp32_layers", []) != list(segmenter.network.fp32_layers):
        return "made at another precision"  # sidecars before 'precision': fp32; before the fp32 layers: none
    names = [job.input.name] + ([job.cord.name] if job.cord is not None else [])
    if sources != names:
        return "made from other source files"
    for key in out.sidecars:
        if not out[key].is_file():
            return f"{out[key].name} is missing"
    hashes = sidecar.get("Sha256")
    if isinstance(hashes, dict):
        return _changed(job, hashes)
    try:  # the grid the segmentation uses (one broken qform/sform repaired), read as the segmentation reads it
        shape, affine = read_grid(job.input)
    except SctGmError as exc:
        return f"input unreadable ({exc})"
    except Exception as exc:  # noqa: BLE001 - any unreadable input: segmenting will report it
        return f"input unreadable ({type(exc).__name__})"
    for key in NIFTI_KEYS:
        if key not in out:
            continue
        if not out[key].is_file():
            return f"{out[key].name} is missing"
        try:
            img = read_nifti(out[key])  # its header checked first: reads bounded by what it announces
            with nibabel_messages():  # nibabel's notices about a damaged output stay silent
                data = np.asanyarray(img.dataobj)  # reads (and CRC-checks) the whole file
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt output
            return f"{out[key].name} is unreadable ({type(exc).__name__})"
        if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-4):
            return f"{out[key].name} is not on the input's grid"
        if key in ("gm", "wm") and (data.dtype != np.uint8 or data.max(initial=0) > 1):
            return f"{out[key].name} is not a 0/1 uint8 mask"
    return None


def _changed(job: Job, hashes: dict[str, Any]) -> str | None:
    """What differs from the sha256 a sidecar records for the sources and the outputs (None: nothing)."""
    recorded, outputs = hashes.get("Sources"), hashes.get("Outputs")
    if not isinstance(recorded, list) or not isinstance(outputs, dict):
        return "unreadable sidecar (Sha256)"
    for path, sha in itertools.zip_longest([job.input] + ([job.cord] if job.cord is not None else []), recorded):
        try:
            if path is None or sha != file_sha256(path):
                return f"{path.name if path else 'a source'} changed since it was segmented"
        except OSError as exc:
            return f"{path.name} is unreadable ({exc.strerror or exc})"
    for key in job.outputs.kinds:
        path = job.outputs[key]
        try:
            if outputs.get(key) != file_sha256(path):
                return f"{path.name} differs from what was written (damaged or replaced)"
        except FileNotFoundError:
            return f"{path.name} is missing"
        except OSError as exc:
            return f"{path.name} is unreadable ({exc.strerror or exc})"
    return None


def gm_volume_mm3(gm_path: Path) -> float:
    """GM voxels times the voxel volume (mm3, :func:`sctgm.geometry.voxel_volume_mm3`)."""
    img = read_nifti(gm_path)
    return float(np.count_nonzero(np.asanyarray(img.dataobj))) * voxel_volume_mm3(img.affine)


def _metrics(job: Job) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    from ..metrics import morphometry

    result = morphometry(job.outputs["gm"], job.cord)
    extra = {"subject": job.subject, "session": job.session, "input": job.name}
    columns = ("subject", "session", "input") + result.columns
    return columns, tuple({**extra, **row} for row in result.rows)
