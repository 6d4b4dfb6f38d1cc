"""In-plane resampling to the network's grid (the model's ``spacing_mm``, 0.25 mm for the published
models) and back, one window at a time.

The fine grid follows the reference implementation (SCT's ``resample_nib``): per in-plane axis, the
fine size is ``m = round(n * zoom_mm / spacing_mm)`` and fine voxel ``j`` sits where native voxel
``j * n / m`` sits (voxel 0 keeps its position, the voxel size scales by ``n / m``). Values are linear
interpolations with edge replication outside the image (``mode='nearest'``). The slice axis is
never resampled.

Only the windows the network needs are computed, with ``scipy.ndimage.affine_transform`` and a
diagonal matrix, so the whole fine volume (4x the native pixels) is never held in memory, and going
back touches only the native voxels a window can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

@dataclass(frozen=True)
class FineGrid:
    """The network's in-plane grid of a canonical (LAS) volume ("fine": 0.25 mm for the published models)."""

    native_shape: tuple[int, int, int]
    fine_shape: tuple[int, int]

    @property
    def native_per_fine(self) -> tuple[float, float]:
        """Native voxel index per fine voxel index, along axes 0 and 1."""
        return (self.native_shape[0] / self.fine_shape[0], self.native_shape[1] / self.fine_shape[1])

    def fine_affine(self, native_affine: np.ndarray) -> np.ndarray:
        """Affine of the fine grid (same slices, in-plane voxels scaled)."""
        s0, s1 = self.native_per_fine
        return native_affine @ np.diag([s0, s1, 1.0, 1.0])


def fine_grid(native_shape: tuple[int, int, int], zooms_mm: tuple[float, float, float],
              spacing_mm: float) -> FineGrid:
    """The grid of ``spacing_mm`` pixels over a canonical volume of ``native_shape`` and ``zooms_mm``."""
    m = tuple(max(1, int(round(n * z / spacing_mm))) for n, z in zip(native_shape[:2], zooms_mm[:2]))
    return FineGrid(tuple(int(n) for n in native_shape), m)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Window:
    """A rectangle of the fine grid: origin (fine voxel index of its corner) and size, per slice."""

    origin: tuple[int, int]
    size: tuple[int, int]


def sample_window(native_slice: np.ndarray, grid: FineGrid, window: Window) -> np.ndarray:
    """The fine-grid values of ``window`` from one native (canonical) slice, float32."""
    s0, s1 = grid.native_per_fine
    return ndimage.affine_transform(
        np.asarray(native_slice, dtype=np.float32), matrix=[s0, s1],
        offset=[s0 * window.origin[0], s1 * window.origin[1]],
        output_shape=window.size, order=1, mode="nearest", prefilter=False,
    )


def window_to_native(values: np.ndarray, grid: FineGrid, window: Window) -> tuple[tuple[slice, slice], np.ndarray]:
    """Resample fine-grid ``values`` covering ``window`` (zero elsewhere on the fine grid) back onto
    the native slice. Returns the native in-plane box it reaches and the values there (float32);
    native voxels outside the box are exactly 0.

    Equivalent to pasting the window into a zero fine slice and resampling that whole slice back
    linearly with edge replication, which is what the reference does.
    """
    s = grid.native_per_fine
    pads, box, offset = [], [], []
    for ax in range(2):
        o, w, m, n = window.origin[ax], window.size[ax], grid.fine_shape[ax], grid.native_shape[ax]
        # native voxels whose fine position lies within one fine voxel of the window can be non-zero
        lo = max(0, int(np.floor((o - 1) * s[ax])))
        hi = min(n, int(np.ceil((o + w) * s[ax])) + 1)
        box.append(slice(lo, hi))
        # one voxel of zeros where the fine slice continues beyond the window; none where the window
        # meets the fine slice's border, so that mode='nearest' replicates the edge there as the
        # full-slice resampling would
        pads.append((0 if o == 0 else 1, 0 if o + w == m else 1))
        offset.append(lo / s[ax] - o + pads[-1][0])
    padded = np.pad(values.astype(np.float32, copy=False), pads, mode="constant")
    out = ndimage.affine_transform(
        padded, matrix=[1 / s[0], 1 / s[1]], offset=offset,
        output_shape=(box[0].stop - box[0].start, box[1].stop - box[1].start),
        order=1, mode="nearest", prefilter=False,
    )
    return (box[0], box[1]), out


def overlap(reference: Window, other: Window) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Where two windows of one slice overlap: (the slices of ``other``'s array, the slices of
    ``reference``'s array) that cover the same fine pixels."""
    src, dst = [], []
    for ax in range(2):
        a = other.origin[ax] - reference.origin[ax]
        lo, hi = max(0, -a), min(other.size[ax], reference.size[ax] - a)
        src.append(slice(lo, hi))
        dst.append(slice(lo + a, hi + a))
    return (src[0], src[1]), (dst[0], dst[1])
