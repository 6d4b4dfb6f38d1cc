"""Orientation, resampling windows and crop placement: exactness on synthetic data."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt
from nibabel.processing import resample_from_to

from sctgm import crop
from sctgm.orientation import looks_axial, reorientation_for
from sctgm.resample import FineGrid, Window, fine_grid, sample_window, window_to_native

ALL_AXCODES = ["".join(c) for p in itertools.permutations([("L", "R"), ("A", "P"), ("S", "I")])
               for c in itertools.product(*p)]


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_reorientation_round_trip_is_exact_for_all_48_orientations(axcodes):
    rng = np.random.default_rng(0)
    canon = rng.normal(size=(7, 8, 9)).astype(np.float32)
    las = nib.Nifti1Image(canon, np.diag([-0.5, 0.6, 5.0, 1.0]))
    stored = las.as_reoriented(ornt.ornt_transform(ornt.axcodes2ornt("LAS"), ornt.axcodes2ornt(tuple(axcodes))))
    assert "".join(nib.aff2axcodes(stored.affine)) == axcodes
    data = np.asanyarray(stored.dataobj)
    reo = reorientation_for(stored.affine, data.shape)
    np.testing.assert_array_equal(reo.apply(data), canon)
    np.testing.assert_array_equal(reo.undo(reo.apply(data)), data)
    np.testing.assert_allclose(reo.canonical_affine(stored.affine), las.affine, atol=1e-9)


def test_sagittal_acquisition_does_not_look_axial():
    assert looks_axial((0.5, 0.5, 5.0))
    assert looks_axial((1.0, 1.0, 1.0))
    assert not looks_axial((3.0, 0.5, 0.5))  # thick along L-R: sagittal
    assert not looks_axial((0.5, 3.0, 0.5))  # thick along A-P: coronal


@pytest.mark.parametrize("native,zoom", [((40, 44), (0.5, 0.5)), ((30, 33), (0.84, 0.84)), ((50, 50), (0.2, 0.2))])
def test_window_sampling_matches_whole_slice_resampling(native, zoom):
    """A window of the fine grid equals the same region of nibabel's whole-grid resampling."""
    rng = np.random.default_rng(2)
    data = rng.normal(size=native + (3,)).astype(np.float32)
    affine = np.diag(list(zoom) + [5.0, 1.0])
    grid = fine_grid(data.shape, zoom + (5.0,))
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
    grid = fine_grid(native + (1,), zoom + (5.0,))
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


def test_window_placement_clips_to_the_slice_and_follows_the_cord():
    grid = FineGrid((320, 320, 5), (640, 640))
    size = crop.window_size(grid)
    assert size == (200, 200)
    assert crop.window_at(crop.slice_centre(grid), grid, size).origin == (220, 220)
    assert crop.window_at(np.array([5.0, 630.0]), grid, size).origin == (0, 440)
    small = FineGrid((49, 54, 9), (98, 108))
    assert crop.window_size(small) == (98, 108)
    assert crop.covers_slice(small, crop.window_size(small))
    cord = np.zeros((320, 320, 5), dtype=bool)
    cord[250:260, 40:50, 1:4] = True  # far from the centre, absent from slices 0 and 4
    centres = crop.centres_from_mask(cord, grid)
    np.testing.assert_allclose(centres[2], [2 * 254.5, 2 * 44.5])
    np.testing.assert_allclose(centres[0], centres[1])
    assert crop.centres_from_mask(np.zeros_like(cord), grid) is None


def test_search_tiles_cover_the_whole_slice():
    grid = FineGrid((470, 470, 3), (940, 940))
    tiles = crop.search_windows(grid, (200, 200))
    covered = np.zeros(grid.fine_shape, dtype=bool)
    for t in tiles:
        covered[t.origin[0]:t.origin[0] + 200, t.origin[1]:t.origin[1] + 200] = True
    assert covered.all()
    assert len(tiles) == 25


def test_assess_detects_gm_cut_by_the_window_edge():
    grid = FineGrid((320, 320, 1), (640, 640))
    w = Window((220, 220), (200, 200))
    prob = np.zeros((200, 200), dtype=np.float32)
    prob[90:110, 90:110] = 1
    f = crop.assess(prob, w, grid)
    assert f.found and not f.cut
    np.testing.assert_allclose(f.centroid, [220 + 99.5, 220 + 99.5])
    prob[:] = 0
    prob[0:20, 90:110] = 1
    assert crop.assess(prob, w, grid).cut
    assert not crop.assess(np.zeros_like(prob), w, grid).found
