"""Image enhancement before segmentation: a noise estimate, denoising, bias-field correction, contrast
enhancement and intensity clipping (the preprocessing named by Perone et al. 2018).

Every function takes a canonical 3D volume (axial slices along axis 2, voxel sizes in mm) and works slice
by slice in-plane (the published networks segment axial slices that are 5-17 mm thick, so nothing is
smoothed across slices), except N4, which fits one smooth 3D field. :func:`apply` runs the steps an
:class:`Enhancement` record asks for, in a fixed order (denoise on the raw noise, then bias, then CLAHE,
then clipping), and returns a report (noise estimate, what ran, seconds) for the sidecar and QC.

Noise is expressed in image units and relative to the image's 99th intensity percentile ("sigma 1 %
of the 99th percentile"), the unit used in docs/robustness.md and by the ``auto`` rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..exceptions import SctGmError
# the record and its constants live at the bottom layer, beside the model recipe that stores them
from ..enhancement import (AUTO_METHOD, AUTO_THRESHOLD_REL, BIAS_METHODS, DENOISE_OPTIONS, DENOISERS,  # noqa: F401
                           NOISE_FLOOR_REL, Enhancement, with_options)

#: MAD -> standard deviation for Gaussian data.
_MAD_TO_SIGMA = 1.0 / 0.6745
#: Foreground for the noise estimate: local mean above this many sigmas (there Rician noise is
#: Gaussian to within a few %, while the background's Rayleigh spread is 0.66 sigma).
_FOREGROUND_SNR = 3.0
#: ... and above this fraction of the 99th percentile: noise is measured in tissue, not in the dim
#: fringe of the air (quantised, often interpolated) where it reads lower than in the cord.
_TISSUE_FRACTION = 0.1
#: Keep this fraction of the foreground with the weakest gradient (edges inflate the estimate).
_FLAT_FRACTION = 0.25
_MIN_COEFFICIENTS = 100


# -- noise estimate ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseEstimate:
    """Noise standard deviation of an image (Gaussian sigma of the underlying complex noise, image
    units) for the volume (median of the slices) and per axial slice (NaN where a slice has too little
    foreground), and the 99th intensity percentile the relative figures are divided by."""

    sigma: float
    per_slice: tuple[float, ...]
    p99: float

    @property
    def relative(self) -> float:
        """sigma / 99th percentile (0.02 means "2 % of the 99th percentile")."""
        return self.sigma / self.p99 if self.p99 > 0 else float("nan")

    @property
    def per_slice_relative(self) -> tuple[float, ...]:
        return tuple(s / self.p99 if self.p99 > 0 else float("nan") for s in self.per_slice)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None), for a sidecar or a QC entry."""
        def r(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 6)
        return {"sigma": r(self.sigma), "sigma_rel_p99": r(self.relative), "p99": r(self.p99),
                "sigma_per_slice": [r(s) for s in self.per_slice],
                "sigma_rel_p99_per_slice": [r(s) for s in self.per_slice_relative]}


def _noise_coefficients(sl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Immerkaer's noise operator (the difference of two Laplacians, [[1,-2,1],[-2,4,-2],[1,-2,1]] / 6,
    i.e. a second difference along each in-plane axis): it cancels any locally bilinear or quadratic-
    along-an-axis signal, and white noise of std sigma comes out with std sigma exactly. Returns the
    coefficients and the local 3x3 means, both on the slice's interior. Hand-written (one separable
    convolution): scipy has no noise estimator and scikit-image's needs PyWavelets for a Haar/db2
    band that leaves more anatomy in (measured: 3.8 % vs 3.2 % on clean t2s_uncropped)."""
    d2 = np.array([1.0, -2.0, 1.0])
    c = ndi.convolve1d(ndi.convolve1d(sl, d2, axis=0), d2, axis=1) / 6.0
    m = ndi.uniform_filter(sl, 3)
    return c[1:-1, 1:-1], m[1:-1, 1:-1]


def _slice_sigma(sl: np.ndarray, tissue: float) -> float:
    """Edge-masked tissue MAD of Immerkaer's operator (Donoho's MAD, restricted to the voxels where
    Rician noise is Gaussian and brighter than ``tissue``, and to the flattest quarter of them so that
    edges do not count as noise); NaN when the slice has too little tissue."""
    if min(sl.shape) < 4:
        return float("nan")
    hh, mean = _noise_coefficients(sl.astype(np.float64))
    grad = ndi.gaussian_gradient_magnitude(mean, 2.0, mode="nearest")
    sigma = float(np.median(np.abs(hh))) * _MAD_TO_SIGMA
    for _ in range(4):
        fg = mean > max(_FOREGROUND_SNR * sigma, tissue)
        if fg.sum() < _MIN_COEFFICIENTS:
            return float("nan")
        g = grad[fg]
        flat = g <= np.quantile(g, _FLAT_FRACTION)
        if flat.sum() < _MIN_COEFFICIENTS // 2:
            return float("nan")
        new = float(np.median(np.abs(hh[fg][flat]))) * _MAD_TO_SIGMA
        if new <= 0 or abs(new - sigma) <= 1e-3 * sigma:
            sigma = new
            break
        sigma = new
    return sigma


def estimate_noise_sigma(volume: np.ndarray) -> NoiseEstimate:
    """Robust noise estimate of a 3D magnitude image, per axial slice (axis 2) and for the volume.

    Measured (docs/robustness.md): within 5 % of the true sigma on a Rician cord phantom at 0.5-5 %
    of the 99th percentile, with or without air around it; on the labelled scans with Rician noise
    added at 2-10 %, within 10 % of the quadrature sum of the added sigma and the scan's own (which
    reads 2.4-3.1 % in tissue). Noise is measured in tissue (> 0.1 x p99), where the network looks.
    A constant or empty image gives sigma 0.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise SctGmError(f"noise estimate: expected a 3D volume, got shape {vol.shape}")
    p99 = float(np.percentile(vol, 99)) if vol.size else 0.0
    tissue = _TISSUE_FRACTION * p99
    per_slice = tuple(_slice_sigma(vol[:, :, k], tissue) for k in range(vol.shape[2]))
    finite = [s for s in per_slice if np.isfinite(s)]
    sigma = float(np.median(finite)) if finite else 0.0
    return NoiseEstimate(sigma=sigma, per_slice=per_slice, p99=p99)


