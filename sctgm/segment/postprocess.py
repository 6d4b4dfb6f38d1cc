"""Clean-up of the binary GM mask on the native grid (canonical LAS, axial slices along axis 2).

Both steps work slice by slice: slices are several millimetres thick, so the GM of neighbouring
slices need not touch, and a 3D largest-component rule could delete whole slices.

Both work inside the mask's in-plane bounding box (plus one voxel of background all round), which
gives exactly the whole-slice result: nothing lies outside the box, and the ring of background
stands for everything beyond it. On a 512x512 slice with a 40x40 GM this is ~100x less work.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Components at least this fraction of the slice's largest one are kept (the GM can show as two
#: horns when the commissure is thinner than a voxel).
DEFAULT_MIN_COMPONENT_RATIO = 0.3


def _inplane_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The in-plane box holding every True voxel of every slice, one voxel wider on each side
    (clipped to the array); None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    if rows.size == 0:
        return None
    return (slice(max(0, rows[0] - 1), rows[-1] + 2), slice(max(0, cols[0] - 1), cols[-1] + 2))


def keep_largest_components(mask: np.ndarray, min_ratio: float = DEFAULT_MIN_COMPONENT_RATIO) -> np.ndarray:
    """Per axial slice, keep the largest 8-connected component and any other at least
    ``min_ratio`` of its size."""
    out = np.zeros_like(mask, dtype=bool)
    box = _inplane_box(mask)
    if box is None:
        return out
    structure = np.ones((3, 3), dtype=bool)
    for k in range(mask.shape[2]):
        labels, n = ndimage.label(mask[box[0], box[1], k], structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_ratio * sizes.max()) + 1
        out[box[0], box[1], k] = np.isin(labels, keep)
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Per axial slice, fill the holes (background not connected to the slice's border)."""
    out = np.zeros_like(mask, dtype=bool)
    box = _inplane_box(mask)
    if box is None:
        return out
    for k in range(mask.shape[2]):
        # binary_fill_holes treats the box's edge as the border: the one-voxel ring of background
        # the box keeps is connected to everything outside it, as in the whole slice
        out[box[0], box[1], k] = ndimage.binary_fill_holes(mask[box[0], box[1], k])
    return out
