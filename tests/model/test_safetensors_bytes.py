"""Deterministic safetensors bytes (issue #21): the same weights saved by different processes give the
same file, so a model's sha256 (its version, and every provenance record keyed on it) is stable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SAVE = """
import hashlib, sys
import numpy as np
from sctgm.model.weights import save_safetensors
rng = np.random.default_rng(0)
sd = {k: rng.normal(size=(3, 2)).astype(np.float32) for k in ("conv.weight", "bn.bias", "a", "Z")}
for i in range(8):  # a hash map's order may differ from one map to the next within a process, too
    save_safetensors(sd, 4, sys.argv[1])
    print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
"""


def test_the_same_weights_give_the_same_file_in_every_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    digests = []
    for k in range(2):
        out = subprocess.run([sys.executable, "-c", _SAVE, str(tmp_path / f"w{k}.safetensors")], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        digests += out
    assert len(digests) == 16 and len(set(digests)) == 1, digests


def test_the_canonical_file_reads_back_exactly(tmp_path):
    import numpy as np
    from safetensors.numpy import load_file

    from sctgm.model.weights import load_safetensors, save_safetensors

    sd = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(5, dtype=np.float64)}
    save_safetensors(sd, 7, tmp_path / "w.safetensors")
    back, filters = load_safetensors(tmp_path / "w.safetensors")
    assert filters == 7 and all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in sd.items())
    assert load_file(str(tmp_path / "w.safetensors")).keys() == sd.keys()  # the library's own reader agrees
    raw = (tmp_path / "w.safetensors").read_bytes()
    assert (8 + int.from_bytes(raw[:8], "little")) % 8 == 0  # the data start 8-byte aligned
