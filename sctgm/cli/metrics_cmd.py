"""``sct-gm metrics``: compare a segmentation with a reference, or measure GM/WM areas."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import click

from . import plural, resolve_verbosity, setup_logging, verbosity_option

_HELP = """Compare a segmentation with a reference (-r), or measure GM/WM areas.

\b
Compare:  sct-gm metrics -i seg.nii.gz -r manual.nii.gz [-o metrics.csv]
Measure:  sct-gm metrics -i gmseg.nii.gz [-s cord.nii.gz] [--levels labels.nii.gz] [-o areas.csv]

Everything is computed per axial slice of the images reoriented to LAS (no interpolation), with
the true in-plane voxel geometry, whatever the files' orientation. Masks are binarised at 0.5
(--soft: areas sum the probabilities). All masks of one input must share its voxel grid.

\b
Compare (per slice; TP/FP/FN/TN counted over the whole slice):
  dice = 2TP/(2TP+FP+FN)        jaccard = TP/(TP+FP+FN)
  conformity = 1-(FP+FN)/TP     sensitivity (TPR) = TP/(TP+FN)
  specificity (TNR) = TN/(TN+FP), TN = slice pixels outside both masks
  precision (PPV) = TP/(TP+FP)
  surface = boundary pixels (a 4-neighbour outside the mask); distances
  between pixel centres in mm (exact EDT with the pixel spacing):
  mean_surface_distance_mm = mean of all seg->ref and ref->seg surface distances
  hausdorff_mm = their maximum
  skeleton = skimage skeletonize (Zhang) of each mask:
  skeleton_hausdorff_mm = max, skeleton_median_mm = median, of all
  seg-skeleton->ref-skeleton and ref->seg distances
  Undefined values (0/0, an empty mask for distances) are NaN.
  Volume row: mean over slices where the reference is non-empty
  (NaN skipped), slice counts, and dice_3d over the whole volume.

\b
Measure (per slice): gm_area_mm2 = mask pixels x in-plane pixel area;
  with -s: cord_area_mm2, wm_area_mm2 = cord - GM inside the cord,
  gm_cord_ratio = GM inside the cord / cord area;
  with --levels: the slice's most frequent non-zero label, and per
  level the mean and SD (ddof=0) over its slices.
  position_mm = world position of the slice centre along the slice axis.

-r, -s and --levels are given once (used for every -i) or once per -i. The CSV is tidy: one row
per (file, slice), then summary rows (scope 'volume' or 'level'); an empty cell means 'does not
apply', NaN 'undefined'. Full definitions: docs/metrics.md.
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


_COMPARE_SHOWN = (("dice", "Dice"), ("jaccard", "Jac"), ("conformity", "CC"), ("sensitivity", "TPR"),
                  ("specificity", "TNR"), ("precision", "PPV"), ("mean_surface_distance_mm", "MSD"),
                  ("hausdorff_mm", "HSD"), ("skeleton_hausdorff_mm", "SHD"), ("skeleton_median_mm", "SMD"))
_MEASURE_LABELS = {"position_mm": "pos mm", "gm_area_mm2": "GM mm2", "cord_area_mm2": "cord mm2",
                   "wm_area_mm2": "WM mm2", "gm_cord_ratio": "GM/cord", "n_slices": "n", "level": "level"}


def _measure_label(column: str) -> str:
    return "sd" if column.endswith("_sd") else _MEASURE_LABELS.get(column, column)


def _render(table: Any, console: Any) -> None:
    from rich import box
    from rich.table import Table

    for result in table.results:
        rows = result.rows
        if table.mode == "compare":
            summary = rows[-1]
            t = Table(title=f"{result.seg_path} vs {result.ref_path}", box=box.SIMPLE_HEAD, pad_edge=False,
                      caption=f"distances in mm; 3D Dice {_fmt(summary['dice_3d'])}; mean over "
                              f"{plural(summary['n_slices'], 'slice')} with a reference "
                              f"({summary['n_slices_missed']} missed, "
                              f"{plural(summary['n_slices_false_positive'], 'false-positive slice')})")
            cols = (("slice", "slice"), ("position_mm", "pos mm"), *_COMPARE_SHOWN)
        else:
            t = Table(title=str(result.seg_path), box=box.SIMPLE_HEAD, pad_edge=False)
            cols = tuple((c, _measure_label(c)) for c in result.columns
                         if c not in ("file", "cord_file", "levels_file", "sctgm_version", "soft", "scope"))
        for _, label in cols:
            t.add_column(label, justify="right", no_wrap=True)
        for row in rows:
            summary_row = row["scope"] != "slice"
            cells = [_fmt(row.get(c), 1 if c == "position_mm" else 2) for c, _ in cols]
            if table.mode == "compare" and summary_row:
                cells[0], cells[1] = "mean", ""
            t.add_row(*cells, style="bold" if summary_row else None)
        console.print(t)


@click.command(help=_HELP)
@click.option("-i", "--input", "inputs", multiple=True, type=click.Path(dir_okay=False),
              help="Segmentation / GM mask (NIfTI). Repeat for several files.")
@click.option("-r", "--reference", "references", multiple=True, type=click.Path(dir_okay=False),
              help="Reference (manual) GM mask: compare mode.")
@click.option("-s", "--cord", "cords", multiple=True, type=click.Path(dir_okay=False),
              help="Spinal cord mask: adds cord and WM areas and the GM/cord ratio.")
@click.option("--levels", multiple=True, type=click.Path(dir_okay=False),
              help="Vertebral level labels (e.g. SCT's *_seg_labeled.nii.gz): per-level mean and SD.")
@click.option("--soft", is_flag=True,
              help="Measure: area = sum of probabilities instead of binarising at 0.5.")
@click.option("-o", "--output", "csv_path", type=click.Path(allow_dash=True),
              help="Write the table as CSV ('-' for standard output, instead of the terminal table).")
@click.option("--json", "json_path", type=click.Path(allow_dash=True),
              help="Write the table as JSON ('-' for standard output, instead of the terminal table).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing -o/--json file that is not a metrics table of sct-gm.")
@click.option("-q", "--quiet", is_flag=True, help="No terminal table.")
@verbosity_option
@click.pass_context
def metrics(ctx: click.Context, inputs: tuple[str, ...], references: tuple[str, ...], cords: tuple[str, ...],
            levels: tuple[str, ...], soft: bool, csv_path: str | None, json_path: str | None,
            overwrite: bool, quiet: bool, verbosity: int | None) -> None:
    from rich.console import Console

    from ..metrics import compute_metrics

    if not inputs:  # as segment and qc say it: one line, not the whole help
        raise click.UsageError("give the mask(s) to measure (-i GMSEG ...), or to compare (-i SEG -r REF)")
    verbose, silent = resolve_verbosity(ctx, verbosity)  # -q hides the table only; -v 0 the warnings too
    setup_logging(verbose, silent)

    if csv_path == "-" and json_path == "-":
        raise click.UsageError("-o - and --json - both ask for standard output; send one of them to a file")
    table = compute_metrics(list(inputs), references=list(references), cords=list(cords), levels=list(levels),
                            soft=soft, csv_path=None if csv_path == "-" else csv_path,
                            json_path=None if json_path == "-" else json_path, overwrite=overwrite)
    if json_path == "-":
        click.echo(json.dumps(table.to_json(), indent=2))
    elif csv_path == "-":
        text = io.StringIO()
        table.write_csv_to(text)
        click.echo(text.getvalue(), nl=False)
    elif not (quiet or silent):
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no width to respect, never truncate numbers
            console = Console(width=200)
        _render(table, console)
