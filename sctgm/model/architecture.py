"""The layout of the Perone et al. (2018) network, shared by every engine and by the weight reader.

Plain data, no torch: the ONNX Runtime engine builds its graph from this, the PyTorch module
(:mod:`sctgm.engines.network`) its layers, and :mod:`sctgm.model.weights` maps the Keras layer names onto both.
"""

from __future__ import annotations

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
