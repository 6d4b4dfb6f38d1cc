"""A small 2D U-Net (Ronneberger et al. 2015), the baseline the dilated network was compared with
in Perone et al. (2018), for ``sct-gm train --arch unet``; and its ONNX graph, written from the
state dict, so the torch-free CPU engine runs U-Nets as it runs the dilated network.

Same convention as :class:`sctgm.engines.network.DilatedGMNet`: input (N, 1, H, W) standardised axial
slices, ``logits`` (N, 1, H, W), ``forward`` the sigmoid probability. Any H, W: the input is padded
with zeros (the standardised mean) at its bottom/right edges up to a multiple of ``2**depth`` and
the output cropped back, in both the torch module and the ONNX graph.

Layout (F = ``filters``, level i has F * 2**i channels)::

    encoders.i : [conv3x3 -> BN -> ReLU] x 2, then 2x2 max-pool (i = 0 .. depth-1)
    bottom     : [conv3x3 -> BN -> ReLU] x 2 at F * 2**depth
    ups.i      : 2x2 transposed conv, stride 2, F * 2**(i+1) -> F * 2**i
    decoders.i : concat(skip_i, up_i) -> [conv3x3 -> BN -> ReLU] x 2
    head       : 1x1 conv -> 1 channel (logits)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: torch's BatchNorm2d default epsilon (the U-Net is ours; nothing to match).
UNET_BN_EPSILON = 1e-5

#: Marks a U-Net state dict (written in safetensors metadata by the trainer).
ARCH = "unet"


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


def unet_shape(state_dict: dict[str, Any]) -> tuple[int, int]:
    """(filters, depth) of a U-Net state dict."""
    filters = int(state_dict["encoders.0.conv1.weight"].shape[0])
    depth = sum(1 for k in state_dict if k.startswith("encoders.") and k.endswith(".conv1.weight"))
    return filters, depth


def build_unet_graph(state_dict: dict[str, np.ndarray], name: str = "sctgm_unet") -> bytes:
    """The serialised ONNX model of :class:`UNet` with these weights (input ``x``: N x 1 x H x W,
    output ``prob``: N x 1 x H x W, any N, H, W), node for node the torch module's computation, in
    the style of :func:`sctgm.engines.onnx.build_graph`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    filters, depth = unet_shape(state_dict)
    m = 2 ** depth
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(key: str, array: np.ndarray, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(array), dtype=dtype), key))
        return key

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def double_conv(src: str, prefix: str) -> str:
        y = src
        for j in (1, 2):
            c = node("Conv", [y, const(f"{prefix}.conv{j}.weight", state_dict[f"{prefix}.conv{j}.weight"]),
                              const(f"{prefix}.conv{j}.bias", state_dict[f"{prefix}.conv{j}.bias"])],
                     f"{prefix}/conv{j}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            keys = [const(f"{prefix}.bn{j}.{k}", state_dict[f"{prefix}.bn{j}.{k}"])
                    for k in ("weight", "bias", "running_mean", "running_var")]
            b = node("BatchNormalization", [c, *keys], f"{prefix}/bn{j}", epsilon=UNET_BN_EPSILON)
            y = node("Relu", [b], f"{prefix}/relu{j}")
        return y

    # pad H, W up to a multiple of m at the bottom/right: pads = [0, 0, 0, 0, 0, 0, (-H) % m, (-W) % m]
    node("Shape", ["x"], "pad/hw", start=2)
    const("pad/m", np.array([m, m]), np.int64)
    node("Sub", ["pad/m", node("Mod", ["pad/hw", "pad/m"], "pad/rem")], "pad/m_minus_rem")
    node("Mod", ["pad/m_minus_rem", "pad/m"], "pad/extra")
    const("pad/zeros", np.zeros(6), np.int64)
    node("Concat", ["pad/zeros", "pad/extra"], "pad/pads", axis=0)
    x = node("Pad", ["x", "pad/pads"], "pad", mode="constant")

    skips = []
    for i in range(depth):
        x = double_conv(x, f"encoders.{i}")
        skips.append(x)
        x = node("MaxPool", [x], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
    x = double_conv(x, "bottom")
    for i in reversed(range(depth)):
        up = node("ConvTranspose", [x, const(f"ups.{i}.weight", state_dict[f"ups.{i}.weight"]),
                                    const(f"ups.{i}.bias", state_dict[f"ups.{i}.bias"])],
                  f"ups.{i}", kernel_shape=[2, 2], strides=[2, 2])
        cat = node("Concat", [skips[i], up], f"cat{i}", axis=1)
        x = double_conv(cat, f"decoders.{i}")
    y = node("Conv", [x, const("head.weight", state_dict["head.weight"]), const("head.bias", state_dict["head.bias"])],
             "head", kernel_shape=[1, 1])
    # crop back to the input's H, W
    const("crop/starts", np.zeros(2), np.int64)
    const("crop/axes", np.array([2, 3]), np.int64)
    y = node("Slice", [y, "crop/starts", "pad/hw", "crop/axes"], "logits")
    node("Sigmoid", [y], "prob")

    dims = ["n", 1, "h", "w"]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, dims)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sct-gm",
                              doc_string=f"U-Net, {filters} filters, depth {depth}")
    model.ir_version = 8  # with opset 17: readable by onnxruntime >= 1.12
    onnx.checker.check_model(model)
    return model.SerializeToString()
