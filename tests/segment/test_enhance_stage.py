"""Image enhancement as a stage of segmentation: the model's setting, a run's options on top, the sidecar
and the QC entry (tiny random model, synthetic images: seconds, no ../shared)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import sctgm.segment.preprocess as preprocess_module
from sctgm.cli import main
from sctgm.exceptions import SctGmError
from sctgm.io import load_image
from sctgm.model.registry import Preprocessing
from sctgm.qc import QcEntryWriter, read_entries
from sctgm.segment.enhance import AUTO_THRESHOLD_REL, Enhancement, with_options
from sctgm.segment.files import segment_file
from sctgm.segment.pipeline import Segmenter, SegmentOptions

from ..conftest import cord_phantom_volume


@pytest.fixture
def noisy(make_nifti):
    """A cord phantom with Gaussian noise of ~8 % of its 99th percentile (well above the auto threshold),
    stored RPI so that the file's slice order is the reverse of the canonical one."""
    rng = np.random.default_rng(7)
    vol = cord_phantom_volume((60, 56, 4), seed=1)
    vol = vol + rng.normal(0, 13, vol.shape).astype(np.float32)
    return make_nifti(vol.astype(np.float32), zooms_mm=(0.5, 0.5, 5.0), axcodes="RPI")


def _no_enhancement_stage(monkeypatch):
    """Today's pipeline before the enhancement stage existed: prepare() uses the voxels as they are."""
    monkeypatch.setattr(preprocess_module.enhance, "apply", lambda volume, zooms_mm, enhancement: (volume, {}))


def test_denoise_off_is_byte_identical_to_the_pipeline_without_the_stage(tiny_segmenter, noisy, monkeypatch):
    image = load_image(noisy)
    off = tiny_segmenter.segment_image(image, options=SegmentOptions(denoise="off"), want_prob=True)
    auto = tiny_segmenter.segment_image(image, want_prob=True)
    assert auto.info["enhancement"]["denoise"] == "nlm"  # the default does act on this image...
    assert not np.array_equal(auto.gm_prob, off.gm_prob)  # ... so the comparison below could fail
    _no_enhancement_stage(monkeypatch)
    before = tiny_segmenter.segment_image(image, want_prob=True)
    assert off.gm.tobytes() == before.gm.tobytes() and off.gm_prob.tobytes() == before.gm_prob.tobytes()


def test_a_clean_image_is_left_alone_by_the_default(tiny_segmenter, make_nifti, monkeypatch):
    image = load_image(make_nifti(cord_phantom_volume((60, 56, 4), seed=2), zooms_mm=(0.5, 0.5, 5.0)))
    res = tiny_segmenter.segment_image(image, want_prob=True)
    assert res.info["enhancement"]["noise"]["sigma_rel_p99"] < AUTO_THRESHOLD_REL
    assert res.info["enhancement"]["denoise"] == "off" and res.info["enhancement"]["steps"] == []
    _no_enhancement_stage(monkeypatch)
    assert res.gm_prob.tobytes() == tiny_segmenter.segment_image(image, want_prob=True).gm_prob.tobytes()


@pytest.mark.parametrize("model_setting,option,expected", [
    ({"denoise": "auto"}, None, "auto"),
    ({"denoise": "off"}, None, "off"),
    ({"denoise": "off"}, "on", "nlm"),      # on: the model's auto_method when the model says off/auto
    ({"denoise": "auto", "auto_method": "tv"}, "on", "tv"),
    ({"denoise": "tv"}, "on", "tv"),        # on: the model's own denoiser
    ({"denoise": "tv"}, "off", "off"),
    ({"denoise": "auto"}, "bilateral", "bilateral"),
])
def test_an_explicit_option_overrides_the_model(model_setting, option, expected):
    prep = Preprocessing(enhancement=model_setting)
    assert SegmentOptions(denoise=option).enhancement(prep).denoise == expected
    assert SegmentOptions(denoise=option).effective(prep).denoise == expected


def test_bias_and_clahe_options_override_the_model():
    prep = Preprocessing(enhancement={"bias": "smooth", "clahe": True})
    assert SegmentOptions().effective(prep).bias == "smooth" and SegmentOptions().effective(prep).clahe is True
    eff = SegmentOptions(bias="off", clahe=False).effective(prep)
    assert eff.bias == "off" and eff.clahe is False
    assert with_options(Enhancement(), bias="n4").bias == "n4"


