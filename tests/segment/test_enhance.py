"""Enhancement before segmentation: the noise estimate, the denoisers, apply() and its record."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from sctgm.exceptions import SctGmError
from sctgm.segment import enhance
from sctgm.segment.degrade import add_rician_noise, smooth_bias_field

ZOOMS = (0.5, 0.5, 7.5)


def cord_phantom(n: int = 128, slices: int = 4, seed: int = 0) -> np.ndarray:
    """Air around a textured neck, bright CSF around a cord with a brighter GM butterfly; 0.5 mm pixels."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[:n, :n] - n / 2) * 0.5
    vol = np.zeros((n, n, slices), np.float32)
    for k in range(slices):
        texture = 1 + 0.6 * ndi.gaussian_filter(rng.normal(size=(n, n)), 8)
        body = ((x / 28) ** 2 + (y / 22) ** 2 < 1) * 0.35 * texture
        cord = (x / 5.5) ** 2 + (y / 4.2) ** 2 < 1
        horns = (np.abs(np.abs(x) - 2)) ** 2 + ((y - 1) / 3.5) ** 2 < 1
        gm = cord & (((np.abs(x) / 3.5) ** 2 + (y / 2.5) ** 2 < 1) | horns)
        s = np.where((x / 7.5) ** 2 + (y / 6) ** 2 < 1, 1.0, body)
        s = np.where(cord, 0.55, s)
        vol[:, :, k] = ndi.gaussian_filter(np.where(gm, 0.75, s), 0.7) * 200
    return vol


@pytest.mark.parametrize("sigma_rel", [0.01, 0.02, 0.03, 0.05])
@pytest.mark.parametrize("crop", [False, True])
def test_noise_estimate_within_20_percent_on_rician_phantom(sigma_rel: float, crop: bool) -> None:
    clean = cord_phantom()
    true_sigma = sigma_rel * float(np.percentile(clean, 99))
    noisy = add_rician_noise(clean, sigma_rel, np.random.default_rng(1))
    if crop:  # a tight crop around the cord: no air, mostly edges
        noisy = noisy[40:88, 40:88]
    est = enhance.estimate_noise_sigma(noisy)
    assert est.sigma == pytest.approx(true_sigma, rel=0.2)
    assert len(est.per_slice) == noisy.shape[2]
    assert all(s == pytest.approx(true_sigma, rel=0.3) for s in est.per_slice)
    assert est.relative == pytest.approx(est.sigma / np.percentile(noisy, 99))


def test_noise_estimate_on_real_scan_adds_up(shared_data) -> None:
    """Rician noise added to t2s_uncropped: the estimate is the quadrature sum of the added sigma and
    the scan's own (within 20 %), and the added sigma alone once it dominates."""
    import nibabel as nib

    path = shared_data / "sct_testing_data/t2s/t2s_uncropped.nii.gz"
    data = np.asarray(nib.load(str(path)).get_fdata(), np.float32)
    p99 = float(np.percentile(data, 99))
    own = enhance.estimate_noise_sigma(data).sigma
    assert 0.005 * p99 < own < 0.06 * p99
    for k, rel in enumerate((0.02, 0.03, 0.05, 0.10)):
        est = enhance.estimate_noise_sigma(add_rician_noise(data, rel, np.random.default_rng(k))).sigma
        assert est == pytest.approx(np.hypot(rel * p99, own), rel=0.2)
        if rel >= 0.1:
            assert est == pytest.approx(rel * p99, rel=0.2)


def test_noise_estimate_of_flat_or_empty_image_is_zero() -> None:
    assert enhance.estimate_noise_sigma(np.zeros((20, 20, 2), np.float32)).sigma == 0.0
    assert enhance.estimate_noise_sigma(np.full((20, 20, 2), 5.0, np.float32)).sigma == 0.0
    with pytest.raises(SctGmError, match="3D"):
        enhance.estimate_noise_sigma(np.zeros((20, 20), np.float32))


@pytest.mark.parametrize("method", ["nlm", "tv", "wavelet", "bilateral"])
def test_each_denoiser_reduces_error_against_the_clean_phantom(method: str) -> None:
    if method == "wavelet":
        pytest.importorskip("pywt", reason="denoise 'wavelet' needs the optional PyWavelets")
    clean = cord_phantom(slices=2)
    noisy = add_rician_noise(clean, 0.03, np.random.default_rng(2))
    sigma = enhance.estimate_noise_sigma(noisy).sigma
    out = enhance.denoise(noisy, method, sigma)
    tissue = clean > 0.1 * np.percentile(clean, 99)
    err_before = np.sqrt(np.mean((noisy - clean)[tissue] ** 2))
    err_after = np.sqrt(np.mean((out - clean)[tissue] ** 2))
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert err_after < 0.8 * err_before


