"""Masks brought to the canonical LAS layout, with the in-plane geometry the metrics need.

Every metric is computed on axial slices ``data[:, :, k]`` of the canonical array (see
:mod:`sctgm.geometry`); only flips and permutations are applied, so no voxel is interpolated and
a mask stored in any orientation gives the same numbers. Geometry comes from the canonical affine
``A`` (columns ``c0``, ``c1``, ``c2``: the world vectors of one voxel step along each array axis):

- in-plane pixel spacing (mm): the header's zooms in canonical order (:func:`sctgm.geometry.canonical_zooms_mm`)
- in-plane pixel area (mm2): ``|c0 x c1|`` (:func:`sctgm.geometry.pixel_area_mm2`), exact for oblique and
  sheared affines
- slice position (mm): the world (scanner RAS+) position of the slice's centre pixel projected on
  the unit vector ``c2/|c2|`` of the slice axis; it grows towards superior. For an unrotated axial
  scan it is the slice's world S coordinate. It runs along the image's slice axis, not along a
  curved cord centreline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import geometry
from ..geometry import Reorientation, reorientation_for
from ..io import load_image, load_mask_image

log = logging.getLogger(__name__)

#: |cos| of the angle between the in-plane axes above which the pixels count as sheared.
SHEAR_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CanonicalMask:
    """A mask on its canonical LAS grid, and how it maps back to the file."""

    path: Path
    data: np.ndarray  # float32, canonical LAS: axial slices are data[:, :, k]
    affine: np.ndarray  # canonical affine (same world positions as the file)
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    reorientation: Reorientation

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[2])

    zooms_mm: tuple[float, float, float]  # canonical voxel sizes (:func:`sctgm.geometry.canonical_zooms_mm`)

    @property
    def in_plane_spacing_mm(self) -> tuple[float, float]:
        return self.zooms_mm[0], self.zooms_mm[1]

    @property
    def pixel_area_mm2(self) -> float:
        return geometry.pixel_area_mm2(self.affine)

    @property
    def is_sheared(self) -> bool:
        c = self.affine[:3, :3]
        cos = abs(float(c[:, 0] @ c[:, 1])) / (np.linalg.norm(c[:, 0]) * np.linalg.norm(c[:, 1]))
        return cos > SHEAR_TOLERANCE

    def slice_positions_mm(self) -> np.ndarray:
        """Position of each canonical slice along the slice axis (mm, see the module docstring)."""
        nx, ny, nz = self.data.shape
        centres = np.stack([np.full(nz, (nx - 1) / 2), np.full(nz, (ny - 1) / 2), np.arange(nz)])
        world = self.affine[:3, :3] @ centres + self.affine[:3, 3:4]
        axis = self.affine[:3, 2] / np.linalg.norm(self.affine[:3, 2])
        return axis @ world

    def file_slice_index(self, k: int) -> int:
        """The index, along the file's own S-I array axis, of canonical slice ``k`` (the number a
        viewer such as FSLeyes shows for that slice)."""
        return geometry.file_slice_index(self.reorientation, k)

    def file_axis_of_slices(self) -> int:
        """The file's array axis that holds the axial slices (0, 1 or 2)."""
        return geometry.slice_axis(self.reorientation)


def load_mask(path: str | os.PathLike[str], *, what: str = "mask", labels: bool = False) -> CanonicalMask:
    """Load a 3D mask (an empty one is fine; an image given in its place is refused:
    :func:`sctgm.io.check_mask_values`) and reorient it to canonical LAS. ``labels``: a label image
    (vertebral levels), whose values are checked by its reader."""
    img = load_image(path, what=what, allow_constant=True) if labels else load_mask_image(path, what=what)
    reo = reorientation_for(img.affine, img.data.shape)
    mask = CanonicalMask(
        path=img.path,
        data=reo.apply(img.data),
        affine=reo.canonical_affine(img.affine),
        source_shape=tuple(int(n) for n in img.data.shape),  # type: ignore[arg-type]
        source_affine=np.asarray(img.affine, dtype=float),
        reorientation=reo,
        zooms_mm=geometry.canonical_zooms_mm(img.zooms_mm, reo),
    )
    if mask.is_sheared:
        log.warning("%s: the in-plane voxel axes are not orthogonal (sheared affine); areas are exact, "
                    "distances treat the pixels as rectangles", mask.path)
    return mask


def warn_if_probabilities(mask: CanonicalMask, advice: str, *, parameter: str | None = None) -> None:
    """Log one warning when ``mask`` has voxels strictly between 0 and 1 (a probability map?), which
    the metrics binarise at 0.5; ``advice``: what to do instead, added to the message."""
    fuzzy = int(np.count_nonzero((mask.data > 0) & (mask.data < 1)))
    if fuzzy:
        log.warning("%s: %d voxels lie strictly between 0 and 1 (a probability map?); they were binarised at "
                    "0.5%s", mask.path, fuzzy, f"; {advice}" if advice else "", extra={"parameter": parameter})


def check_same_grid(a: CanonicalMask, b: CanonicalMask, *, atol_mm: float = 1e-3) -> None:
    """Raise :class:`GridMismatchError` unless ``a`` and ``b`` cover the same voxels. The same grid
    stored in two orientations (e.g. LAS and RPI) passes: the comparison is on the canonical grids."""
    geometry.check_same_grid(a, b, atol_mm=atol_mm, hint="resample one onto the other first (nearest neighbour, e.g. "
                             "sct_register_multimodal -identity 1 -x nn)")