@pytest.mark.parametrize("kwargs,match", [({"denoise": "loud"}, "denoise 'loud'"),
                                          ({"bias": "n5"}, "bias correction 'n5'")])
def test_unknown_options_are_refused(kwargs, match):
    with pytest.raises(SctGmError, match=match):
        SegmentOptions(**kwargs)


def test_a_model_trained_with_a_step_gets_it(tiny_model, noisy):
    """The model's preprocessing.enhancement drives prepare() (training calls prepare() too)."""
    seg = Segmenter.from_name(tiny_model("tv-model", enhancement={"denoise": "tv", "clahe": True}), device="cpu")
    assert seg.model.preprocessing.enhancement == {"denoise": "tv", "clahe": True}
    info = seg.segment_image(load_image(noisy)).info
    assert info["enhancement"]["steps"] == ["denoise:tv", "clahe"]


def test_every_option_is_recorded_in_the_sidecar_with_the_noise(tiny_model, noisy, tmp_path):
    seg = Segmenter.from_name(tiny_model(), device="cpu")
    opts = SegmentOptions(denoise="tv", bias="smooth", clahe=True)
    res = segment_file(noisy, tmp_path / "out_gmseg.nii.gz", segmenter=seg, options=opts)
    side = json.loads(res.sidecar.read_text())
    params = side["GeneratedBy"][0]["Parameters"]
    assert (params["denoise"], params["bias"], params["clahe"]) == ("tv", "smooth", True)
    assert params["enhancement"]["denoise"] == "tv" and params["enhancement"]["bias"] == "smooth"
    assert params["enhancement"]["clahe"] is True
    assert params["enhancement"]["auto_threshold_rel"] == AUTO_THRESHOLD_REL
    result = side["Result"]
    assert result["enhancement_steps"] == ["denoise:tv", "bias:smooth", "clahe"]
    assert result["denoised_with"] == "tv"
    assert 0.05 < result["noise_sigma_rel_p99"] < 0.12 and result["noise_above_auto_threshold"] is True
    per_slice = result["noise_sigma_rel_p99_per_slice"]
    assert len(per_slice) == 4 and all(0.05 < v < 0.12 for v in per_slice)


def test_sidecar_noise_per_slice_is_in_the_files_slice_order(tiny_segmenter, make_nifti, tmp_path):
    """Slice 0 of an RPI file is the most superior one (the last canonical slice): make it the noisy one."""
    rng = np.random.default_rng(5)
    vol = cord_phantom_volume((60, 56, 4), seed=3)
    vol[:, :, 0] += rng.normal(0, 20, vol.shape[:2]).astype(np.float32)
    path = make_nifti(vol.astype(np.float32), zooms_mm=(0.5, 0.5, 5.0), axcodes="RPI")
    res = segment_file(path, tmp_path / "o_gmseg.nii.gz", segmenter=tiny_segmenter,
                       options=SegmentOptions(denoise="off"))
    per_slice = json.loads(res.sidecar.read_text())["Result"]["noise_sigma_rel_p99_per_slice"]
    assert int(np.argmax(per_slice)) == 0 and per_slice[0] > 2 * max(per_slice[1:])


def test_the_qc_entry_carries_the_noise(tiny_segmenter, noisy, tmp_path):
    qc = tmp_path / "qc"
    res = segment_file(noisy, tmp_path / "n_gmseg.nii.gz", segmenter=tiny_segmenter, entry=QcEntryWriter(qc))
    side = json.loads(res.sidecar.read_text())["Result"]
    (entry,) = read_entries(qc)
    assert entry["noise"]["noise_sigma_rel_p99"] == side["noise_sigma_rel_p99"] > AUTO_THRESHOLD_REL
    assert entry["noise"]["noise_above_auto_threshold"] is True and entry["noise"]["denoised_with"] == "nlm"
    js = (qc / "_assets" / "qc.js").read_text()
    assert "NOISY" in js and "noise_sigma_rel_p99" in js


