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
