"""Which network a model is: architecture name -> how each engine builds it.

A registry entry names its network in ``architecture.name`` (the published models:
``"perone2018-dilated"``); :func:`architecture_of` looks it up here. Each :class:`Architecture` gives

- ``torch_module(architecture) -> torch.nn.Module``: an untrained module whose ``state_dict`` keys are
  the keys of the model's safetensors file (the PyTorch engine loads the weights into it, strictly);
- ``onnx_graph(state_dict, architecture, name) -> bytes``: the serialised ONNX graph with those
  weights (input ``x``: N x 1 x H x W float32, output ``prob``: N x 1 x H x W sigmoid probabilities),
  cached by the weights' sha256 (:func:`sctgm.engines.onnx.graph_cache_path`).

Adding a network is one entry in :data:`ARCHITECTURES`. Factories import torch/onnx only when called,
so this table costs nothing to import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import ModelError

if TYPE_CHECKING:
    import torch

    from ..model.registry import InstalledModel


@dataclass(frozen=True)
class Architecture:
    """How the engines build one kind of network (see the module docstring)."""

    torch_module: Callable[[dict[str, Any]], torch.nn.Module]
    onnx_graph: Callable[[dict[str, np.ndarray], dict[str, Any], str], bytes]


def _dilated_module(architecture: dict[str, Any]) -> torch.nn.Module:
    from .network import DilatedGMNet

    return DilatedGMNet(int(architecture["filters"]))


def _dilated_graph(state_dict: dict[str, np.ndarray], architecture: dict[str, Any], name: str) -> bytes:
    from .onnx import build_graph

    return build_graph(state_dict, int(architecture["filters"]), name=name)


def _unet_module(architecture: dict[str, Any]) -> torch.nn.Module:
    from ..model.unet import UNet

    return UNet(int(architecture["filters"]), int(architecture.get("depth", 3)))


def _unet_graph(state_dict: dict[str, np.ndarray], architecture: dict[str, Any], name: str) -> bytes:
    from ..model.unet import build_unet_graph

    return build_unet_graph(state_dict, name=name)


#: architecture name -> its builders.
ARCHITECTURES: dict[str, Architecture] = {
    "perone2018-dilated": Architecture(_dilated_module, _dilated_graph),
    "unet": Architecture(_unet_module, _unet_graph),  # trained with `sct-gm train --arch unet`
}


def architecture_of(model: InstalledModel) -> Architecture:
    """The builders of ``model.architecture["name"]``; :class:`~sctgm.exceptions.ModelError` when this
    sct-gm does not know it."""
    name = model.architecture.get("name")
    if name not in ARCHITECTURES:
        raise ModelError(f"model '{model.name}': architecture '{name}' is not known to this sct-gm "
                         f"(known: {', '.join(ARCHITECTURES)}); upgrade sct-gm or fix the registry entry")
    return ARCHITECTURES[name]
