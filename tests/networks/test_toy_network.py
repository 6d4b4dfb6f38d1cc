"""A network of one's own is one module plus one registry entry: a toy network written into a temporary
folder (never into sct-gm), registered from a user registry, segments on both engines, trains, and the
trained model segments on both engines again."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sctgm.io import load_image
from sctgm.model.install import sha256_of
from sctgm.segment.pipeline import Segmenter, SegmentOptions

from ..training.test_train_api import phantom_pairs, train_on

TOY_MODULE = '''
"""Toy network: conv 3x3 (1 -> F) -> ReLU -> conv 1x1 (F -> 1) -> sigmoid."""
from sctgm.networks.base import Network
from sctgm.networks.onnx_graph import GraphBuilder

NAME = "toy"


def recognise(state_dict):
    w = state_dict.get("toy1.weight")
    return None if w is None else {"name": NAME, "filters": int(w.shape[0])}


def torch_module(architecture):
    import torch
    from torch import nn

    class Toy(nn.Module):
        def __init__(self, filters):
            super().__init__()
            self.filters = filters
            self.toy1 = nn.Conv2d(1, filters, 3, padding=1)
            self.toy2 = nn.Conv2d(filters, 1, 1)

        def logits(self, x):
            return self.toy2(torch.relu(self.toy1(x)))

        def forward(self, x):
            return torch.sigmoid(self.logits(x))

    return Toy(int(architecture["filters"]))


def onnx_graph(state_dict, architecture, name="toy"):
    g = GraphBuilder(state_dict)
    g.node("Conv", ["x", g.weight("toy1.weight"), g.weight("toy1.bias")], "c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.node("Relu", ["c1"], "r1")
    g.node("Conv", ["r1", g.weight("toy2.weight"), g.weight("toy2.bias")], "logits", kernel_shape=[1, 1])
    g.node("Sigmoid", ["logits"], "prob")
    return g.finish(name, "toy network")


NETWORK = Network(NAME, "toy", {"filters": 4}, recognise, torch_module, onnx_graph)
'''


@pytest.fixture
def toy_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The toy module on the Python path, its random weights and its registry entry, all in tmp_path."""
    import torch

    from sctgm.model.weights import save_safetensors

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_net.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(plugins))
    import toy_net  # noqa: F401  (as the registry's 'module' will import it)

    torch.manual_seed(0)
    sd = {k: v.numpy() for k, v in toy_net.NETWORK.torch_module({"filters": 4}).state_dict().items()}
    weights = tmp_path / "toy_weights" / "toy.safetensors"
    weights.parent.mkdir()
    save_safetensors(sd, 4, weights)
    entry = {"description": "toy network", "version": "t1",
             "architecture": {"name": "toy", "module": "toy_net", "filters": 4},
             "preprocessing": {"threshold": 0.5, "crop_px": 64, "enhancement": {"denoise": "off"}},
             "files": [{"name": weights.name, "role": "weights", "format": "safetensors",
                        "size": weights.stat().st_size, "sha256": sha256_of(weights)}],
             "sources": [{"kind": "files", "url": "toy_weights"}]}
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"models": {"toy": entry}}))
    monkeypatch.setenv("SCTGM_REGISTRY", str(registry))
    monkeypatch.delenv("SCTGM_MIRROR", raising=False)
    return "toy"


def _both_engines(model: str, image_path: str) -> tuple[np.ndarray, np.ndarray]:
    image = load_image(image_path)
    out = []
    for engine in ("onnxruntime", "torch"):
        seg = Segmenter.from_name(model, device="cpu", engine=engine, threads=1)
        assert seg.network.engine == engine and seg.model.architecture["name"] == "toy"
        out.append(seg.segment_image(image, options=SegmentOptions(keep_largest=False, fill_holes=False),
                                     want_prob=True))
    onnx, torch_ = out
    assert np.abs(onnx.gm_prob - torch_.gm_prob).max() < 1e-5  # the two engines compute one function
    return onnx.gm, torch_.gm


def test_toy_network_segments_and_trains_on_both_engines(toy_registered: str, tmp_path: Path) -> None:
    images, masks = phantom_pairs(tmp_path / "data", n=2, shape=(40, 40, 4))
    gm_onnx, gm_torch = _both_engines(toy_registered, images[0])
    assert np.array_equal(gm_onnx, gm_torch)

    result = train_on(images, masks, output=tmp_path / "trained", init=toy_registered, max_steps=3,
                      val_fraction=0.0, seed=0, device="cpu", threads=1)
    (name, entry), = json.loads(result.model_json.read_text())["models"].items()
    assert entry["architecture"] == {"name": "toy", "module": "toy_net", "filters": 4}  # carried from the init
    gm_onnx2, gm_torch2 = _both_engines(str(result.model_dir), images[0])
    assert np.array_equal(gm_onnx2, gm_torch2)
