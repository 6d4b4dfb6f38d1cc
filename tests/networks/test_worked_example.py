"""docs/architecture.md's worked example (a PSIR network in one module outside sct-gm) is code that
runs: the module is cut from the page, registered with random weights, and segments on both engines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from sctgm.io import load_image
from sctgm.model.install import sha256_of
from sctgm.segment.pipeline import Segmenter, SegmentOptions

from ..conftest import cord_phantom_volume

ARCHITECTURE_MD = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def psir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    page = ARCHITECTURE_MD.read_text()
    code = re.search(r"## A worked example: a PSIR model.*?```python\n(.*?)```", page, re.S).group(1)
    package = tmp_path / "plugins" / "my_networks"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "psir.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    from my_networks import psir as module

    return module


def test_the_psir_example_runs_on_both_engines(psir, tmp_path, monkeypatch, make_nifti) -> None:
    import torch

    from sctgm.model.weights import save_safetensors
    from sctgm.networks import dilated

    torch.manual_seed(0)
    net = psir.NETWORK.torch_module({"filters": 4}).eval()
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():  # the PSIR network is the dilated network on the negated input
        assert torch.equal(net.logits(x), net.net.logits(-x))
    sd = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert psir.NETWORK.recognise(sd) == {"name": "psir-dilated", "filters": 4}
    assert dilated.recognise(sd) is None  # the prefixed keys are not the plain network's
    weights = tmp_path / "w" / "psir.safetensors"
    weights.parent.mkdir()
    save_safetensors(sd, 4, weights)
    entry = {"description": "dilated network for PSIR", "version": "1", "contrast": "PSIR",
             "architecture": {"name": "psir-dilated", "module": "my_networks.psir", "filters": 4},
             "preprocessing": {"threshold": 0.5, "crop_px": 64, "enhancement": {"denoise": "off"}},
             "files": [{"name": weights.name, "role": "weights", "format": "safetensors",
                        "size": weights.stat().st_size, "sha256": sha256_of(weights)}],
             "sources": [{"kind": "files", "url": "w"}]}
    (tmp_path / "registry.json").write_text(json.dumps({"models": {"psir": entry}}))
    monkeypatch.setenv("SCTGM_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.delenv("SCTGM_MIRROR", raising=False)
    image = load_image(make_nifti(cord_phantom_volume(), zooms_mm=(0.5, 0.5, 5.0)))
    probs = []
    for engine in ("onnxruntime", "torch"):
        seg = Segmenter.from_name("psir", device="cpu", engine=engine, threads=1)
        assert seg.model.recipe.contrast == "PSIR"
        probs.append(seg.segment_image(image, options=SegmentOptions(keep_largest=False, fill_holes=False),
                                       want_prob=True).gm_prob)
    assert np.abs(probs[0] - probs[1]).max() < 1e-5
