"""Where the network looks: one window (the model's ``crop_px``, 200x200 for the published models) of
the fine grid per axial slice, placed on the cord wherever it is in the field of view.

The reference crops the centre of each slice and finds nothing when the cord is elsewhere. Here the
window starts at the cord mask's centroid when one is given (else the slice centre), and
:func:`relocate` moves it where the first prediction shows the GM is cut by the window's edge or
absent. When no slice shows GM at all, :func:`search_windows` tiles the slice so the network itself
can find the cord. Test-time augmentation (:data:`TTA_SHIFTS_PX`) places the window a few fine pixels
away too. All functions are pure: placements are plain arrays of fine-grid centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .grid import FineGrid, Window

#: GM closer than this to a window edge that is not the slice's edge counts as cut by the window.
EDGE_MARGIN_PX = 4

#: Fewer GM voxels than this (at 0.25 mm: 1 mm2) in a slice counts as 'no GM found'.
MIN_GM_PX = 16

#: TTA: the window is also placed this many fine pixels away along each in-plane axis (the
#: probabilities are averaged where the placements overlap). The first shift is the window itself.
TTA_SHIFTS_PX: tuple[tuple[int, int], ...] = ((0, 0), (8, 0), (-8, 0), (0, 8), (0, -8))


def window_size(grid: FineGrid, crop_px: int) -> tuple[int, int]:
    """The window is ``crop_px`` wide, or the whole slice along an axis that is smaller."""
    return (min(crop_px, grid.fine_shape[0]), min(crop_px, grid.fine_shape[1]))


def window_at(centre: np.ndarray, grid: FineGrid, size: tuple[int, int]) -> Window:
    """The window of ``size`` centred (as nearly as the slice allows) on a fine-grid point."""
    origin = tuple(
        int(np.clip(np.floor(centre[ax] - size[ax] / 2 + 0.5), 0, grid.fine_shape[ax] - size[ax]))
        for ax in range(2)
    )
    return Window(origin, size)  # type: ignore[arg-type]


def shifted(window: Window, shift_px: tuple[int, int], grid: FineGrid) -> Window:
    """``window`` moved by ``shift_px`` fine pixels (as far as the slice allows)."""
    return window_at(np.asarray(window.origin) + np.asarray(window.size) / 2 + shift_px, grid, window.size)


def slice_centre(grid: FineGrid) -> np.ndarray:
    return np.array([grid.fine_shape[0] / 2, grid.fine_shape[1] / 2])


def centres_from_mask(mask_canonical: np.ndarray, grid: FineGrid) -> np.ndarray | None:
    """Per-slice centroid (fine coordinates) of a cord mask; slices without cord take the nearest
    slice's centroid. None when the mask is empty."""
    nz = mask_canonical.shape[2]
    s = np.asarray(grid.native_per_fine)
    centres = np.full((nz, 2), np.nan)
    for k in range(nz):
        sl = mask_canonical[:, :, k] > 0.5
        if sl.any():
            centres[k] = np.asarray(ndimage.center_of_mass(sl)) / s
    return _fill_nearest(centres)


def _fill_nearest(centres: np.ndarray) -> np.ndarray | None:
    have = np.flatnonzero(~np.isnan(centres[:, 0]))
    if have.size == 0:
        return None
    out = centres.copy()
    for k in np.flatnonzero(np.isnan(centres[:, 0])):
        out[k] = centres[have[np.argmin(np.abs(have - k))]]
    return out


@dataclass(frozen=True)
class SliceFinding:
    """What one prediction says about the window's placement on a slice."""

    found: bool  # enough GM in the window
    cut: bool  # GM touches a window edge that is not the slice's edge
    centroid: np.ndarray  # GM centroid, fine coordinates (NaN when not found)


def assess(prob: np.ndarray, window: Window, grid: FineGrid, threshold: float = 0.5) -> SliceFinding:
    fg = prob > threshold
    n = int(fg.sum())
    if n < MIN_GM_PX:
        return SliceFinding(False, False, np.array([np.nan, np.nan]))
    centroid = np.asarray(ndimage.center_of_mass(fg)) + np.asarray(window.origin)
    cut = False
    for ax in range(2):
        idx = np.flatnonzero(fg.any(axis=1 - ax))
        o, w, m = window.origin[ax], window.size[ax], grid.fine_shape[ax]
        if (o > 0 and idx[0] < EDGE_MARGIN_PX) or (o + w < m and idx[-1] >= w - EDGE_MARGIN_PX):
            cut = True
    return SliceFinding(True, cut, centroid)


def relocate(centres: np.ndarray, findings: list[SliceFinding], grid: FineGrid,
             size: tuple[int, int]) -> np.ndarray | None:
    """New window centres where the current ones cut or miss the GM; None when nothing needs to
    move. Cut slices centre on their own GM; empty slices take the median centre of the slices
    whose GM was found whole, if that is elsewhere. Slices that are fine stay where they are, so the
    usual case (cord near the centre) costs one pass."""
    whole = [f.centroid for f in findings if f.found and not f.cut]
    anchor = np.median(np.stack(whole), axis=0) if whole else None
    new = centres.copy()
    for k, f in enumerate(findings):
        if f.cut:
            new[k] = f.centroid
        elif not f.found and anchor is not None:
            new[k] = anchor
    moved = [window_at(a, grid, size) != window_at(b, grid, size) for a, b in zip(centres, new)]
    return new if any(moved) else None


def search_windows(grid: FineGrid, size: tuple[int, int], overlap_px: int = 0) -> list[Window]:
    """Windows of ``size`` tiling the whole fine slice with at least ``overlap_px`` of overlap (the
    tiles are spread evenly, so they usually overlap more). A GM cut by a tile edge is still seen in
    part, and the pass after the search centres the window on it."""
    starts = []
    for ax in range(2):
        m, w = grid.fine_shape[ax], size[ax]
        n = 1 if m <= w else int(np.ceil((m - w) / (w - overlap_px))) + 1
        starts.append(np.unique(np.round(np.linspace(0, m - w, n)).astype(int)))
    return [Window((int(a), int(b)), size) for a in starts[0] for b in starts[1]]


def covers_slice(grid: FineGrid, size: tuple[int, int]) -> bool:
    return size == grid.fine_shape


def strongest_blob(prob: np.ndarray, tiles: list[Window], grid: FineGrid) -> np.ndarray | None:
    """The fine-grid centre of the largest GM blob (> 0.5, 8-connected) in the tiles' predictions of
    one slice (overlaps take the maximum); None when it has fewer than :data:`MIN_GM_PX` pixels."""
    acc = np.zeros(grid.fine_shape, dtype=np.float32)
    for w, p in zip(tiles, prob):
        region = acc[w.origin[0]:w.origin[0] + w.size[0], w.origin[1]:w.origin[1] + w.size[1]]
        np.maximum(region, p, out=region)
    labels, n = ndimage.label(acc > 0.5, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < MIN_GM_PX:
        return None
    return np.asarray(np.nonzero(labels == best)).mean(axis=1)
