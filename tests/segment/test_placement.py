"""Window placement (sctgm.segment.placement): pure functions on fine-grid centres."""

from __future__ import annotations

import numpy as np

from sctgm.segment import placement
from sctgm.segment.grid import FineGrid, Window


def test_window_placement_clips_to_the_slice_and_follows_the_cord():
    grid = FineGrid((320, 320, 5), (640, 640))
    size = placement.window_size(grid, 200)
    assert size == (200, 200)
    assert placement.window_at(placement.slice_centre(grid), grid, size).origin == (220, 220)
    assert placement.window_at(np.array([5.0, 630.0]), grid, size).origin == (0, 440)
    small = FineGrid((49, 54, 9), (98, 108))
    assert placement.window_size(small, 200) == (98, 108)
    assert placement.covers_slice(small, placement.window_size(small, 200))
    cord = np.zeros((320, 320, 5), dtype=bool)
    cord[250:260, 40:50, 1:4] = True  # far from the centre, absent from slices 0 and 4
    centres = placement.centres_from_mask(cord, grid)
    np.testing.assert_allclose(centres[2], [2 * 254.5, 2 * 44.5])
    np.testing.assert_allclose(centres[0], centres[1])
    assert placement.centres_from_mask(np.zeros_like(cord), grid) is None


def test_search_tiles_cover_the_whole_slice():
    grid = FineGrid((470, 470, 3), (940, 940))
    tiles = placement.search_windows(grid, (200, 200))
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
    f = placement.assess(prob, w, grid)
    assert f.found and not f.cut
    np.testing.assert_allclose(f.centroid, [220 + 99.5, 220 + 99.5])
    prob[:] = 0
    prob[0:20, 90:110] = 1
    assert placement.assess(prob, w, grid).cut
    assert not placement.assess(np.zeros_like(prob), w, grid).found



def test_tta_shifts_start_with_the_window_itself_and_clip_to_the_slice():
    grid = FineGrid((100, 100, 1), (200, 200))
    w = Window((0, 50), (100, 100))
    assert placement.TTA_SHIFTS_PX[0] == (0, 0)
    assert placement.shifted(w, (0, 0), grid) == w
    assert placement.shifted(w, (-8, 0), grid).origin == (0, 50)  # already at the edge
    assert placement.shifted(w, (8, -8), grid).origin == (8, 42)
