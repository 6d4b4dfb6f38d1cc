"""``sct-gm segment``: parse, call :func:`sctgm.segment.outputs.segment_file` (one image) or
:func:`sctgm.batch.segment_files` / :func:`sctgm.batch.segment_bids` (a batch), report."""

from __future__ import annotations

import contextlib
import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from . import one_line, plural, resolve_verbosity, setup_logging, verbosity_option
from .options import greedy_command


_GREEDY = ("-i", "--input", "-s", "--cord-mask", "--suffix", "--participant-label", "--session")


@greedy_command(*_GREEDY, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--input", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="3D NIfTI image(s) with axial slices (.nii or .nii.gz); several files or glob patterns "
                   "(quoted or not) make a batch.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="GM mask to write (one input only) [default: <input>_gmseg.nii.gz beside the input].")
@click.option("-m", "--model", default=None,
              help="Registered model name (large-ensemble, large, large-robust, challenge), a model folder from sct-gm "
                   "train (or its model.json), or a .hdf5/.safetensors weight file [default: the registry's default, "
                   "large-ensemble: large and large-robust combined, with the anatomical guard].")
@click.option("-s", "--cord-mask", "cord_masks", multiple=True, type=click.Path(path_type=Path),
              help="Spinal cord mask on the image's grid (one per -i): guides where the network looks; "
                   "needed by --wm.")
@click.option("--wm", is_flag=True, help="Also write the white matter (cord mask minus GM) as <input>_wmseg "
                                         "(BIDS: _label-WM_seg, where derivatives/labels has a cord mask).")
@click.option("-thr", "--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Probability threshold at the network's 0.25 mm resolution [default: the model's, 0.999].")
@click.option("--prob", is_flag=True, help="Also write the soft GM probability map (<input>_gmseg_prob; "
                                           "BIDS: _label-GM_probseg).")
@click.option("--keep-largest/--no-keep-largest", default=True, show_default=True,
              help="Per slice, keep the largest GM component (and any at least 30% of its size).")
@click.option("--fill-holes/--no-fill-holes", default=True, show_default=True, help="Per slice, fill holes in the GM.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: average 5 shifted crops (5x slower).")
@click.option("--denoise", type=click.Choice(["auto", "on", "off", "nlm", "tv", "wavelet", "bilateral"]), default=None,
              help="Noise suppression before segmentation: auto = non-local means on images whose estimated noise "
                   "exceeds 3.5% of the 99th percentile, on = the model's denoiser always (at least half the "
                   "noise), off = never (the image as it is), or a denoiser [default: the model's, auto]. "
                   "See docs/robustness.md.")
@click.option("--bias-correction", "bias", type=click.Choice(["off", "smooth", "n4"]), default=None,
              help="Intensity inhomogeneity correction: smooth (in-plane normalisation) or n4 (needs SimpleITK: "
                   "pip install 'sctgm[enhance]') [default: the model's, off].")
@click.option("--clahe/--no-clahe", default=None,
              help="Contrast-limited adaptive histogram equalisation per slice [default: the model's, off].")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--engine", type=click.Choice(["auto", "onnxruntime", "torch"]), default="auto", show_default=True,
              help="Network engine: auto = ONNX Runtime on a CPU (fastest there), PyTorch on a GPU.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None,
              help="Network arithmetic: bf16 runs ~2x faster on CPUs with bf16 instructions (AVX-512 BF16, AMX) "
                   "with OpenVINO installed (pip install 'sctgm[openvino]'), masks at Dice >= 0.998 vs fp32 "
                   "(docs/speed.md); elsewhere fp32, with a warning [default: the model's, fp32].")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None,
              help="Slices per network call [default: 1 on a CPU, 32 on a GPU].")
@click.option("-qc", "--qc", "qc_dir", type=click.Path(path_type=Path), default=None,
              help="Add the result(s) to the HTML quality-control report in this folder (see sct-gm qc).")
@click.option("-qc-subject", "--qc-subject", default=None,
              help="With -qc: subject name shown in the QC report (one input).")
