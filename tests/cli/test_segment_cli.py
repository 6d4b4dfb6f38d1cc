"""sct-gm segment through the CLI: outputs on the input grid, and every bad input refused cleanly."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import LABELLED, dice


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _nifti_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "_gmseg" in p.name or ".part" in p.name or "_wmseg" in p.name)


@pytest.fixture
def t2s(tmp_path, shared_data) -> Path:
    dst = tmp_path / "t2s.nii.gz"
    shutil.copy(LABELLED["t2s"][0], dst)
    return dst


@pytest.mark.slow
def test_segment_writes_mask_on_the_input_grid_and_a_sidecar(t2s):
    res = _run(["segment", "-i", str(t2s), "-m", "challenge", "-q"])
    assert res.exit_code == 0, res.output
    out = t2s.with_name("t2s_gmseg.nii.gz")
    src, seg = nib.load(str(t2s)), nib.load(str(out))
    assert seg.shape == src.shape
    np.testing.assert_array_equal(seg.affine, src.affine)
    assert int(seg.header["qform_code"]) == int(src.header["qform_code"])
    assert int(seg.header["sform_code"]) == int(src.header["sform_code"])
    assert seg.get_data_dtype() == np.uint8
    data = np.asanyarray(seg.dataobj)
    assert set(np.unique(data)) == {0, 1}
    assert dice(data, nib.load(str(LABELLED["t2s"][1])).get_fdata()) > 0.88
    meta = json.loads(t2s.with_name("t2s_gmseg.json").read_text())
    gen = meta["GeneratedBy"][0]
    assert gen["Model"]["Name"] == "challenge"
    assert gen["Model"]["Sha256"] == "9b44228ad2fd360930b9d7fc6957a4eb7acbfa8cf6a091d13a932f8e8815dd9e"
    assert gen["Parameters"]["threshold"] == 0.999 and gen["Parameters"]["crop_px"] == 200
    assert gen["Parameters"]["engine"] == "onnxruntime" and gen["Parameters"]["device"] == "cpu"
    assert meta["Sources"] == [str(t2s)] and "SpatialReference" not in meta


@pytest.mark.slow
def test_engine_and_threads_options_give_the_same_mask(t2s, tmp_path):
    outs = {}
    for engine in ("torch", "onnxruntime"):
        out = tmp_path / f"{engine}.nii.gz"
        res = _run(["segment", "-i", str(t2s), "-m", "challenge", "-q", "--engine", engine, "--threads", "1",
                    "-o", str(out)])
        assert res.exit_code == 0, res.output
        meta = json.loads(out.with_name(f"{engine}.json").read_text())
        assert meta["GeneratedBy"][0]["Parameters"]["engine"] == engine
        outs[engine] = np.asanyarray(nib.load(str(out)).dataobj)
    assert outs["torch"].sum() > 100
    np.testing.assert_array_equal(outs["torch"], outs["onnxruntime"])
    res = CliRunner().invoke(main, ["segment", "-i", str(t2s), "--engine", "onnxruntime", "--device", "cuda:0"])
    assert res.exit_code != 0 and "runs on the CPU" in res.output and not list(tmp_path.glob("t2s_gmseg*"))


@pytest.mark.slow
def test_nan_voxels_are_replaced_with_a_warning(tmp_path, shared_data):
    img = nib.load(str(LABELLED["t2s"][0]))
    data = img.get_fdata(dtype=np.float32)
    data[:3, :3, :] = np.nan
    data[-1, -1, 0] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    res = _run(["segment", "-i", str(path), "-m", "challenge"])
    assert res.exit_code == 0
    assert "82 voxels are NaN or infinite" in res.stderr
    assert (tmp_path / "nan_gmseg.nii.gz").exists()


def _zero_voxel(path: Path) -> Path:
    """A header whose sform gives voxels 0 mm wide along axis 1 (and no qform)."""
    img = nib.Nifti1Image(np.random.rand(8, 8, 4).astype(np.float32), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.diag([0.5, 0.0, 5.0, 1.0]), code=1)
    nib.save(img, str(path))
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


BAD = {
    "missing": (lambda d: d / "absent.nii.gz", "no such file"),
    "not_nifti": (lambda d: _text(d / "notes.nii.gz", "hello"), "not a NIfTI"),
    "truncated_gzip": (None, "truncated or corrupt"),
    "2d": (lambda d: _write(d / "flat.nii.gz", np.ones((20, 20), np.float32)), "2D image"),
    "4d_several": (lambda d: _write(d / "fmri.nii.gz", np.random.rand(8, 8, 4, 3).astype(np.float32)), "3 volumes"),
    "constant": (lambda d: _write(d / "const.nii.gz", np.full((8, 8, 4), 7, np.float32)), "same value"),
    "all_zero": (lambda d: _write(d / "zero.nii.gz", np.zeros((8, 8, 4), np.float32)), "same value"),
    "zero_voxel": (lambda d: _zero_voxel(d / "flatvox.nii.gz"), "invalid voxel geometry"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_message_exit_code_and_no_output(tmp_path, request, case):
    """Refused before any model is needed (only the truncated-file case reads ../shared)."""
    make, expected = BAD[case]
    if case == "truncated_gzip":
        request.getfixturevalue("shared_data")
        raw = LABELLED["t2s"][0].read_bytes()
        assert gzip.decompress(raw)  # a valid gzip stream, cut in half below
        path = tmp_path / "cut.nii.gz"
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path = make(tmp_path)
    res = _run(["segment", "-i", str(path), "-m", "challenge"])
    assert res.exit_code != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert expected in lines[0] and path.name in lines[0]
    assert "Traceback" not in res.output
    assert _nifti_outputs(tmp_path) == []


def test_unwritable_output_folder(t2s, tmp_path):
    (tmp_path / "nope").write_text("a file where the output folder should be")
    res = _run(["segment", "-i", str(t2s), "-o", str(tmp_path / "nope" / "out.nii.gz")])
    assert res.exit_code == 3
    assert "is a file, not a folder" in res.stderr and "nope" in res.stderr
    assert _nifti_outputs(tmp_path) == []


def test_unknown_model(t2s, tmp_path):
    res = _run(["segment", "-i", str(t2s), "-m", "huge"])
    assert res.exit_code != 0
    assert "huge" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert _nifti_outputs(tmp_path) == []


def test_cord_mask_on_another_grid_is_refused(t2s, tmp_path):
    cord = _write(tmp_path / "cord.nii.gz", np.ones((10, 10, 9), np.uint8))
    res = _run(["segment", "-i", str(t2s), "-s", str(cord), "-m", "challenge"])
    assert res.exit_code != 0 and "not on the grid" in res.stderr
    assert _nifti_outputs(tmp_path) == []


def test_cord_mask_of_the_same_grid_in_another_orientation_is_accepted(tmp_path, make_nifti, tiny_model):
    """The same grid stored RPI instead of LAS (every axis flipped): compared in the canonical layout,
    as metrics does (it was refused as 'not on the grid'), and read as the same cord."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    from sctgm.io import load_image
    from sctgm.recipe import Preprocessing
    from sctgm.segment.preprocess import canonical_mask, prepare

    from ..conftest import cord_phantom_volume

    image = make_nifti(cord_phantom_volume(), zooms_mm=(0.5, 0.5, 5.0), name="img.nii.gz")
    cord = np.zeros((60, 56, 4), np.uint8)
    cord[20:46, 14:40, 1:] = 1
    cord[30, 50, 2] = 1  # not symmetric: a wrong flip would show
    las = make_nifti(cord, zooms_mm=(0.5, 0.5, 5.0), dtype=np.uint8, name="cord_las.nii.gz")
    rpi = tmp_path / "cord_rpi.nii.gz"
    las_img = nib.load(str(las))
    nib.save(las_img.as_reoriented(ornt_transform(axcodes2ornt(("L", "A", "S")), axcodes2ornt(("R", "P", "I")))),
             str(rpi))
    assert nib.aff2axcodes(nib.load(str(rpi)).affine) == ("R", "P", "I")
    vol = prepare(load_image(image), Preprocessing())
    np.testing.assert_array_equal(canonical_mask(load_image(rpi, allow_constant=True), vol),
                                  canonical_mask(load_image(las, allow_constant=True), vol))
    gm = {}
    for cord_path in (las, rpi):
        out = tmp_path / f"gm_{cord_path.name}"
        res = _run(["segment", "-i", str(image), "-s", str(cord_path), "-m", tiny_model(), "--wm", "-o", str(out),
                    "-q"])
        assert res.exit_code == 0, res.output
        gm[cord_path.name] = np.asanyarray(nib.load(str(out)).dataobj)
    np.testing.assert_array_equal(gm["cord_rpi.nii.gz"], gm["cord_las.nii.gz"])


