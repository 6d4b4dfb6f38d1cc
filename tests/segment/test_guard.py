"""The anatomical guard (sctgm.segment.guard) on synthetic volumes whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sctgm.segment.guard import AREA_JUMP, NETWORKS_DISAGREE, OUTSIDE_CORD, guard

ZOOMS = (0.5, 0.5, 5.0)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    x, y = np.mgrid[:shape[0], :shape[1]]
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1.0


def _volume(nz: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A cord (radius 8 x 11 px) drifting 1 px per slice, its GM an ellipse (4 x 8 px) at its centre."""
    cord = np.zeros((80, 80, nz), dtype=bool)
    gm = np.zeros_like(cord)
    for k in range(nz):
        c = (40.0 + k, 38.0 + 0.5 * k)
        cord[:, :, k] = _disc((80, 80), c, (8, 11))
        gm[:, :, k] = _disc((80, 80), c, (4, 8))
    return cord, gm


def test_a_clean_volume_is_left_alone() -> None:
    cord, gm = _volume()
    for kwargs in ({}, {"cord": cord}, {"alternative": gm}):
        out, doubts = guard(gm, ZOOMS, **kwargs)
        assert np.array_equal(out, gm)
        assert doubts == []


@pytest.mark.parametrize("with_cord", [False, True])
def test_gm_planted_outside_the_cord_is_caught_and_removed(with_cord: bool) -> None:
    cord, gm = _volume()
    bad = gm.copy()
    bad[:, :, 4] = _disc((80, 80), (12.0, 12.0), (4, 8))  # another structure, 14 mm away from the cord
    out, doubts = guard(bad, ZOOMS, cord=cord if with_cord else None)
    assert [d.slice for d in doubts] == [4]
    assert OUTSIDE_CORD in doubts[0].reasons
    assert doubts[0].action == "dropped"
    assert not out[:, :, 4].any()
    assert np.array_equal(np.delete(out, 4, axis=2), np.delete(gm, 4, axis=2))


def test_outside_gm_next_to_right_gm_is_re_placed() -> None:
    cord, gm = _volume()
    bad = gm.copy()
    bad[:, :, 6] |= _disc((80, 80), (70.0, 10.0), (4, 6))
    out, doubts = guard(bad, ZOOMS)
    assert [(d.slice, d.action) for d in doubts] == [(6, "re-placed")]
    assert np.array_equal(out, gm)


def test_the_other_network_replaces_a_slice_that_lost_its_gm() -> None:
    cord, gm = _volume()
    bad = gm.copy()
    bad[:, :, 3] = False
    bad[40:43, 39:42, 3] = True  # 9 voxels where its neighbours have ~100
    out, doubts = guard(bad, ZOOMS, alternative=gm)
    assert [d.slice for d in doubts] == [3]
    assert AREA_JUMP in doubts[0].reasons and NETWORKS_DISAGREE in doubts[0].reasons
    assert doubts[0].action == "replaced"
    assert np.array_equal(out, gm)
    # without another network the slice is kept, and still reported
    out, doubts = guard(bad, ZOOMS)
    assert [(d.slice, d.action, d.reasons) for d in doubts] == [(3, "kept", (AREA_JUMP,))]
    assert np.array_equal(out, bad)


def test_the_other_network_outside_the_cord_is_not_used() -> None:
    cord, gm = _volume()
    bad = gm.copy()
    bad[:, :, 5] = _disc((80, 80), (12.0, 12.0), (4, 8))
    alt = bad.copy()  # the other network makes the same mistake
    out, doubts = guard(bad, ZOOMS, cord=cord, alternative=alt)
    assert doubts[0].slice == 5 and doubts[0].action == "dropped"
    assert not out[:, :, 5].any()
