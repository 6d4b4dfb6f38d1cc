"""The record a network module exports as ``NETWORK`` (see :mod:`sctgm.networks`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Network:
    """What sct-gm needs of one kind of network.

    - ``name``: its registry name (an entry's ``architecture.name``);
    - ``train_name``: its ``sct-gm train --arch`` name;
    - ``defaults``: the sizes of one trained from scratch (``architecture`` keys other than ``name``);
    - ``recognise(state_dict) -> architecture | None``: the full ``architecture`` (name and sizes) when
      these weights are this network's, else None (how a bare weight file is told apart);
    - ``torch_module(architecture) -> torch.nn.Module``: untrained, with the state-dict keys of the
      weight file, a ``logits(x)`` method and ``forward(x)`` = sigmoid of it (torch imported on call);
    - ``onnx_graph(state_dict, architecture, name) -> bytes``: the ONNX graph with those weights (input
      ``x``, output ``prob``, both N x 1 x H x W float32), computing what the torch module computes;
    - ``bf16_fp32_nodes``: the nodes of that graph kept in fp32 when the CPU engine runs it in bf16
      (``--precision bf16``: the layers whose rounding moves masks most, chosen by measurement;
      empty: all of it in bf16).
    """

    name: str
    train_name: str
    defaults: Mapping[str, Any]
    recognise: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    torch_module: Callable[[Mapping[str, Any]], nn.Module]
    onnx_graph: Callable[[dict[str, np.ndarray], Mapping[str, Any], str], bytes]
    bf16_fp32_nodes: tuple[str, ...] = ()

    def architecture(self, **sizes: Any) -> dict[str, Any]:
        """The registry ``architecture`` of one of these networks: the defaults, ``sizes`` on top
        (None values left out)."""
        return {"name": self.name, **self.defaults, **{k: v for k, v in sizes.items() if v is not None}}
