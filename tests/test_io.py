"""Malformed and unusual NIfTI files: each is refused with its own one-line message, or repaired
with one warning (docs/inputs.md). Tiny synthetic files patched byte by byte; no ../shared needed."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.exceptions import InputImageError, OutputError
from sctgm.io import like, load_image, load_mask_image
from sctgm.writing import StagedFiles, remove_leftover_parts, temporary_beside

#: Byte offsets of NIfTI-1 header fields (nifti1.h).
DIM, DATATYPE, BITPIX, PIXDIM, VOX_OFFSET, SCL_SLOPE, SCL_INTER = 40, 70, 72, 76, 108, 112, 116
QFORM_CODE, SFORM_CODE, QUATERN_B, SROW_X = 252, 254, 256, 280

AFFINE = np.array([[-0.5, 0, 0, 10], [0, 0.5, 0, -12], [0, 0, 5.0, 3], [0, 0, 0, 1]])


def _tiny(path: Path, data: np.ndarray | None = None, dtype: type = np.float32) -> Path:
    if data is None:
        data = np.random.default_rng(0).normal(100, 20, (12, 10, 4))
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=1)
    nib.save(img, str(path))
    return path


def _patched(path: Path, *patches: tuple[int, str, float], data: np.ndarray | None = None) -> Path:
    """Write the tiny image as ``path`` (.nii), then overwrite header fields (offset, struct format, value)."""
    _tiny(path, data)
    raw = bytearray(path.read_bytes())
    for offset, fmt, value in patches:
        struct.pack_into("<" + fmt, raw, offset, value)
    path.write_bytes(bytes(raw))
    return path


def _gz_damaged(path: Path) -> Path:
    raw = gzip.compress(_tiny(path.with_name("src.nii")).read_bytes())
    mid = len(raw) // 2
    path.write_bytes(raw[:mid] + bytes(b ^ 0x5A for b in raw[mid:mid + 40]) + raw[mid + 40:])
    return path


def _with_bad_extension(path: Path) -> Path:
    img = nib.Nifti1Image(np.random.default_rng(1).random((8, 8, 4)).astype(np.float32), AFFINE)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment"))
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<i", raw, 352, -16)  # the first extension's size
    path.write_bytes(bytes(raw))
    return path


def _gzip_of_patched(d: Path, *patches: tuple[int, str, float]) -> Path:
    src = _patched(d / "src.nii", *patches)
    out = d / "patched.nii.gz"
    out.write_bytes(gzip.compress(src.read_bytes()))
    src.unlink()
    return out


REFUSED = {
    "rgb": (lambda d: _patched(d / "rgb.nii", (DATATYPE, "h", 128), (BITPIX, "h", 24)),
            "is an RGB colour image (datatype RGB, code 128); expected a grey-level image"),
    "rgba_void": (lambda d: _patched(d / "rgba.nii", (DATATYPE, "h", 2304), (BITPIX, "h", 32)),
                  "is an RGB colour image (datatype RGBA, code 2304)"),
    "flipped_datatype_byte": (lambda d: _patched(d / "flip.nii", (DATATYPE, "h", 16 ^ 0x100)),
                              "datatype code 272 is not a NIfTI data type; the header is damaged"),
    "invalid_quaternion_no_sform": (
        lambda d: _patched(d / "quat.nii", (SFORM_CODE, "h", 0), (QUATERN_B, "f", 3.0)),
        "invalid voxel geometry: the qform quaternion (quatern_b, c, d) = (3, "),
    "both_transforms_broken": (
        lambda d: _patched(d / "both.nii", (QUATERN_B, "f", 3.0), (SROW_X, "f", float("nan"))),
        "invalid voxel geometry: the sform (srow_x/y/z) is not finite and there is no valid qform"),
    "vox_offset_below_352": (lambda d: _patched(d / "off.nii", (VOX_OFFSET, "f", 322.0)),
                             "vox_offset is 322, expected 0 or at least 352"),
    "more_voxels_than_the_file": (lambda d: _patched(d / "big.nii", (DIM + 6, "h", 40)),
                                  "truncated or corrupt (the header announces 12x10x40 voxels"),
    "more_voxels_than_the_gzip": (
        lambda d: _gzip_of_patched(d, (DIM + 6, "h", 40)),
        "truncated or corrupt (the header announces 12x10x40 voxels, 19200 bytes from byte 352, and the file "
        "holds 2272 bytes)"),
    "all_nan": (lambda d: _tiny(d / "nan.nii.gz", np.full((6, 6, 3), np.nan)), "has no finite voxel (all 108 voxels"),
    "all_inf": (lambda d: _tiny(d / "inf.nii.gz", np.full((6, 6, 3), -np.inf)), "has no finite voxel"),
    "scl_inter_nan": (lambda d: _patched(d / "inter.nii", (SCL_SLOPE, "f", 2.0), (SCL_INTER, "f", float("nan"))),
                      "scl_inter is nan (with scl_slope 2); the stored values cannot be converted"),
    "dim_zero": (lambda d: _patched(d / "dim0.nii", (DIM + 2, "h", 0)), "the dimensions are [0, 10, 4]"),
    "dim_negative": (lambda d: _patched(d / "dimneg.nii", (DIM + 4, "h", -3)), "the dimensions are [12, -3, 4]"),
    "ndim_out_of_range": (lambda d: _patched(d / "ndim.nii", (DIM, "h", 9)),
                          "dim[0] (the number of dimensions) is 9, expected 1 to 7"),
    "pixdim_zero": (lambda d: _patched(d / "pix0.nii", (PIXDIM + 8, "f", 0.0)),
                    "the voxel size (pixdim) is (0.5, 0, 5) mm"),
    "pixdim_nan": (lambda d: _patched(d / "pixnan.nii", (PIXDIM + 4, "f", float("nan"))),
                   "the voxel size (pixdim) is (nan, 0.5, 5) mm"),
    "extension_garbage": (lambda d: _with_bad_extension(d / "ext.nii"),
                          "the header extension at byte 352 declares -16 bytes"),
    "gzip_damaged": (lambda d: _gz_damaged(d / "crc.nii.gz"), "cannot be read, the file looks truncated or corrupt"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_each_damaged_file_is_refused_with_one_line(tmp_path, case):
    make, expected = REFUSED[case]
    path = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = CliRunner().invoke(main, ["segment", "-i", str(path), "-m", "challenge"], catch_exceptions=False)
    lines = res.stderr.splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"sct-gm: error: {path}: "), lines[0]
    assert expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_nibabels_multi_line_messages_reach_the_user_on_one_line(tmp_path):
    raw = gzip.compress(_tiny(tmp_path / "t.nii").read_bytes())
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(InputImageError) as err:
        load_image(cut)
    assert "\n" not in str(err.value) and "truncated or corrupt" in str(err.value)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("sctgm")]


def test_complex_values_are_replaced_by_their_magnitude_with_a_warning(tmp_path, caplog):
    z = np.random.default_rng(2).normal(size=(6, 6, 3)) + 1j * np.random.default_rng(3).normal(size=(6, 6, 3))
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(z.astype(np.complex64), AFFINE), str(path))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    np.testing.assert_allclose(image.data, np.abs(z), rtol=1e-6)
    assert _warnings(caplog) == [f"{path}: holds complex values; their magnitude is used (the phase is ignored)"]


def test_float64_beyond_float32_is_scaled_not_turned_into_inf(tmp_path, caplog):
    values = np.random.default_rng(4).uniform(1, 2, (6, 6, 3)) * 1e300
    path = _tiny(tmp_path / "huge.nii.gz", values, dtype=np.float64)
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    assert np.all(np.isfinite(image.data)) and image.data.dtype == np.float32
    np.testing.assert_allclose(image.data / image.data.max(), values / values.max(), rtol=1e-6)
    (msg,) = _warnings(caplog)
    assert "exceed the float32 range; they were divided by 2**" in msg


def test_partly_nan_image_is_repaired_and_warned_once_valid(tmp_path, caplog):
    values = np.random.default_rng(5).normal(size=(6, 6, 3))
    values[0, 0, 0] = np.nan
    path = _tiny(tmp_path / "somenan.nii.gz", values)
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    assert image.data[0, 0, 0] == 0
    assert _warnings(caplog) == [f"{path}: 1 voxel is NaN or infinite; it was set to 0"]


def test_refused_image_logs_no_warning_before_its_error(tmp_path, caplog):
    # a nan slope would be repaired with a warning, but the image is constant: one error, no warning
    path = _patched(tmp_path / "const.nii", (SCL_SLOPE, "f", float("nan")), data=np.full((6, 6, 3), 4.0))
    with caplog.at_level(logging.WARNING, logger="sctgm"), pytest.raises(InputImageError, match="same value"):
        load_image(path)
    assert _warnings(caplog) == []


def test_broken_qform_falls_back_on_a_valid_sform(tmp_path, caplog):
    path = _patched(tmp_path / "q.nii", (QUATERN_B, "f", 3.0))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    np.testing.assert_allclose(image.affine, AFFINE)
    (msg,) = _warnings(caplog)
    assert "the qform quaternion" in msg and "the sform is used instead" in msg
    out = like(image.nifti, np.zeros(image.data.shape), np.uint8)  # writing needs a readable qform
    assert int(out.header["qform_code"]) == 0 and int(out.header["sform_code"]) == 1
    np.testing.assert_allclose(out.affine, AFFINE)


def test_broken_sform_falls_back_on_a_valid_qform(tmp_path, caplog):
    path = _patched(tmp_path / "s.nii", (SROW_X, "f", float("nan")))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-6)
    (msg,) = _warnings(caplog)
    assert "the sform (srow_x/y/z) is not finite; the qform is used instead" in msg
    assert int(image.nifti.header["sform_code"]) == 0


@pytest.mark.parametrize("slope, warned", [(float("nan"), True), (float("inf"), True), (0.0, False)])
def test_unusable_scl_slope_means_no_scaling(tmp_path, caplog, slope, warned):
    path = _patched(tmp_path / "slope.nii", (SCL_SLOPE, "f", slope), (SCL_INTER, "f", 7.0))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    np.testing.assert_allclose(image.data, np.asanyarray(nib.load(str(_tiny(tmp_path / "ref.nii"))).dataobj))
    assert _warnings(caplog) == ([f"{path}: scl_slope is {slope:g}; ignored, the stored values are used unscaled"]
                                 if warned else [])


def test_negative_pixdim_is_made_positive_with_a_warning(tmp_path, caplog):
    path = _patched(tmp_path / "neg.nii", (PIXDIM + 4, "f", -0.5))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    assert image.zooms_mm == (0.5, 0.5, 5.0)
    (msg,) = _warnings(caplog)
    assert msg.startswith(f"{path}: header repaired by nibabel: pixdim[1,2,3] should be positive")


def test_bytes_after_the_gzip_stream_are_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "tail.nii.gz"
    path.write_bytes(gzip.compress(_tiny(tmp_path / "t.nii").read_bytes()) + b"trailing garbage")
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    assert image.data.shape == (12, 10, 4)
    assert _warnings(caplog) == [f"{path}: 16 bytes after the end of the gzip stream were ignored"]


def test_a_gzip_of_several_members_is_read_whole(tmp_path, caplog):
    raw = _tiny(tmp_path / "t.nii").read_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    np.testing.assert_array_equal(image.data, load_image(tmp_path / "t.nii").data)
    assert _warnings(caplog) == []


def test_cli_shows_repair_warnings_on_success_and_only_the_error_on_failure(tmp_path):
    mask = (np.random.default_rng(7).random((12, 10, 4)) > 0.5).astype(np.float32)
    repaired = _patched(tmp_path / "slope.nii", (SCL_SLOPE, "f", float("nan")), data=mask)
    same_grid = _tiny(tmp_path / "ref.nii.gz", np.random.default_rng(6).random((12, 10, 4)) > 0.5, dtype=np.uint8)
    other_grid = _tiny(tmp_path / "other.nii.gz", np.ones((5, 5, 5)), dtype=np.uint8)
    ok = CliRunner().invoke(main, ["metrics", "-i", str(repaired), "-r", str(same_grid), "-q"])
    assert ok.exit_code == 0, ok.output
    assert ok.stderr.splitlines() == [f"sct-gm: warning: {repaired}: scl_slope is nan; ignored, the stored values "
                                      f"are used unscaled"]
    bad = CliRunner().invoke(main, ["metrics", "-i", str(repaired), "-r", str(other_grid), "-q"])
    assert bad.exit_code == 2
    (line,) = bad.stderr.splitlines()
    assert line.startswith("sct-gm: error: ") and "not on the grid" in line
    verbose = CliRunner().invoke(main, ["-v", "metrics", "-i", str(repaired), "-r", str(other_grid), "-q"])
    assert "scl_slope is nan" in verbose.stderr and "Traceback" in verbose.stderr


def test_negative_pixdim_with_only_a_qform_is_repaired_not_a_crash(tmp_path, caplog):
    """Fuzz finding (seed 9): nibabel's qform code refuses negative voxel sizes that its loader repairs."""
    path = _patched(tmp_path / "negq.nii", (SFORM_CODE, "h", 0), (PIXDIM + 8, "f", -0.5))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-6)
    (msg,) = _warnings(caplog)
    assert "pixdim[1,2,3] should be positive" in msg


