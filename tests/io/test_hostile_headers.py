"""Hostile NIfTI headers (review r1): a damaged sizeof_hdr, a transform that disagrees with pixdim, a
compression sct-gm does not read, an extension that disagrees with the content, units other than mm.
Each is refused with one ``sct-gm: error:`` line and exit code 2, before any large allocation; tiny
synthetic files patched byte by byte, no ../shared needed."""

from __future__ import annotations

import bz2
import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.exceptions import InputImageError
from sctgm.io import load_image
from sctgm.metrics import morphometry

AFFINE = np.array([[-0.5, 0, 0, 10], [0, 0.5, 0, -12], [0, 0, 5.0, 3], [0, 0, 0, 1]])
#: Byte offsets of NIfTI-1 header fields (nifti1.h).
SIZEOF_HDR, DIM, DATATYPE, BITPIX, PIXDIM = 0, 40, 70, 72, 76


def _tiny(path: Path, img: nib.Nifti1Image | None = None) -> Path:
    """A tiny valid image (or ``img``) written to ``path``; a .gz name gets gzip content."""
    if img is None:
        img = nib.Nifti1Image(np.random.default_rng(0).normal(100, 20, (12, 10, 4)).astype(np.float32), AFFINE)
        img.set_qform(AFFINE, code=1)
        img.set_sform(AFFINE, code=1)
    nib.save(img, str(path))
    return path


def _patched(path: Path, *patches: tuple[int, str, object], compress: bool = False) -> Path:
    """The tiny image as plain NIfTI-1 bytes with header fields overwritten (offset, struct format,
    value), written to ``path`` (gzip-compressed when ``compress``)."""
    raw = bytearray(_tiny(path.with_name("src.nii")).read_bytes())
    path.with_name("src.nii").unlink()
    for offset, fmt, value in patches:
        struct.pack_into("<" + fmt, raw, offset, value)
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    return path


def _refused(path: Path, *expected: str) -> str:
    """Run ``segment`` on ``path``: exit 2, one stderr line naming it and saying each of ``expected``."""
    before = sorted(p.name for p in path.parent.iterdir())
    res = CliRunner().invoke(main, ["segment", "-i", str(path), "-m", "challenge"], catch_exceptions=False)
    lines = res.stderr.splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"sct-gm: error: {path}: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert sorted(p.name for p in path.parent.iterdir()) == before
    return lines[0]


# ----------------------------------------------------------------------- 1. a damaged sizeof_hdr

@pytest.mark.parametrize("sizeof", [0, 347, 540, -1])
def test_a_damaged_sizeof_hdr_skips_no_header_check(tmp_path, sizeof):
    """nibabel recognises NIfTI-1 by its magic and repairs sizeof_hdr; the checks must run too (a zero
    pixdim was read as 1 mm)."""
    _refused(_patched(tmp_path / "pix0.nii", (SIZEOF_HDR, "i", sizeof), (PIXDIM + 4, "f", 0.0)),
             "the voxel size (pixdim) is (0, 0.5, 5) mm")


def test_a_damaged_sizeof_hdr_does_not_hide_a_broken_gzip_crc(tmp_path):
    path = _patched(tmp_path / "crc.nii.gz", (SIZEOF_HDR, "i", 0), compress=True)
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the gzip trailer's CRC
    path.write_bytes(bytes(raw))
    _refused(path, "truncated or corrupt", "incorrect data check")


def test_a_damaged_sizeof_hdr_does_not_hide_an_oversized_claim(tmp_path, monkeypatch):
    """A small .nii.gz claiming 1024x1024x200 float64 (1.6 GB) is refused from its header, unread."""
    path = _patched(tmp_path / "claim.nii.gz", (SIZEOF_HDR, "i", 0), (DIM + 2, "h", 1024), (DIM + 4, "h", 1024),
                    (DIM + 6, "h", 200), (DATATYPE, "h", 64), (BITPIX, "h", 64), compress=True)
    monkeypatch.setattr(nib, "load", lambda *a, **k: pytest.fail("nibabel was asked to read the file"))
    with pytest.raises(InputImageError, match="the header announces 1024x1024x200 voxels, 1677721600 bytes"):
        load_image(path)


