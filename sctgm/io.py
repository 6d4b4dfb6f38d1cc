"""Reading NIfTI files: validation with human messages, masks told from images, a NIfTI image like
another (:func:`like`). Writing them (atomic files, sets renamed together, writable folders) is
:mod:`sctgm.writing`.

Output names live in :mod:`sctgm.naming`, voxel geometry in :mod:`sctgm.geometry`.

Everything here speaks in files; the arrays it returns are on the file's own voxel grid.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from . import nifti_header
from .exceptions import InputImageError, OrientationError
from .naming import NIFTI_SUFFIXES, split_nifti_name  # noqa: F401 - re-exported for readers of io

log = logging.getLogger(__name__)

#: No MRI image spans more than this along any axis (a whole-body composed scan is under 2 m); a
#: larger extent means a wrong voxel size, which would also make the 0.25 mm grid unbounded.
MAX_FIELD_OF_VIEW_MM = 2000.0


@dataclass(frozen=True)
class LoadedImage:
    """A validated 3D image: float32 data (scl_slope/scl_inter applied, NaN/inf replaced by 0; the
    magnitude of complex data; float64 data beyond float32's range scaled by a power of two), the
    nibabel image it came from (its header and affine define the output grid), and its path."""

    path: Path
    data: np.ndarray
    nifti: nib.Nifti1Image

    @property
    def affine(self) -> np.ndarray:
        return self.nifti.affine

    @property
    def zooms_mm(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in self.nifti.header.get_zooms()[:3])  # type: ignore[return-value]


def _read_nifti(path: Path, notes: list[str] | None = None) -> nib.Nifti1Image:
    if not path.exists():
        raise InputImageError(f"{path}: no such file")
    if path.is_dir():
        raise InputImageError(f"{path}: is a folder, expected a NIfTI file (.nii or .nii.gz)")
    if not path.is_file():  # a FIFO waits for a writer forever, a device may never end: neither is opened
        raise InputImageError(f"{path}: is not a regular file (a FIFO or a device), expected a NIfTI file")
    nifti_header.check_file(path, notes)
    try:
        with nifti_header.nibabel_messages() as fixes:
            img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError:
        raise InputImageError(f"{path}: not a NIfTI image (expected a .nii or .nii.gz file)") from None
    except _READ_ERRORS as exc:
        raise InputImageError(f"{path}: cannot be read, the file looks truncated or corrupt "
                              f"({nifti_header.read_error_detail(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputImageError(f"{path}: is a {type(img).__name__}, expected a NIfTI-1 or NIfTI-2 image")
    if notes is not None:
        notes.extend(f"{path}: header repaired by nibabel: {m}" for m in nifti_header.repairs_worth_saying(fixes))
    return img


def load_image(path: str | os.PathLike[str], *, what: str = "image", allow_constant: bool = False) -> LoadedImage:
    """Load and validate a 3D NIfTI image (a 4D file holding one volume is accepted as 3D).

    Raises :class:`InputImageError` with a one-line message for a missing, unreadable, corrupt or
    truncated file, a damaged header (see :func:`sctgm.nifti_header.check_file`), a non-NIfTI file, an
    image that is not 3D, an RGB image, a degenerate affine (zero, negative or non-finite voxel size),
    an image without a finite voxel, and (unless ``allow_constant``) an image whose voxels are all
    equal. What can be repaired is repaired with one warning each, logged only once the image is
    known to be valid (docs/inputs.md): NaN/inf voxels set to 0, complex values replaced by their
    magnitude, float64 values beyond float32's range scaled, one broken qform/sform replaced by the other.
    """
    p = Path(path)
    notes: list[str] = []
    return _validated(_read_nifti(p, notes), p, what, allow_constant, notes)


#: A mask resampled with a spline (SCT's sct_apply_transfo default) overshoots [0, 1] by up to ~0.25;
#: values within this margin of it are a mask's.
MASK_VALUE_MARGIN = 0.5
#: A label image (a vertebral-labelled cord mask: 0-30, SCT's PMJ label 50; a 0/255 mask) holds a few
#: whole numbers; an MR image holds hundreds or thousands (t2s.nii.gz: 2000).
MASK_MAX_LABELS = 64


def load_mask_image(path: str | os.PathLike[str], *, what: str = "mask") -> LoadedImage:
    """:func:`load_image` for a mask or a probability map (an empty one is fine), refusing an image
    given in its place (:func:`check_mask_values`)."""
    mask = load_image(path, what=what, allow_constant=True)
    check_mask_values(mask.data, mask.path, what)
    return mask


def check_mask_values(data: np.ndarray, path: Path, what: str) -> None:
    """Raise :class:`InputImageError` unless ``data`` can be a mask, thresholded at 0.5: values near
    [0, 1] (a binary mask, a probability map, a spline-resampled mask, :data:`MASK_VALUE_MARGIN`), or
    at most :data:`MASK_MAX_LABELS` non-negative whole numbers (labels; 0/255). An MR image given in
    its place would be "inside" nearly everywhere, without a word."""
    lo, hi = float(data.min()), float(data.max())
    if lo >= -MASK_VALUE_MARGIN and hi <= 1 + MASK_VALUE_MARGIN:
        return
    if lo >= 0:
        inside = data[data != 0]  # a mask's few voxels (an image's many: a sample says "too many" first)
        if (np.array_equal(inside, np.round(inside)) and len(np.unique(inside[:1_000_000])) <= MASK_MAX_LABELS
                and len(np.unique(inside)) <= MASK_MAX_LABELS):
            return
    if lo < -MASK_VALUE_MARGIN:
        raise InputImageError(f"{path}: is not a {what}: it holds negative values (down to {lo:.4g}; a mask holds 0 "
                              f"and 1, probabilities, or a few whole-number labels); was an image given in its place?")
    raise InputImageError(f"{path}: is not a {what}: its voxels range from {lo:.4g} to {hi:.4g} with more than "
                          f"{MASK_MAX_LABELS} values (a mask holds 0 and 1, probabilities, or a few whole-number "
                          f"labels); was an image given in its place?")


def read_grid(path: str | os.PathLike[str]) -> tuple[tuple[int, int, int], np.ndarray]:
    """The voxel grid (3D shape, affine) of the image :func:`load_image` gives for ``path``, the same
    header checks and the same repair of one broken qform/sform included, from the header alone: no
    voxel is read and nothing is logged or printed (for checks such as a batch's resume). Raises
    :class:`InputImageError` as :func:`load_image` does for a header it refuses."""
    p = Path(path)
    img = nifti_header.usable_geometry(_read_nifti(p, []), p, [])
    return tuple(int(n) for n in img.shape[:3]), img.affine  # type: ignore[return-value]


def read_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """The NIfTI image of ``path`` as nibabel reads it (voxels not read yet), after the header checks of
    :func:`load_image` (a header announcing more voxels than the file holds, a .gz inflating beyond
    what its header announces: refused before any voxel is allocated). For readers that need the
    stored values as they are (a training mask's NaN); raises :class:`InputImageError`."""
    return _read_nifti(Path(path), [])


def image_from_nifti(img: nib.Nifti1Image, path: str | os.PathLike[str] = "<in-memory>", *, what: str = "image",
                     allow_constant: bool = False) -> LoadedImage:
    """Validate an in-memory NIfTI image as :func:`load_image` does (``path`` names it in messages)."""
    return _validated(img, Path(path), what, allow_constant, [])


def _validated(img: nib.Nifti1Image, p: Path, what: str, allow_constant: bool, notes: list[str]) -> LoadedImage:
    """The checks and repairs of :func:`load_image` on a read image; ``notes`` (repairs so far) are
    logged as warnings only once the image is known to be valid."""
    shape = img.shape
    img = nifti_header.usable_geometry(img, p, notes)  # first: slicing a 4D file computes with the affine
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        try:
            with np.errstate(all="ignore"):
                img = img.slicer[(slice(None),) * 3 + (0,) * (len(shape) - 3)]
        except _READ_ERRORS as exc:
            raise InputImageError(f"{p}: cannot be read, the file looks truncated or corrupt "
                                  f"({nifti_header.read_error_detail(exc)})") from None
    elif len(shape) != 3:
        detail = f"{shape[3]} volumes" if len(shape) == 4 else f"shape {shape}"
        raise InputImageError(f"{p}: is a {len(shape)}D image ({detail}); expected a 3D {what}")
    if min(img.shape) < 1:
        raise InputImageError(f"{p}: has an empty dimension (shape {img.shape})")
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "V":
        kind = "an RGB colour" if dtype.names and set(dtype.names) <= set("RGBA") else "a multi-valued"
        raise InputImageError(f"{p}: is {kind} image (datatype {_datatype_name(img)}); expected a grey-level {what}: "
                              f"convert it to one channel first")
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    _check_spatial_unit(img, p, zooms)
    affine = img.affine
    with np.errstate(all="ignore"):  # a non-finite affine is refused below, without numpy's warnings
        det = float(np.linalg.det(affine[:3, :3])) if np.all(np.isfinite(affine)) else float("nan")
        fov_mm = np.asarray(img.shape[:3]) * np.maximum(zooms, np.linalg.norm(affine[:3, :3], axis=0))
    if not np.all(np.isfinite(affine)) or not np.all(zooms > 0) or not abs(det) >= 1e-12:
        raise InputImageError(
            f"{p}: invalid voxel geometry (voxel size {tuple(round(float(z), 4) for z in zooms)} mm, affine "
            f"determinant {det:.3g}); the header's pixdim/qform/sform must describe real voxels"
        )
    if np.isnan(nib.orientations.io_orientation(affine)).any():
        raise OrientationError(f"{p}: the axes of its affine (qform/sform) cannot be matched to R-L, A-P and S-I "
                               f"(two voxel axes point the same way); the header's transform is wrong")
    if np.any(fov_mm > MAX_FIELD_OF_VIEW_MM):
        raise InputImageError(
            f"{p}: the image would span {' x '.join(f'{f:.4g}' for f in fov_mm)} mm, more than any MRI field of view "
            f"({MAX_FIELD_OF_VIEW_MM:g} mm): its voxel size (pixdim {tuple(round(float(z), 4) for z in zooms)} mm, "
            f"or the qform/sform) is wrong"
        )
    data = _voxel_values(img, p, notes)
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad and n_bad == data.size:
        raise InputImageError(f"{p}: has no finite voxel (all {n_bad} voxels are NaN or infinite); nothing to use")
    if n_bad:
        notes.append(f"{p}: {n_bad} voxel{'s are' if n_bad > 1 else ' is'} NaN or infinite; {'they were' if n_bad > 1 else 'it was'} set to 0")
        data = np.where(bad, np.float32(0), data)
    if not allow_constant and data.size and float(data.max()) == float(data.min()):
        raise InputImageError(f"{p}: every voxel has the same value ({float(data.flat[0]):g}); nothing to segment")
    for note in notes:  # only now: a refused image gets its one error line and nothing else
        log.warning("%s", note)
    return LoadedImage(path=p, data=data, nifti=img)


#: Spatial units of xyzt_units (its low 3 bits) other than mm (2) and unknown (0, read as mm): mm per unit.
_OTHER_UNITS = {1: ("metre", 1000.0), 3: ("micrometre", 1e-3)}


def _check_spatial_unit(img: nib.Nifti1Image, p: Path, zooms: np.ndarray) -> None:
    """Refuse a header whose spatial unit is metres or micrometres: sct-gm reads mm, and such a unit
    beside sizes like 0.5 is nearly always a wrong label, while converting would rescale the whole
    geometry; which is meant is unknown (docs/inputs.md)."""
    code = int(img.header["xyzt_units"]) & 0x07
    if code in _OTHER_UNITS:
        unit, mm = _OTHER_UNITS[code]
        sizes = ", ".join(f"{float(z):.4g}" for z in zooms)
        raise InputImageError(
            f"{p}: its header gives the voxel size in {unit}s (xyzt_units {code}): pixdim ({sizes}) would be "
            f"({', '.join(f'{float(z) * mm:.4g}' for z in zooms)}) mm; sct-gm reads millimetres: if the sizes are "
            f"in mm, set the unit to mm (nibabel: img.header.set_xyzt_units('mm')), otherwise convert the image")


#: What reading a damaged file's voxels can raise (nibabel, numpy, gzip); turned into one line.
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, TypeError, struct.error, MemoryError,
                nib.spatialimages.HeaderDataError, nib.spatialimages.ImageDataError)

#: float32's largest finite value: the network and every array sct-gm keeps are float32.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _voxel_values(img: nib.Nifti1Image, p: Path, notes: list[str]) -> np.ndarray:
    """The scaled voxel values as float32, NaN/inf kept. Complex values become their magnitude, and
    values beyond float32's range are scaled by a power of two (exact, and harmless: each slice stack
    is standardised before the network), each with a note."""
    try:  # np.errstate is thread-safe (unlike warning filters): numpy's float warnings stay silent
        if img.get_data_dtype().kind == "c":
            notes.append(f"{p}: holds complex values; their magnitude is used (the phase is ignored)")
            with np.errstate(all="ignore"):
                values = np.abs(np.asanyarray(img.dataobj))
        else:
            try:
                with np.errstate(over="raise", invalid="ignore", divide="ignore", under="ignore"):
                    return np.asarray(img.get_fdata(dtype=np.float32))
            except FloatingPointError:  # values beyond float32's range: read them in float64
                with np.errstate(all="ignore"):
                    values = np.asarray(img.get_fdata(dtype=np.float64))
    except _READ_ERRORS as exc:
        raise InputImageError(f"{p}: cannot be read, the file looks truncated or corrupt "
                              f"({nifti_header.read_error_detail(exc)})") from None
    finite = np.isfinite(values)
    peak = float(np.max(np.abs(values), where=finite, initial=0.0))
    if peak > _FLOAT32_MAX:
        exponent = int(np.frexp(peak)[1]) - 100  # the peak lands near 2**100, far inside float32's range
        notes.append(f"{p}: values up to {peak:.3g} exceed the float32 range; they were divided by 2**{exponent} "
                     f"(the segmentation does not depend on the intensity scale)")
        values = np.ldexp(values, -exponent)
    with np.errstate(all="ignore"):
        return values.astype(np.float32)


def _datatype_name(img: nib.Nifti1Image) -> str:
    code = int(img.header["datatype"])
    try:
        return f"{nib.nifti1.data_type_codes.label[code]}, code {code}"
    except KeyError:
        return f"code {code}"


def like(reference: nib.Nifti1Image, data: np.ndarray, dtype: Any) -> nib.Nifti1Image:
    """A new image with ``data`` on exactly ``reference``'s grid: same affine, qform and sform with
    their codes; scaling reset so the stored values are the values."""
    hdr = reference.header.copy()
    out = reference.__class__(np.asarray(data, dtype=dtype), reference.affine, hdr)
    out.set_qform(reference.header.get_qform(), code=int(reference.header["qform_code"]))
    out.set_sform(reference.header.get_sform(), code=int(reference.header["sform_code"]))
    out.set_data_dtype(dtype)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"], out.header["cal_max"] = float(np.min(data)) if data.size else 0.0, float(np.max(data)) if data.size else 0.0
    return out
