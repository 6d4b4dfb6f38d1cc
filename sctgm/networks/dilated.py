"""The dilated-convolution network of Perone, Calabrese & Cohen-Adad (Sci. Rep. 2018): the published
``challenge`` (32 filters) and ``large`` (64 filters) models. Registry name ``perone2018-dilated``,
``sct-gm train --arch dilated``.

One place for everything sct-gm knows about this network: its layer table (read by the Keras weight
reader, :mod:`sctgm.model.weights`, too), its torch module (:func:`torch_module`; torch is imported on
first use only, so installing and running a model on ONNX Runtime never imports it), its ONNX graph
(:func:`onnx_graph`, node for node the torch module's computation), how its weights are recognised
(:func:`recognise`) and its default sizes (:data:`DEFAULTS`).

Every convolution is followed by ReLU and then BatchNormalization (Keras order: the activation is part
of the convolution layer); Dropout is a no-op at inference and is left out. Data flow (F = ``filters``;
all convolutions are 3x3 'same' unless said otherwise)::

    conv2d_1 -> conv2d_2 -> rate2_1 (dil 2) -> rate2_2 (dil 2) = trunk
    trunk -> branch1x1_1 -> branch1x1_2 (1x1)           \\
    trunk -> rate6_1  -> rate6_2   (dilation 6)          |
    trunk -> rate12_1 -> rate12_2  (dilation 12)         |  concatenate, in this order (6F channels)
    trunk -> rate18_1 -> rate18_2  (dilation 18)         |  -> BN -> amort (1x1, 64) -> predictions
    conv2d_2 -> global average pool, broadcast over HxW  |     (1x1) -> sigmoid
    trunk -> rate24_1 -> rate24_2  (dilation 24)        /

The two details a port easily gets wrong, both read from the authors' model definition and checked
against the reference outputs (tests/engines/test_network.py): the pooled branch averages the output of
``conv2d_2`` (not of the rate-2 trunk), and it sits fifth in the concatenation, before ``rate24``.

Input: a batch of standardised axial slices, shape (N, 1, H, W), H along the canonical R->L axis and W
along P->A (array axes 0 and 1 of an LAS volume). Any H, W work; the published models were trained
on 200x200 crops at 0.25 mm.
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

NAME = "perone2018-dilated"
#: Sizes of a network trained from scratch (``sct-gm train --init none``): the ``challenge`` width.
DEFAULTS: dict[str, Any] = {"filters": 32}

#: Keras' BatchNormalization default epsilon, used by the published models.
KERAS_BN_EPSILON = 1e-3

#: (name, kernel size, dilation) of each two-layer ASPP branch; the order is the concatenation order.
ASPP_BRANCHES: tuple[tuple[str, int, int], ...] = (
    ("branch1x1", 3, 1),
    ("rate6", 3, 6),
    ("rate12", 3, 12),
    ("rate18", 3, 18),
    ("rate24", 3, 24),
)

#: Index of the global-pooling branch in the concatenation (after rate18, before rate24).
POOL_POSITION = 4

#: Channels of the 1x1 ``amort`` layer before the prediction layer.
AMORT_CHANNELS = 64

#: The trunk, in order: (module path, kernel size, dilation).
TRUNK: tuple[tuple[str, int, int], ...] = (
    ("conv2d_1", 3, 1),
    ("conv2d_2", 3, 1),
    ("rate2_1", 3, 2),
    ("rate2_2", 3, 2),
)


def branch_layers(name: str, kernel: int, dilation: int) -> tuple[tuple[str, int, int], ...]:
    """The two (module path, kernel size, dilation) layers of one ASPP branch; ``branch1x1``'s
    second layer is 1x1."""
    second_kernel = 1 if name == "branch1x1" else kernel
    return ((f"branches.{name}.0", kernel, dilation), (f"branches.{name}.1", second_kernel, dilation))


# -- weights ------------------------------------------------------------------------------------------
def recognise(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"name": ..., "filters": F}`` when ``state_dict`` holds this network's weights, else None."""
    first = state_dict.get("conv2d_1.conv.weight")
    if first is None:
        return None
    return {"name": NAME, "filters": int(first.shape[0])}