def test_single_volume_4d_with_an_infinite_sform_falls_back_without_numpy_warnings(tmp_path, caplog, recwarn):
    """Fuzz finding (seed 21): slicing a 4D file computed with the broken sform before it was replaced."""
    img = nib.Nifti1Image(np.random.default_rng(7).random((12, 10, 4, 1)).astype(np.float32), AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=1)
    path = tmp_path / "v4.nii"
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, SROW_X + 32 + 12, float("inf"))  # srow_z[3]
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        image = load_image(path)
    assert image.data.shape == (12, 10, 4)
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-6)
    assert [str(w.message) for w in recwarn] == []
    assert "the sform (srow_x/y/z) is not finite; the qform is used instead" in _warnings(caplog)[0]


def test_an_affine_whose_axes_cannot_be_oriented_raises_orientation_error():
    from sctgm.exceptions import InputImageError, OrientationError
    from sctgm.geometry import reorientation_for
    from sctgm.io import image_from_nifti

    # two voxel axes pointing (within rounding) the same way: a valid determinant, but nibabel cannot
    # give the second axis a direction among R-L, A-P, S-I
    affine = np.diag([1000.0, 1e-13, 1000.0, 1.0])
    affine[0, 1] = 1000.0
    img = nib.Nifti1Image(np.arange(8, dtype=np.float32).reshape(2, 2, 2), affine)
    with pytest.raises(OrientationError, match=r"in-memory>: the axes of its affine .* cannot be matched") as info:
        image_from_nifti(img)
    assert isinstance(info.value, InputImageError) and info.value.exit_code == 2
    with pytest.raises(OrientationError, match="cannot be matched to R-L, A-P and S-I"):
        reorientation_for(affine, (2, 2, 2))


