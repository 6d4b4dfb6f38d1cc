"""``sct-gm segment``: parse, call :func:`sctgm.api.segment_file`, report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import setup_logging


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="3D NIfTI image with axial slices (.nii or .nii.gz).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="GM mask to write [default: <input>_gmseg.nii.gz beside the input].")
@click.option("-m", "--model", default="large", show_default=True,
              help="Registered model name (challenge, large) or path to a .hdf5/.safetensors weight file.")
@click.option("-s", "--cord-mask", type=click.Path(path_type=Path), default=None,
              help="Spinal cord mask on the image's grid: guides where the network looks; needed by --wm.")
@click.option("--wm", is_flag=True, help="Also write the white matter (cord mask minus GM) as <input>_wmseg.")
@click.option("-thr", "--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Probability threshold at the network's 0.25 mm resolution [default: the model's, 0.999].")
@click.option("--prob", is_flag=True, help="Also write the soft GM probability map (<input>_gmseg_prob).")
@click.option("--keep-largest/--no-keep-largest", default=True, show_default=True,
              help="Per slice, keep the largest GM component (and any at least 30% of its size).")
@click.option("--fill-holes/--no-fill-holes", default=True, show_default=True, help="Per slice, fill holes in the GM.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: average 5 shifted crops (5x slower).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--engine", type=click.Choice(["auto", "onnxruntime", "torch"]), default="auto", show_default=True,
              help="Network engine: auto = ONNX Runtime on a CPU (fastest there), PyTorch on a GPU.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for the network [default: one per core].")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None,
              help="Slices per network call [default: 1 on a CPU, 32 on a GPU].")
@click.option("-qc", "--qc", "qc_dir", type=click.Path(path_type=Path), default=None,
              help="Add this result to the HTML quality-control report in this folder (see sct-gm qc).")
@click.option("-qc-subject", "--qc-subject", default=None, help="Subject name shown in the QC report.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Debug messages, and tracebacks on errors.")
@click.pass_context
def segment(ctx: click.Context, input_path: Path, output: Path | None, model: str, cord_mask: Path | None,
            wm: bool, threshold: float | None, prob: bool, keep_largest: bool, fill_holes: bool, tta: bool,
            device: str, engine: str, threads: int | None, batch_size: int | None, qc_dir: Path | None,
            qc_subject: str | None, quiet: bool,
            verbose: bool) -> None:
    """Segment the spinal cord gray matter of a 3D NIfTI image.

    Writes a uint8 0/1 mask on exactly the input's grid, and a JSON sidecar beside it recording the
    tool version, the model and its sha256, and the parameters. Any storage orientation works; the
    cord may be anywhere in the field of view.

    \b
    Example:
      sct-gm segment -i t2s.nii.gz                 # -> t2s_gmseg.nii.gz, t2s_gmseg.json
      sct-gm segment -i t2s.nii.gz -s t2s_seg.nii.gz --wm -m challenge
    """
    from ..api import segment_file
    from ..pipeline import SegmentOptions

    if ctx.obj is not None:
        ctx.obj["verbose"] = ctx.obj.get("verbose") or verbose
    setup_logging(bool(ctx.obj and ctx.obj.get("verbose")), quiet)
    options = SegmentOptions(threshold=threshold, keep_largest=keep_largest, fill_holes=fill_holes, tta=tta,
                             batch_size=batch_size)
    from .fetch_cmd import download_progress

    with download_progress(quiet) as fetching, _progress(quiet, f"Segmenting {input_path.name}") as progress:
        result = segment_file(input_path, output, model=model, cord_mask=cord_mask, options=options, prob=prob,
                              wm=wm, device=device, engine=engine, threads=threads, qc_dir=qc_dir,
                              qc_subject=qc_subject, progress=progress, download_progress=fetching)
    if not quiet:
        info = result.segmentation.info if result.segmentation else {}
        written = ", ".join(str(p) for p in (result.gm, result.wm, result.prob) if p is not None)
        click.echo(f"sct-gm: wrote {written} ({info.get('gm_voxels', '?')} GM voxels, "
                   f"{info.get('seconds', '?')} s)", err=True)


class _progress:
    """A rich progress bar over slices on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, quiet: bool, label: str) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.label = label
        self._bar = None
        self._task = None

    def __enter__(self):  # noqa: ANN204
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("slices"), TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=None)

        def update(done: int, total: int) -> None:
            self._bar.update(self._task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