@click.option("-qc-dataset", "--qc-dataset", default=None,
              help="With -qc: dataset name shown in the QC report beside each subject (as SCT's -qc-dataset).")
@click.option("--bids", "bids_root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Segment a BIDS dataset: its raw sub-*/[ses-*/]anat images, into DATASET/derivatives/sct-gm.")
@click.option("--derivatives", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="BIDS: where the derivative dataset goes [default: DATASET/derivatives/sct-gm].")
@click.option("--suffix", "suffixes", multiple=True,
              help="BIDS: image suffix(es) to segment [default: T2star and T2starw, the BIDS name].")
@click.option("--participant-label", "participants", multiple=True,
              help="BIDS: only these participants (01 02 ..., with or without sub-).")
@click.option("--session", "sessions", multiple=True, help="BIDS: only these sessions (with or without ses-).")
@click.option("--cord-labels/--no-cord-labels", default=True, show_default=True,
              help="BIDS: use the cord mask in derivatives/labels (<name>_label-SC_seg) when there is one.")
@click.option("-j", "--jobs", "n_jobs", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Batch: worker processes on this machine (each loads the model once); one file uses one "
                   "process, -j or not.")
@click.option("--scheduler", default=None, metavar="ADDRESS|FILE",
              help="Batch: run on a Dask cluster, by scheduler address (tcp://host:port) or scheduler JSON file "
                   "(needs pip install 'sctgm[dask]'); one file too is then a batch (of one).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for the network per image [default: the cores, shared among -j workers; 1 per "
                   "image for --engine torch in a batch].")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs that sct-gm did not write (a manual mask "
                                                "at -o, a manual-label name, a --summary/--metrics file that is not "
                                                "sct-gm's table: refused without it; never an input or a reviewer's "
                                                "correction); batch: also segment again where valid outputs exist "
                                                "(one file is always segmented again).")
@click.option("--summary", "summary_path", type=click.Path(path_type=Path), default=None,
              help="Write the summary table (TSV, a row per image, merged into sct-gm's table already there) "
                   "here [default: DATASET/derivatives/sct-gm/summary.tsv with --bids, none otherwise].")
@click.option("--metrics", "metrics_csv", is_flag=False, flag_value="", default=None, metavar="[CSV]",
              help="Per-slice GM morphometry of every image in one CSV (merged likewise) [BIDS default: "
                   "derivatives/sct-gm/morphometry.csv].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; errors only.")
@verbosity_option
@click.pass_context
def segment(ctx: click.Context, **params: Any) -> None:
    """Segment the spinal cord gray matter of 3D NIfTI images.

    Writes a uint8 0/1 mask on exactly the input's grid, and a JSON sidecar beside it recording the
    tool version, the model and its sha256, the parameters, and the sha256 of each input and output.
    Any storage orientation works; the cord may be anywhere in the field of view. An input is never
    written over, nor a file that sct-gm did not write (without --overwrite); the outputs are
    written all together or not at all.

    Several -i (or glob patterns), or --bids, make a batch: the model is loaded once (per worker),
    a failure on one image is recorded and the others go on, valid outputs are kept (resume), a
    summary is printed, and the exit code is 1 if any image failed. One -i naming one file is
    always segmented again (with -j too; --summary/--metrics get its row), except with --scheduler,
    which makes it a batch of one on the cluster. Details: docs/batch.md.

    \b
    Examples:
      sct-gm segment -i t2s.nii.gz                 # -> t2s_gmseg.nii.gz, t2s_gmseg.json
      sct-gm segment -i t2s.nii.gz -s t2s_seg.nii.gz --wm -m challenge
      sct-gm segment -i 'data/*/t2s.nii.gz' -j 4
      sct-gm segment --bids ds --participant-label 01 02 -j 4 --qc qc/ --metrics
      sct-gm segment --bids ds --scheduler tcp://head:8786
    """
    from ..segment.pipeline import SegmentOptions

    verbose, quiet = resolve_verbosity(ctx, params.pop("verbosity"), params["quiet"])
    args = SegmentArgs(**{**params, "verbose": verbose, "quiet": quiet})
    options = SegmentOptions(threshold=args.threshold, keep_largest=args.keep_largest, fill_holes=args.fill_holes,
                             tta=args.tta, batch_size=args.batch_size, denoise=args.denoise, bias=args.bias,
                             clahe=args.clahe)
    if args.bids_root is None and not args.inputs:
        raise click.UsageError("give the image(s) to segment (-i IMAGE ..., globs allowed) or a dataset (--bids DIR)")
    if args.bids_root is not None and args.inputs:
        raise click.UsageError("-i and --bids exclude each other: --bids finds the images itself")
    _check_dependent_options(ctx, args)
    setup_logging(args.verbose, args.quiet)
    if args.qc_dir is not None:
        _say_qc_folder(args)
    if args.is_batch:
        _segment_batch(ctx, args, options)
    else:
        _segment_one(args, options)


