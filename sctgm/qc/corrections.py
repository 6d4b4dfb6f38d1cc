"""Correcting an entry's GM mask slice by slice: what the browser's editor shows and what it saves.

The editor works on one axial slice at the image's own voxel resolution, in the report's display
orientation (radiological: :func:`sctgm.qc.render.to_display` of the canonical LAS slice, patient
Right on the viewer's left, Anterior at the top). A saved slice goes back by the exact inverse
(:func:`from_display`, then :meth:`~sctgm.geometry.Reorientation.undo`: flips and a transpose, no
interpolation) into the image's own array, and :func:`sctgm.labels.write_correction` writes the
corrected mask where training reads it. Slices are named by their voxel index along the file's S-I
axis, the number printed on the report's tiles.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from .. import geometry, labels
from ..exceptions import GridMismatchError, InputImageError, QcError
from ..filesystem import folder_lock
from ..geometry import Reorientation, reorientation_for
from ..io import LoadedImage, load_image, load_mask_image
from ..naming import GM_SUFFIX, PROB_SUFFIX, split_nifti_name
from . import render

#: Mask voxels at or above this value are GM (as in the report: sctgm.qc.entry.MASK_THRESHOLD).
MASK_THRESHOLD = 0.5
#: Seconds a save waits for another process saving into the same labels folder.
SAVE_LOCK_TIMEOUT_S = 60.0


@contextlib.contextmanager
def save_lock(target: labels.CorrectionTarget) -> Iterator[None]:
    """Hold the corrected mask's folder against every other save into it, across processes and users
    (two review servers on different QC folders may show the same image). On POSIX an advisory
    ``flock`` on the folder itself: it creates no file (a lock file would be one more file in a
    labels folder, owned by the first user who saved, which the next user could not open); elsewhere
    a hidden lock file in the folder. Raises QcError after :data:`SAVE_LOCK_TIMEOUT_S`."""
    folder = target.mask.parent
    busy = QcError(f"{target.mask}: another save into {folder} held it for {SAVE_LOCK_TIMEOUT_S:.0f} s; not saved, "
                   "try again")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QcError(f"{folder}: cannot create the labels folder ({exc.strerror or exc})") from None
    held = contextlib.ExitStack()
    try:  # only taking the lock is translated here: what the save itself raises passes through
        flocked = held.enter_context(folder_lock(folder, SAVE_LOCK_TIMEOUT_S))
    except TimeoutError:
        raise busy from None
    except OSError as exc:
        raise QcError(f"{folder}: cannot open the labels folder to lock it ({exc.strerror or exc})") from None
    with held:
        if flocked:
            yield
            return
    try:  # Windows: no flock
        with FileLock(str(folder / ".sctgm-save.lock"), timeout=SAVE_LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise busy from None


def from_display(d: np.ndarray) -> np.ndarray:
    """The exact inverse of :func:`sctgm.qc.render.to_display`: display rows/cols -> canonical (x, y)."""
    return np.ascontiguousarray(d[::-1, :].T)


def prob_path_for(gmseg: str | Path) -> Path | None:
    """The soft probability map saved beside an sct-gm GM mask (``segment --prob``), if there is one:
    ``X_gmseg_prob.nii.gz`` (SCT layout) or ``X_label-GM_probseg.nii.gz`` (BIDS layout)."""
    stem, ext = split_nifti_name(Path(gmseg))
    candidates = []
    if stem.endswith(GM_SUFFIX):
        candidates.append(Path(stem + PROB_SUFFIX + ext))
    if stem.endswith("_label-GM_seg"):
        candidates.append(Path(stem[: -len("_seg")] + "_probseg" + ext))
    return next((p for p in candidates if p.is_file()), None)


@dataclass
class EntryVolume:
    """An entry's image and masks in canonical (LAS) order, ready to serve slices and save edits.
    ``current``: the mask the editor starts from (the saved correction, else the automatic mask)."""

    entry_id: str
    image: LoadedImage
    automatic_path: Path
    target: labels.CorrectionTarget
    reo: Reorientation
    zooms_mm: tuple[float, float, float]
    data: np.ndarray
    automatic: np.ndarray  # uint8 0/1
    current: np.ndarray  # uint8 0/1
    prob: np.ndarray | None
    plan: render.CropPlan
    saved: list[int] = field(default_factory=list)  # file slice indices a reviewer saved
    foreign: bool = False  # the target exists and sct-gm's editor did not write it: never overwritten

    @property
    def read_only_reason(self) -> str | None:
        """Why the editor shows this entry read-only (a manual GM mask made elsewhere), or None."""
        if not self.foreign:
            return None
        if not self.target.mask.exists():
            return (f"{self.target.sidecar.name}, where the correction's record would go, was not written by "
                    "sct-gm's editor; it is shown read-only and never overwritten")
        return (f"{self.target.mask.name} is a manual GM mask not written by sct-gm's editor (training reads every "
                "slice of it); it is shown read-only and never overwritten")

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[2])

    def canonical_index(self, file_slice: int) -> int:
        """The canonical slice of the file's S-I voxel index ``file_slice`` (QcError when out of range)."""
        if not 0 <= file_slice < self.n_slices:
            raise QcError(f"slice {file_slice}: out of range; {self.image.path.name} has slices 0-{self.n_slices - 1}")
        return int(self.n_slices - 1 - file_slice if geometry.file_slice_index(self.reo, 0) != 0 else file_slice)


