"""Seeded fuzzing of the CLI's inputs: real headers and data (../shared t2s, or a tiny synthetic image
when ../shared is absent) mutated field by field, byte by byte, cut short or gzip-damaged, then given
to ``segment``, ``metrics`` and ``qc``.

Every run must either succeed with valid outputs on the input's grid, or exit != 0 with exactly one
stderr line, ``sct-gm: error: ...`` naming the damaged file; never a traceback, never a file left
behind. The mutations are drawn from a fixed seed, so a failure is reproduced by its test id.
``segment`` runs the suite's random-weight 4-filter model (conftest ``tiny_weights``): the pipeline in
full, in a fraction of a second.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import LABELLED

#: The draw; SCTGM_FUZZ_SEED and SCTGM_FUZZ_SCALE (a multiplier of the case counts) explore further by hand.
SEED = int(os.environ.get("SCTGM_FUZZ_SEED", "20261201"))
_SCALE = float(os.environ.get("SCTGM_FUZZ_SCALE", "1"))
N_SEGMENT, N_METRICS, N_QC = (max(1, int(n * _SCALE)) for n in (72, 24, 16))

F32_NAN, F32_INF = float("nan"), float("inf")

#: (name, byte offset, struct format, interesting values) of the NIfTI-1 header fields worth mutating.
FIELDS: list[tuple[str, int, str, tuple[float, ...]]] = [
    ("sizeof_hdr", 0, "i", (0, 347, 540, 0x5C010000)),  # the last: 348 byte-swapped
    ("dim0", 40, "h", (0, -1, 2, 4, 5, 8, 256)),
    ("dim1", 42, "h", (0, -1, 1, 2, 300, 32767)),
    ("dim2", 44, "h", (0, -3, 1, 7, 32767)),
    ("dim3", 46, "h", (0, -1, 1, 2, 40, 1000)),
    ("dim4", 48, "h", (0, -1, 1, 3)),
    ("datatype", 70, "h", (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304,
                           16 ^ 0x100, 16 << 8, 999, -1)),
    ("bitpix", 72, "h", (0, 8, 24, 64, -1)),
    ("qfac", 76, "f", (0.0, -1.0, 2.0, F32_NAN)),
    ("pixdim1", 80, "f", (0.0, -0.5, F32_NAN, F32_INF, 1e-30, 1e-3, 3.0, 1e4, 1e30)),
    ("pixdim2", 84, "f", (0.0, -2.0, F32_NAN, 1e-6, 50.0, 1e20)),
    ("pixdim3", 88, "f", (0.0, -7.5, F32_NAN, F32_INF, 0.1, 1e6)),
    ("vox_offset", 108, "f", (1.0, 322.0, 351.0, 353.0, 368.0, 4096.0, 1e9, -352.0, F32_NAN)),
    ("scl_slope", 112, "f", (0.0, -1.0, F32_NAN, F32_INF, 1e38, 1e-38, 2.0)),
    ("scl_inter", 116, "f", (F32_NAN, F32_INF, -1e38, 1e38, 100.0)),
    ("xyzt_units", 123, "b", (0, 1, 3, 127)),
    ("qform_code", 252, "h", (0, 1, 4, 5, 6, -1, 300)),
    ("sform_code", 254, "h", (0, 1, 2, 5, 6, -1, 300)),
    ("quatern_b", 256, "f", (F32_NAN, 3.0, -1.5, 1.0, 0.7)),
    ("quatern_c", 260, "f", (F32_NAN, 2.0, -1.0, 0.7)),
    ("quatern_d", 264, "f", (F32_INF, 1.0001, -4.0)),
    ("qoffset_x", 268, "f", (F32_NAN, 1e30)),
    ("srow_x0", 280, "f", (0.0, F32_NAN, F32_INF, 1e30)),
    ("srow_y1", 300, "f", (0.0, F32_NAN, -1e-20)),
    ("srow_z2", 320, "f", (0.0, F32_NAN, 1e25)),
    ("srow_z3", 324, "f", (F32_INF, -1e30)),
    ("magic", 344, "4s", (b"ni1\x00", b"n+2\x00", b"xyz\x00", b"\x00\x00\x00\x00")),
    ("extension", 348, "4s", (b"\x01\x00\x00\x00", b"\xff\xff\xff\xff")),
]


def _mutate_field(raw: bytearray, rng: np.random.Generator) -> str:
    name, offset, fmt, values = FIELDS[rng.integers(len(FIELDS))]
    value = values[rng.integers(len(values))]
    struct.pack_into("<" + fmt, raw, offset, value)
    return f"{name}={value!r}"


def _flip_header_byte(raw: bytearray, rng: np.random.Generator) -> str:
    offset = int(rng.integers(0, 352))
    raw[offset] ^= 1 << int(rng.integers(8))
    return f"flip@{offset}"


def _garbage_data(raw: bytearray, rng: np.random.Generator) -> str:
    start = int(rng.integers(352, len(raw)))
    n = min(len(raw) - start, int(rng.integers(1, 64)))
    raw[start:start + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return f"garbage@{start}+{n}"


def _extension(raw: bytearray, rng: np.random.Generator) -> str:
    """Insert one header extension (the data move along), with a sane or insane declared size."""
    esize = int(rng.choice([16, 32, 13, 0, -16, 1 << 30]))
    ext = struct.pack("<ii", esize, int(rng.integers(0, 40))) + b"x" * 24
    raw[348:352] = b"\x01\x00\x00\x00"
    raw[352:352] = ext
    struct.pack_into("<f", raw, 108, 352.0 + len(ext))
    return f"extension(esize={esize})"


HEADER_MUTATORS: list[Callable[[bytearray, np.random.Generator], str]] = [
    _mutate_field, _mutate_field, _mutate_field, _flip_header_byte, _garbage_data, _extension]


def _mutated_bytes(source: bytes, rng: np.random.Generator) -> tuple[bytes, str, str]:
    """(file bytes, extension, description) of one mutated copy of ``source`` (an uncompressed .nii)."""
    raw = bytearray(source)
    what = [HEADER_MUTATORS[rng.integers(len(HEADER_MUTATORS))](raw, rng) for _ in range(int(rng.integers(1, 4)))]
    gz = bool(rng.random() < 0.7)
    data = gzip.compress(bytes(raw), compresslevel=1, mtime=0) if gz else bytes(raw)
    fate = rng.random()
    if fate < 0.12:  # cut short
        cut = int(rng.integers(1, len(data)))
        data = data[:cut]
        what.append(f"cut@{cut}")
    elif gz and fate < 0.24:  # damage inside the compressed stream
        at = int(rng.integers(10, len(data)))
        data = data[:at] + bytes([data[at] ^ 0xA5]) + data[at + 1:]
        what.append(f"gzbyte@{at}")
    elif fate < 0.28:
        data = data + b"trailing garbage"
        what.append("trailing")
    return data, ".nii.gz" if gz else ".nii", "+".join(what)


def _synthetic_pair() -> tuple[bytes, bytes]:
    """A tiny oblique image with a bright 'cord' and its GM mask, as uncompressed .nii bytes."""
    rng = np.random.default_rng(SEED)
    x, y = np.meshgrid(np.arange(40) - 20, np.arange(36) - 18, indexing="ij")
    cord = ((x / 12) ** 2 + (y / 8) ** 2 < 1)
    gm = ((x / 6) ** 2 + (y / 3) ** 2 < 1)
    image = np.stack([300 * cord + rng.normal(100, 10, cord.shape) for _ in range(4)], axis=2).astype(np.int16)
    mask = np.stack([gm] * 4, axis=2).astype(np.uint8)
    affine = np.array([[-0.5, 0, 0.1, 10], [0, 0.5, 0, -12], [0, 0.02, 5.0, 3], [0, 0, 0, 1]])
    out = []
    for arr in (image, mask):
        img = nib.Nifti1Image(arr, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        out.append(img.to_bytes())
    return out[0], out[1]


@pytest.fixture(scope="module")
def sources() -> tuple[bytes, bytes, str]:
    """(image .nii bytes, GM mask .nii bytes on its grid, origin)."""
    image, mask, _ = LABELLED["t2s"]
    if image.exists() and mask.exists():
        return gzip.decompress(image.read_bytes()), gzip.decompress(mask.read_bytes()), "t2s"
    return (*_synthetic_pair(), "synthetic")


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


class _NibabelLog(logging.Handler):
    """Records what nibabel logs: its stream handler writes to the real stderr, which CliRunner does
    not capture, so a message it prints during a failing run would be a second stderr line unseen."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _invoke(args: list[str]) -> tuple[object, list[str]]:
    """Run the CLI; returns its result and what nibabel logged or Python warned (each would be a stray
    stderr line for a user; pytest and CliRunner keep both out of ``res.stderr``)."""
    logger = logging.getLogger("nibabel.global")
    spy = _NibabelLog()
    logger.addHandler(spy)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = CliRunner().invoke(main, args)
    finally:
        logger.removeHandler(spy)
    return res, spy.messages + [f"{w.category.__name__}: {w.message}" for w in caught]