# -- the steps -----------------------------------------------------------------------------------
def _per_slice(volume: np.ndarray, fn: Any) -> np.ndarray:
    out = np.empty(volume.shape, dtype=np.float32)
    for k in range(volume.shape[2]):
        out[:, :, k] = fn(volume[:, :, k])
    return out


def denoise(volume: np.ndarray, method: str, sigma: float, *, strength: float = 1.0) -> np.ndarray:
    """Denoise each axial slice with scikit-image (``sigma``: noise std in image units, e.g. from
    :func:`estimate_noise_sigma`). Parameters were tuned on a Rician cord phantom (bench/robustness.py)."""
    from skimage import restoration as r

    vol = np.asarray(volume, dtype=np.float32)
    if sigma <= 0:
        return vol.copy()
    scale = float(np.percentile(vol, 99)) or 1.0
    s = float(sigma) * strength
    if method == "nlm":
        # 5x5 patches searched 6 px around: ~3 s for 320x320x11 on one core (fast_mode)
        return _per_slice(vol, lambda x: r.denoise_nl_means(x, h=0.8 * s, sigma=float(sigma), patch_size=5,
                                                            patch_distance=6, fast_mode=True,
                                                            preserve_range=True))
    if method == "tv":
        return _per_slice(vol, lambda x: r.denoise_tv_chambolle(x / scale, weight=s / scale) * scale)
    if method == "wavelet":
        import importlib.util

        if importlib.util.find_spec("pywt") is None:  # scikit-image's wavelet denoiser needs it (optional)
            raise SctGmError("denoise 'wavelet' needs PyWavelets: pip install PyWavelets "
                             "(or use denoise 'nlm' or 'tv')")
        return _per_slice(vol, lambda x: r.denoise_wavelet(x, sigma=s, method="BayesShrink", mode="soft",
                                                           rescale_sigma=True))
    if method == "bilateral":
        return _per_slice(vol, lambda x: r.denoise_bilateral(x.astype(np.float64), sigma_color=2.0 * s,
                                                             sigma_spatial=1.5, win_size=7))
    raise SctGmError(f"denoise {method!r}: expected one of {', '.join(DENOISERS[2:])}")


def _foreground(volume: np.ndarray) -> np.ndarray:
    """Tissue (not air): above a tenth of the 99th percentile, holes filled per slice."""
    fg = volume > 0.1 * float(np.percentile(volume, 99))
    return np.stack([ndi.binary_fill_holes(fg[:, :, k]) for k in range(volume.shape[2])], axis=2)


