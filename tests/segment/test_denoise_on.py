"""`--denoise on` always denoises (issue 20): on an image whose noise reads under the 3 % floor it
still removes half of the estimated sigma, while a model's own 'nlm' and 'auto' keep the floor."""

from __future__ import annotations

import numpy as np
import pytest

from sctgm.enhancement import ON_MIN_REMOVED_FRACTION, Enhancement, with_options
from sctgm.segment import enhance
from sctgm.segment.degrade import add_rician_noise

from .test_enhance import ZOOMS, cord_phantom


def test_on_denoises_an_image_under_the_floor() -> None:
    quiet = add_rician_noise(cord_phantom(slices=2), 0.02, np.random.default_rng(8))
    model = Enhancement(denoise="auto")
    out, report = enhance.apply(quiet, ZOOMS, model)
    assert report["denoise"] == "off" and out is quiet  # auto: under the threshold, untouched
    out, report = enhance.apply(quiet, ZOOMS, Enhancement(denoise="nlm"))
    assert report["denoise_sigma"] == 0.0 and np.array_equal(out, quiet)  # a plain 'nlm' keeps the floor
    on = with_options(model, denoise="on")
    assert on.denoise == "nlm" and on.min_removed_fraction == ON_MIN_REMOVED_FRACTION
    out, report = enhance.apply(quiet, ZOOMS, on)
    assert report["denoise_sigma"] == pytest.approx(0.5 * report["noise"]["sigma"], rel=1e-6)
    assert report["steps"] == ["denoise:nlm"] and not np.array_equal(out, quiet)


def test_the_new_key_is_written_only_when_set() -> None:
    assert "min_removed_fraction" not in Enhancement(denoise="auto").to_dict()
    on = with_options(Enhancement(denoise="auto"), denoise="on")
    assert Enhancement.from_dict(on.to_dict()) == on and on.to_dict()["min_removed_fraction"] == 0.5