def _check_failure(res, nib_log: list[str], damaged: Path, folder: Path, before: set[str], label: str) -> None:
    lines = res.stderr.splitlines()
    assert res.exception is None or isinstance(res.exception, SystemExit), f"{label}: {res.exception!r}"
    assert "Traceback" not in res.output, f"{label}: {res.output}"
    assert len(lines) == 1 and lines[0].startswith("sct-gm: error: "), f"{label}: {res.stderr!r}"
    assert damaged.name in lines[0], f"{label}: the message does not name {damaged.name}: {lines[0]}"
    assert not nib_log, f"{label}: stray stderr lines {nib_log}"
    assert _listing(folder) == before, f"{label}: left {sorted(_listing(folder) - before)}"


@functools.lru_cache(maxsize=8)
def _cases(n: int, salt: int, source: bytes) -> list[tuple[bytes, str, str]]:
    rng = np.random.default_rng([SEED, salt])
    return [_mutated_bytes(source, rng) for _ in range(n)]


@pytest.mark.parametrize("index", range(N_SEGMENT))
def test_segment_survives_mutated_images(index, sources, tiny_weights, tmp_path):
    data, ext, what = _cases(N_SEGMENT, 1, sources[0])[index]
    path = tmp_path / f"case{ext}"
    path.write_bytes(data)
    before = _listing(tmp_path)
    res, nib_log = _invoke(["segment", "-i", str(path), "-m", str(tiny_weights), "-q"])
    label = f"segment {sources[2]} #{index} {what}"
    if res.exit_code != 0:
        _check_failure(res, nib_log, path, tmp_path, before, label)
        return
    assert not nib_log, f"{label}: stray stderr lines {nib_log}"
    from sctgm.io import load_image

    out = tmp_path / f"case_gmseg{ext}"
    assert _listing(tmp_path) == before | {out.name, "case_gmseg.json"}, label
    src, seg = load_image(path, allow_constant=True), nib.load(str(out))
    assert seg.shape == src.data.shape, label
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4, err_msg=label)
    assert seg.get_data_dtype() == np.uint8, label
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1}, label


