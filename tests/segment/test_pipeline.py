"""The segmentation pipeline end to end on the tiny random model: seconds, no ../shared."""

from __future__ import annotations

import numpy as np
import pytest

from sctgm.exceptions import ModelError
from sctgm.io import load_image
from sctgm.model.install import ensure_model
from sctgm.segment import placement
from sctgm.segment.pipeline import Segmenter, SegmentOptions
from sctgm.segment.preprocess import Standardisation, sample, windows_at

from ..conftest import cord_phantom_volume


@pytest.fixture
def phantom(make_nifti):
    return load_image(make_nifti(cord_phantom_volume(), zooms_mm=(0.5, 0.5, 5.0), axcodes="RPI"))


def test_masks_land_on_the_input_grid(tiny_segmenter, phantom):
    res = tiny_segmenter.segment_image(phantom, want_prob=True)
    assert res.gm.shape == res.gm_prob.shape == phantom.data.shape
    assert res.gm.dtype == np.uint8 and set(np.unique(res.gm)) <= {0, 1}
    assert 0.0 <= res.gm_prob.min() and res.gm_prob.max() <= 1.0
    assert res.info["input_orientation"] == "RPI" and res.info["threshold"] == 0.5


def test_the_model_preprocessing_sets_the_grid_and_the_window(tiny_model, make_nifti):
    """A model registered with 0.5 mm pixels and 64-pixel windows is run with them."""
    image = load_image(make_nifti(cord_phantom_volume((100, 90, 3)), zooms_mm=(0.5, 0.5, 5.0)))
    default = Segmenter.from_name(tiny_model("tiny"), device="cpu").segment_image(image).info
    coarse_model = Segmenter.from_name(tiny_model("coarse", spacing_mm=0.5, crop_px=64), device="cpu")
    coarse = coarse_model.segment_image(image).info
    assert default["fine_grid"] == [200, 180] and default["window_px"] == [200, 180]
    assert coarse["spacing_mm"] == 0.5 and coarse["fine_grid"] == [100, 90] and coarse["window_px"] == [64, 64]
    assert all(0 <= o[0] <= 100 - 64 and 0 <= o[1] <= 90 - 64 for o in coarse["window_origins"])
    # the options still override the model's window
    assert Segmenter.from_name("coarse", device="cpu").segment_image(
        image, options=SegmentOptions(crop_px=32)).info["window_px"] == [32, 32]


@pytest.mark.parametrize("key,value,message", [
    ("orientation", "RAS", "orientation = 'RAS' is not supported"),
    ("spacing_mm", 0.0, "spacing_mm = 0.0 is not supported"),
    ("spacing_mm", 50, "spacing_mm = 50 is not supported"),
    ("crop_px", 8, "crop_px = 8 is not supported"),
    ("standardisation", "slice", "standardisation = 'slice' is not supported"),
    ("threshold", 1.0, "threshold = 1.0 is not supported"),
    ("denoise", True, "preprocessing key(s) denoise not supported"),
])
def test_unsupported_preprocessing_is_refused_with_the_model_and_value(tiny_model, key, value, message):
    name = tiny_model("odd", **{key: value})
    with pytest.raises(ModelError, match=rf"model 'odd'.*{message.replace('(', '.').replace(')', '.')}"):
        ensure_model(name)


def test_tta_averages_the_shifted_windows_where_they_overlap(tiny_model, phantom):
    """Segmenter._predict_tta against the same average computed from the public preprocess steps
    (64-pixel windows inside a 120 x 112 fine slice, so that every shift really moves them)."""
    seg = Segmenter.from_name(tiny_model("small", crop_px=64), device="cpu")
    vol = seg.prepare(phantom)
    centres = np.tile(placement.slice_centre(vol.grid), (vol.n_slices, 1))
    windows = windows_at(vol, centres)
    got = seg._predict_tta(vol, windows, SegmentOptions(tta=True), None)
    total = np.zeros(got.shape)
    count = np.zeros(got.shape)
    for shift in placement.TTA_SHIFTS_PX:
        moved = [placement.shifted(w, shift, vol.grid) for w in windows]
        raw = sample(vol, moved)
        p = seg._predict(raw, SegmentOptions())
        for k, (w, m) in enumerate(zip(windows, moved)):
            dx, dy = m.origin[0] - w.origin[0], m.origin[1] - w.origin[1]
            for i in range(w.size[0]):
                for j in range(0, w.size[1], 7):  # every 7th column: enough, and quick
                    si, sj = i - dx, j - dy
                    if 0 <= si < m.size[0] and 0 <= sj < m.size[1]:
                        total[k, i, j] += p[k, si, sj]
                        count[k, i, j] += 1
    cols = slice(0, got.shape[2], 7)
    np.testing.assert_allclose(got[:, :, cols], (total / np.maximum(count, 1))[:, :, cols], rtol=1e-6, atol=1e-7)
    assert count[:, :, cols].max() == len(placement.TTA_SHIFTS_PX)
    assert not np.array_equal(got, seg._predict(sample(vol, windows), SegmentOptions()))  # it did average


def test_the_network_is_fed_exactly_the_preprocess_windows(tiny_segmenter, phantom, monkeypatch):
    """What training reuses (sample + Standardisation) is what segmentation feeds the network."""
    seg = tiny_segmenter
    fed = []
    run = seg.network.runner.run
    monkeypatch.setattr(seg.network.runner, "run", lambda batch: fed.append(batch.copy()) or run(batch))
    res = seg.segment_image(phantom, options=SegmentOptions(batch_size=64))
    vol = seg.prepare(phantom)
    windows = windows_at(vol, np.array([o for o in res.info["window_origins"]]) + np.array(vol.window_px) / 2)
    raw = sample(vol, windows)
    np.testing.assert_array_equal(fed[-1][:, 0], Standardisation.of(raw)(raw))


def test_a_segmenter_takes_an_installed_model_not_a_name(tiny_model):
    with pytest.raises(TypeError, match=r"Segmenter.from_name\('tiny'\)"):
        Segmenter(tiny_model())  # type: ignore[arg-type]
    assert Segmenter(ensure_model("tiny"), device="cpu").model.name == "tiny"
