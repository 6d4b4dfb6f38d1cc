"""Voxel geometry, defined once: canonical reorientation, voxel sizes, areas, volumes, slice indices.

Reorientation to the canonical LAS+ layout the network expects, and back, uses only flips and axis
permutations (nibabel's orientation transforms): no voxel is interpolated, so the inverse restores
the input array bit for bit.

The one definition of each quantity, used by segmentation, QC, metrics and batches alike:

- voxel sizes (mm): :func:`canonical_zooms_mm`, the header's zooms (``header.get_zooms()``) permuted
  into canonical order (house style: never raw ``pixdim``, never recomputed from the affine);
- in-plane pixel area (mm2): :func:`pixel_area_mm2`, ``|c0 x c1|`` of the canonical affine's first two
  columns, exact for oblique and sheared grids (equal to the product of the in-plane zooms otherwise);
- voxel volume (mm3): :func:`voxel_volume_mm3`, ``|det A|``;
- slice index: :func:`file_slice_index`, the file's own index along its S-I axis of canonical slice k;
- same grid: :func:`check_same_grid`, same shape and affine to 1 micrometre (compared on canonical
  views, :func:`canonical_view`, where the storage orientation may differ).

Canonical layout: array axis 0 runs towards patient Left, axis 1 towards Anterior, axis 2 towards
Superior (nibabel axis codes 'L', 'A', 'S'; SCT calls this 'RPI'). Axial slices are ``data[:, :, k]``.
All the labelled data the published models were checked on is stored this way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from .exceptions import GridMismatchError, OrientationError

log = logging.getLogger(__name__)

CANONICAL_AXCODES = ("L", "A", "S")

#: Through-plane spacing must be at least this fraction of the coarsest in-plane spacing for the
#: acquisition to look axial. Axial cord scans have slices 2-20x thicker than their in-plane pixels.
AXIAL_THICKNESS_RATIO = 0.9


@dataclass(frozen=True)
class Reorientation:
    """How an array was brought to canonical LAS; :meth:`undo` is the exact inverse."""

    input_axcodes: tuple[str, str, str]
    input_shape: tuple[int, int, int]
    to_canonical: np.ndarray  # nibabel orientation transform (n, 2)

    def apply(self, data: np.ndarray, *, copy: bool = True) -> np.ndarray:
        """The array in canonical order; with ``copy=False`` a view (flips and a transpose, no
        memory), which must not be written to."""
        out = ornt.apply_orientation(data, self.to_canonical)
        return np.ascontiguousarray(out) if copy else out

    def undo(self, data_canonical: np.ndarray, *, copy: bool = True) -> np.ndarray:
        """The exact inverse of :meth:`apply` (``copy=False``: a view)."""
        back = ornt.ornt_transform(ornt.axcodes2ornt(CANONICAL_AXCODES), ornt.axcodes2ornt(self.input_axcodes))
        out = ornt.apply_orientation(data_canonical, back)
        out = np.ascontiguousarray(out) if copy else out
        assert out.shape[:3] == self.input_shape  # internal invariant, not user input
        return out

    @property
    def is_identity(self) -> bool:
        return self.input_axcodes == CANONICAL_AXCODES

    def canonical_affine(self, affine: np.ndarray) -> np.ndarray:
        """The affine of the reoriented array (same world positions)."""
        return affine @ ornt.inv_ornt_aff(self.to_canonical, self.input_shape)


def reorientation_for(affine: np.ndarray, shape: tuple[int, ...]) -> Reorientation:
    """The flips/permutation that bring an array with ``affine`` to canonical LAS."""
    axes = ornt.io_orientation(affine)
    if np.isnan(axes).any():  # nibabel could not give every voxel axis a direction
        raise OrientationError("the affine's voxel axes cannot be matched to R-L, A-P and S-I: "
                               f"columns {[[round(float(v), 4) for v in col] for col in np.asarray(affine)[:3, :3].T]}")
    codes = tuple(nib.aff2axcodes(affine))
    t = ornt.ornt_transform(axes, ornt.axcodes2ornt(CANONICAL_AXCODES))
    return Reorientation(input_axcodes=codes, input_shape=tuple(int(n) for n in shape[:3]), to_canonical=t)  # type: ignore[arg-type]


def canonical_zooms_mm(header_zooms_mm: tuple[float, ...], reo: Reorientation) -> tuple[float, float, float]:
    """Voxel sizes (mm) along the canonical L, A, S axes: the header's zooms of the file's axes
    (``img.header.get_zooms()[:3]``, which :attr:`sctgm.io.LoadedImage.zooms_mm` returns), permuted."""
    return tuple(float(header_zooms_mm[i]) for i in np.argsort(reo.to_canonical[:, 0]))  # type: ignore[return-value]


def pixel_area_mm2(affine_canonical: np.ndarray) -> float:
    """Area (mm2) of one axial pixel of a canonical grid: ``|c0 x c1|``, exact on oblique and sheared
    grids."""
    c = np.asarray(affine_canonical, dtype=float)[:3, :3]
    return float(np.linalg.norm(np.cross(c[:, 0], c[:, 1])))


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume (mm3) of one voxel: ``|det A|`` (any orientation: reorienting does not change it)."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])))


def slice_axis(reo: Reorientation) -> int:
    """The file's array axis that holds the axial slices (runs S-I): 0, 1 or 2."""
    return int(np.flatnonzero(reo.to_canonical[:, 0] == 2)[0])