def test_leftover_parts_are_matched_by_their_whole_name_not_a_prefix(tmp_path):
    # a killed writer's temporary file is removed; another output's whose name extends this one's
    # stem (`scan_gmseg.v2.nii.gz` beside `scan_gmseg.nii.gz`, `summary.t2s.tsv` beside `summary.tsv`)
    # may be another run's file being written, and stays
    ours = [tmp_path / ".scan_gmseg.k1ll3d_9.part.nii.gz", tmp_path / ".summary.ab12cd34.part.tsv"]
    theirs = [tmp_path / ".scan_gmseg.v2.ab12cd34.part.nii.gz", tmp_path / ".summary.t2s.ab12cd34.part.tsv",
              tmp_path / ".scan_gmseg..part.nii.gz", tmp_path / ".scan_gmseg.ab12cd34.part.json"]
    for p in ours + theirs:
        p.write_bytes(b"half a file")
    removed = remove_leftover_parts([tmp_path / "scan_gmseg.nii.gz", tmp_path / "summary.tsv"])
    assert sorted(removed) == sorted(ours) and not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    made = temporary_beside(tmp_path / "scan_gmseg.nii.gz")  # what a writer makes is recognised
    assert remove_leftover_parts([tmp_path / "scan_gmseg.nii.gz"]) == [made]


