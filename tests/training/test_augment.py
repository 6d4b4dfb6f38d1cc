"""Augmentation: identity when switched off, one spatial transform for image and mask, seeded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sctgm.training.augment import AugmentConfig, augment_crops
from sctgm.training.phantom import butterfly_mask


def _pair(h: int = 64, w: int = 56) -> tuple[torch.Tensor, torch.Tensor]:
    _, gm = butterfly_mask((h, w), (h / 2 - 3, w / 2 + 2), 12.0, 0.3)
    img = torch.from_numpy(np.random.default_rng(0).normal(size=(h, w)).astype(np.float32))
    return img, torch.from_numpy(gm.astype(np.float32))


def _run(cfg: AugmentConfig, seed: int, centres: list[tuple[float, float]], out_hw: tuple[int, int],
         img: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(centres)
    return augment_crops([img] * n, [tgt] * n, torch.tensor(centres, dtype=torch.float64), out_hw, cfg, g)


def test_no_augmentation_is_the_identity() -> None:
    img, tgt = _pair()
    centre = ((img.shape[0] - 1) / 2, (img.shape[1] - 1) / 2)
    x, y = _run(AugmentConfig.none(), 0, [centre], tuple(img.shape), img, tgt)
    np.testing.assert_allclose(x[0, 0].numpy(), img.numpy(), atol=1e-5)
    np.testing.assert_allclose(y[0, 0].numpy(), tgt.numpy(), atol=1e-5)


def test_crop_is_taken_around_the_centre() -> None:
    img, tgt = _pair()
    x, _ = _run(AugmentConfig.none(), 0, [(20.0, 30.0)], (16, 16), img, tgt)
    # centre (20, 30) of a 16-pixel crop: rows 20 - 7.5 .. 20 + 7.5, i.e. 12.5 .. 27.5 -> the crop is
    # offset by half a pixel, an average of two neighbours
    want = 0.25 * (img[12:28, 22:38] + img[13:29, 22:38] + img[12:28, 23:39] + img[13:29, 23:39])
    np.testing.assert_allclose(x[0, 0].numpy(), want.numpy(), atol=1e-5)


def test_left_right_flip() -> None:
    img, tgt = _pair()
    cfg = dataclasses.replace(AugmentConfig.none(), flip_p=1.0)
    centre = ((img.shape[0] - 1) / 2, (img.shape[1] - 1) / 2)
    x, y = _run(cfg, 0, [centre], tuple(img.shape), img, tgt)
    np.testing.assert_allclose(x[0, 0].numpy(), img.flip(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(y[0, 0].numpy(), tgt.flip(0).numpy(), atol=1e-5)


def test_image_and_mask_share_the_spatial_transform() -> None:
    _, tgt = _pair()
    cfg = dataclasses.replace(AugmentConfig().spatial_only(), elastic_p=1.0, flip_p=0.5)
    centres = [(30.0, 28.0), (34.0, 25.0), (29.0, 30.0), (31.0, 29.0)]
    # the mask itself as the image: a shared transform gives identical crops
    x, y = _run(cfg, 3, centres, (48, 48), tgt.clone(), tgt)
    assert float(y.sum()) > 100  # the GM is in the crops
    assert not torch.allclose(y[0], y[1])  # and the crops differ from one another
    np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-6)


def test_seeded_and_seed_dependent() -> None:
    img, tgt = _pair()
    cfg = dataclasses.replace(AugmentConfig(), elastic_p=1.0, gamma_p=1.0, bias_p=1.0, noise_p=1.0, blur_p=0.5,
                              lowres_p=0.5)
    centres = [(32.0, 28.0)] * 3
    a = _run(cfg, 7, centres, (40, 40), img, tgt)
    b = _run(cfg, 7, centres, (40, 40), img, tgt)
    c = _run(cfg, 8, centres, (40, 40), img, tgt)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0])
    assert torch.isfinite(a[0]).all()
    assert float(a[1].min()) >= 0.0 and float(a[1].max()) <= 1.0


def test_intensity_augmentation_leaves_the_mask_alone() -> None:
    img, tgt = _pair()
    spatial = AugmentConfig().spatial_only()
    full = dataclasses.replace(spatial, gamma_p=1.0, bias_p=1.0, noise_p=1.0, contrast=0.2, brightness=0.2)
    x0, y0 = _run(spatial, 5, [(32.0, 28.0)], (40, 40), img, tgt)
    x1, y1 = _run(full, 5, [(32.0, 28.0)], (40, 40), img, tgt)
    assert torch.equal(y0, y1)
    assert not torch.allclose(x0, x1)


def test_rician_copies_add_noise_of_the_asked_sigma_and_are_seeded():
    import numpy as np

    from sctgm.training.augment import rician_copies
    base = np.full((120, 120), 4.0, dtype=np.float32)
    base[:, :20] = -1.0  # the window's minimum: signal 5 above it elsewhere (Rician ~ Gaussian there)
    noisy = rician_copies([base], 0.2, seed=3)[0]
    assert noisy.dtype == np.float32 and noisy.shape == base.shape
    assert abs(float((noisy - base)[:, 20:].std()) - 0.2) < 0.02
    assert abs(float((noisy - base)[:, 20:].mean())) < 0.02  # no Rician bias at high signal
    assert np.array_equal(rician_copies([base], 0.2, seed=3)[0], noisy)
    assert not np.array_equal(rician_copies([base], 0.2, seed=4)[0], noisy)


def _lag1_correlation(field: torch.Tensor) -> float:
    """Correlation of a (h, w) field with itself shifted by one pixel along each axis (mean of the two)."""
    f = field - field.mean()
    a = float((f[1:, :] * f[:-1, :]).mean() / f.var(unbiased=False))
    b = float((f[:, 1:] * f[:, :-1]).mean() / f.var(unbiased=False))
    return (a + b) / 2


def test_noise_grain_makes_the_noise_of_a_coarser_scan_and_leaves_other_recipes_unchanged() -> None:
    """With ``noise_grain_px`` the noise is what a 0.5-0.9 mm scan's own noise looks like on the 0.25 mm
    grid (neighbouring pixels correlated), at the same s.d.; without it, white, and the random stream of
    a recipe without grain is the one it always was (large-robust's training stays reproducible)."""
    from sctgm.training.augment import intensity

    flat = torch.zeros(4, 1, 96, 96)
    only_noise = dataclasses.replace(AugmentConfig.none(), noise_p=1.0, noise_std=0.3, rician=False)
    white = intensity(flat, only_noise, torch.Generator().manual_seed(3))
    grained = intensity(flat, dataclasses.replace(only_noise, noise_grain_px=4.0), torch.Generator().manual_seed(3))
    for k in range(4):
        assert abs(_lag1_correlation(white[k, 0])) < 0.1
        assert _lag1_correlation(grained[k, 0]) > 0.5
        # same s.d. per crop: the drawn noise_sd, white or grained
        assert float(grained[k, 0].std()) == pytest.approx(float(white[k, 0].std()), rel=0.02)
    # the recipes without grain draw exactly what they drew before the option existed: these sums were
    # recorded with sct-gm at b06e863 (before noise_grain_px), on the same input and seed
    from sctgm.training.augment import ROBUST

    ramp = torch.linspace(-2, 2, 4 * 64 * 64).reshape(4, 1, 64, 64)
    robust = intensity(ramp, ROBUST, torch.Generator().manual_seed(11))
    standard = intensity(ramp, AugmentConfig(), torch.Generator().manual_seed(11))
    assert float(robust.double().abs().sum()) == pytest.approx(16686.85643843934, rel=1e-6)
    assert float(standard.double().abs().sum()) == pytest.approx(16328.583970986307, rel=1e-6)
    with_grain = intensity(ramp, dataclasses.replace(ROBUST, noise_grain_px=2.0), torch.Generator().manual_seed(11))
    assert float(with_grain.double().abs().sum()) != pytest.approx(16686.85643843934, rel=1e-6)
