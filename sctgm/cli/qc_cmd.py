"""``sct-gm qc``: add one entry to an HTML quality-control report, or serve a report with the slice
editor on (``--serve``) (Click only; see sctgm.qc and sctgm.qc.serve)."""

from __future__ import annotations

from pathlib import Path

import click

from . import resolve_verbosity, setup_logging, verbosity_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--image", "image", type=click.Path(path_type=Path),
              help="Image (3D NIfTI) the GM mask was computed on.")
@click.option("-s", "--gmseg", "gmseg", type=click.Path(path_type=Path),
              help="GM segmentation on the image's grid.")
@click.option("-o", "-qc", "--qc-dir", "qc_dir", type=click.Path(path_type=Path),
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
@click.option("--serve", "serve", type=click.Path(path_type=Path), default=None, metavar="QC_DIR",
              help="Serve the report in QC_DIR on 127.0.0.1 with the slice editor on (corrected masks are saved "
              "where sct-gm train reads them); Ctrl-C stops it.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="With --serve: the port (0: a free one).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@verbosity_option
@click.pass_context
def qc(ctx: click.Context, image: Path | None, gmseg: Path | None, qc_dir: Path | None, cord: Path | None,
       wmseg: Path | None, subject: str | None, dataset: str | None, model: str | None, serve: Path | None,
       port: int, quiet: bool, verbosity: int | None) -> None:
    """Add IMAGE with its GM mask to the QC report in QC_DIR (axial mosaic, overlay, flags), or
    serve a report with the slice editor on (--serve QC_DIR)."""
    from ..qc import add_entry
    from ..qc.sidecar_facts import segmentation_facts

    verbose, silent = resolve_verbosity(ctx, verbosity)  # -q: no message; -v 0: no warning either
    setup_logging(verbose, silent)
    if serve is not None:
        entry_only = [flag for flag, v in (("-i", image), ("-s", gmseg), ("-o", qc_dir), ("-c", cord), ("-w", wmseg),
                                           ("-qc-subject", subject), ("-qc-dataset", dataset), ("--model", model))
                      if v is not None]
        if entry_only:
            raise click.UsageError(f"--serve takes the QC folder alone (entry options given: {', '.join(entry_only)})")
        return _serve(serve, port, quiet or silent)
    if ctx.get_parameter_source("port") not in (None, click.core.ParameterSource.DEFAULT):
        raise click.UsageError("serve options only apply with --serve QC_DIR (given: --port)")
    for value, flag in ((image, "-i/--image"), (gmseg, "-s/--gmseg"), (qc_dir, "-o/--qc-dir")):
        if value is None:
            raise click.UsageError(f"Missing option '{flag}' (or give --serve QC_DIR).")

    # beside sct-gm's own outputs, its sidecar (when it is this mask's) gives the model, the noise and the
    # default model's doubtful slices, as `sct-gm segment --qc` would have
    facts = {"model": model, **segmentation_facts(gmseg, image)}
    if model is not None:  # the user's name, for which the sidecar's hash does not stand
        facts.update(model=model, model_sha256=None)
    entry = add_entry(qc_dir, image, gmseg, cord_path=cord, wmseg_path=wmseg, subject=subject, dataset=dataset,
                      **facts)
    if not (quiet or silent):
        click.echo(f"QC entry: {entry}")
        click.echo(f"Open: {(entry.parent.parent / 'index.html').resolve().as_uri()}")  # <report>/entries/<id>


def _serve(qc_dir: Path, port: int, quiet: bool) -> None:
    from ..qc.serve import start_server

    server = start_server(qc_dir, port=port)
    click.echo(f"Serving {qc_dir} with the slice editor on (this address holds a private token; Ctrl-C stops):")
    click.echo(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        if not quiet:
            click.echo("Stopped.")
    finally:
        server.server_close()
