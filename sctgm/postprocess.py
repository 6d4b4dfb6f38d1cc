"""Clean-up of the binary GM mask on the native grid (canonical LAS, axial slices along axis 2).

Both steps work slice by slice: slices are several millimetres thick, so the GM of neighbouring
slices need not touch, and a 3D largest-component rule could delete whole slices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Components at least this fraction of the slice's largest one are kept (the GM can show as two
#: horns when the commissure is thinner than a voxel).
DEFAULT_MIN_COMPONENT_RATIO = 0.3


def keep_largest_components(mask: np.ndarray, min_ratio: float = DEFAULT_MIN_COMPONENT_RATIO) -> np.ndarray:
    """Per axial slice, keep the largest 8-connected component and any other at least
    ``min_ratio`` of its size."""
    out = np.zeros_like(mask, dtype=bool)
    structure = np.ones((3, 3), dtype=bool)
    for k in range(mask.shape[2]):
        labels, n = ndimage.label(mask[:, :, k], structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_ratio * sizes.max()) + 1
        out[:, :, k] = np.isin(labels, keep)
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Per axial slice, fill the holes (background not connected to the slice's border)."""
    out = np.empty_like(mask, dtype=bool)
    for k in range(mask.shape[2]):
        out[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return out