def test_a_damaged_sizeof_hdr_alone_is_repaired_with_a_warning(tmp_path, caplog):
    image = load_image(_patched(tmp_path / "s0.nii", (SIZEOF_HDR, "i", 0)))
    assert image.data.shape == (12, 10, 4) and image.zooms_mm == (0.5, 0.5, 5.0)
    assert any("sizeof_hdr should be 348" in r.getMessage() for r in caplog.records), caplog.text


def test_a_nifti2_header_with_a_damaged_sizeof_hdr_is_refused_by_name(tmp_path):
    img = nib.Nifti2Image(np.random.default_rng(0).random((6, 6, 3)).astype(np.float32), AFFINE)
    raw = bytearray(_tiny(tmp_path / "src.nii", img).read_bytes())
    struct.pack_into("<i", raw, 0, 0)
    path = tmp_path / "n2.nii"
    path.write_bytes(bytes(raw))
    _refused(path, "sizeof_hdr is 0, expected 540 (its magic says NIfTI-2); the header is damaged")


# -------------------------------------------------- 2. pixdim and the transform in use disagree

def _with_pixdim(path: Path, affine: np.ndarray, pixdim: tuple[float, float, float], *, sform: bool = True,
                 qfac: float = 1.0) -> Path:
    """A tiny image placed by ``affine`` (as its sform, or as its qform only) whose pixdim is then set to
    ``pixdim`` (and pixdim[0], qfac, to ``qfac``) without touching the transforms."""
    img = nib.Nifti1Image(np.random.default_rng(0).normal(100, 20, (12, 10, 4)).astype(np.float32), affine)
    if sform:
        img.set_qform(None, code=0)
        img.set_sform(affine, code=1)
    else:
        img.set_sform(None, code=0)
        img.set_qform(affine, code=1)
    img.header["pixdim"][0] = qfac
    img.header["pixdim"][1:4] = pixdim
    return _tiny(path, img)


def test_a_pixdim_that_disagrees_with_the_sform_is_refused_naming_both_sizes(tmp_path):
    """The fine grid used pixdim (1 mm) while the placement and the areas used the sform (0.5 mm): a
    silently wrong segmentation. Now refused."""
    path = _with_pixdim(tmp_path / "stale.nii.gz", AFFINE, (1.0, 1.0, 5.0))
    _refused(path, "the voxel size in pixdim (1, 1, 5) mm disagrees with the sform's (0.5, 0.5, 5) mm")
    with pytest.raises(InputImageError, match="disagrees with the sform"):
        morphometry(path)


