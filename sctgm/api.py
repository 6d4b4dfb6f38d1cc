"""File-level entry points: segment a NIfTI file and write the outputs beside it (or where asked).

A notebook calls :func:`segment_file` (or :class:`~sctgm.pipeline.Segmenter` for many files with one
model load); the CLI is a thin shell over the same calls.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .exceptions import OutputError
from .inference import ProgressCallback
from .io import check_writable, derive_output_path, like, load_image, save_json, save_nifti, split_nifti_name
from .pipeline import Segmentation, Segmenter, SegmentOptions

GM_SUFFIX = "_gmseg"
WM_SUFFIX = "_wmseg"


@dataclass
class SegmentFileResult:
    """What :func:`segment_file` wrote, and the in-memory result."""

    input: Path
    gm: Path
    sidecar: Path
    wm: Path | None = None
    prob: Path | None = None
    segmentation: Segmentation | None = field(default=None, repr=False)


def output_paths(input_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                 prob: bool = False, wm: bool = False) -> dict[str, Path]:
    """Where the outputs go: ``<name>_gmseg.nii.gz`` beside the input (or ``output``), its JSON
    sidecar, and optionally the WM mask and the probability map named after the GM output."""
    gm = Path(output) if output is not None else derive_output_path(input_path, GM_SUFFIX)
    stem, ext = split_nifti_name(gm)
    if not ext:
        raise OutputError(f"{gm}: the output name must end in .nii.gz or .nii")
    base = stem[: -len(GM_SUFFIX)] if stem.endswith(GM_SUFFIX) else stem
    paths = {"gm": gm, "sidecar": Path(stem + ".json")}
    if wm:
        paths["wm"] = Path(base + WM_SUFFIX + ext)
    if prob:
        paths["prob"] = Path(stem + "_prob" + ext)  # t2s_gmseg -> t2s_gmseg_prob
    return paths


def segment_file(input_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                 model: str | None = None, cord_mask: str | os.PathLike[str] | None = None,
                 options: SegmentOptions = SegmentOptions(), prob: bool = False, wm: bool = False,
                 device: str = "auto", engine: str = "auto", threads: int | None = None,
                 segmenter: Segmenter | None = None, qc_dir: str | os.PathLike[str] | None = None,
                 qc_subject: str | None = None, progress: ProgressCallback | None = None,
                 download_progress: Any = None) -> SegmentFileResult:
    """Segment the GM of one NIfTI file and write the mask (uint8 0/1 on exactly the input's grid),
    its JSON sidecar, and optionally the probability map (``prob``) and, with a cord mask, the WM
    mask (``wm``). Outputs are written atomically: nothing partial is ever left behind. With
    ``qc_dir``, an entry is added to the HTML QC report there (:func:`sctgm.qc.add_entry`).

    Everything that can be checked before the network runs (input readable and valid, cord mask on
    the same grid, output folder writable, model available) is checked first.
    """
    paths = output_paths(input_path, output, prob=prob, wm=wm)
    if wm and cord_mask is None:
        raise OutputError("the WM mask (--wm) is cord minus GM and needs a cord mask (-s)")
    for p in paths.values():
        check_writable(p)
    image = load_image(input_path)
    cord = load_image(cord_mask, what="cord mask", allow_constant=True) if cord_mask is not None else None
    seg = segmenter or Segmenter(model, device=device, engine=engine, threads=threads,
                                 download_progress=download_progress)
    result = seg.segment_image(image, cord=cord, options=options, want_prob=prob, progress=progress)
    written = SegmentFileResult(input=Path(input_path), gm=paths["gm"], sidecar=paths["sidecar"], segmentation=result)
    save_nifti(like(image.nifti, result.gm, np.uint8), paths["gm"])
    if wm and result.wm is not None:
        written.wm = save_nifti(like(image.nifti, result.wm, np.uint8), paths["wm"])
    if prob and result.gm_prob is not None:
        written.prob = save_nifti(like(image.nifti, result.gm_prob, np.float32), paths["prob"])
    save_json(sidecar(seg, image.path, cord_mask, options, result, written), paths["sidecar"])
    if qc_dir is not None:
        from .qc import add_entry

        add_entry(qc_dir, image.path, written.gm, cord_path=cord_mask, wmseg_path=written.wm,
                  model=seg.model.name, model_sha256=seg.model.sha256, subject=qc_subject)
    return written


def sidecar(seg: Segmenter, input_path: Path, cord_mask: str | os.PathLike[str] | None,
            options: SegmentOptions, result: Segmentation, written: SegmentFileResult) -> dict:
    """Provenance of an output: tool, model and its sha256, parameters, inputs, date."""
    m = seg.model
    return {
        "GeneratedBy": {"Name": "sct-gm", "Version": __version__},
        "Model": {"Name": m.name, "Version": m.version, "Sha256": m.sha256, "Filters": m.filters},
        "Parameters": {**asdict(options), "threshold": result.info["threshold"], "device": seg.network.device,
                       "engine": seg.network.engine},
        "Sources": [str(input_path)] + ([str(cord_mask)] if cord_mask is not None else []),
        "Outputs": {k: str(v) for k, v in (("gm", written.gm), ("wm", written.wm), ("prob", written.prob)) if v},
        "Result": {k: result.info[k] for k in ("gm_voxels", "network_passes", "window_px", "input_orientation")},
        "Date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "Platform": platform.platform(),
    }