@dataclass(frozen=True)
class SegmentArgs:
    """The command line of ``sct-gm segment``, as one record (the Click parameters by name)."""

    inputs: tuple[Path, ...]
    output: Path | None
    model: str | None
    cord_masks: tuple[Path, ...]
    wm: bool
    threshold: float | None
    prob: bool
    keep_largest: bool
    fill_holes: bool
    tta: bool
    denoise: str | None
    bias: str | None
    clahe: bool | None
    device: str
    engine: str
    precision: str | None
    batch_size: int | None
    qc_dir: Path | None
    qc_subject: str | None
    qc_dataset: str | None
    bids_root: Path | None
    derivatives: Path | None
    suffixes: tuple[str, ...]
    participants: tuple[str, ...]
    sessions: tuple[str, ...]
    cord_labels: bool
    n_jobs: int
    scheduler: str | None
    threads: int | None
    overwrite: bool
    summary_path: Path | None
    metrics_csv: str | None
    quiet: bool
    verbose: bool

    @property
    def is_batch(self) -> bool:
        """Several images, a glob pattern, a dataset, or a Dask cluster (which only a batch reaches).
        One -i naming one file is one file: -j changes nothing for it, --summary/--metrics get its row."""
        return (self.bids_root is not None or len(self.inputs) > 1 or self.scheduler is not None
                or (not self.inputs[0].exists() and glob.has_magic(str(self.inputs[0]))))


def _check_dependent_options(ctx: click.Context, args: SegmentArgs) -> None:
    """An option that needs another is a usage error without it (never silently ignored)."""
    given = ctx.get_parameter_source("cord_labels") not in (None, click.core.ParameterSource.DEFAULT)
    bids_only = [name for name, v in (("--derivatives", args.derivatives), ("--suffix", args.suffixes),
                                      ("--participant-label", args.participants), ("--session", args.sessions),
                                      ("--cord-labels" if args.cord_labels else "--no-cord-labels", given)) if v]
    if args.bids_root is None and bids_only:
        raise click.UsageError(f"BIDS options only apply with --bids DATASET (given: {', '.join(bids_only)})")
    if args.qc_subject is not None and args.is_batch:
        raise click.UsageError("-qc-subject names one image; in a batch each QC entry is named after its subject")
    qc_only = [name for name, v in (("-qc-subject", args.qc_subject), ("-qc-dataset", args.qc_dataset))
               if v is not None]
    if args.qc_dir is None and qc_only:
        raise click.UsageError(f"QC options only apply with -qc FOLDER (given: {', '.join(qc_only)})")
    if args.metrics_csv == "" and args.bids_root is None:
        raise click.UsageError("--metrics needs the CSV path outside BIDS mode: --metrics FILE.csv")


def _say_qc_folder(args: SegmentArgs) -> None:
    """Where the QC report goes, when the folder given holds another tool's report."""
    from ..qc.report import report_folder

    folder = report_folder(args.qc_dir)
    if folder != args.qc_dir and not args.quiet:
        click.echo(f"sct-gm: {args.qc_dir} holds another tool's QC report; sct-gm's goes to {folder}", err=True)