def _mask(path: Path, what: str, image: LoadedImage, reo: Reorientation) -> np.ndarray:
    """A mask or map of ``image`` in its canonical layout; the file may store the grid in another
    orientation (a correction is always written in the image's own)."""
    return geometry.on_canonical_grid(image, reo, load_mask_image(path, what=what))


def open_entry(entry: dict[str, Any]) -> EntryVolume:
    """Load an entry's image, its automatic mask, the saved correction (if any) and the soft map."""
    try:
        image = load_image(entry["image"], what="image")
        reo = reorientation_for(image.affine, image.data.shape)
        auto = _mask(Path(entry["gmseg"]), "GM segmentation", image, reo)
    except (KeyError, TypeError):
        raise QcError(f"entry {entry.get('id')}: no image or GM mask recorded") from None
    target = labels.correction_path(image.path)
    automatic = (auto >= MASK_THRESHOLD).astype(np.uint8)
    current, saved, foreign = automatic.copy(), [], False
    if target.mask.exists():
        try:
            done = _mask(target.mask, "corrected GM mask", image, reo)
        except GridMismatchError as exc:
            raise QcError(f"{target.mask}: the saved correction is not on the image's grid ({exc}); move it away") from None
        current = (done >= MASK_THRESHOLD).astype(np.uint8)
    # as labels.write_correction judges it: a mask or a sidecar there that the editor did not write
    foreign = (target.mask.exists() or target.sidecar.exists()) and not labels.written_by_editor(target.mask)
    if target.mask.exists():
        saved = [] if foreign else list(labels.labelled_slices_of(target.mask) or ())
    prob = None
    prob_path = prob_path_for(entry["gmseg"])
    if prob_path is not None:
        try:
            prob = np.array(_mask(prob_path, "GM probability map", image, reo))
        except InputImageError:
            prob = None  # a hint only: an unreadable soft map leaves the editor without it
    cord = None
    if entry.get("cord"):
        try:
            cord = _mask(Path(entry["cord"]), "cord segmentation", image, reo) >= MASK_THRESHOLD
        except InputImageError:
            cord = None
    zooms = geometry.canonical_zooms_mm(image.zooms_mm, reo)
    ref = cord if cord is not None and cord.any() else automatic.astype(bool)
    plan = render.plan_crop(ref, zooms, is_cord=ref is cord)
    return EntryVolume(str(entry.get("id")), image, Path(entry["gmseg"]), target, reo, zooms, reo.apply(image.data),
                       automatic, current, prob, plan, saved, foreign)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def slice_view(vol: EntryVolume, file_slice: int) -> dict[str, Any]:
    """One slice for the editor, in display orientation (row-major, rows x cols): the image (float32
    little-endian, base64), the automatic and current masks (uint8 0/1), the soft map (uint8
    0-255) when saved, the crop window around the cord, voxel sizes, and what is saved already."""
    k = vol.canonical_index(file_slice)
    img = render.to_display(vol.data[:, :, k]).astype("<f4")
    rows, cols = img.shape
    x0, y0 = vol.plan.box(k)
    nx, ny = vol.plan.size_vox
    crop = render.crop_slice(vol.data[:, :, k], x0, y0, (nx, ny))
    values = crop[crop != 0] if (crop != 0).any() else img.ravel()
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    out = {
        "entry": vol.entry_id, "slice": int(file_slice), "n_slices": vol.n_slices, "rows": rows, "cols": cols,
        "col_mm": vol.zooms_mm[0], "row_mm": vol.zooms_mm[1],
        "view": {"col0": x0, "row0": rows - (y0 + ny), "cols": nx, "rows": ny},
        "window": {"lo": lo, "hi": hi if hi > lo else lo + 1.0},
        "image": _b64(img),
        "automatic": _b64(render.to_display(vol.automatic[:, :, k])),
        "mask": _b64(render.to_display(vol.current[:, :, k])),
        "prob": None, "saved": file_slice in vol.saved, "saved_slices": sorted(vol.saved),
        "target": str(vol.target.mask), "editable": not vol.foreign,
        "read_only_reason": vol.read_only_reason,
    }
    if vol.prob is not None:
        out["prob"] = _b64(np.clip(np.round(render.to_display(vol.prob[:, :, k]) * 255), 0, 255).astype(np.uint8))
    return out


