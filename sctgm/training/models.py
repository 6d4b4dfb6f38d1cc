"""Networks to train and the weights they start from, asked of the network modules (:mod:`sctgm.networks`).

The one module of :mod:`sctgm.training` that imports the package's model layer (the network modules,
the weight readers, device resolution): when those move, only the imports below change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engines.torch import precision_context, resolve_device  # noqa: F401  (re-exported for the trainer)
from ..exceptions import InvalidOptionError, ModelError
from ..model.weights import load_safetensors, state_dict_from_keras
from ..networks import BUILTIN, Network, network_for, network_named, recognise

#: ``sct-gm train --arch`` names of the shipped networks.
ARCHITECTURES = tuple(network_named(name).train_name for name in BUILTIN)


def network_of(arch: str) -> Network:
    """A shipped network by its ``--arch`` (or registry) name; InvalidOptionError when unknown."""
    try:
        return network_named(arch)
    except ModelError:
        raise InvalidOptionError(f"architecture {arch!r}: unknown; expected one of {', '.join(ARCHITECTURES)}",
                                 parameter="arch") from None


def build_model(arch: str | Mapping[str, Any], filters: int | None = None, *, depth: int | None = None) -> nn.Module:
    """A freshly initialised network: by ``--arch`` name with its sizes (None: the network's defaults),
    or from a full registry ``architecture`` (``{"name": ..., ...}``, any network module)."""
    if isinstance(arch, Mapping):
        return network_for(arch).torch_module(arch)
    net = network_of(arch)
    return net.torch_module(net.architecture(filters=filters, depth=depth))


def read_state_dict(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state dict, architecture) of a weight file: a published Keras HDF5 file or an sct-gm
    safetensors file, its network recognised by the network modules."""
    path = Path(path)
    if path.suffix in (".hdf5", ".h5"):
        sd, filters = state_dict_from_keras(path)
    else:
        sd, filters = load_safetensors(path)
    return sd, recognise(sd, str(path))


def load_weights(model: nn.Module, sd: Mapping[str, Any], origin: str) -> nn.Module:
    """Load ``sd`` into ``model``; ModelError naming ``origin`` when they do not fit."""
    try:
        # not strict only about BatchNorm's batch counters, which the Keras files do not hold
        result = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{origin}: weights do not fit the network ({str(exc).splitlines()[0]})") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ModelError(f"{origin}: weights do not fit the network (missing {missing[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]})")
    return model


def model_from_weights(path: str | Path, architecture: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The network a weight file holds, with its weights loaded, and its ``architecture``
    (given: a registered model's, e.g. a network module of the user's; None: recognised from the keys)."""
    sd, found = read_state_dict(path) if architecture is None else (_read(path), dict(architecture))
    return load_weights(build_model(found), sd, str(path)), found


def _read(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    return state_dict_from_keras(path)[0] if path.suffix in (".hdf5", ".h5") else load_safetensors(path)[0]
