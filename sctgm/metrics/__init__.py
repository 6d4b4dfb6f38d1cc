"""Segmentation metrics and GM/WM morphometry (``sct-gm metrics``).

Two modes, both per axial slice of the canonical (LAS) grid, whatever the files' orientation:

- compare a segmentation with a reference: the ten metrics of the spinal cord GM segmentation
  challenge (Prados et al., NeuroImage 2017) and the 3D Dice (:func:`compare`);
- measure a GM mask: GM area, and with a cord mask WM area and GM/cord ratio, per slice and per
  vertebral level (:func:`morphometry`).

The array functions (:func:`overlap_metrics`, :func:`surface_distances_mm`, :func:`distance_metrics`,
:func:`dice_3d`) work on plain numpy arrays, for notebooks. Exact definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

from .compare import ComparisonResult, compare, compare_slices
from .distance import DistanceMetrics, distance_metrics, skeleton, surface, surface_distances_mm
from .grid import CanonicalMask, load_mask
from .morphometry import MorphometryResult, morphometry
from .overlap import OverlapMetrics, dice_3d, overlap_metrics
from .table import MetricsTable, compute_metrics, write_csv, write_rows_csv

__all__ = [
    "CanonicalMask", "ComparisonResult", "DistanceMetrics", "MetricsTable", "MorphometryResult",
    "OverlapMetrics",
    "compare", "compare_slices", "compute_metrics", "dice_3d", "distance_metrics", "load_mask", "morphometry",
    "overlap_metrics", "skeleton", "surface", "surface_distances_mm", "write_csv", "write_rows_csv",
]