def slice_view_shape(vol: EntryVolume) -> tuple[int, int]:
    """(rows, cols) of a slice in display orientation."""
    return int(vol.data.shape[1]), int(vol.data.shape[0])


def parse_mask(body: bytes, rows: int, cols: int) -> np.ndarray:
    """A slice mask from the browser: exactly ``rows * cols`` bytes, each 0 or 1 (QcError otherwise)."""
    if len(body) != rows * cols:
        raise QcError(f"mask of {len(body)} bytes; expected {rows} x {cols} = {rows * cols} (one byte per voxel)")
    d = np.frombuffer(body, dtype=np.uint8).reshape(rows, cols)
    if d.max(initial=0) > 1:
        raise QcError("mask values other than 0 and 1")
    return d


def save_slice(vol: EntryVolume, file_slice: int, display_mask: np.ndarray) -> dict[str, Any]:
    """Put ``display_mask`` (display orientation) on ``file_slice`` and write the corrected mask and
    its sidecar (:func:`sctgm.labels.write_correction`). The caller serialises saves of one entry."""
    if vol.foreign:
        raise QcError(f"{vol.target.mask}: a manual GM mask not written by sct-gm's editor; not saved (training "
                      "reads every slice of it, and sct-gm never overwrites a file it did not write): edit it "
                      "with the tool that made it")
    k = vol.canonical_index(file_slice)
    c = from_display(display_mask)
    if c.shape != vol.current.shape[:2]:
        raise QcError(f"mask of {display_mask.shape}; expected {render.to_display(vol.current[:, :, k]).shape}")
    with save_lock(vol.target):
        # the file as it is now, not as this editor opened it: another review server may have saved
        # other slices of it since (their work is kept, and its sidecar lists them)
        current = _saved_on_disk(vol) if vol.target.mask.exists() else vol.current.copy()
        current[:, :, k] = c
        changed = int((c != vol.automatic[:, :, k]).sum())
        side = labels.write_correction(vol.image, vol.automatic_path, vol.reo.undo(current), {file_slice: changed},
                                       slice_axis=geometry.slice_axis(vol.reo), target=vol.target)
    vol.current = current
    vol.saved = list(side[labels.SLICES_KEY])
    return {"slice": int(file_slice), "changed_from_automatic": changed, "saved_slices": vol.saved,
            "target": str(vol.target.mask)}


def _saved_on_disk(vol: EntryVolume) -> np.ndarray:
    """The corrected mask on disk now (canonical, uint8 0/1); write_correction refuses it afterwards if
    it is no longer the editor's."""
    try:
        done = _mask(vol.target.mask, "corrected GM mask", vol.image, vol.reo)
    except (GridMismatchError, InputImageError) as exc:
        raise QcError(f"{vol.target.mask}: changed on disk and unreadable ({exc}); not saved") from None
    return (done >= MASK_THRESHOLD).astype(np.uint8)


def index_info(entry: dict[str, Any]) -> dict[str, Any]:
    """What the report shows about an entry's corrections: ``corrected_slices`` (file S-I indices the
    reviewer saved; empty when none) and ``correction`` (the corrected mask's path, or None)."""
    image = entry.get("image")
    if not image:
        return {"corrected_slices": [], "correction": None}
    target = labels.correction_path(image)
    if not target.mask.is_file():
        return {"corrected_slices": [], "correction": None}
    return {"corrected_slices": list(labels.labelled_slices_of(target.mask) or ()), "correction": str(target.mask)}
