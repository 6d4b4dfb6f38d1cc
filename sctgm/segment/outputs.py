"""The one write path: segment an image file and write its masks and sidecars, SCT or BIDS layout.

:func:`segment_and_write` is what a single-file run (:func:`sctgm.segment.files.segment_file`) and
every batch job (:func:`sctgm.batch.jobs.run_job`) call; :func:`sidecar` is the one sidecar schema.
The names come from :mod:`sctgm.naming`. Every file is written atomically, and the GM sidecar last:
a run interrupted at any point leaves nothing that looks complete.

Sidecar schema (JSON, deterministic: no date, so a resumed batch writes the same bytes)::

    {"Description": "...", "SpatialReference": "orig" (BIDS layout only),
     "Sources": [input, cord mask] (SCT: paths as given; BIDS: bids:raw: URIs),
     "GeneratedBy": [{"Name": "sct-gm", "Version": ..., "Model": {Name, Version, Sha256, Filters},
                      "Parameters": {threshold, keep_largest, fill_holes, tta, batch_size, crop_px,
                                     denoise, bias, clahe, device, engine,
                                     enhancement: {the resolved enhancement settings}}}],
     "Result": {gm_voxels, network_passes, window_px, input_orientation,
                noise_sigma, noise_sigma_rel_p99 (noise / 99th intensity percentile),
                noise_sigma_rel_p99_per_slice (by the file's S-I slice index; null: too little tissue),
                noise_auto_threshold_rel_p99, noise_above_auto_threshold, denoised_with ('off' or the denoiser that ran),
                enhancement_steps}}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..engines import ProgressCallback
from ..exceptions import InvalidOptionError
from ..io import LoadedImage, like, save_json, save_nifti
from .pipeline import Segmentation, SegmentOptions

if TYPE_CHECKING:
    from .pipeline import Segmenter

LAYOUTS = ("sct", "bids")

_DESCRIPTIONS = {
    "gm": "Spinal cord gray matter mask (uint8, 1 = gray matter) on the source image's voxel grid.",
    "wm": "Spinal cord white matter mask (uint8): the cord mask minus the gray matter.",
    "prob": "Gray matter probability (float32, 0 to 1) on the source image's voxel grid.",
}


@dataclass
class SegmentFileResult:
    """What was written for one image (paths; None for what was not asked), and the in-memory result."""

    input: Path
    gm: Path
    sidecar: Path
    wm: Path | None = None
    prob: Path | None = None
    segmentation: Segmentation | None = field(default=None, repr=False)


def sidecar(segmenter: Segmenter, options: SegmentOptions, result: Segmentation, key: str,
            sources: Sequence[str], *, layout: str = "sct") -> dict[str, Any]:
    """The JSON sidecar of output ``key`` (``gm``, ``wm`` or ``prob``); see the module docstring."""
    m, info = segmenter.model, result.info
    out: dict[str, Any] = {"Description": _DESCRIPTIONS[key]}
    if layout == "bids":
        out["SpatialReference"] = "orig"
    out["Sources"] = list(sources) if key != "prob" else list(sources[:1])
    out["GeneratedBy"] = [{
        "Name": "sct-gm",
        "Version": __version__,
        "Model": {"Name": m.name, "Version": m.version, "Sha256": m.sha256, "Filters": m.filters},
        "Parameters": {**asdict(options.effective(m.preprocessing)), "threshold": info["threshold"],
                       "device": segmenter.network.device, "engine": segmenter.network.engine,
                       "enhancement": options.enhancement(m.preprocessing).to_dict()},
    }]
    out["Result"] = {k: info[k] for k in ("gm_voxels", "network_passes", "window_px", "input_orientation")}
    out["Result"].update(noise_result(info.get("enhancement", {})))
    return out


def noise_result(report: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's noise keys (and a QC entry's ``noise`` block) from the pipeline's enhancement
    report (:func:`sctgm.segment.enhance.apply`, per-slice lists in the file's slice order)."""
    noise = report.get("noise") or {}
    settings = report.get("settings") or {}
    rel = noise.get("sigma_rel_p99")
    threshold = settings.get("auto_threshold_rel")
    return {
        "noise_sigma": noise.get("sigma"),
        "noise_sigma_rel_p99": rel,
        "noise_sigma_rel_p99_per_slice": noise.get("sigma_rel_p99_per_slice"),
        "noise_auto_threshold_rel_p99": threshold,
        "noise_above_auto_threshold": None if rel is None or threshold is None else bool(rel > threshold),
        "denoised_with": report.get("denoise", "off"),
        "enhancement_steps": list(report.get("steps", [])),
    }


def segment_and_write(segmenter: Segmenter, image: LoadedImage, outputs: dict[str, Path], *,
                      cord: LoadedImage | None = None, options: SegmentOptions = SegmentOptions(),
                      layout: str = "sct", sources: Sequence[str] | None = None,
                      qc_dir: str | os.PathLike[str] | None = None, qc_subject: str | None = None,
                      qc_dataset: str | None = None, progress: ProgressCallback | None = None) -> SegmentFileResult:
    """Segment ``image`` (and its ``cord`` mask) and write ``outputs`` (keys from :mod:`sctgm.naming`:
    ``gm`` and ``gm_sidecar``; optionally ``wm``, ``prob``; in the BIDS layout each NIfTI also has a
    ``<key>_sidecar``).

    ``sources``: what the sidecars name as sources (default: the image and cord mask paths);
    ``qc_dir``: add an entry to the QC report there. The callers load and check the inputs
    (a batch also refuses non-axial images, :func:`sctgm.segment.preprocess.check_axial`) and check
    or create the output folders.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    if "wm" in outputs and cord is None:
        raise InvalidOptionError(f"{image.path}: the WM mask is cord minus GM and needs a cord mask")
    cord_path = cord.path if cord is not None else None
    result = segmenter.segment_image(image, cord=cord, options=options, want_prob="prob" in outputs,
                                     progress=progress)
    written = SegmentFileResult(input=image.path, gm=outputs["gm"], sidecar=outputs["gm_sidecar"],
                                segmentation=result)
    save_nifti(like(image.nifti, result.gm, np.uint8), outputs["gm"])
    if "wm" in outputs and result.wm is not None:
        written.wm = save_nifti(like(image.nifti, result.wm, np.uint8), outputs["wm"])
    if "prob" in outputs and result.gm_prob is not None:
        written.prob = save_nifti(like(image.nifti, result.gm_prob, np.float32), outputs["prob"])
    if sources is None:
        sources = [str(image.path)] + ([str(cord_path)] if cord_path is not None else [])
    for key in ("wm", "prob"):
        if f"{key}_sidecar" in outputs:
            save_json(sidecar(segmenter, options, result, key, sources, layout=layout), outputs[f"{key}_sidecar"])
    if qc_dir is not None:
        from ..qc import add_entry

        add_entry(qc_dir, image.path, written.gm, cord_path=cord_path, wmseg_path=written.wm,
                  model=segmenter.model.name, model_sha256=segmenter.model.sha256, subject=qc_subject,
                  dataset=qc_dataset, noise=noise_result(result.info.get("enhancement", {})))
    save_json(sidecar(segmenter, options, result, "gm", sources, layout=layout), outputs["gm_sidecar"])  # last
    return written
