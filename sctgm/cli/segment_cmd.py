"""``sct-gm segment``: parse, call :func:`sctgm.segment.outputs.segment_file` (one image) or
:func:`sctgm.batch.segment_files` / :func:`sctgm.batch.segment_bids` (a batch), report."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import click

from . import resolve_verbosity, setup_logging, verbosity_option
from .options import greedy_command


_GREEDY = ("-i", "--input", "-s", "--cord-mask", "--suffix", "--participant-label", "--session")


@greedy_command(*_GREEDY, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--input", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="3D NIfTI image(s) with axial slices (.nii or .nii.gz); several files or glob patterns "
                   "(quoted or not) make a batch.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="GM mask to write (one input only) [default: <input>_gmseg.nii.gz beside the input].")
@click.option("-m", "--model", default="large", show_default=True,
              help="Registered model name (challenge, large, large-robust), a model folder from sct-gm train (or its model.json), or a .hdf5/.safetensors weight file.")
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
                   "exceeds 3.5% of the 99th percentile, on = the model's denoiser always, off = never (the image "
                   "as it is), or a denoiser [default: the model's, auto]. See docs/robustness.md.")
@click.option("--bias-correction", "bias", type=click.Choice(["off", "smooth", "n4"]), default=None,
              help="Intensity inhomogeneity correction: smooth (in-plane normalisation) or n4 (needs SimpleITK: "
                   "pip install 'sctgm[enhance]') [default: the model's, off].")
@click.option("--clahe/--no-clahe", default=None,
              help="Contrast-limited adaptive histogram equalisation per slice [default: the model's, off].")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--engine", type=click.Choice(["auto", "onnxruntime", "torch"]), default="auto", show_default=True,
              help="Network engine: auto = ONNX Runtime on a CPU (fastest there), PyTorch on a GPU.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None,
              help="Slices per network call [default: 1 on a CPU, 32 on a GPU].")
@click.option("-qc", "--qc", "qc_dir", type=click.Path(path_type=Path), default=None,
              help="Add the result(s) to the HTML quality-control report in this folder (see sct-gm qc).")
@click.option("-qc-subject", "--qc-subject", default=None, help="Subject name shown in the QC report (one input).")
@click.option("-qc-dataset", "--qc-dataset", default=None,
              help="Dataset name shown in the QC report beside each subject (as SCT's -qc-dataset).")
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
              help="Batch: worker processes on this machine (each loads the model once).")
@click.option("--scheduler", default=None, metavar="ADDRESS|FILE",
              help="Batch: run on a Dask cluster, by scheduler address (tcp://host:port) or scheduler JSON file "
                   "(needs pip install 'sctgm[dask]').")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for the network per image [default: the cores, shared among -j workers; 1 per "
                   "image for --engine torch in a batch].")
@click.option("--overwrite", is_flag=True, help="Batch: segment again even where valid outputs exist (one file is "
                                                "always segmented again).")
@click.option("--summary", "summary_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Batch: write the summary table (TSV) here [default: DATASET/derivatives/sct-gm/summary.tsv "
                   "with --bids, none otherwise].")
@click.option("--metrics", "metrics_csv", is_flag=False, flag_value="", default=None, metavar="[CSV]",
              help="Batch: per-slice GM morphometry of every image in one CSV [BIDS default: "
                   "derivatives/sct-gm/morphometry.csv].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; errors only.")
@verbosity_option
@click.pass_context
def segment(ctx: click.Context, inputs: tuple[Path, ...], output: Path | None, model: str,
            cord_masks: tuple[Path, ...], wm: bool, threshold: float | None, prob: bool, keep_largest: bool,
            fill_holes: bool, tta: bool, denoise: str | None, bias: str | None, clahe: bool | None, device: str, engine: str, batch_size: int | None, qc_dir: Path | None,
            qc_subject: str | None, qc_dataset: str | None,
            bids_root: Path | None, derivatives: Path | None, suffixes: tuple[str, ...],
            participants: tuple[str, ...], sessions: tuple[str, ...], cord_labels: bool, n_jobs: int,
            scheduler: str | None, threads: int | None, overwrite: bool, summary_path: Path | None,
            metrics_csv: str | None, quiet: bool, verbosity: int | None) -> None:
    """Segment the spinal cord gray matter of 3D NIfTI images.

    Writes a uint8 0/1 mask on exactly the input's grid, and a JSON sidecar beside it recording the
    tool version, the model and its sha256, and the parameters. Any storage orientation works; the
    cord may be anywhere in the field of view.

    Several -i (or glob patterns), or --bids, make a batch: the model is loaded once (per worker),
    a failure on one image is recorded and the others go on, valid outputs are kept (resume), a
    summary is printed, and the exit code is 1 if any image failed. Details: docs/batch.md.

    \b
    Examples:
      sct-gm segment -i t2s.nii.gz                 # -> t2s_gmseg.nii.gz, t2s_gmseg.json
      sct-gm segment -i t2s.nii.gz -s t2s_seg.nii.gz --wm -m challenge
      sct-gm segment -i 'data/*/t2s.nii.gz' -j 4
      sct-gm segment --bids ds --participant-label 01 02 -j 4 --qc qc/ --metrics
      sct-gm segment --bids ds --scheduler tcp://head:8786
    """
    from ..segment.pipeline import SegmentOptions

    verbose, quiet = resolve_verbosity(ctx, verbosity, quiet)
    options = SegmentOptions(threshold=threshold, keep_largest=keep_largest, fill_holes=fill_holes, tta=tta,
                             batch_size=batch_size, denoise=denoise, bias=bias, clahe=clahe)
    if bids_root is None and not inputs:
        raise click.UsageError("give the image(s) to segment (-i IMAGE ..., globs allowed) or a dataset (--bids DIR)")
    if bids_root is not None and inputs:
        raise click.UsageError("-i and --bids exclude each other: --bids finds the images itself")
    bids_only = [name for name, v in (("--derivatives", derivatives), ("--suffix", suffixes),
                                      ("--participant-label", participants), ("--session", sessions)) if v]
    if bids_root is None and bids_only:
        raise click.UsageError(f"{', '.join(bids_only)} only apply with --bids DATASET")
    batch = (bids_root is not None or len(inputs) > 1 or n_jobs > 1 or scheduler is not None
             or summary_path is not None or metrics_csv is not None
             or (not inputs[0].exists() and glob.has_magic(str(inputs[0]))))
    if not batch:
        setup_logging(verbose, quiet)
        _segment_one(inputs[0], output, model, cord_masks[0] if cord_masks else None, wm, prob, options, device,
                     engine, qc_dir, qc_subject, qc_dataset, threads, quiet)
        return
    _segment_batch(ctx, inputs=inputs, output=output, model=model, cord_masks=cord_masks, wm=wm, prob=prob,
                   options=options, device=device, engine=engine, qc_dir=qc_dir, qc_subject=qc_subject,
                   qc_dataset=qc_dataset, bids_root=bids_root,
                   derivatives=derivatives, suffixes=suffixes, participants=participants, sessions=sessions,
                   cord_labels=cord_labels, n_jobs=n_jobs, scheduler=scheduler, threads=threads,
                   overwrite=overwrite, summary_path=summary_path, metrics_csv=metrics_csv, quiet=quiet,
                   verbose=verbose)


def _segment_one(input_path: Path, output: Path | None, model: str, cord_mask: Path | None, wm: bool, prob: bool,
                 options: Any, device: str, engine: str, qc_dir: Path | None, qc_subject: str | None,
                 qc_dataset: str | None, threads: int | None, quiet: bool) -> None:
    from ..segment.files import segment_file
    from .progress import counting_bar, download_progress

    with download_progress(quiet) as fetching, \
            counting_bar(quiet, f"Segmenting {input_path.name}", "slices") as progress:
        result = segment_file(input_path, output, model=model, cord_mask=cord_mask, options=options, prob=prob,
                              wm=wm, device=device, engine=engine, threads=threads, qc_dir=qc_dir,
                              qc_subject=qc_subject, qc_dataset=qc_dataset, progress=progress,
                              download_progress=fetching)
    if not quiet:
        info = result.segmentation.info if result.segmentation else {}
        written = ", ".join(str(p) for p in (result.gm, result.wm, result.prob) if p is not None)
        click.echo(f"sct-gm: wrote {written} ({info.get('gm_voxels', '?')} GM voxels, "
                   f"{info.get('seconds', '?')} s)", err=True)


def _segment_batch(ctx: click.Context, *, inputs: tuple[Path, ...], output: Path | None, model: str,
                   cord_masks: tuple[Path, ...], wm: bool, prob: bool, options: Any, device: str, engine: str,
                   qc_dir: Path | None, qc_subject: str | None, qc_dataset: str | None, bids_root: Path | None,
                   derivatives: Path | None,
                   suffixes: tuple[str, ...], participants: tuple[str, ...], sessions: tuple[str, ...],
                   cord_labels: bool, n_jobs: int, scheduler: str | None, threads: int | None, overwrite: bool,
                   summary_path: Path | None, metrics_csv: str | None, quiet: bool, verbose: bool) -> None:
    from ..batch import segment_bids, segment_files
    from ..batch.bids import DEFAULT_SUFFIXES
    from ..batch.jobs import BatchSettings
    from .batch_view import describe_record, render_summary
    from .progress import counting_bar, download_progress

    if qc_subject is not None:
        raise click.UsageError("-qc-subject names one image; in a batch each QC entry is named after its subject")
    if n_jobs > 1 and scheduler is not None:
        raise click.UsageError("-j (local worker processes) and --scheduler (a Dask cluster) exclude each other")
    if bids_root is not None and (output is not None or cord_masks):
        raise click.UsageError("with --bids, outputs go to the derivatives folder (--derivatives, not -o) and cord "
                               "masks come from derivatives/labels (not -s)")
    if metrics_csv == "" and bids_root is None:
        raise click.UsageError("--metrics needs the CSV path outside BIDS mode: --metrics FILE.csv")
    setup_logging(verbose, quiet)
    settings = BatchSettings(model=model, device=device, options=options, prob=prob, wm=wm, overwrite=overwrite,
                             engine=engine, threads=threads, qc_dir=qc_dir, qc_dataset=qc_dataset,
                             metrics=metrics_csv is not None)
    metrics_path = Path(metrics_csv) if metrics_csv else None
    finished: list[Any] = []  # records of the images finished before an interruption
    planned: list[int] = []
    try:
        with download_progress(quiet) as fetching, \
                counting_bar(quiet, "Segmenting", "images", describe_record) as bar:
            def progress(done: int, total: int, record: Any) -> None:
                finished.append(record)
                planned[:] = [total]
                if bar is not None:
                    bar(done, total, record)

            if bids_root is not None:
                result = segment_bids(bids_root, settings, derivatives=derivatives,
                                      suffixes=suffixes or DEFAULT_SUFFIXES, participants=participants,
                                      sessions=sessions, cord_labels=cord_labels, n_jobs=n_jobs,
                                      scheduler=scheduler, summary=summary_path, metrics_csv=metrics_path,
                                      progress=progress, download_progress=fetching)
            else:
                result = segment_files(inputs, settings, output=output, cord_masks=cord_masks, n_jobs=n_jobs,
                                       scheduler=scheduler, summary=summary_path, metrics_csv=metrics_path,
                                       progress=progress, download_progress=fetching)
    except KeyboardInterrupt:
        click.echo(f"sct-gm: interrupted; {_resume_message(finished, planned[0] if planned else None, overwrite)}",
                   err=True)
        ctx.exit(130)
    render_summary(result, quiet)
    if result.failed:
        ctx.exit(1)


def _resume_message(finished: list[Any], total: int | None, overwrite: bool) -> str:
    """What running the interrupted batch's command again does, exactly (the batch's resume rules:
    docs/batch.md, "Resume")."""
    done = sum(r.status == "ok" for r in finished)
    of = f"{len(finished)} of {total}" if total is not None else f"{len(finished)}"
    head = (f"{of} images finished ({done} segmented) and unfinished ones left nothing behind")
    if not overwrite:
        return (f"{head}: run the same command again to resume (valid outputs are skipped, the rest "
                f"segmented)")
    return (f"{head}: the same command (with --overwrite) segments every image again; without --overwrite it "
            f"resumes: the {done} segmented now are kept, and of the others only those whose outputs are "
            f"missing, invalid or made with other settings or another model are segmented again")