def file_slice_index(reo: Reorientation, k: int) -> int:
    """The index, along the file's own S-I array axis, of canonical slice ``k`` (the number a viewer
    such as FSLeyes shows for that slice)."""
    axis = slice_axis(reo)
    return reo.input_shape[axis] - 1 - k if reo.to_canonical[axis, 1] < 0 else k


class OnAGrid(Protocol):
    """Anything with voxels on a grid: :class:`sctgm.io.LoadedImage`, :class:`sctgm.metrics.CanonicalMask`."""

    path: Path
    data: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class CanonicalView:
    """An image's voxels in the canonical layout (a view: flips and a transpose) and its canonical
    affine (same world positions); an :class:`OnAGrid`."""

    path: Path
    data: np.ndarray
    affine: np.ndarray


def canonical_view(img: OnAGrid, reo: Reorientation | None = None) -> CanonicalView:
    """``img`` brought to canonical LAS by ``reo`` (default: its own :func:`reorientation_for`), no copy:
    two files holding one grid in different storage orientations give equal views."""
    reo = reo if reo is not None else reorientation_for(img.affine, img.data.shape)
    return CanonicalView(img.path, reo.apply(img.data, copy=False), reo.canonical_affine(img.affine))


def on_canonical_grid(image: OnAGrid, reo: Reorientation, other: OnAGrid) -> np.ndarray:
    """``other`` (a mask or map of ``image``) in ``image``'s canonical layout (``reo``), a view. It may
    store the image's grid in another orientation: the two are compared in the canonical layout (flips
    and permutations only, exact). Raises :class:`~sctgm.exceptions.GridMismatchError` when it is not
    on the image's grid."""
    view = canonical_view(other)
    check_same_grid(canonical_view(image, reo), view)
    return view.data


def check_same_grid(a: OnAGrid, b: OnAGrid, *, atol_mm: float = 1e-3, hint: str = "") -> None:
    """Raise :class:`~sctgm.exceptions.GridMismatchError` unless ``a`` and ``b`` have the same shape and
    affine (to ``atol_mm``, which absorbs float32 header storage). ``hint``: the fix, added to the
    message."""
    if a.data.shape[:3] != b.data.shape[:3] or not np.allclose(a.affine, b.affine, atol=atol_mm):
        raise GridMismatchError(
            f"{b.path} is not on the grid of {a.path}: shape {b.data.shape} vs {a.data.shape}, "
            f"affine rows {np.round(b.affine[:3], 3).tolist()} vs {np.round(a.affine[:3], 3).tolist()}"
            + (f"; {hint}" if hint else ""))


def looks_axial(zooms_canonical_mm: tuple[float, float, float]) -> bool:
    """False when the slices (S-I spacing) are clearly thinner than the in-plane pixels, the usual
    sign of a sagittal or coronal acquisition. Isotropic data counts as axial."""
    return zooms_canonical_mm[2] >= AXIAL_THICKNESS_RATIO * max(zooms_canonical_mm[:2])