@pytest.mark.parametrize("method", ["smooth", "n4"])
def test_bias_correction_flattens_a_smooth_field(method: str) -> None:
    if method == "n4":
        pytest.importorskip("SimpleITK")
    clean = cord_phantom(n=96, slices=4)
    field = smooth_bias_field(clean.shape, ZOOMS, np.random.default_rng(3), field_of_view_mm=48.0)
    out = enhance.correct_bias(clean * field, ZOOMS, method)
    tissue = clean > 0.1 * np.percentile(clean, 99)
    cv = lambda r: float(np.std(r) / np.mean(r))  # noqa: E731 - spread of the residual field
    assert cv(out[tissue] / clean[tissue]) < 0.8 * cv(field[tissue])


def test_apply_off_is_an_exact_no_op() -> None:
    vol = add_rician_noise(cord_phantom(slices=2), 0.05, np.random.default_rng(4))
    before = vol.tobytes()
    out, report = enhance.apply(vol, ZOOMS, enhance.Enhancement())
    assert out is vol and out.tobytes() == before
    assert report["denoise"] == "off" and report["steps"] == []
    assert report["noise"]["sigma_rel_p99"] == pytest.approx(0.05, rel=0.2)


def test_apply_auto_denoises_only_above_the_threshold() -> None:
    clean = cord_phantom(slices=2)
    quiet = add_rician_noise(clean, 0.01, np.random.default_rng(5))
    loud = add_rician_noise(clean, 0.08, np.random.default_rng(6))
    out, report = enhance.apply(quiet, ZOOMS, enhance.Enhancement(denoise="auto", auto_threshold_rel=0.04))
    assert out is quiet and report["denoise"] == "off"
    out, report = enhance.apply(loud, ZOOMS, enhance.Enhancement(denoise="auto", auto_threshold_rel=0.04))
    assert report["denoise"] == "nlm" and report["steps"] == ["denoise:nlm"] and not np.array_equal(out, loud)


def test_apply_runs_every_step_and_reports_it() -> None:
    vol = add_rician_noise(cord_phantom(slices=2), 0.03, np.random.default_rng(7))
    e = enhance.Enhancement(denoise="tv", bias="smooth", clahe=True, clip_percentiles=(1, 99))
    out, report = enhance.apply(vol, ZOOMS, e)
    assert report["steps"] == ["denoise:tv", "bias:smooth", "clahe", "clip"]
    assert set(report["seconds"]) >= set(report["steps"])
    assert out.shape == vol.shape and np.all(np.isfinite(out))
    assert out.max() == pytest.approx(np.percentile(out, 99), rel=1e-3)  # clipped at the top last


@pytest.mark.parametrize("record", [
    enhance.Enhancement(),
    enhance.Enhancement(denoise="auto", strength=1.5, auto_threshold_rel=0.03, auto_method="tv"),
    enhance.Enhancement(denoise="nlm", bias="n4", clahe=True, clip_percentiles=(0.5, 99.5)),
])
def test_record_round_trips_through_a_dict(record: enhance.Enhancement) -> None:
    import json

    d = json.loads(json.dumps(record.to_dict()))
    assert enhance.Enhancement.from_dict(d) == record
    assert enhance.Enhancement.from_dict({}) == enhance.Enhancement()
    assert enhance.Enhancement.from_dict(None).is_off


@pytest.mark.parametrize("kwargs, match", [
    ({"denoise": "bm4d"}, "denoise 'bm4d'"),
    ({"bias": "yes"}, "bias correction 'yes'"),
    ({"strength": 0}, "strength 0"),
    ({"clip_percentiles": (99, 1)}, "clip percentiles"),
    ({"auto_method": "auto"}, "auto denoiser"),
])
def test_record_refuses_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(SctGmError, match=match):
        enhance.Enhancement(**kwargs)


def test_record_refuses_unknown_keys() -> None:
    with pytest.raises(SctGmError, match="unknown key"):
        enhance.Enhancement.from_dict({"denoise": "nlm", "sharpen": True})


def test_denoisers_remove_only_the_noise_above_the_floor() -> None:
    clean = cord_phantom(slices=2)
    quiet = add_rician_noise(clean, 0.02, np.random.default_rng(8))
    out, report = enhance.apply(quiet, ZOOMS, enhance.Enhancement(denoise="nlm", noise_floor_rel=0.03))
    assert report["denoise_sigma"] == 0.0 and np.array_equal(out, quiet)  # below the floor: untouched
    loud = add_rician_noise(clean, 0.05, np.random.default_rng(9))
    p99 = float(np.percentile(loud, 99))
    _, report = enhance.apply(loud, ZOOMS, enhance.Enhancement(denoise="nlm", noise_floor_rel=0.03))
    sigma = report["noise"]["sigma"]
    assert report["denoise_sigma"] == pytest.approx(np.sqrt(sigma ** 2 - (0.03 * p99) ** 2), rel=1e-3)
    _, report = enhance.apply(loud, ZOOMS, enhance.Enhancement(denoise="nlm", noise_floor_rel=0.0))
    assert report["denoise_sigma"] == pytest.approx(sigma, rel=1e-3)
