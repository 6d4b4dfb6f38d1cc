"""Post-processing inside the mask's bounding box gives exactly the whole-slice result."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sctgm.segment.postprocess import fill_holes, keep_largest_components


def _whole_slice_reference(mask: np.ndarray, min_ratio: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    kept = np.zeros_like(mask)
    filled = np.zeros_like(mask)
    for k in range(mask.shape[2]):
        labels, n = ndimage.label(mask[:, :, k], structure=np.ones((3, 3)))
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            kept[:, :, k] = np.isin(labels, np.flatnonzero(sizes >= min_ratio * sizes.max()) + 1)
        filled[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return kept, filled


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int], corner: tuple[int, int]) -> np.ndarray:
    """Random rings, discs and specks in a 30x30 region at ``corner`` (rings give holes)."""
    mask = np.zeros(shape, dtype=bool)
    yy, xx = np.mgrid[:30, :30]
    for k in range(shape[2]):
        region = np.zeros((30, 30), dtype=bool)
        for _ in range(rng.integers(0, 5)):
            cy, cx, r = rng.integers(0, 30), rng.integers(0, 30), rng.integers(1, 9)
            d = np.hypot(yy - cy, xx - cx)
            region |= (d <= r) & (d >= r - rng.integers(1, 3)) if rng.random() < 0.5 else d <= r
        region |= rng.random((30, 30)) < 0.02
        mask[corner[0]:corner[0] + 30, corner[1]:corner[1] + 30, k] = region
    return mask


@pytest.mark.parametrize("corner", [(0, 0), (35, 12), (70, 70), (0, 70)])  # at, near and away from the border
def test_box_restricted_postprocessing_equals_whole_slice(corner):
    rng = np.random.default_rng(sum(corner))
    mask = _blobs(rng, (100, 100, 12), corner)
    kept, filled = _whole_slice_reference(mask)
    assert (filled & ~mask).any() and (mask & ~kept).any()  # the case does have holes and small specks
    np.testing.assert_array_equal(keep_largest_components(mask), kept)
    np.testing.assert_array_equal(fill_holes(mask), filled)


def test_empty_mask_stays_empty():
    mask = np.zeros((20, 20, 3), dtype=bool)
    assert not keep_largest_components(mask).any() and not fill_holes(mask).any()
