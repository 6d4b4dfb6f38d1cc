"""The dilated-convolution network of Perone, Calabrese & Cohen-Adad (Sci. Rep. 2018), in PyTorch.

The layer names follow the published Keras model, so that a Keras HDF5 weight file maps onto this
module one name to one name (see :mod:`sctgm.model.weights`). Every convolution is followed by ReLU and then
BatchNormalization (Keras order: the activation is part of the convolution layer); Dropout is a no-op
at inference and is left out.

Data flow (F = ``filters``; all convolutions are 3x3 'same' unless said otherwise)::

    conv2d_1 -> conv2d_2 -> rate2_1 (dil 2) -> rate2_2 (dil 2) = trunk
    trunk -> branch1x1_1 -> branch1x1_2 (1x1)           \
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

import torch
from torch import nn

from ..model.architecture import AMORT_CHANNELS, ASPP_BRANCHES, KERAS_BN_EPSILON, POOL_POSITION, TRUNK, branch_layers


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