def test_verbose_shows_the_traceback(tmp_path):
    res = _run(["-v", "segment", "-i", str(tmp_path / "absent.nii.gz")])
    assert res.exit_code != 0 and "Traceback" in res.stderr


def test_interrupt_leaves_no_partial_output(t2s, tmp_path, monkeypatch):
    """Ctrl-C while the mask is being written: exit 130, no output and no temporary file."""
    import sctgm.io

    real_save = nib.save

    def interrupted_save(img, filename):
        real_save(img, filename)  # the temporary file exists at this point ...
        raise KeyboardInterrupt  # ... and the user presses Ctrl-C

    monkeypatch.setattr(sctgm.io.nib, "save", interrupted_save)
    res = _run(["segment", "-i", str(t2s), "-m", "challenge"])
    assert res.exit_code == 130
    assert "interrupted" in res.stderr
    assert _nifti_outputs(tmp_path) == []
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_orientation_is_reported_in_the_sidecar_and_nonaxial_warned(tmp_path, shared_data):
    img = nib.load(str(LABELLED["t2s"][0]))
    # relabel the axes as if slices were sagittal: thick voxels along L-R
    data = np.asanyarray(img.dataobj).transpose(2, 1, 0)
    path = _write(tmp_path / "sag.nii.gz", data.astype(np.float32), np.diag([7.5, 0.5, 0.5, 1.0]))
    res = _run(["segment", "-i", str(path), "-m", "challenge"])
    assert res.exit_code == 0
    assert "looks like a sagittal or coronal acquisition" in res.stderr
    meta = json.loads((tmp_path / "sag_gmseg.json").read_text())
    assert meta["Result"]["input_orientation"] == "RAS"