@pytest.mark.parametrize("index", range(N_METRICS))
def test_metrics_survives_a_mutated_input_or_reference(index, sources, tmp_path):
    data, ext, what = _cases(N_METRICS, 2, sources[1])[index]
    good = tmp_path / "ref.nii"
    good.write_bytes(sources[1])
    bad = tmp_path / f"mask{ext}"
    bad.write_bytes(data)
    pair = ["-i", str(bad), "-r", str(good)] if index % 2 == 0 else ["-i", str(good), "-r", str(bad)]
    before = _listing(tmp_path)
    res, nib_log = _invoke(["metrics", *pair, "-o", str(tmp_path / "m.csv"), "-q"])
    label = f"metrics {sources[2]} #{index} {what}"
    if res.exit_code != 0:
        _check_failure(res, nib_log, bad, tmp_path, before, label)
        return
    assert not nib_log, f"{label}: stray stderr lines {nib_log}"
    assert _listing(tmp_path) == before | {"m.csv"}, label
    assert (tmp_path / "m.csv").read_text().count("\n") >= 2, label


@pytest.mark.parametrize("index", range(N_QC))
def test_qc_survives_a_mutated_image_or_mask(index, sources, tmp_path):
    image_mutated = index % 2 == 0
    data, ext, what = _cases(N_QC, 3, sources[0] if image_mutated else sources[1])[index]
    image, mask = tmp_path / "image.nii", tmp_path / "mask.nii"
    image.write_bytes(sources[0])
    mask.write_bytes(sources[1])
    bad = tmp_path / f"{'image' if image_mutated else 'mask'}_bad{ext}"
    bad.write_bytes(data)
    args = ["qc", "-i", str(bad if image_mutated else image), "-s", str(mask if image_mutated else bad),
            "-o", str(tmp_path / "qc"), "-q"]
    before = _listing(tmp_path)
    res, nib_log = _invoke(args)
    label = f"qc {sources[2]} #{index} {what}"
    if res.exit_code != 0:
        _check_failure(res, nib_log, bad, tmp_path, before, label)
        return
    assert not nib_log, f"{label}: stray stderr lines {nib_log}"
    assert (tmp_path / "qc" / "index.html").is_file(), label
    assert not [p for p in _listing(tmp_path) if ".part" in p], label


def test_the_mutations_reach_every_kind_of_damage(sources):
    """The seeded draw covers the categories the issue lists (so a change of seed cannot hollow it out)."""
    whats = " ".join(what for n, salt in ((N_SEGMENT, 1), (N_METRICS, 2), (N_QC, 3))
                     for _, _, what in _cases(n, salt, sources[0]))
    for needle in ("datatype=", "dim", "pixdim", "quatern", "qform_code", "sform_code", "vox_offset", "scl_",
                   "extension", "cut@", "gzbyte@", "flip@"):
        assert needle in whats, needle
