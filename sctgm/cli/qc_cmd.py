"""``sct-gm qc``: add one entry to an HTML quality-control report (Click only; see sctgm.qc)."""

from __future__ import annotations

from pathlib import Path

import click

from . import resolve_verbosity, setup_logging, verbosity_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--image", "image", required=True, type=click.Path(path_type=Path),
              help="Image (3D NIfTI) the GM mask was computed on.")
@click.option("-s", "--gmseg", "gmseg", required=True, type=click.Path(path_type=Path),
              help="GM segmentation on the image's grid.")
@click.option("-o", "-qc", "--qc-dir", "qc_dir", required=True, type=click.Path(path_type=Path),
              help="QC folder (created if needed); open <qc-dir>/index.html.")
@click.option("-c", "--cord", "cord", type=click.Path(path_type=Path), default=None,
              help="Spinal cord mask: crops on the cord, shows WM (= cord - GM), flags empty GM slices.")
@click.option("-w", "--wmseg", "wmseg", type=click.Path(path_type=Path), default=None,
              help="WM segmentation (instead of cord - GM).")
@click.option("-qc-subject", "--subject", "subject", default=None,
              help="Subject shown in the report (default: sub-XX from the path, else the file name).")
@click.option("-qc-dataset", "--dataset", "dataset", default=None,
              help="Dataset shown beside the subject in the report (as SCT's -qc-dataset).")
@click.option("--model", default=None, help="Model name recorded with the entry.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@verbosity_option
@click.pass_context
def qc(ctx: click.Context, image: Path, gmseg: Path, qc_dir: Path, cord: Path | None, wmseg: Path | None,
       subject: str | None, dataset: str | None, model: str | None, quiet: bool, verbosity: int | None) -> None:
    """Add IMAGE with its GM mask to the QC report in QC_DIR (axial mosaic, overlay, flags)."""
    from ..qc import add_entry

    verbose, silent = resolve_verbosity(ctx, verbosity)  # -q: no message; -v 0: no warning either
    setup_logging(verbose, silent)
    entry = add_entry(qc_dir, image, gmseg, cord_path=cord, wmseg_path=wmseg, model=model, subject=subject,
                      dataset=dataset)
    if not (quiet or silent):
        click.echo(f"QC entry: {entry}")
        click.echo(f"Open: {(Path(qc_dir) / 'index.html').resolve().as_uri()}")