def correct_bias(volume: np.ndarray, zooms_mm: tuple[float, float, float], method: str) -> np.ndarray:
    """Remove a smooth multiplicative intensity field.

    'n4': SimpleITK's N4 (the reference method; optional dependency) on a copy shrunk to ~2 mm in-plane,
    its field applied at full resolution. 'smooth': per slice, divide the foreground by its normalised
    Gaussian average over 20 mm (a field that varies slowly in-plane) and scale every slice to the
    volume's foreground median (the field along the cord)."""
    vol = np.asarray(volume, dtype=np.float32)
    fg = _foreground(vol)
    if not fg.any():
        return vol.copy()
    if method == "smooth":
        out = vol.copy()
        target = float(np.median(vol[fg]))
        for k in range(vol.shape[2]):
            m = fg[:, :, k].astype(np.float32)
            if m.sum() < 16:
                continue
            sig = [20.0 / float(z) for z in zooms_mm[:2]]
            num = ndi.gaussian_filter(vol[:, :, k] * m, sig, mode="nearest")
            den = ndi.gaussian_filter(m, sig, mode="nearest")
            field = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)
            field = np.where(field > 0, field, float(field[m > 0].mean()))
            out[:, :, k] = vol[:, :, k] / field * target
        return out
    if method == "n4":
        try:
            import SimpleITK as sitk  # optional: only 'n4' needs it
        except ImportError:
            raise SctGmError("bias correction 'n4' needs SimpleITK: pip install SimpleITK "
                             "(or use bias correction 'smooth')") from None
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(vol, (2, 1, 0))))
        img.SetSpacing([float(z) for z in zooms_mm])
        mask = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(fg, (2, 1, 0))).astype(np.uint8))
        mask.CopyInformation(img)
        shrink = [max(1, int(round(2.0 / float(z)))) for z in zooms_mm[:2]] + [1]
        small = sitk.Shrink(img, shrink)
        small_mask = sitk.Shrink(mask, shrink)
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations([20, 20, 10])
        n4.Execute(small, small_mask)
        log_field = n4.GetLogBiasFieldAsImage(img)
        field = np.transpose(sitk.GetArrayFromImage(log_field), (2, 1, 0))
        return (vol / np.exp(field)).astype(np.float32)
    raise SctGmError(f"bias correction {method!r}: expected one of {', '.join(BIAS_METHODS[1:])}")


def clahe(volume: np.ndarray, zooms_mm: tuple[float, float, float]) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation per slice (scikit-image), tiles of ~16 mm,
    on intensities clipped to the 0.5-99.5th percentiles; returned on the 0..99.5th-percentile scale."""
    from skimage.exposure import equalize_adapthist

    vol = np.asarray(volume, dtype=np.float32)
    lo, hi = (float(x) for x in np.percentile(vol, [0.5, 99.5]))
    if hi <= lo:
        return vol.copy()
    unit = np.clip((vol - lo) / (hi - lo), 0.0, 1.0)
    kernel = tuple(max(8, int(round(16.0 / float(z)))) for z in zooms_mm[:2])
    return _per_slice(unit, lambda x: equalize_adapthist(x, kernel_size=kernel, clip_limit=0.01)) * hi


def clip(volume: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Clip intensities to two percentiles of the volume (outliers such as bright fat)."""
    lo, hi = np.percentile(volume, percentiles)
    return np.clip(volume, lo, hi).astype(np.float32)


def apply(volume: np.ndarray, zooms_mm: tuple[float, float, float], enhancement: Enhancement, *,
          estimate: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the steps ``enhancement`` asks for on a canonical volume; returns the volume (the input
    object itself when nothing runs: byte-identical, no copy) and a JSON-ready report: the settings,
    the noise estimate of the input (unless ``estimate`` is False and it is not needed), which
    denoiser ran (``auto`` resolved) and seconds per step."""
    report: dict[str, Any] = {"settings": enhancement.to_dict(), "steps": [], "seconds": {}}
    noise = None
    if estimate or enhancement.denoise != "off":
        t0 = time.perf_counter()
        noise = estimate_noise_sigma(volume)
        report["noise"] = noise.to_dict()
        report["seconds"]["noise_estimate"] = round(time.perf_counter() - t0, 3)
    method = enhancement.denoise
    if method == "auto" and noise is not None:
        method = enhancement.auto_method if noise.relative > enhancement.auto_threshold_rel else "off"
    report["denoise"] = method
    if enhancement.is_off or (method == "off" and enhancement.bias == "off" and not enhancement.clahe
                              and enhancement.clip_percentiles is None):
        return volume, report
    out = np.asarray(volume, dtype=np.float32)
    steps: list[tuple[str, Any]] = []
    if method != "off" and noise is not None:
        excess = float(np.sqrt(max(noise.sigma ** 2 - (enhancement.noise_floor_rel * noise.p99) ** 2, 0.0)))
        excess = max(excess, enhancement.min_removed_fraction * noise.sigma)  # '--denoise on': always some
        report["denoise_sigma"] = round(excess, 6)
        steps.append((f"denoise:{method}",
                      lambda v: denoise(v, method, excess, strength=enhancement.strength)))
    if enhancement.bias != "off":
        steps.append((f"bias:{enhancement.bias}", lambda v: correct_bias(v, zooms_mm, enhancement.bias)))
    if enhancement.clahe:
        steps.append(("clahe", lambda v: clahe(v, zooms_mm)))
    if enhancement.clip_percentiles is not None:
        steps.append(("clip", lambda v: clip(v, enhancement.clip_percentiles)))
    for name, fn in steps:
        t0 = time.perf_counter()
        out = fn(out)
        report["steps"].append(name)
        report["seconds"][name] = round(time.perf_counter() - t0, 3)
    return out, report
