"""Training augmentation on batches of 2D slices, in torch, deterministic under a ``torch.Generator``.

The spatial part (crop placement + shift, rotation, scale, optional left-right flip, elastic
deformation) is one sampling grid per crop and one ``grid_sample`` call, so image and mask get the
same transform and are interpolated once. The intensity part (gamma contrast, multiplicative bias
field, Gaussian blur, resolution loss, Gaussian or Rician noise, brightness/contrast jitter) acts on
the image only.

Why hand-written on torch rather than TorchIO / MONAI / kornia: the crops are 2D, small (a batch of
4 x 200 x 200), and sampled out of larger per-slice windows; TorchIO works per 3D subject through
SimpleITK, MONAI's dictionary transforms per sample, and both would add a large dependency for a
dozen lines of ``affine_grid``-style arithmetic. torch's ``grid_sample`` / ``conv2d`` /
``interpolate`` are well kept and already installed; the whole augmentation of a batch costs well
under 10 % of a training step on a CPU (bench/train_speed.py prints the share). Every random draw
takes the generator explicitly: no global RNG state is read or changed.

Coordinates: pixel (i, j) of a slice, i along array axis 0 (canonical R->L), j along axis 1 (P->A).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges and probabilities of each augmentation (a probability 0 switches it off).

    Spatial: ``shift_px`` (uniform +-, in 0.25 mm fine pixels), ``rotation_deg`` (uniform +-),
    ``scale`` (log-uniform in [1/s, s]), ``flip_p`` (left-right: array axis 0), ``elastic_p`` with
    ``elastic_px`` (displacement s.d. at control points spaced ``elastic_grid_px`` apart).
    Intensity (on standardised images): ``gamma`` (log-uniform in [1/g, g] on the min-max normalised
    crop), ``bias_p`` with ``bias_strength`` (log-gain s.d. of a smooth field), ``blur_p`` with
    ``blur_sigma_px`` (max), ``lowres_p`` with ``lowres_factor`` (max down-sampling factor),
    ``noise_p`` with ``noise_std`` (max, in standardised units), ``rician`` (magnitude noise instead
    of Gaussian), ``noise_grain_px`` (max grain: the noise is drawn on a grid up to this many fine
    pixels apart and interpolated, as a scan's own noise is when the pipeline resamples a 0.5-0.9 mm
    image to 0.25 mm; 1: white per fine pixel), ``contrast`` / ``brightness`` (multiplicative +-,
    additive +-).
    Validation: ``val_noise_std`` adds, for each value, a copy of every validation window with Rician
    noise of that s.d. (standardised units, seeded), so that the best model and the threshold are
    chosen on clean and noisy slices alike (the robust recipe; clean-only validation would stop it
    early, before it learns the noise).
    """

    shift_px: float = 16.0
    rotation_deg: float = 20.0
    scale: float = 1.15
    flip_p: float = 0.0
    elastic_p: float = 0.3
    elastic_px: float = 2.0
    elastic_grid_px: int = 32
    gamma: float = 1.4
    gamma_p: float = 0.5
    bias_p: float = 0.3
    bias_strength: float = 0.2
    blur_p: float = 0.1
    blur_sigma_px: float = 1.5
    lowres_p: float = 0.1
    lowres_factor: float = 2.0
    noise_p: float = 0.3
    noise_std: float = 0.1
    rician: bool = True
    noise_grain_px: float = 1.0
    contrast: float = 0.1
    brightness: float = 0.1
    val_noise_std: tuple[float, ...] = ()

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (the crop is taken where asked)."""
        return cls(shift_px=0.0, rotation_deg=0.0, scale=1.0, flip_p=0.0, elastic_p=0.0, gamma_p=0.0, bias_p=0.0,
                   blur_p=0.0, lowres_p=0.0, noise_p=0.0, contrast=0.0, brightness=0.0)

    def spatial_only(self) -> AugmentConfig:
        return replace(self, gamma_p=0.0, bias_p=0.0, blur_p=0.0, lowres_p=0.0, noise_p=0.0, contrast=0.0,
                       brightness=0.0)


#: The recipe ``sct-gm train --augment robust`` uses (``large-robust`` was trained with it): the
#: standard kinds, with noise, bias field, blur and resolution loss drawn far more often and
#: stronger. Noise: up to 0.25 standardised units, 5-9 % of the 99th percentile on the ../shared
#: volumes (1 % of p99 is 0.029-0.047 units of their window standardisation); bias: log-gain s.d.
#: 0.35 at the control points (gains of about x0.5-x2 across a crop). Validation adds copies of the
#: validation windows with noise of 0.15 and 0.35 (about 3.5 % and 8 % of p99 on gm_challenge_2018's
#: sub-9584). At 0.08 and 0.16 the published weights were as good as the robust ones and selection kept
#: the first model; at 0.15/0.35 the pooled Dice still fell over the first 27 steps, so large-robust
#: itself was trained with no validation (val_fraction 0) and judged on held-out scans. See docs/train.md.
ROBUST = AugmentConfig(noise_p=0.7, noise_std=0.25, bias_p=0.6, bias_strength=0.35, blur_p=0.25,
                       lowres_p=0.25, gamma_p=0.5, contrast=0.15, brightness=0.15, val_noise_std=(0.15, 0.35))

#: Named recipes for ``sct-gm train --augment`` (``standard`` is the default).
PRESETS: dict[str, AugmentConfig] = {"standard": AugmentConfig(), "robust": ROBUST, "none": AugmentConfig.none()}


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """Bernoulli(p) draws; always consumes the generator so the stream does not depend on p."""
    return torch.rand(n, generator=g) < p


def sampling_grid(centres_px: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int],
                  cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """The ``grid_sample`` grid (B, h, w, 2) that crops ``out_hw`` around each centre (B, 2; input
    pixel coordinates, the shift added here) of an input of ``in_hw``, rotated, scaled, flipped and
    elastically deformed about that centre."""
    b = centres_px.shape[0]
    h, w = out_hw
    shift = _uniform(2 * b, -cfg.shift_px, cfg.shift_px, g).view(b, 2)
    angle = torch.deg2rad(_uniform(b, -cfg.rotation_deg, cfg.rotation_deg, g))
    log_s = math.log(max(cfg.scale, 1.0))
    scale = torch.exp(_uniform(b, -log_s, log_s, g))
    flip = _coin(b, cfg.flip_p, g).to(torch.float64) * -2 + 1  # -1: mirror array axis 0
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    # output pixel offsets from the crop centre, (h*w, 2)
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64) - (h - 1) / 2,
                            torch.arange(w, dtype=torch.float64) - (w - 1) / 2, indexing="ij")
    di, dj = ii.reshape(1, -1) * flip[:, None], jj.reshape(1, -1)
    src_i = cos[:, None] * di - sin[:, None] * dj
    src_j = sin[:, None] * di + cos[:, None] * dj
    disp = elastic_displacement(b, out_hw, cfg, g).reshape(b, 2, -1)
    centre = centres_px.to(torch.float64) + shift
    src_i = src_i + disp[:, 0] + centre[:, 0:1]
    src_j = src_j + disp[:, 1] + centre[:, 1:2]
    # grid_sample (align_corners=False): x is the last axis (j), y the first (i); pixel p of n sits at
    # (2p + 1) / n - 1
    gx = (2 * src_j + 1) / in_hw[1] - 1
    gy = (2 * src_i + 1) / in_hw[0] - 1
    return torch.stack([gx, gy], dim=-1).view(b, h, w, 2).to(torch.float32)


def elastic_displacement(b: int, out_hw: tuple[int, int], cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Smooth random displacements (B, 2, h, w) in pixels: Gaussian at control points every
    ``elastic_grid_px``, cubic-interpolated; zero for the crops the coin leaves undeformed."""
    h, w = out_hw
    gh, gw = max(2, math.ceil(h / cfg.elastic_grid_px) + 1), max(2, math.ceil(w / cfg.elastic_grid_px) + 1)
    on = _coin(b, cfg.elastic_p, g)
    ctrl = torch.randn(b, 2, gh, gw, generator=g, dtype=torch.float64) * cfg.elastic_px
    ctrl = ctrl * on.view(b, 1, 1, 1)
    if not bool(on.any()):
        return torch.zeros(b, 2, h, w, dtype=torch.float64)
    return F.interpolate(ctrl, size=(h, w), mode="bicubic", align_corners=True)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, h, w), edges replicated."""
    k = _gaussian_kernel(sigma)
    r = k.numel() // 2
    img = F.conv2d(F.pad(img, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return F.conv2d(F.pad(img, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))


def _grained(noise: torch.Tensor, grain_px: float) -> torch.Tensor:
    """(1, c, h, w) unit-variance white noise made ``grain_px`` fine pixels coarse: its first values
    laid on a grid that many pixels apart, interpolated bilinearly and scaled back to unit variance
    (the noise of a coarser scan after the in-plane resampling); unchanged at 1."""
    if grain_px <= 1.0:
        return noise
    h, w = noise.shape[-2:]
    coarse = noise[..., :max(2, round(h / grain_px)), :max(2, round(w / grain_px))]
    fine = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return fine / fine.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)


def intensity(images: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """The intensity augmentations of (B, 1, h, w) standardised crops (a new tensor). Every
    parameter is drawn for every crop whether used or not, so the random stream is fixed."""
    b, _, h, w = images.shape
    out = images.clone()
    log_g = math.log(max(cfg.gamma, 1.0))
    gamma = torch.exp(_uniform(b, -log_g, log_g, g))
    do_gamma = _coin(b, cfg.gamma_p, g)
    do_bias = _coin(b, cfg.bias_p, g)
    bias_ctrl = torch.randn(b, 1, 3, 3, generator=g) * cfg.bias_strength
    do_blur = _coin(b, cfg.blur_p, g)
    sigma = _uniform(b, 0.5, max(cfg.blur_sigma_px, 0.5), g)
    do_lowres = _coin(b, cfg.lowres_p, g)
    factor = _uniform(b, 1.0, max(cfg.lowres_factor, 1.0), g)
    do_noise = _coin(b, cfg.noise_p, g)
    noise_sd = _uniform(b, 0.0, cfg.noise_std, g)
    noise = torch.randn(b, 2, h, w, generator=g)
    contrast = 1 + _uniform(b, -cfg.contrast, cfg.contrast, g)
    brightness = _uniform(b, -cfg.brightness, cfg.brightness, g)
    # drawn only when asked for, so that the random stream of every other recipe is unchanged
    grain = _uniform(b, 1.0, cfg.noise_grain_px, g) if cfg.noise_grain_px > 1.0 else torch.ones(b, dtype=torch.float64)
    for k in range(b):
        x = out[k:k + 1]
        nk = _grained(noise[k:k + 1], float(grain[k])) if do_noise[k] else noise[k:k + 1]
        lo, hi = x.min(), x.max()
        span = torch.clamp(hi - lo, min=1e-6)
        if do_gamma[k] or do_bias[k] or (do_noise[k] and cfg.rician):
            u = (x - lo) / span  # in [0, 1], magnitude-like
            if do_gamma[k]:
                u = u ** float(gamma[k])
            if do_bias[k]:
                u = u * torch.exp(F.interpolate(bias_ctrl[k:k + 1], size=(h, w), mode="bicubic", align_corners=True))
            if do_noise[k] and cfg.rician:
                sd = float(noise_sd[k]) / float(span)  # standardised units -> [0, 1] units
                u = torch.sqrt((u + sd * nk[:, 0:1]) ** 2 + (sd * nk[:, 1:2]) ** 2)
            x = u * span + lo
        if do_blur[k]:
            x = _blur(x, float(sigma[k]))
        if do_lowres[k] and float(factor[k]) > 1.01:
            small = (max(2, round(h / float(factor[k]))), max(2, round(w / float(factor[k]))))
            x = F.interpolate(F.interpolate(x, size=small, mode="area"), size=(h, w), mode="bilinear",
                              align_corners=False)
        if do_noise[k] and not cfg.rician:
            x = x + float(noise_sd[k]) * nk[:, 0:1]
        out[k:k + 1] = x * float(contrast[k]) + float(brightness[k])
    return out


def augment_crops(images: list[torch.Tensor], targets: list[torch.Tensor], centres_px: torch.Tensor,
                  out_hw: tuple[int, int], cfg: AugmentConfig, g: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of ``out_hw`` around ``centres_px`` (B, 2) of each (H_k, W_k) image and target, with
    the spatial and intensity augmentations of ``cfg``. Returns (B, 1, h, w) images and targets.
    Images are sampled with edge replication (as segment's windows are), targets with zeros outside."""
    b = len(images)
    xs, ys = [], []
    # one grid per crop (inputs may differ in size); the random draws are made for the whole batch
    grids = [sampling_grid(centres_px[k:k + 1], tuple(images[k].shape), out_hw, cfg, g) for k in range(b)]
    for k in range(b):
        img, tgt = images[k][None, None], targets[k][None, None]
        xs.append(F.grid_sample(img, grids[k], mode="bilinear", padding_mode="border", align_corners=False))
        ys.append(F.grid_sample(tgt, grids[k], mode="bilinear", padding_mode="zeros", align_corners=False))
    x, y = torch.cat(xs), torch.cat(ys)
    return intensity(x, cfg, g), y.clamp_(0.0, 1.0)


def rician_copies(images: Sequence[np.ndarray], sigma_std: float, seed: int) -> list[np.ndarray]:
    """Copies of standardised (H, W) windows with Rician noise of s.d. ``sigma_std`` (standardised
    units), added to the window's magnitude as :func:`intensity` adds it; seeded, float32."""
    rng = np.random.default_rng(seed)
    out = []
    for x in images:
        lo = float(x.min())
        real = x.astype(np.float64) - lo + rng.normal(0.0, sigma_std, x.shape)
        imag = rng.normal(0.0, sigma_std, x.shape)
        out.append((np.sqrt(real * real + imag * imag) + lo).astype(np.float32))
    return out