def test_a_qc_entry_without_a_segmentation_estimates_the_noise(tiny_segmenter, noisy, tmp_path):
    """sct-gm qc on existing masks: the entry's noise is estimated from the image."""
    from sctgm.qc import add_entry

    res = segment_file(noisy, tmp_path / "m_gmseg.nii.gz", segmenter=tiny_segmenter)
    add_entry(tmp_path / "qc", noisy, res.gm)
    (entry,) = read_entries(tmp_path / "qc")
    side = json.loads(res.sidecar.read_text())["Result"]
    assert entry["noise"]["noise_sigma_rel_p99"] == pytest.approx(side["noise_sigma_rel_p99"], rel=1e-6)
    assert entry["noise"]["noise_above_auto_threshold"] is True


def test_cli_options_reach_the_sidecar(tiny_model, noisy, tmp_path):
    name = tiny_model()
    out = tmp_path / "cli_gmseg.nii.gz"
    res = CliRunner().invoke(main, ["segment", "-i", str(noisy), "-o", str(out), "-m", name, "-q",
                                    "--denoise", "off", "--bias-correction", "smooth", "--clahe"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    params = json.loads(out.with_name("cli_gmseg.json").read_text())["GeneratedBy"][0]["Parameters"]
    assert (params["denoise"], params["bias"], params["clahe"]) == ("off", "smooth", True)
    bad = CliRunner().invoke(main, ["segment", "-i", str(noisy), "-m", name, "--denoise", "loud"])
    assert bad.exit_code == 2 and "loud" in bad.output


def test_the_default_path_needs_neither_optional_dependency(tiny_segmenter, noisy, monkeypatch):
    """SimpleITK and PyWavelets are the 'enhance' extra: 'auto' (NLM) and 'smooth' work without them."""
    import sys

    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "pywt", None)
    res = tiny_segmenter.segment_image(load_image(noisy), options=SegmentOptions(bias="smooth"))
    assert res.info["enhancement"]["steps"] == ["denoise:nlm", "bias:smooth"]
    with pytest.raises(SctGmError, match="needs SimpleITK"):
        tiny_segmenter.segment_image(load_image(noisy), options=SegmentOptions(bias="n4"))


# -- on the labelled scans of ../shared ------------------------------------------------------------
@pytest.mark.parametrize("case", ["t2s_uncropped", "t2s", "mt1"])
def test_the_default_leaves_the_unmodified_labelled_scans_alone(shared_data, case):
    """Their noise reads 2.4-3.1 % of the 99th percentile, under the 3.5 % auto threshold: the default
    ('auto') hands prepare() the image's own voxels, so masks are byte-identical to sct-gm without the
    stage (docs/robustness.md: checked on both models and all three scans)."""
    from ..conftest import LABELLED

    vol = preprocess_module.prepare(load_image(LABELLED[case][0]), Preprocessing())
    assert vol.enhancement["denoise"] == "off" and vol.enhancement["steps"] == []
    assert vol.enhancement["noise"]["sigma_rel_p99"] < AUTO_THRESHOLD_REL - 0.003  # with a margin
    assert np.shares_memory(vol.data, vol.image.data)


@pytest.mark.slow
def test_denoise_off_is_byte_identical_on_a_real_scan(shared_models, monkeypatch):
    """`large` on t2s with 2 % Rician noise added (where 'on' changes the mask): --denoise off gives the
    bytes of the pipeline without the enhancement stage."""
    import nibabel as nib

    from sctgm.io import image_from_nifti
    from sctgm.segment.degrade import add_rician_noise

    from ..conftest import LABELLED

    src = nib.load(str(LABELLED["t2s"][0]))
    data = np.asarray(src.get_fdata(), dtype=np.float32)
    noisy = add_rician_noise(data, 0.02, np.random.default_rng(0))
    image = image_from_nifti(nib.Nifti1Image(noisy, src.affine, src.header), "t2s_noisy.nii.gz")
    seg = Segmenter.from_name("large", device="cpu", mirror=str(shared_models))
    off = seg.segment_image(image, options=SegmentOptions(denoise="off"), want_prob=True)
    on = seg.segment_image(image, options=SegmentOptions(denoise="on"), want_prob=True)
    assert not np.array_equal(on.gm_prob, off.gm_prob)
    _no_enhancement_stage(monkeypatch)
    before = seg.segment_image(image, want_prob=True)
    assert off.gm.tobytes() == before.gm.tobytes() and off.gm_prob.tobytes() == before.gm_prob.tobytes()