@pytest.mark.parametrize("values, accepted", [
    ((0, 1), True), ((0.0, 0.25, 0.999), True), ((0, 255), True), ((0,), True), ((0, 1.0005), True),
    ((-0.21, 0, 1, 1.24), True),  # a binary mask resampled with a spline (SCT's default) overshoots
    ((0, 1, 2, 30, 50), True),  # a vertebral-labelled cord mask: whole-number labels
    ((0, -1), False), ((12.0, 640.5, 1074.0), False), (tuple(range(100, 300, 2)), False)])
def test_a_mask_holds_zero_and_one_value_or_probabilities(tmp_path, values, accepted):
    data = np.zeros((max(8, len(values)), 8, 3), np.float32)
    for k, v in enumerate(values):
        data[k, :, :] = v
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    if accepted:
        assert load_mask_image(path, what="cord mask").data.shape == (8, 8, 3)
    else:
        with pytest.raises(InputImageError, match=r"mask.nii.gz: is not a cord mask: .*was an image given") as err:
            load_mask_image(path, what="cord mask")
        # what is wrong, said as it is: negative values, or too many values (never "more than 64" for 0/-1)
        assert ("negative values" in str(err.value)) == (min(values) < 0), str(err.value)


def test_an_image_given_as_a_mask_is_refused_by_every_command(tmp_path, make_nifti, tiny_model):
    from tests.conftest import cord_phantom_volume

    image = make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")
    gm = make_nifti((cord_phantom_volume(seed=1) > 150).astype(np.uint8), name="t2s_gm.nii.gz")
    runs = {"metrics": ["metrics", "-i", str(image)], "compare": ["metrics", "-i", str(gm), "-r", str(image)],
            "qc": ["qc", "-i", str(image), "-s", str(image), "-o", str(tmp_path / "qc")],
            "segment": ["segment", "-i", str(image), "-s", str(image), "--wm", "-m", tiny_model(), "--device", "cpu"]}
    for name, args in runs.items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code != 0, (name, res.output)
        assert str(image) in res.stderr and "is not a" in res.stderr and len(res.stderr.strip().splitlines()) == 1, name
    assert not (tmp_path / "qc").exists() and not list(tmp_path.glob("t2s_*seg*"))


def test_a_rename_that_fails_leaves_no_temporary_file(tmp_path):
    """A staged file whose rename fails (its target became a folder) is removed with the set, like the
    ones not yet renamed; the ones renamed before stay."""
    first, blocked, last = tmp_path / "a.json", tmp_path / "b.nii.gz", tmp_path / "c.json"
    with pytest.raises(OutputError, match="b.nii.gz: cannot be written"), StagedFiles() as staged:
        for p in (first, blocked, last):
            staged.stage(p, lambda tmp, p=p: tmp.write_text(p.name))
        (blocked / "x").mkdir(parents=True)  # os.replace cannot put a file onto a non-empty folder
        staged.commit([first, blocked, last])
    assert first.read_text() == "a.json" and blocked.is_dir() and not last.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.nii.gz"]
