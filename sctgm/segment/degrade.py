"""Synthetic degradations of a canonical 3D volume (axial slices along axis 2): Rician noise of a
chosen sigma relative to the 99th intensity percentile, and a smooth multiplicative bias field. Used
to measure robustness (bench/robustness.py) and as training augmentation; seeded, never global state."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def add_rician_noise(volume: np.ndarray, sigma_rel: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the volume plus complex Gaussian noise of std ``sigma_rel`` x the volume's 99th
    percentile in each channel (Rician noise, as in a magnitude MR image); float32."""
    vol = np.asarray(volume, dtype=np.float64)
    sigma = float(sigma_rel) * float(np.percentile(vol, 99))
    real = vol + rng.normal(0.0, sigma, vol.shape)
    imag = rng.normal(0.0, sigma, vol.shape)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def smooth_bias_field(shape: tuple[int, int, int], zooms_mm: tuple[float, float, float],
                      rng: np.random.Generator,
                      *, in_plane: tuple[float, float] = (0.5, 1.5), along: tuple[float, float] = (0.8, 1.2),
                      scale_mm: float = 40.0, field_of_view_mm: float = 160.0) -> np.ndarray:
    """A smooth multiplicative field: in-plane, Gaussian-smoothed noise (correlation ~``scale_mm``)
    rescaled to span ``in_plane`` over a ``field_of_view_mm`` square (or the slice, if larger) centred
    on the image, so that a small crop sees only its part of a head-and-neck-sized field; times a
    factor per slice that varies linearly from one end of ``along`` to the other in a random
    direction. float32, shape ``shape``."""
    nx, ny, nz = shape
    extent = [max(n * float(z), field_of_view_mm) for n, z in zip((nx, ny), zooms_mm[:2])]
    # smooth on a coarse 2 mm grid over the whole extent, normalise there, then sample the image's part
    coarse = [max(2, int(round(e / 2.0))) for e in extent]
    f = ndi.gaussian_filter(rng.normal(size=coarse), scale_mm / 2.0, mode="wrap")
    f = (f - f.min()) / (np.ptp(f) or 1.0)
    f = in_plane[0] + f * (in_plane[1] - in_plane[0])
    # voxel centres of the image in coarse-grid coordinates (image centred in the extent)
    cx = ((np.arange(nx) - (nx - 1) / 2.0) * float(zooms_mm[0]) + extent[0] / 2.0) / 2.0 - 0.5
    cy = ((np.arange(ny) - (ny - 1) / 2.0) * float(zooms_mm[1]) + extent[1] / 2.0) / 2.0 - 0.5
    gx, gy = np.meshgrid(cx, cy, indexing="ij")
    f = ndi.map_coordinates(f, [gx, gy], order=1, mode="nearest")
    t = np.linspace(0.0, 1.0, nz) if nz > 1 else np.full(1, 0.5)
    if rng.random() < 0.5:
        t = t[::-1]
    z = along[0] + t * (along[1] - along[0])
    return (f[:, :, None] * z[None, None, :]).astype(np.float32)
