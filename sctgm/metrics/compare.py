"""Compare a segmentation with a reference: the ten metrics of the spinal cord GM challenge
(Prados et al., NeuroImage 2017) per axial slice, their volume summary, and the 3D Dice.

Per slice (2D, in-plane spacing in mm, both masks binarised at 0.5): the six overlap metrics of
:func:`~sctgm.metrics.overlap.overlap_metrics` (counts over the whole slice) and the four distances of
:func:`~sctgm.metrics.distance.distance_metrics`. Slices where one or both masks are empty get the
values those functions define (NaN where a metric is undefined) and are still listed.

Volume summary: for each per-slice column, the mean over the slices where the reference is
non-empty, skipping NaN (so distances average over slices where both masks are non-empty); plus
the number of such slices, of slices the segmentation missed (reference only) and of false-positive
slices (segmentation only, not in the means), and the 3D Dice of the whole volumes.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from .distance import distance_metrics
from .grid import CanonicalMask, check_same_grid, load_mask, warn_if_probabilities
from .overlap import binarize, dice_3d, overlap_metrics

#: Per-slice metric columns, in CSV order.
SLICE_METRICS: tuple[str, ...] = (
    "seg_area_mm2", "ref_area_mm2",
    "dice", "jaccard", "conformity", "sensitivity", "specificity", "precision",
    "mean_surface_distance_mm", "hausdorff_mm", "skeleton_hausdorff_mm", "skeleton_median_mm",
)
#: Columns of the volume summary row only.
VOLUME_COLUMNS: tuple[str, ...] = ("dice_3d", "n_slices", "n_slices_missed", "n_slices_false_positive")
#: Every column of :attr:`ComparisonResult.rows`, in order.
COLUMNS: tuple[str, ...] = (
    "file", "reference_file", "sctgm_version", "scope", "slice", "position_mm",
    *SLICE_METRICS, *VOLUME_COLUMNS,
)


def compare_slices(seg: np.ndarray, ref: np.ndarray, spacing_mm: tuple[float, float],
                   pixel_area_mm2: float | None = None) -> list[dict[str, float]]:
    """Per-axial-slice metrics of two 3D arrays in canonical layout (slices ``[:, :, k]``).
    ``pixel_area_mm2`` defaults to the product of the spacings."""
    if seg.shape != ref.shape or seg.ndim != 3:
        raise ValueError(f"expected two 3D arrays of the same shape, got {seg.shape} and {ref.shape}")
    area = float(pixel_area_mm2 if pixel_area_mm2 is not None else spacing_mm[0] * spacing_mm[1])
    s, r = binarize(seg), binarize(ref)
    out = []
    for k in range(s.shape[2]):
        sk, rk = s[:, :, k], r[:, :, k]
        row = {"seg_area_mm2": float(sk.sum()) * area, "ref_area_mm2": float(rk.sum()) * area}
        row.update(overlap_metrics(sk, rk).as_dict())
        row.update(distance_metrics(sk, rk, spacing_mm).as_dict())
        out.append(row)
    return out


def summarise(slices: list[dict[str, float]], seg: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The volume summary of :func:`compare_slices`' rows (see the module docstring)."""
    s, r = binarize(seg), binarize(ref)
    has_s, has_r = s.any(axis=(0, 1)), r.any(axis=(0, 1))
    summary: dict[str, float] = {}
    for name in SLICE_METRICS:
        values = np.array([row[name] for row, keep in zip(slices, has_r) if keep], dtype=float)
        with warnings.catch_warnings():  # all-NaN -> NaN is the documented value
            warnings.simplefilter("ignore", RuntimeWarning)
            summary[name] = float(np.nanmean(values)) if values.size else math.nan
    summary["dice_3d"] = dice_3d(s, r)
    summary["n_slices"] = int(has_r.sum())
    summary["n_slices_missed"] = int((has_r & ~has_s).sum())
    summary["n_slices_false_positive"] = int((has_s & ~has_r).sum())
    return summary


@dataclass(frozen=True)
class ComparisonResult:
    """Metrics of one segmentation against one reference."""

    seg_path: Path
    ref_path: Path
    slice_index: list[int]  # per row of ``slices``: the index along the file's own slice axis
    position_mm: list[float]
    slices: list[dict[str, float]]  # canonical slice order (inferior to superior)
    summary: dict[str, float]
    version: str = field(default=__version__)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows for CSV/JSON: one per slice (scope 'slice'), then the summary (scope 'volume')."""
        base = {**dict.fromkeys(COLUMNS), "file": str(self.seg_path), "reference_file": str(self.ref_path),
                "sctgm_version": self.version}
        rows = [{**base, "scope": "slice", "slice": idx, "position_mm": pos, **metrics}
                for idx, pos, metrics in zip(self.slice_index, self.position_mm, self.slices)]
        rows.append({**base, "scope": "volume", **self.summary})
        return rows


def compare_masks(seg: CanonicalMask, ref: CanonicalMask) -> ComparisonResult:
    """:func:`compare` on masks already loaded with :func:`~sctgm.metrics.grid.load_mask`."""
    check_same_grid(ref, seg)
    for mask in (seg, ref):  # the ten metrics are of binary masks
        warn_if_probabilities(mask, "the metrics compare binary masks")
    slices = compare_slices(seg.data, ref.data, ref.in_plane_spacing_mm, ref.pixel_area_mm2)
    return ComparisonResult(
        seg_path=seg.path, ref_path=ref.path,
        slice_index=[ref.file_slice_index(k) for k in range(ref.n_slices)],
        position_mm=[float(p) for p in ref.slice_positions_mm()],
        slices=slices, summary=summarise(slices, seg.data, ref.data),
    )


def compare(seg_path: str | os.PathLike[str], ref_path: str | os.PathLike[str]) -> ComparisonResult:
    """Compare the segmentation in ``seg_path`` with the reference in ``ref_path`` (same voxel grid,
    any storage orientation). Raises :class:`~sctgm.exceptions.InputImageError` for unreadable files
    and :class:`~sctgm.exceptions.GridMismatchError` when the grids differ."""
    return compare_masks(load_mask(seg_path, what="segmentation"), load_mask(ref_path, what="reference mask"))
