"""Exact reorientation to the canonical LAS+ layout the network expects, and back.

Only flips and axis permutations (nibabel's orientation transforms): no voxel is interpolated, so
the inverse restores the input array bit for bit.

Canonical layout: array axis 0 runs towards patient Left, axis 1 towards Anterior, axis 2 towards
Superior (nibabel axis codes 'L', 'A', 'S'; SCT calls this 'RPI'). Axial slices are ``data[:, :, k]``.
All the labelled data the published models were checked on is stored this way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

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
    codes = tuple(nib.aff2axcodes(affine))
    t = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(CANONICAL_AXCODES))
    return Reorientation(input_axcodes=codes, input_shape=tuple(int(n) for n in shape[:3]), to_canonical=t)  # type: ignore[arg-type]


def canonical_zooms_mm(affine_canonical: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) along the canonical axes, from the affine's column norms."""
    return tuple(float(v) for v in np.sqrt((affine_canonical[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def looks_axial(zooms_canonical_mm: tuple[float, float, float]) -> bool:
    """False when the slices (S-I spacing) are clearly thinner than the in-plane pixels, the usual
    sign of a sagittal or coronal acquisition. Isotropic data counts as axial."""
    return zooms_canonical_mm[2] >= AXIAL_THICKNESS_RATIO * max(zooms_canonical_mm[:2])
