"""sctgm.segment.preprocess: the windows training and segmentation share (synthetic data, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from sctgm.exceptions import GridMismatchError, InputImageError, NotAxialError
from sctgm.io import load_image
from sctgm.model.registry import Preprocessing
from sctgm.segment.preprocess import (Standardisation, canonical_mask, check_axial, prepare, sample, sample_mask,
                                      windows_at)


def test_prepare_follows_the_preprocessing_record(make_nifti):
    image = load_image(make_nifti(shape=(40, 30, 5), zooms_mm=(0.5, 0.5, 4.0), axcodes="RPI"))
    vol = prepare(image, Preprocessing(spacing_mm=0.25, crop_px=48, enhancement={"denoise": "off"}))
    assert vol.data.shape == (40, 30, 5) and vol.zooms_mm == (0.5, 0.5, 4.0)
    assert vol.grid.fine_shape == (80, 60) and vol.window_px == (48, 48)
    np.testing.assert_array_equal(vol.reorientation.undo(vol.data), image.data)
    assert prepare(image, Preprocessing(spacing_mm=1.0, crop_px=48)).window_px == (20, 15)  # whole slice


def test_prepare_enhances_as_the_model_says_and_leaves_the_voxels_alone_when_off(make_nifti):
    """'off': the data are the image's own voxels (a view, not a copy) and the noise is still reported;
    'auto' on an image far noisier than the threshold: a denoised copy, and the report says so."""
    rng = np.random.default_rng(3)
    x, y = np.mgrid[:48, :48]
    clean = 100.0 + 100.0 * (np.hypot(x - 24, y - 24) < 14)
    data = (clean[..., None] + rng.normal(0, 12, (48, 48, 4))).astype(np.float32)  # ~6 % of p99
    image = load_image(make_nifti(data, zooms_mm=(0.5, 0.5, 4.0), axcodes="RPI"))
    off = prepare(image, Preprocessing(crop_px=48, enhancement={"denoise": "off"}))
    assert np.shares_memory(off.data, image.data)
    assert off.enhancement["denoise"] == "off" and off.enhancement["steps"] == []
    assert 0.04 < off.enhancement["noise"]["sigma_rel_p99"] < 0.08
    auto = prepare(image, Preprocessing(crop_px=48))  # the default: {"denoise": "auto"}
    assert auto.enhancement["denoise"] == "nlm" and auto.enhancement["steps"] == ["denoise:nlm"]
    assert not np.shares_memory(auto.data, image.data)
    assert float(np.std(auto.data - off.data)) > 3.0  # it did remove noise


def test_mask_windows_are_the_image_windows(make_nifti):
    """A mask sampled with sample_mask lines up pixel for pixel with the image sampled by sample."""
    data = np.zeros((40, 40, 3), np.float32)
    data[10:20, 22:30, :] = 1.0
    image = load_image(make_nifti(data * 100 + 10, zooms_mm=(0.5, 0.5, 4.0), axcodes="LPI"))
    mask = load_image(make_nifti(data, zooms_mm=(0.5, 0.5, 4.0), axcodes="LPI"), allow_constant=True)
    vol = prepare(image, Preprocessing(crop_px=32))
    m = canonical_mask(mask, vol)
    assert m.dtype == bool and m.sum() == data.sum()
    windows = windows_at(vol, np.array([[30.0, 40.0]] * 3))
    raw, target = sample(vol, windows), sample_mask(vol, m, windows)
    assert raw.shape == target.shape == (3, 32, 32) and raw.dtype == target.dtype == np.float32
    assert 0.0 <= target.min() and target.max() <= 1.0 and target.max() == 1.0
    np.testing.assert_allclose(target, (raw - 10) / 100, atol=1e-5)  # same resampling, same pixels
    x = Standardisation.of(raw)(raw)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4


def test_masks_on_another_grid_and_non_axial_images_are_refused(make_nifti):
    image = load_image(make_nifti(shape=(20, 20, 3)))
    vol = prepare(image, Preprocessing())
    with pytest.raises(GridMismatchError):
        canonical_mask(load_image(make_nifti(shape=(20, 21, 3)), allow_constant=True), vol)
    check_axial(image)
    with pytest.raises(NotAxialError, match="sagittal or coronal"):
        check_axial(load_image(make_nifti(shape=(5, 20, 20), zooms_mm=(4.0, 0.5, 0.5))))


def test_slices_wider_than_any_scanner_bore_are_refused_in_the_canonical_layout(make_nifti):
    """A voxel size read wrong (30 mm pixels) would lay a 0.25 mm grid of 5880 x 6480 pixels over each
    slice (minutes of GM search); the in-plane extent is judged on the canonical R-L and A-P axes,
    whatever the file's order, and a long S-I extent is no in-plane extent."""
    wrong = load_image(make_nifti(shape=(54, 3, 49), zooms_mm=(30.0, 30.0, 5.0), axcodes="PIR"))
    with pytest.raises(InputImageError, match=r"span 1470 x 1620 mm \(R-L x A-P\), wider than any scanner's bore"):
        prepare(wrong, Preprocessing(enhancement={"denoise": "off"}))
    wide = load_image(make_nifti(shape=(3, 54, 49), zooms_mm=(12.9, 12.9, 5.0), axcodes="SAR"))  # 632 x 697 mm
    assert np.allclose(prepare(wide, Preprocessing(enhancement={"denoise": "off"})).zooms_mm, (12.9, 12.9, 5.0))
    long = load_image(make_nifti(shape=(20, 20, 200), zooms_mm=(0.5, 0.5, 5.0)))  # 1000 mm along S-I
    assert prepare(long, Preprocessing(enhancement={"denoise": "off"})).data.shape == (20, 20, 200)