def _segment_one(args: SegmentArgs, options: Any) -> None:
    """One file, segmented again on every run; with --summary/--metrics its row goes into those
    tables (merged as a batch's rows are), written only once the file is."""
    from ..batch.jobs import captured_warnings
    from ..qc import QcEntryWriter
    from ..segment.files import segment_file
    from .progress import counting_bar, download_progress

    _check_tables(args)  # before any work, as a batch does
    entry = QcEntryWriter(args.qc_dir, args.qc_subject, args.qc_dataset) if args.qc_dir is not None else None
    t0 = time.perf_counter()
    # a summary row holds the image's warnings, as a batch row does; shown on the terminal unless -q
    kept = captured_warnings(mark=args.quiet) if args.summary_path is not None else contextlib.nullcontext([])
    with download_progress(args.quiet) as fetching, \
            counting_bar(args.quiet, f"Segmenting {args.inputs[0].name}", "slices") as progress, kept as warnings:
        result = segment_file(args.inputs[0], args.output, model=args.model,
                              cord_mask=args.cord_masks[0] if args.cord_masks else None, options=options,
                              prob=args.prob, wm=args.wm, device=args.device, engine=args.engine,
                              precision=args.precision, threads=args.threads, entry=entry, overwrite=args.overwrite,
                              progress=progress, download_progress=fetching)
    try:
        tables = _write_tables(args, result, time.perf_counter() - t0, warnings)
    except KeyboardInterrupt:  # the outputs are in place: say so, not that nothing was written
        click.echo(f"sct-gm: interrupted after {result.gm} was written; --summary / --metrics may not list it yet: "
                   f"run the same command again", err=True)
        raise SystemExit(130) from None
    if not args.quiet:
        info = result.segmentation.info if result.segmentation else {}
        written = ", ".join(str(p) for p in (result.gm, result.wm, result.prob) if p is not None)
        voxels = info.get("gm_voxels")
        count = plural(voxels, "GM voxel") if isinstance(voxels, int) else "? GM voxels"
        click.echo(one_line(f"sct-gm: wrote {written} ({count}, {info.get('seconds', '?')} s){tables}"
                            f"{'; ' + _qc_where(args) if args.qc_dir is not None else ''}"), err=True)


def _qc_where(args: SegmentArgs) -> str:
    """'QC report: file://.../index.html' when -qc was given (what `sct-gm qc` prints as Open:)."""
    if args.qc_dir is None:
        return ""
    from ..qc.report import INDEX_HTML, report_folder

    return f"QC report: {(report_folder(args.qc_dir) / INDEX_HTML).resolve().as_uri()}"


def _check_tables(args: SegmentArgs) -> None:
    """The batch's checks of --summary / --metrics, for the one file's outputs."""
    from types import SimpleNamespace

    from ..batch import check_tables
    from ..naming import output_kinds, sct_outputs

    outputs = sct_outputs(args.inputs[0], args.output, kinds=output_kinds(prob=args.prob, wm=args.wm))
    job = SimpleNamespace(input=args.inputs[0], cord=args.cord_masks[0] if args.cord_masks else None, outputs=outputs)
    check_tables([job], args.summary_path, [args.metrics_csv] if args.metrics_csv is not None else [],
                 overwrite=args.overwrite, qc_dir=args.qc_dir)


