"""In-plane resampling to the network's grid (the model's ``spacing_mm``, 0.25 mm for the published
models) and back, one window at a time.

The fine grid follows the reference implementation (SCT's ``resample_nib``): per in-plane axis, the
fine size is ``m = round(n * zoom_mm / spacing_mm)`` and fine voxel ``j`` sits where native voxel
``j * n / m`` sits (voxel 0 keeps its position, the voxel size scales by ``n / m``). Values are linear
interpolations with edge replication outside the image (``mode='nearest'``). The slice axis is
never resampled.

Back to the native grid, two rules (the model's ``Preprocessing.to_native``): ``"linear"`` (the reference's:
linear interpolation at each native voxel's centre, :func:`window_to_native`) and ``"area"`` (the mean
over each native voxel's footprint, :func:`window_area_to_native`: of a thresholded mask, the fraction
of the voxel the network's GM covers).

Only the windows the network needs are computed, with ``scipy.ndimage.affine_transform`` and a
diagonal matrix, so the whole fine volume (4x the native pixels) is never held in memory, and going
back touches only the native voxels a window can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..recipe import DEFAULT_TO_NATIVE, TO_NATIVE_RULES

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


def _footprint_weights(origin: int, size: int, n_fine: int, n_native: int) -> tuple[slice, np.ndarray]:
    """Along one in-plane axis: the native voxels whose footprint meets a window of ``size`` fine
    pixels at ``origin``, and the (voxels x window pixels) weights that average a fine slice (zero
    outside the window) over each voxel's footprint. Native voxel ``i`` covers the fine interval
    ``[(i - 1/2) r, (i + 1/2) r]``, ``r = n_fine / n_native`` (the grid convention above); fine pixel
    ``j`` covers ``[j - 1/2, j + 1/2]``; what lies beyond the fine slice counts as its edge pixel (the
    linear rule's edge replication)."""
    r = n_fine / n_native
    lo = 0 if origin == 0 else max(0, int(np.floor((origin - 0.5) / r - 0.5)))
    hi = n_native if origin + size >= n_fine else min(n_native, int(np.ceil((origin + size - 0.5) / r + 0.5)) + 1)
    i = np.arange(lo, hi, dtype=np.float64)[:, None]
    a, b = (i - 0.5) * r, (i + 0.5) * r
    j = np.arange(origin, origin + size, dtype=np.float64)[None, :]
    covered = np.clip(np.minimum(b, j + 0.5) - np.maximum(a, j - 0.5), 0.0, None)
    if origin == 0:
        covered[:, 0] += np.clip(np.minimum(b, -0.5) - a, 0.0, None)[:, 0]
    if origin + size >= n_fine:
        covered[:, -1] += np.clip(b - np.maximum(a, n_fine - 0.5), 0.0, None)[:, 0]
    return slice(lo, hi), covered / r


def window_area_to_native(values: np.ndarray, grid: FineGrid,
                          window: Window) -> tuple[tuple[slice, slice], np.ndarray]:
    """Fine-grid ``values`` covering ``window`` (zero elsewhere on the fine grid) averaged over each
    native voxel's footprint (the ``"area"`` rule); same return as :func:`window_to_native`.

    Of a thresholded mask this is the fraction of each native voxel the GM covers, so ``>= 0.5`` keeps
    the voxels mostly GM, as a rater marks a coarse voxel. Linear interpolation at the voxel centre
    samples only +-1 fine pixel of it, which misses most of a coarse voxel (an 0.84 mm voxel spans 3.4
    pixels of 0.25 mm). Written here because the footprints fall on fractional pixels, which scipy's and
    scikit-image's resamplers (point samples, Gaussian anti-aliasing, integer block means) do not
    average exactly; it is two small matrix products per window.
    """
    (box0, w0), (box1, w1) = (_footprint_weights(window.origin[ax], window.size[ax], grid.fine_shape[ax],
                                                 grid.native_shape[ax]) for ax in range(2))
    out = w0 @ np.asarray(values, dtype=np.float64) @ w1.T
    return (box0, box1), out.astype(np.float32)


def to_native(values: np.ndarray, grid: FineGrid, window: Window,
              rule: str = DEFAULT_TO_NATIVE) -> tuple[tuple[slice, slice], np.ndarray]:
    """``values`` of ``window`` back on the native slice by ``rule`` (:data:`TO_NATIVE_RULES`)."""
    if rule == "area":
        return window_area_to_native(values, grid, window)
    if rule != "linear":
        raise ValueError(f"rule back to the native grid {rule!r}: expected one of {', '.join(TO_NATIVE_RULES)}")
    return window_to_native(values, grid, window)


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
