"""In-plane resampling windows (sctgm.segment.grid): exact against nibabel's whole-slice resampling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from sctgm.segment.grid import Window, fine_grid, overlap, sample_window, to_native, window_to_native


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


def _footprint_mean_by_sampling(fine: np.ndarray, native: tuple[int, int], per: int = 64) -> np.ndarray:
    """The mean of a fine slice over each native voxel's footprint, by sampling each footprint at
    ``per`` x ``per`` points (nearest fine pixel): an independent, slow version of the area rule."""
    m = fine.shape
    out = np.zeros(native)
    offsets = (np.arange(per) + 0.5) / per - 0.5  # sample points within a voxel, native units
    for i in range(native[0]):
        fi = np.clip(np.rint((i + offsets) * m[0] / native[0]).astype(int), 0, m[0] - 1)
        for j in range(native[1]):
            fj = np.clip(np.rint((j + offsets) * m[1] / native[1]).astype(int), 0, m[1] - 1)
            out[i, j] = fine[np.ix_(fi, fj)].mean()
    return out


@pytest.mark.parametrize("native,zoom", [((20, 22), (0.5, 0.5)), ((15, 17), (0.84, 0.84)), ((21, 13), (0.7, 0.42))])
def test_area_rule_is_the_mean_over_each_native_voxel_footprint(native, zoom):
    """The 'area' rule back to the native grid (the default model's) equals the footprint mean computed
    independently by dense sampling, for whole-pixel and fractional footprints (0.84 mm: 3.36 fine
    pixels per voxel), and it keeps the total area of the GM (the mask's sum in mm^2)."""
    grid = fine_grid(native + (1,), zoom + (5.0,), 0.25)
    w = Window((6, 5), (grid.fine_shape[0] - 14, grid.fine_shape[1] - 12))
    mask = np.zeros(w.size, dtype=np.float32)
    mask[5:-7, 9:-4] = 1.0  # a rectangle whose edges fall inside native voxels
    mask[10:13, 2:30] = 1.0
    fine = np.zeros(grid.fine_shape, dtype=np.float32)
    fine[6:6 + w.size[0], 5:5 + w.size[1]] = mask
    got = np.zeros(native)
    box, v = to_native(mask, grid, w, "area")
    got[box] = v
    # dense sampling's own error is about one sample row of the footprint (1/64 of a voxel per edge)
    np.testing.assert_allclose(got, _footprint_mean_by_sampling(fine, native), atol=0.03)
    fine_area_mm2 = mask.sum() * (zoom[0] * native[0] / grid.fine_shape[0]) * (zoom[1] * native[1] / grid.fine_shape[1])
    assert got.sum() * zoom[0] * zoom[1] == pytest.approx(fine_area_mm2, rel=1e-6)
    # and the linear rule, interpolating at the voxel centres, is what window_to_native gives
    box_l, v_l = to_native(mask, grid, w, "linear")
    np.testing.assert_array_equal(v_l, window_to_native(mask, grid, w)[1])


@pytest.mark.parametrize("native,zoom", [((40, 36), (0.2, 0.2)), ((12, 12), (0.08, 0.08)), ((30, 31), (0.84, 0.3))])
def test_area_rule_on_native_grids_finer_than_the_network_s(native, zoom):
    """Native voxels smaller than the 0.25 mm pixels (down to a third of one, where the last voxels'
    footprints lie beyond the fine slice): the footprint mean still matches dense sampling, with the
    slice's edge replicated as the linear rule does, and no voxel is left undefined."""
    grid = fine_grid(native + (1,), zoom + (5.0,), 0.25)
    w = Window((0, 0), grid.fine_shape)
    values = np.random.default_rng(5).uniform(size=grid.fine_shape).astype(np.float32)
    box, v = to_native(values, grid, w, "area")
    assert (box[0].start, box[0].stop, box[1].start, box[1].stop) == (0, native[0], 0, native[1])
    assert np.isfinite(v).all()
    np.testing.assert_allclose(v, _footprint_mean_by_sampling(values, native), atol=0.03)
    _, ones = to_native(np.ones(grid.fine_shape, np.float32), grid, w, "area")
    np.testing.assert_allclose(ones, 1.0, atol=1e-6)


def test_area_rule_keeps_a_voxel_that_is_mostly_gm_and_drops_one_that_is_not():
    """At 1 mm native voxels (4 fine pixels each), native voxel i covers fine [4i - 2, 4i + 2]: half of
    pixels 4i - 2 and 4i + 2, all of 4i - 1 .. 4i + 1. GM over 2.5 of its 4 pixel widths gives 0.625
    (kept at >= 0.5); GM over 1 width gives 0.25 (dropped), although that GM lies on the voxel's
    centre, where the linear rule samples (and keeps it)."""
    grid = fine_grid((10, 10, 1), (1.0, 1.0, 5.0), 0.25)
    assert grid.fine_shape == (40, 40)
    w = Window((0, 0), (40, 40))
    fine = np.zeros((40, 40), dtype=np.float32)
    fine[14:19, 14:17] = 1.0  # voxel (4, 4): all its rows; columns 14 (half of it inside), 15 and 16: 2.5 of 4
    fine[26:31, 16] = 1.0     # voxel (7, 4): all its rows; its centre column only: 1 of 4
    _, area = to_native(fine, grid, w, "area")
    _, linear = to_native(fine, grid, w, "linear")
    assert area[4, 4] == pytest.approx(2.5 / 4) and area[4, 4] >= 0.5
    assert area[7, 4] == pytest.approx(1 / 4) and area[7, 4] < 0.5
    assert linear[7, 4] == pytest.approx(1.0)


def test_unknown_rule_back_to_the_native_grid_is_refused():
    grid = fine_grid((10, 10, 1), (0.5, 0.5, 5.0), 0.25)
    with pytest.raises(ValueError, match="nearest"):
        to_native(np.zeros((20, 20), np.float32), grid, Window((0, 0), (20, 20)), "nearest")


@pytest.mark.parametrize("native,zoom", [((30, 33), (0.84, 0.84)), ((12, 14), (0.08, 0.1)), ((37, 29), (0.7, 0.42))])
def test_area_rule_of_a_window_equals_the_whole_slice_with_the_window_pasted(native, zoom):
    """A window anywhere (touching the slice's edges or not) gives what the whole fine slice, zero
    outside the window, gives: the box it returns holds every voxel the window reaches."""
    rng = np.random.default_rng(7)
    grid = fine_grid(native + (1,), zoom + (5.0,), 0.25)
    whole = Window((0, 0), grid.fine_shape)
    for _ in range(20):
        o = (int(rng.integers(0, grid.fine_shape[0])), int(rng.integers(0, grid.fine_shape[1])))
        size = (int(rng.integers(1, grid.fine_shape[0] - o[0] + 1)), int(rng.integers(1, grid.fine_shape[1] - o[1] + 1)))
        values = rng.uniform(size=size).astype(np.float32)
        pasted = np.zeros(grid.fine_shape, np.float32)
        pasted[o[0]:o[0] + size[0], o[1]:o[1] + size[1]] = values
        ref = np.zeros(native)
        box, v = to_native(pasted, grid, whole, "area")
        ref[box] = v
        got = np.zeros(native)
        box, v = to_native(values, grid, Window(o, size), "area")
        got[box] = v
        np.testing.assert_allclose(got, ref, atol=1e-6)