def _write_tables(args: SegmentArgs, result: Any, seconds: float, warnings: list[str]) -> str:
    """Write the file's row into --summary / --metrics; returns what to add to the 'wrote' line."""
    if args.summary_path is None and args.metrics_csv is None:
        return ""
    from ..batch import write_metrics, write_summary
    from ..batch.jobs import JobRecord, gm_volume_mm3
    from ..metrics import morphometry
    from ..naming import bids_entities

    name = str(args.inputs[0])
    subject, session = bids_entities(args.inputs[0].absolute())  # as a batch of files names them
    columns: tuple[str, ...] = ()
    rows: tuple[dict[str, Any], ...] = ()
    if args.metrics_csv is not None:
        areas = morphometry(result.gm, args.cord_masks[0] if args.cord_masks else None)
        columns = ("subject", "session", "input") + areas.columns
        rows = tuple({"subject": subject, "session": session, "input": name, **row} for row in areas.rows)
    outputs = {k: str(p) for k, p in (("gm", result.gm), ("wm", result.wm), ("prob", result.prob)) if p is not None}
    record = JobRecord(name, subject, session, "ok", "; ".join(dict.fromkeys(warnings)),
                       round(gm_volume_mm3(result.gm), 3), round(seconds, 2), outputs,
                       metrics_columns=columns, metrics_rows=rows)
    said = ""
    if args.summary_path is not None:
        said += f"; summary: {write_summary([record], args.summary_path)}"
    if args.metrics_csv is not None:
        said += f"; metrics: {write_metrics([record], args.metrics_csv)}"
    return said


def _segment_batch(ctx: click.Context, args: SegmentArgs, options: Any) -> None:
    from ..batch import segment_bids, segment_files
    from ..batch.bids import DEFAULT_SUFFIXES
    from ..batch.jobs import BatchSettings
    from .batch_view import describe_record, render_summary, resume_message
    from .progress import counting_bar, download_progress

    if args.n_jobs > 1 and args.scheduler is not None:
        raise click.UsageError("-j (local worker processes) and --scheduler (a Dask cluster) exclude each other")
    if args.bids_root is not None and (args.output is not None or args.cord_masks):
        raise click.UsageError("with --bids, outputs go to the derivatives folder (--derivatives, not -o) and cord "
                               "masks come from derivatives/labels (not -s)")
    settings = BatchSettings(model=args.model, device=args.device, options=options, prob=args.prob, wm=args.wm,
                             overwrite=args.overwrite, engine=args.engine, precision=args.precision,
                             threads=args.threads, qc_dir=args.qc_dir,
                             qc_dataset=args.qc_dataset, metrics=args.metrics_csv is not None)
    metrics_path = Path(args.metrics_csv) if args.metrics_csv else None
    common = dict(n_jobs=args.n_jobs, scheduler=args.scheduler, summary=args.summary_path, metrics_csv=metrics_path)
    finished: list[Any] = []  # records of the images finished before an interruption
    planned: list[int] = []
    try:
        with download_progress(args.quiet) as fetching, \
                counting_bar(args.quiet, "Segmenting", "images", describe_record) as bar:
            def progress(done: int, total: int, record: Any) -> None:
                finished.append(record)
                planned[:] = [total]
                if bar is not None:
                    bar(done, total, record)

            if args.bids_root is not None:
                result = segment_bids(args.bids_root, settings, derivatives=args.derivatives,
                                      suffixes=args.suffixes or DEFAULT_SUFFIXES, participants=args.participants,
                                      sessions=args.sessions, cord_labels=args.cord_labels, progress=progress,
                                      download_progress=fetching, **common)
            else:
                result = segment_files(args.inputs, settings, output=args.output, cord_masks=args.cord_masks,
                                       progress=progress, download_progress=fetching, **common)
    except KeyboardInterrupt:
        click.echo(f"sct-gm: interrupted; {resume_message(finished, planned[0] if planned else None, args.overwrite)}",
                   err=True)
        ctx.exit(130)
    render_summary(result, args.quiet)
    if args.qc_dir is not None and not args.quiet:
        from ..qc.report import INDEX_HTML, report_folder

        added, kept = result.count("ok"), result.count("skipped")  # a skipped image adds no entry
        where = _qc_where(args) if added or (report_folder(args.qc_dir) / INDEX_HTML).is_file() else ""
        none = ("no QC entry added: the outputs were already there (--overwrite redoes them, with their "
                "entries)") if kept and not added else ""
        if where or none:
            click.echo(f"sct-gm: {'; '.join(filter(None, [none, where]))}", err=True)
    if result.failed:
        ctx.exit(1)