def _rotation(degrees: float, axis: int) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = _rotation(25, 0) @ _rotation(-10, 2) @ np.diag([-0.5, 0.6, 5.0])
SHEARED = np.array([[0.5, 0.1, 0, 0], [0, 0.6, 0.3, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("name, affine, sform, qfac", [
    ("oblique_sform", OBLIQUE, True, 1.0),
    ("sheared_sform", SHEARED, True, 1.0),
    ("oblique_qform_only", OBLIQUE, False, 1.0),
    ("qform_only_qfac_minus_1", AFFINE @ np.diag([1, 1, -1, 1]), False, -1.0),
])
def test_well_formed_oblique_sheared_and_qfac_files_still_load(tmp_path, name, affine, sform, qfac):
    """pixdim equal to the column lengths of the transform (what every writer stores) loads unchanged."""
    sizes = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    image = load_image(_with_pixdim(tmp_path / f"{name}.nii.gz", affine, sizes, sform=sform, qfac=qfac))
    np.testing.assert_allclose(image.zooms_mm, sizes, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), sizes, rtol=1e-6)


def test_a_pixdim_rounded_to_four_digits_is_within_the_tolerance(tmp_path):
    affine = np.diag([0.46875, 0.46875, 5.0, 1.0])
    assert load_image(_with_pixdim(tmp_path / "rounded.nii.gz", affine, (0.4688, 0.4688, 5.0))).zooms_mm[0] == \
        pytest.approx(0.4688, rel=1e-6)


def test_the_shared_images_agree_with_their_transforms(shared_data):
    """Every labelled image and mask of ../shared (real scanner headers) passes the check."""
    from ..conftest import LABELLED

    for files in LABELLED.values():
        for f in files:
            if f is not None:
                load_image(f, allow_constant=True)


# ------------------------------------ 3, 4. compressions sct-gm does not read; names that disagree

def test_a_zstd_file_is_refused_in_one_line_not_an_internal_error(tmp_path):
    """nibabel raised TripWireError (an AttributeError: exit 70) without the optional zstd package."""
    path = tmp_path / "b.nii.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(60))
    _refused(path, "is compressed with zstd (.zst), which sct-gm does not read", "reads .nii and .nii.gz")


def test_a_bzip2_file_is_refused_as_such_not_as_truncated(tmp_path):
    path = tmp_path / "b.nii.bz2"
    path.write_bytes(bz2.compress(_tiny(tmp_path / "src.nii").read_bytes()))
    (tmp_path / "src.nii").unlink()
    assert "truncated" not in _refused(path, "is compressed with bzip2 (.bz2)", "reads .nii and .nii.gz")


def test_gzip_content_named_nii_says_the_extension_and_the_compression_disagree(tmp_path):
    path = tmp_path / "gz_named.nii"
    path.write_bytes(gzip.compress(_tiny(tmp_path / "src.nii").read_bytes()))
    (tmp_path / "src.nii").unlink()
    _refused(path, "gzip-compressed but its name does not end in .gz", "rename it to end in .nii.gz")


def test_plain_content_named_nii_gz_says_the_extension_and_the_compression_disagree(tmp_path):
    path = tmp_path / "plain.nii.gz"
    path.write_bytes(_tiny(tmp_path / "src.nii").read_bytes())
    (tmp_path / "src.nii").unlink()
    _refused(path, "its name ends in .gz but its content is not gzip-compressed", "rename it to end in .nii")


def test_an_upper_case_gz_name_with_gzip_content_still_loads(tmp_path):
    assert load_image(_tiny(tmp_path / "UPPER.NII.GZ")).data.shape == (12, 10, 4)


# ------------------------------------------------------------------ 8. units other than millimetres

def _with_units(path: Path, unit: str) -> Path:
    img = nib.Nifti1Image(np.random.default_rng(0).normal(100, 20, (12, 10, 4)).astype(np.float32), AFFINE)
    img.header.set_xyzt_units(xyz=unit)
    return _tiny(path, img)


@pytest.mark.parametrize("unit, code, sizes", [("meter", 1, "(500, 500, 5000) mm"),
                                               ("micron", 3, "(0.0005, 0.0005, 0.005) mm")])
def test_a_voxel_size_in_metres_or_micrometres_is_refused_not_read_as_mm(tmp_path, unit, code, sizes):
    path = _with_units(tmp_path / f"{unit}.nii.gz", unit)
    assert nib.load(str(path)).header.get_xyzt_units()[0] == unit
    _refused(path, f"(xyzt_units {code}): pixdim (0.5, 0.5, 5) would be {sizes}", "set the unit to mm")


@pytest.mark.parametrize("unit", ["mm", "unknown"])
def test_a_voxel_size_in_mm_or_of_unknown_unit_is_read_as_mm(tmp_path, unit):
    assert load_image(_with_units(tmp_path / f"{unit}.nii.gz", unit)).zooms_mm == (0.5, 0.5, 5.0)
