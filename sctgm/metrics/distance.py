"""Surface and skeleton distances (mm) between two binary masks, honouring anisotropic spacing.

Definitions (used per axial slice by :mod:`sctgm.metrics.compare`, and valid for any 2D array):

- **Surface** of a mask: its boundary pixels, i.e. foreground pixels with at least one of their 4
  edge-neighbours in the background or outside the array (``mask & ~binary_erosion(mask, cross)``).
  The resulting contour is one pixel thick and 8-connected.
- **Skeleton** of a mask: ``skimage.morphology.skeletonize`` (Zhang's thinning in 2D, the thinning
  SCT's ``sct_compute_hausdorff_distance`` applies to both masks before its skeleton distances),
  computed on the pixel grid of each mask (segmentation and reference), then measured in mm.
- Distances are between pixel centres, in mm, with the pixel spacing of each array axis
  (``scipy.ndimage.distance_transform_edt(sampling=spacing_mm)``), so anisotropic pixels are exact.
  The in-plane axes are taken as orthogonal (true of every scanner-written NIfTI; a sheared affine
  is reported by the caller).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .overlap import binarize


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels (voxels) of ``mask``: foreground with a face-neighbour in the background or
    outside the array (face connectivity: 4 in 2D, 6 in 3D)."""
    m = binarize(mask)
    if not m.any():
        return m
    inner = ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(m.ndim, 1), border_value=0)
    return m & ~inner


def skeleton(mask: np.ndarray) -> np.ndarray:
    """The 2D skeleton of ``mask`` (``skimage.morphology.skeletonize``, Zhang's method)."""
    from skimage.morphology import skeletonize  # here: ~0.1 s to import, needed only for this metric

    m = binarize(mask)
    if m.ndim != 2:
        raise ValueError(f"skeleton() takes a 2D slice, got shape {m.shape}")
    return skeletonize(m) if m.any() else m


def directed_distances_mm(points_a: np.ndarray, points_b: np.ndarray,
                          spacing_mm: Sequence[float]) -> np.ndarray:
    """For each foreground pixel of ``points_a`` (in C order), the distance in mm to the nearest
    foreground pixel of ``points_b``. Empty when either is empty."""
    a, b = np.asarray(points_a, bool), np.asarray(points_b, bool)
    if not a.any() or not b.any():
        return np.zeros(0)
    # The exact Euclidean distance transform to b's pixels, with the true pixel spacing.
    dist_to_b = ndimage.distance_transform_edt(~b, sampling=tuple(float(s) for s in spacing_mm))
    return np.asarray(dist_to_b[a], dtype=float)


def surface_distances_mm(seg: np.ndarray, ref: np.ndarray,
                         spacing_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(seg surface -> ref surface, ref surface -> seg surface) distances in mm, one per surface pixel.
    Both are empty when either mask is empty."""
    sa, sb = surface(seg), surface(ref)
    return directed_distances_mm(sa, sb, spacing_mm), directed_distances_mm(sb, sa, spacing_mm)


@dataclass(frozen=True)
class DistanceMetrics:
    """The four distance metrics in mm; NaN when either mask is empty."""

    mean_surface_distance_mm: float
    hausdorff_mm: float
    skeleton_hausdorff_mm: float
    skeleton_median_mm: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def distance_metrics(seg: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float]) -> DistanceMetrics:
    """Distances between the 2D masks ``seg`` and ``ref`` (same shape) with pixel spacing ``spacing_mm``.

    - mean_surface_distance_mm: mean of the symmetric surface distances, i.e. of all seg->ref and
      ref->seg surface-pixel distances pooled: (sum d(seg->ref) + sum d(ref->seg)) / (n_seg + n_ref)
    - hausdorff_mm: the largest of those distances (symmetric Hausdorff distance of the surfaces)
    - skeleton_hausdorff_mm: symmetric Hausdorff distance between the two skeletons
    - skeleton_median_mm: median of the pooled skeleton->skeleton distances, both directions
    All are NaN when either mask is empty (no surface to measure from).
    """
    d_sr, d_rs = surface_distances_mm(seg, ref, spacing_mm)
    if d_sr.size == 0 or d_rs.size == 0:
        return DistanceMetrics(math.nan, math.nan, math.nan, math.nan)
    surf = np.concatenate([d_sr, d_rs])
    ks, kr = skeleton(seg), skeleton(ref)
    skel = np.concatenate([directed_distances_mm(ks, kr, spacing_mm),
                           directed_distances_mm(kr, ks, spacing_mm)])
    return DistanceMetrics(
        mean_surface_distance_mm=float(surf.mean()),
        hausdorff_mm=float(surf.max()),
        skeleton_hausdorff_mm=float(skel.max()),
        skeleton_median_mm=float(np.median(skel)),
    )