# -- torch --------------------------------------------------------------------------------------------
@functools.cache
def _torch_class() -> type:
    """The torch module class, defined on first use (importing torch takes seconds and the CPU
    install has none; a class defined here, not at import, keeps this module torch-free)."""
    import torch
    from torch import nn

    class ConvReluBN(nn.Module):
        """Conv2d ('same' padding, optional dilation) -> ReLU -> BatchNorm, as one Keras layer pair."""

        def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1) -> None:
            super().__init__()
            padding = dilation * (kernel_size - 1) // 2
            self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation)
            self.bn = nn.BatchNorm2d(out_ch, eps=KERAS_BN_EPSILON)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(torch.relu(self.conv(x)))

    class DilatedGMNet(nn.Module):
        """Perone et al. (2018) GM segmentation network; ``filters`` is 32 (challenge) or 64 (large)."""

        def __init__(self, filters: int = 32) -> None:
            super().__init__()
            f = filters
            self.filters = filters
            for i, (name, kernel, dilation) in enumerate(TRUNK):
                setattr(self, name, ConvReluBN(1 if i == 0 else f, f, kernel, dilation))
            self.branches = nn.ModuleDict({
                name: nn.Sequential(*(ConvReluBN(f, f, k, d) for _, k, d in branch_layers(name, kernel, dilation)))
                for name, kernel, dilation in ASPP_BRANCHES
            })
            n_cat = f * (len(ASPP_BRANCHES) + 1)
            self.concat_bn = nn.BatchNorm2d(n_cat, eps=KERAS_BN_EPSILON)
            self.amort = ConvReluBN(n_cat, AMORT_CHANNELS, kernel_size=1)
            self.predictions = nn.Conv2d(AMORT_CHANNELS, 1, kernel_size=1)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            """Pre-sigmoid output, shape (N, 1, H, W)."""
            c2 = self.conv2d_2(self.conv2d_1(x))
            t = self.rate2_2(self.rate2_1(c2))
            parts = [self.branches[name](t) for name, _, _ in ASPP_BRANCHES]
            pooled = c2.mean(dim=(2, 3), keepdim=True).expand(-1, -1, t.shape[2], t.shape[3])
            parts.insert(POOL_POSITION, pooled)
            y = self.concat_bn(torch.cat(parts, dim=1))
            return self.predictions(self.amort(y))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Sigmoid GM probability, shape (N, 1, H, W)."""
            return torch.sigmoid(self.logits(x))

    return DilatedGMNet


def __getattr__(name: str) -> Any:
    """``DilatedGMNet``: the torch module class (imports torch)."""
    if name == "DilatedGMNet":
        return _torch_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_module(architecture: Mapping[str, Any]) -> nn.Module:
    """An untrained module whose ``state_dict`` keys are those of the model's safetensors file."""
    return _torch_class()(int(architecture.get("filters", DEFAULTS["filters"])))


# -- ONNX ---------------------------------------------------------------------------------------------
def onnx_graph(state_dict: dict[str, np.ndarray], architecture: Mapping[str, Any], name: str = "deepseg_gm") -> bytes:
    """The serialised ONNX model of the network with these weights (node for node :func:`torch_module`)."""
    g = GraphBuilder(state_dict)

    def conv(src: str, prefix: str, kernel: int, dilation: int, out: str) -> str:
        pad = dilation * (kernel - 1) // 2
        return g.node("Conv", [src, g.weight(f"{prefix}.weight"), g.weight(f"{prefix}.bias")], out,
                      kernel_shape=[kernel, kernel], dilations=[dilation, dilation], pads=[pad] * 4)

    def conv_relu_bn(src: str, prefix: str, kernel: int, dilation: int) -> str:
        c = conv(src, f"{prefix}.conv", kernel, dilation, f"{prefix}/conv")
        g.node("Relu", [c], f"{prefix}/relu")
        return g.batchnorm(f"{prefix}/relu", f"{prefix}.bn", f"{prefix}/bn", KERAS_BN_EPSILON)

    x = "x"
    outputs: dict[str, str] = {}
    for prefix, kernel, dilation in TRUNK:
        x = outputs[prefix] = conv_relu_bn(x, prefix, kernel, dilation)
    trunk = x
    parts = []
    for branch, kernel, dilation in ASPP_BRANCHES:
        y = trunk
        for prefix, k, d in branch_layers(branch, kernel, dilation):
            y = conv_relu_bn(y, prefix, k, d)
        parts.append(y)
    # global average pool of conv2d_2, broadcast over the trunk's H x W
    g.node("ReduceMean", [outputs["conv2d_2"]], "pool/mean", axes=[2, 3], keepdims=1)
    g.node("Shape", [trunk], "pool/hw", start=2)
    g.node("Concat", ["pool/ones", "pool/hw"], "pool/shape", axis=0)
    g.node("Expand", ["pool/mean", "pool/shape"], "pool")
    g.const("pool/ones", np.ones(2), np.int64)
    parts.insert(POOL_POSITION, "pool")
    g.node("Concat", parts, "concat", axis=1)
    y = g.batchnorm("concat", "concat_bn", "concat_bn", KERAS_BN_EPSILON)
    y = conv_relu_bn(y, "amort", 1, 1)
    y = conv(y, "predictions", 1, 1, "logits")
    g.node("Sigmoid", [y], "prob")
    filters = int(architecture.get("filters", state_dict["conv2d_1.conv.weight"].shape[0]))
    return g.finish(name, f"deepseg_gm dilated network, {filters} filters")


#: Kept in fp32 when the CPU engine runs the network in bf16 (``--precision bf16``): the first
#: convolution, whose input is the image itself (bf16's 8 significant bits round the standardised
#: intensities; every later layer rounds features). Measured one layer at a time (bench/bf16_layers.py,
#: large, 15 volumes): this one alone takes the logit error near the threshold from 3.0 to 0.23 RMS and
#: the masks from 9 voxels off fp32's to 1, for ~0.1 % of the network's arithmetic (docs/speed.md).
BF16_FP32_NODES = ("conv2d_1/conv",)

NETWORK = Network(NAME, "dilated", DEFAULTS, recognise, torch_module, onnx_graph, BF16_FP32_NODES)
