"""The U-Net: shapes, padding, and the ONNX graph computes what the torch module computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sctgm.networks.unet import UNet, unet_shape
from sctgm.networks.unet import onnx_graph as build_unet_graph


def _random_unet(filters: int, depth: int, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(filters, depth)
    # non-trivial BatchNorm statistics, so the graph's BN is checked too
    g = torch.Generator().manual_seed(seed)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    net.eval()
    # spread the probabilities over (0, 1) rather than near a constant, so comparisons say something
    with torch.no_grad():
        z = net.logits(torch.randn(2, 1, 48, 48, generator=g))
        scale = 2.0 / float(z.std())
        net.head.weight.mul_(scale)
        net.head.bias.copy_(net.head.bias * scale - float(z.mean()) * scale)
    return net


@pytest.mark.parametrize("hw", [(32, 32), (37, 50), (200, 200)])
def test_any_size_in_same_size_out(hw: tuple[int, int]) -> None:
    net = _random_unet(4, 3)
    x = torch.randn(2, 1, *hw)
    with torch.no_grad():
        p = net(x)
    assert p.shape == x.shape
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0


def test_shape_read_back_from_state_dict() -> None:
    assert unet_shape(UNet(6, 2).state_dict()) == (6, 2)


@pytest.mark.parametrize("filters,depth,hw", [(4, 2, (40, 40)), (8, 3, (45, 61)), (4, 3, (200, 200))])
def test_onnx_graph_equals_torch(filters: int, depth: int, hw: tuple[int, int]) -> None:
    ort = pytest.importorskip("onnxruntime")
    net = _random_unet(filters, depth, seed=filters + depth)
    sd = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    session = ort.InferenceSession(build_unet_graph(sd), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(3, 1, *hw)).astype(np.float32)
    got = session.run(["prob"], {"x": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    # not trivially saturated: the comparison says something
    assert 0.01 < float(want.std())
