"""A small 2D U-Net (Ronneberger et al. 2015), the baseline the dilated network was compared with in
Perone et al. (2018). Registry name ``unet``, ``sct-gm train --arch unet``.

Same convention as :mod:`sctgm.networks.dilated`: input (N, 1, H, W) standardised axial slices,
``logits`` (N, 1, H, W), ``forward`` the sigmoid probability. Any H, W: the input is padded with zeros
(the standardised mean) at its bottom/right edges up to a multiple of ``2**depth`` and the output
cropped back, in both the torch module and the ONNX graph.

Layout (F = ``filters``, level i has F * 2**i channels)::

    encoders.i : [conv3x3 -> BN -> ReLU] x 2, then 2x2 max-pool (i = 0 .. depth-1)
    bottom     : [conv3x3 -> BN -> ReLU] x 2 at F * 2**depth
    ups.i      : 2x2 transposed conv, stride 2, F * 2**(i+1) -> F * 2**i
    decoders.i : concat(skip_i, up_i) -> [conv3x3 -> BN -> ReLU] x 2
    head       : 1x1 conv -> 1 channel (logits)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Network
from .onnx_graph import GraphBuilder

if TYPE_CHECKING:
    from torch import nn

NAME = "unet"
#: Sizes of a U-Net trained from scratch.
DEFAULTS: dict[str, Any] = {"filters": 16, "depth": 3}
#: torch's BatchNorm2d default epsilon (the U-Net is ours; nothing to match).
UNET_BN_EPSILON = 1e-5


def unet_shape(state_dict: Mapping[str, Any]) -> tuple[int, int]:
    """(filters, depth) of a U-Net state dict."""
    filters = int(state_dict["encoders.0.conv1.weight"].shape[0])
    depth = sum(1 for k in state_dict if k.startswith("encoders.") and k.endswith(".conv1.weight"))
    return filters, depth


def recognise(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"name": "unet", "filters": F, "depth": D}`` for a U-Net state dict, else None."""
    if "encoders.0.conv1.weight" not in state_dict or "head.weight" not in state_dict:
        return None
    filters, depth = unet_shape(state_dict)
    return {"name": NAME, "filters": filters, "depth": depth}


@functools.cache
def _torch_class() -> type:
    """The torch module class, defined on first use (keeps this module torch-free; see dilated.py)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DoubleConv(nn.Module):
        """[Conv 3x3 -> BN -> ReLU] x 2."""

        def __init__(self, in_ch: int, out_ch: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(out_ch, eps=UNET_BN_EPSILON)
            self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(out_ch, eps=UNET_BN_EPSILON)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(x)))

    class UNet(nn.Module):
        """A 2D U-Net with ``filters`` channels at full resolution and ``depth`` poolings."""

        def __init__(self, filters: int = 16, depth: int = 3) -> None:
            super().__init__()
            if filters < 1 or depth < 1:
                raise ValueError(f"U-Net filters={filters}, depth={depth}: both must be at least 1")
            self.filters = filters
            self.depth = depth
            width = [filters * 2 ** i for i in range(depth + 1)]
            self.encoders = nn.ModuleList(DoubleConv(1 if i == 0 else width[i - 1], width[i]) for i in range(depth))
            self.bottom = DoubleConv(width[depth - 1], width[depth])
            self.ups = nn.ModuleList(nn.ConvTranspose2d(width[i + 1], width[i], 2, stride=2) for i in range(depth))
            self.decoders = nn.ModuleList(DoubleConv(2 * width[i], width[i]) for i in range(depth))
            self.head = nn.Conv2d(filters, 1, 1)

        @property
        def multiple_px(self) -> int:
            """H and W are padded up to a multiple of this."""
            return 2 ** self.depth

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            """Pre-sigmoid output, shape (N, 1, H, W)."""
            h, w = x.shape[2], x.shape[3]
            m = self.multiple_px
            x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
            skips = []
            for enc in self.encoders:
                x = enc(x)
                skips.append(x)
                x = F.max_pool2d(x, 2)
            x = self.bottom(x)
            for i in reversed(range(self.depth)):
                x = self.decoders[i](torch.cat([skips[i], self.ups[i](x)], dim=1))
            return self.head(x)[:, :, :h, :w]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Sigmoid GM probability, shape (N, 1, H, W)."""
            return torch.sigmoid(self.logits(x))

    return UNet


def __getattr__(name: str) -> Any:
    """``UNet``: the torch module class (imports torch)."""
    if name == "UNet":
        return _torch_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_module(architecture: Mapping[str, Any]) -> nn.Module:
    return _torch_class()(int(architecture.get("filters", DEFAULTS["filters"])),
                          int(architecture.get("depth", DEFAULTS["depth"])))


def onnx_graph(state_dict: dict[str, np.ndarray], architecture: Mapping[str, Any] | None = None,
               name: str = "sctgm_unet") -> bytes:
    """The serialised ONNX model of the U-Net with these weights, node for node the torch module."""
    filters, depth = unet_shape(state_dict)
    m = 2 ** depth
    g = GraphBuilder(state_dict)

    def double_conv(src: str, prefix: str) -> str:
        y = src
        for j in (1, 2):
            c = g.node("Conv", [y, g.weight(f"{prefix}.conv{j}.weight"), g.weight(f"{prefix}.conv{j}.bias")],
                       f"{prefix}/conv{j}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            b = g.batchnorm(c, f"{prefix}.bn{j}", f"{prefix}/bn{j}", UNET_BN_EPSILON)
            y = g.node("Relu", [b], f"{prefix}/relu{j}")
        return y

    # pad H, W up to a multiple of m at the bottom/right: pads = [0, 0, 0, 0, 0, 0, (-H) % m, (-W) % m]
    g.node("Shape", ["x"], "pad/hw", start=2)
    g.const("pad/m", np.array([m, m]), np.int64)
    g.node("Sub", ["pad/m", g.node("Mod", ["pad/hw", "pad/m"], "pad/rem")], "pad/m_minus_rem")
    g.node("Mod", ["pad/m_minus_rem", "pad/m"], "pad/extra")
    g.const("pad/zeros", np.zeros(6), np.int64)
    g.node("Concat", ["pad/zeros", "pad/extra"], "pad/pads", axis=0)
    x = g.node("Pad", ["x", "pad/pads"], "pad", mode="constant")

    skips = []
    for i in range(depth):
        x = double_conv(x, f"encoders.{i}")
        skips.append(x)
        x = g.node("MaxPool", [x], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
    x = double_conv(x, "bottom")
    for i in reversed(range(depth)):
        up = g.node("ConvTranspose", [x, g.weight(f"ups.{i}.weight"), g.weight(f"ups.{i}.bias")], f"ups.{i}",
                    kernel_shape=[2, 2], strides=[2, 2])
        cat = g.node("Concat", [skips[i], up], f"cat{i}", axis=1)
        x = double_conv(cat, f"decoders.{i}")
    y = g.node("Conv", [x, g.weight("head.weight"), g.weight("head.bias")], "head", kernel_shape=[1, 1])
    # crop back to the input's H, W
    g.const("crop/starts", np.zeros(2), np.int64)
    g.const("crop/axes", np.array([2, 3]), np.int64)
    y = g.node("Slice", [y, "crop/starts", "pad/hw", "crop/axes"], "logits")
    g.node("Sigmoid", [y], "prob")
    return g.finish(name, f"U-Net, {filters} filters, depth {depth}")


NETWORK = Network(NAME, "unet", DEFAULTS, recognise, torch_module, onnx_graph)
