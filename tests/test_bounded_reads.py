"""Bounded reads (issue #21): a .nii.gz that inflates far beyond what its header announces (a
decompression bomb), and a tiny file whose header claims gigabytes given as a training mask, are
refused with one line by the CLI before they cost memory: the child's peak resident memory is
measured (its own VmHWM) under an address-space guard."""

from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sctgm.training.phantom import write_phantom_nifti

REPO = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 300
GUARD_BYTES = 3 << 30  # a broken reader fails with MemoryError instead of taking the machine's memory


def _header(shape: tuple[int, ...], dtype: type) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_zooms((0.5, 0.5, 5.0)[:len(shape)])
    hdr.set_sform(np.diag([0.5, 0.5, 5.0, 1.0]), code=1)
    hdr.set_qform(np.diag([0.5, 0.5, 5.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\0" * 4


def write_bomb(path: Path, inflated_gib: int = 4) -> Path:
    """A .nii.gz announcing a 64x64x8 float32 image whose gzip stream inflates to ``inflated_gib``
    GiB of zeros, in ~1 KB per MiB: one fully flushed deflate block of 1 MiB of zeros, repeated
    (each block starts afresh after Z_FULL_FLUSH, so the copies form a valid stream). Made in a
    fraction of a second; the CRC is not that of the data (a reader that inflates it all finds out
    only at the end, which is the point)."""
    head = _header((64, 64, 8), np.float32) + bytes(64 * 64 * 8 * 4)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first)
        for _ in range(inflated_gib * 1024):
            f.write(block)
        f.write(c.flush() + struct.pack("<II", 0, 0))
    return path


#: Runs the CLI and writes its peak resident memory (VmHWM, kB) to argv[1]. Measured from inside:
#: ``ru_maxrss`` of a child forked from this test process would count the parent's pages copied by fork.
_MEASURED_CLI = """
import sys
from sctgm.cli import main
try:
    main(prog_name="sct-gm", args=sys.argv[2:])
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    open(sys.argv[1], "w").write(peak.split()[1])
"""


def _peak_mb(args: list[str], tmp_path: Path) -> tuple[int, float, str]:
    """Run ``sct-gm ARGS`` (an address-space guard set in the child); (exit code, peak RSS in MB, stderr)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak memory is read from /proc (Linux)")

    def guard() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (GUARD_BYTES, GUARD_BYTES))

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    report = tmp_path / "peak_kb.txt"
    proc = subprocess.run([sys.executable, "-c", _MEASURED_CLI, str(report), *args], env=env, capture_output=True,
                          text=True, preexec_fn=guard, timeout=300)
    return proc.returncode, int(report.read_text()) / 1024, proc.stderr


def test_the_bomb_is_small_and_inflates_beyond_its_header(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.nii.gz", inflated_gib=1)
    assert bomb.stat().st_size < 1_500_000
    with gzip.open(bomb, "rb") as f:
        assert len(f.read(1 << 24)) == 1 << 24  # far more than the 131 kB the header announces


def test_segment_refuses_a_gzip_bomb_in_one_line_without_inflating_it(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 5_000_000
    code, peak_mb, err = _peak_mb(["segment", "-i", str(bomb), "-o", str(tmp_path / "seg.nii.gz")], tmp_path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "bomb.nii.gz" in lines[0] and "inflate" in lines[0], err
    assert peak_mb < PEAK_LIMIT_MB, peak_mb
    assert not list(tmp_path.glob("*seg*"))


def test_train_refuses_a_mask_whose_header_claims_gigabytes(tmp_path):
    img, _ = write_phantom_nifti(tmp_path, np.random.default_rng(0), name="sub-01_T2star", shape=(32, 32, 4))
    liar = tmp_path / "gm.nii.gz"
    liar.write_bytes(gzip.compress(_header((1024, 1024, 384), np.float64) + bytes(64)))
    assert liar.stat().st_size < 600
    code, peak_mb, err = _peak_mb(["train", "-i", str(img), "-r", str(liar), "-o", str(tmp_path / "m"), "--init",
                                   "none", "--arch", "unet", "--filters", "4", "--threads", "1", "--device", "cpu"],
                                  tmp_path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "gm.nii.gz" in lines[0] and "1024x1024x384" in lines[0], err
    assert peak_mb < PEAK_LIMIT_MB, peak_mb
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("extra_bytes", [0, 100])
def test_a_gzip_within_the_slack_still_reads(make_nifti, tmp_path, extra_bytes):
    from sctgm.io import load_image

    path = make_nifti(shape=(20, 20, 3))
    raw = gzip.decompress(path.read_bytes()) + bytes(extra_bytes)  # trailing bytes inside the stream
    path.write_bytes(gzip.compress(raw))
    assert load_image(path).data.shape == (20, 20, 3)


def test_a_sidecar_is_read_only_as_a_small_regular_file(tmp_path):
    """read_small_json (every sidecar sct-gm reads: batch resume, labels, `sct-gm qc`): a FIFO is not
    waited on, a device not read, an oversized or too deeply nested file refused; a real one read."""
    import json
    import threading

    from sctgm.filesystem import read_small_json

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"a": [1, 2]}))
    assert read_small_json(good) == {"a": [1, 2]}
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    done = []
    t = threading.Thread(target=lambda: done.append(read_small_json(fifo)), daemon=True)
    t.start()
    t.join(5)
    assert done == [None]  # returned at once, without a writer
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    assert read_small_json(zero) is None
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"a": "x" * 2000}))
    assert read_small_json(big, max_bytes=1000) is None and read_small_json(big) is not None
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    assert read_small_json(deep) is None
    (tmp_path / "dir.json").mkdir()
    assert read_small_json(tmp_path / "dir.json") is None and read_small_json(tmp_path / "missing.json") is None
