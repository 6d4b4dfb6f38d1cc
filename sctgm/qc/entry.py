"""One QC entry: load and check the files, measure per-slice areas, flag, render, record.

Everything here happens in memory; nothing touches the QC folder until :func:`add_entry` hands
the finished entry to :mod:`sctgm.qc.report`, so bad inputs leave the folder unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from .. import geometry
from ..geometry import Reorientation, on_canonical_grid, reorientation_for
from ..io import LoadedImage, load_image, load_mask_image
from ..naming import bids_entities, split_nifti_name
from ..segment.noise import estimate_keys, noise_keys
from . import flags as _flags
from . import render, report

if TYPE_CHECKING:
    from ..segment.outputs import StagedOutputs

#: Mask voxels at or above this value count as inside (binary or probabilistic masks).
MASK_THRESHOLD = 0.5
SCHEMA_VERSION = 1


def add_entry(
    qc_dir: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    gmseg_path: str | os.PathLike[str],
    *,
    cord_path: str | os.PathLike[str] | None = None,
    wmseg_path: str | os.PathLike[str] | None = None,
    model: str | None = None,
    model_sha256: str | None = None,
    subject: str | None = None,
    extra: dict[str, Any] | None = None,
    noise: dict[str, Any] | None = None,
    dataset: str | None = None,
    read_from: Mapping[str, Path] | None = None,
    doubtful: list[dict[str, Any]] | None = None,
    whole_volume: str | None = None,
) -> Path:
    """Add one entry (image, GM mask, optional cord and WM masks) to the HTML QC report in ``qc_dir``.

    The folder is created if needed; ``qc_dir/index.html`` then lists every entry ever added there.
    Raises :class:`~sctgm.exceptions.InputImageError` (missing/unreadable/non-3D file),
    :class:`~sctgm.exceptions.GridMismatchError` (a mask not on the image's grid) or
    :class:`~sctgm.exceptions.OutputError` (folder not writable) before writing anything. Safe to
    call from several processes at once on the same folder. An entry already there for the same image
    and GM mask is replaced (so a rerun never lists an image twice). Returns the new entry's folder.
    ``dataset``: shown beside the subject (SCT's ``-qc-dataset``). ``noise``: the segmentation's noise keys (:func:`sctgm.segment.noise.noise_keys`); without
    it the image's noise is estimated here (:func:`sctgm.segment.noise.estimate_keys`). ``read_from``:
    masks not yet at their paths (path as given -> the file that holds it now).
    A ``qc_dir`` that holds another tool's QC report gets the entry in a sub-folder
    (:func:`sctgm.qc.report.check_qc_dir`).
    ``doubtful``: the sidecar's ``doubtful_slices`` (a combination of networks): those slices are
    flagged, so a reviewer starts with them. ``whole_volume``: the sidecar's ``whole_volume_network``
    (the network whose mask stood for the whole volume because the two disagreed on most slices),
    shown in the entry's details.
    """
    report.check_qc_dir(qc_dir)
    entry, files = build_entry(image_path, gmseg_path, cord_path=cord_path, wmseg_path=wmseg_path, model=model,
                               model_sha256=model_sha256, subject=subject, extra=extra, noise=noise,
                               dataset=dataset, read_from=read_from, doubtful=doubtful,
                               whole_volume=whole_volume)
    return report.write_entry(qc_dir, entry, files)


@dataclass(frozen=True)
class QcEntryWriter:
    """The QC entry of a segmentation, written with its outputs (an
    :class:`sctgm.segment.outputs.EntryWriter`): the folder is checked before any work; the entry is
    built from the staged masks and published before they are renamed into place, so a failure
    leaves neither the outputs nor the entry. ``subject``: the name shown (default: guessed);
    ``dataset``: shown beside it."""

    qc_dir: Path
    subject: str | None = None
    dataset: str | None = None

    def check(self) -> None:
        report.check_qc_dir(self.qc_dir)

    def write(self, staged: StagedOutputs) -> None:
        out = staged.outputs
        add_entry(self.qc_dir, staged.image.path, out["gm"], cord_path=staged.cord_path,
                  wmseg_path=out["wm"] if "wm" in staged.staged else None, model=staged.model.name,
                  model_sha256=staged.model.sha256, subject=self.subject, dataset=self.dataset,
                  noise=noise_keys(staged.segmentation.info.get("enhancement", {})),
                  doubtful=staged.segmentation.info.get("doubtful_slices"),
                  whole_volume=staged.segmentation.info.get("whole_volume_network"),
                  read_from={str(out[k]): tmp for k, tmp in staged.staged.items()})


def _own_slices(noise: dict[str, Any], nz: int) -> dict[str, Any]:
    """``noise`` without its per-slice figures unless there is one per slice of the image."""
    per_slice = noise.get("noise_sigma_rel_p99_per_slice")
    if per_slice is None or (isinstance(per_slice, list) and len(per_slice) == nz):
        return noise
    return {**noise, "noise_sigma_rel_p99_per_slice": None}


def guess_subject(path: str | os.PathLike[str]) -> str:
    """The BIDS subject and session of ``path`` (``sub-01_ses-02``, ``sub-01``: :func:`sctgm.naming.bids_entities`,
    as the batch's summary reads them), else the file name without extension."""
    subject, session = bids_entities(path)
    if subject is None:
        return split_nifti_name(Path(path).name)[0]
    return f"{subject}_{session}" if session else subject


def _load_mask(path: str | os.PathLike[str], what: str, image: LoadedImage, reo: Reorientation) -> np.ndarray:
    """A mask of ``image`` in its canonical layout; the file may store the grid in another orientation."""
    return on_canonical_grid(image, reo, load_mask_image(path, what=what))


def build_entry(
    image_path: str | os.PathLike[str],
    gmseg_path: str | os.PathLike[str],
    *,
    cord_path: str | os.PathLike[str] | None = None,
    wmseg_path: str | os.PathLike[str] | None = None,
    model: str | None = None,
    model_sha256: str | None = None,
    subject: str | None = None,
    extra: dict[str, Any] | None = None,
    noise: dict[str, Any] | None = None,
    dataset: str | None = None,
    read_from: Mapping[str, Path] | None = None,
    doubtful: list[dict[str, Any]] | None = None,
    whole_volume: str | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The entry record (JSON-able) and its files (name -> PNG bytes), computed in memory."""
    def source(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
        return (read_from or {}).get(str(path), path)

    image = load_image(image_path, what="image")
    reo = reorientation_for(image.affine, image.data.shape)
    gm_img = load_mask_image(source(gmseg_path), what="GM segmentation")
    gm = on_canonical_grid(image, reo, gm_img) >= MASK_THRESHOLD
    cord = (_load_mask(source(cord_path), "cord segmentation", image, reo) >= MASK_THRESHOLD
            if cord_path is not None else None)
    wm_data = _load_mask(source(wmseg_path), "WM segmentation", image, reo) if wmseg_path is not None else None

    zooms = geometry.canonical_zooms_mm(image.zooms_mm, reo)
    data = reo.apply(image.data)
    if wm_data is not None:
        wm: np.ndarray | None = wm_data >= MASK_THRESHOLD
    elif cord is not None:
        wm = cord & ~gm
    else:
        wm = None

    nz = data.shape[2]
    px_mm2 = geometry.pixel_area_mm2(reo.canonical_affine(image.affine))
    reference = cord if cord is not None and cord.any() else gm
    plan = render.plan_crop(reference, zooms, is_cord=reference is cord)
    gm_area = [float(gm[:, :, k].sum() * px_mm2) for k in range(nz)]
    cord_area = [float(cord[:, :, k].sum() * px_mm2) for k in range(nz)] if cord is not None else None
    wm_area = [float(wm[:, :, k].sum() * px_mm2) for k in range(nz)] if wm is not None else None
    edge = [render.touches_edge(gm[:, :, k], *plan.box(k), plan.size_vox) for k in range(nz)]
    per_slice = _flags.slice_flags(gm_area, cord_area, edge)
    if doubtful:
        # the sidecar numbers slices along the S-I axis of the segmented file, which the GM mask keeps;
        # the image shown may store that axis the other way: each doubt moves to the image's number
        gm_reo = reorientation_for(gm_img.affine, gm_img.data.shape)
        to_canonical = {geometry.file_slice_index(gm_reo, k): k for k in range(nz)}
        doubtful = [{**d, "slice": geometry.file_slice_index(reo, to_canonical[d["slice"]])}
                    for d in doubtful if d.get("slice") in to_canonical]  # the image's own slices only
        own = _flags.doubtful_flags(doubtful, {geometry.file_slice_index(reo, k): k for k in range(nz)}, nz)
        per_slice = [own[k] + per_slice[k] for k in range(nz)]

    any_mask = gm | cord if cord is not None else gm
    present = [k for k in range(nz) if any_mask[:, :, k].any() or any(f.startswith(_flags.DOUBTFUL_PREFIX)
                                                                    for f in per_slice[k])]
    span = list(range(present[0], present[-1] + 1)) if present else list(range(nz))
    flagged = {k for k in span if per_slice[k]}
    # The input file's voxel index along its S-I axis, printed on tiles (what viewers show).
    file_index = {k: geometry.file_slice_index(reo, k) for k in range(nz)}
    shown = render.choose_slices(span, flagged)
    mosaic = render.render_mosaic(data, gm, plan, shown, zooms, wm=wm, flagged=flagged, slice_labels=file_index)

    gm_slices = [gm_area[k] for k in range(nz) if gm_area[k] > 0]
    flag_counts: dict[str, int] = {}
    for k in span:
        for f in per_slice[k]:
            flag_counts[f] = flag_counts.get(f, 0) + 1
    now = time.time()
    image_abs = Path(image_path).resolve()
    entry = {
        "schema": SCHEMA_VERSION,
        "id": report.new_entry_id(split_nifti_name(image_abs.name)[0]),
        "timestamp": now,
        "date": datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
        "subject": subject if subject is not None else guess_subject(Path(image_path).absolute()),
        "dataset": dataset,
        "image_name": image_abs.name,
        "image": str(image_abs),
        "gmseg": str(Path(gmseg_path).resolve()),
        "cord": str(Path(cord_path).resolve()) if cord_path is not None else None,
        "wmseg": str(Path(wmseg_path).resolve()) if wmseg_path is not None else None,
        "model": model,
        "model_sha256": model_sha256,
        "sctgm_version": __version__,
        "extra": _jsonable(extra or {}),
        "voxel_mm": [round(z, 4) for z in zooms],
        "gm_volume_mm3": round(float(gm.sum()) * geometry.voxel_volume_mm3(image.affine), 2),
        "gm_mean_area_mm2": round(float(np.mean(gm_slices)), 2) if gm_slices else 0.0,
        "wm_mean_area_mm2": (round(float(np.mean([wm_area[k] for k in range(nz) if gm_area[k] > 0 or wm_area[k] > 0]
                                                 or [0.0])), 2) if wm_area is not None else None),
        "noise": _own_slices(noise, nz) if noise is not None else estimate_keys(data, reo),
        "n_flagged": len(flagged),
        "doubtful_slices": _jsonable(doubtful) if doubtful else [],
        "whole_volume_network": whole_volume,
        "flag_counts": flag_counts,
        "flag_text": {k: _flags.FLAG_TEXT.get(k, k) for k in flag_counts},
        "slices": {
            "index": [file_index[k] for k in span],
            "gm_mm2": [round(gm_area[k], 2) for k in span],
            "wm_mm2": [round(wm_area[k], 2) for k in span] if wm_area is not None else None,
            "cord_mm2": [round(cord_area[k], 2) for k in span] if cord_area is not None else None,
            "flags": [list(per_slice[k]) for k in span],
        },
        "mosaic": {
            "background": "image.png",
            "overlay": "overlay.png",
            "width": mosaic.width,
            "height": mosaic.height,
            "tiles": [{**t, "slice": file_index[t["slice"]]} for t in mosaic.tiles],
            "shown": len(shown),
            "total": len(span),
        },
    }
    return entry, {"image.png": mosaic.background_png, "overlay.png": mosaic.overlay_png}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
