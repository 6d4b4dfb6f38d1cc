"""In-plane resampling windows (sctgm.segment.grid): exact against nibabel's whole-slice resampling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from sctgm.segment.grid import Window, fine_grid, overlap, sample_window, window_to_native


@pytest.mark.parametrize("native,zoom", [((40, 44), (0.5, 0.5)), ((30, 33), (0.84, 0.84)), ((50, 50), (0.2, 0.2))])
def test_window_sampling_matches_whole_slice_resampling(native, zoom):
    """A window of the fine grid equals the same region of nibabel's whole-grid resampling."""
    rng = np.random.default_rng(2)
    data = rng.normal(size=native + (3,)).astype(np.float32)
    affine = np.diag(list(zoom) + [5.0, 1.0])
    grid = fine_grid(data.shape, zoom + (5.0,), 0.25)
    whole = resample_from_to(nib.Nifti1Image(data, affine), (grid.fine_shape + (3,), grid.fine_affine(affine)),
                             order=1, mode="nearest").get_fdata()
    w = Window((3, 5), (min(20, grid.fine_shape[0] - 3), min(25, grid.fine_shape[1] - 5)))
    got = sample_window(data[:, :, 1], grid, w)
    np.testing.assert_allclose(got, whole[3:3 + w.size[0], 5:5 + w.size[1], 1], atol=1e-5)


@pytest.mark.parametrize("origin", [(0, 0), (10, 7), (None, None)])
@pytest.mark.parametrize("native,zoom", [((40, 44), (0.5, 0.5)), ((30, 33), (0.84, 0.84)), ((50, 50), (0.2, 0.2))])
def test_window_back_to_native_matches_whole_slice_resampling(native, zoom, origin):
    """Pasting a window into a zero fine slice and resampling the whole slice back (the reference's
    way) equals window_to_native, also where the window touches the slice's edges."""
    grid = fine_grid(native + (1,), zoom + (5.0,), 0.25)
    size = (min(30, grid.fine_shape[0]), min(30, grid.fine_shape[1]))
    if origin == (None, None):
        origin = (grid.fine_shape[0] - size[0], grid.fine_shape[1] - size[1])
    w = Window(origin, size)
    values = np.random.default_rng(3).uniform(size=size).astype(np.float32)
    fine = np.zeros(grid.fine_shape + (1,), dtype=np.float32)
    fine[origin[0]:origin[0] + size[0], origin[1]:origin[1] + size[1], 0] = values
    affine = np.diag(list(zoom) + [5.0, 1.0])
    ref = resample_from_to(nib.Nifti1Image(fine, grid.fine_affine(affine)), (native + (1,), affine),
                           order=1, mode="nearest").get_fdata()[:, :, 0]
    got = np.zeros(native, dtype=np.float32)
    box, v = window_to_native(values, grid, w)
    got[box] = v
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_overlap_pairs_the_pixels_two_windows_share():
    ref, other = Window((10, 20), (30, 30)), Window((18, 12), (30, 30))
    src, dst = overlap(ref, other)
    a = np.zeros((100, 100), int)
    b = np.zeros((100, 100), int)
    a[10:40, 20:50] = 1
    b[18:48, 12:42] = 1
    both = np.argwhere(a & b)
    assert (dst[0].stop - dst[0].start) * (dst[1].stop - dst[1].start) == len(both)
    assert (dst[0].start + 10, dst[1].start + 20) == tuple(both.min(axis=0))
    assert (src[0].start + 18, src[1].start + 12) == tuple(both.min(axis=0))
