"""Networks to train and the weights they start from.

The one module of :mod:`sctgm.training` that imports the package's model layer (the dilated network,
the weight readers, device resolution): when those move, only the imports below change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..engines.torch import resolve_device  # noqa: F401  (re-exported for the trainer)
from ..exceptions import InvalidOptionError, ModelError
from ..model.unet import UNet, unet_shape
from ..engines.network import DilatedGMNet
from ..model.weights import load_safetensors, state_dict_from_keras

ARCHITECTURES = ("dilated", "unet")


def build_model(arch: str, filters: int, *, depth: int = 3) -> nn.Module:
    """A freshly initialised network: the dilated network of Perone et al. or a U-Net."""
    if arch == "dilated":
        return DilatedGMNet(filters)
    if arch == "unet":
        return UNet(filters, depth)
    raise InvalidOptionError(f"architecture {arch!r}: unknown; expected one of {', '.join(ARCHITECTURES)}",
                             parameter="arch")


def read_state_dict(path: str | Path) -> tuple[dict[str, np.ndarray], str, int]:
    """(state dict, architecture, filters) of a weight file: a published Keras HDF5 file or an
    sct-gm safetensors file (dilated or U-Net, told apart by the state dict's keys)."""
    path = Path(path)
    if path.suffix in (".hdf5", ".h5"):
        sd, filters = state_dict_from_keras(path)
        return sd, "dilated", filters
    sd, filters = load_safetensors(path)
    if "encoders.0.conv1.weight" in sd:
        return sd, "unet", unet_shape(sd)[0]
    return sd, "dilated", filters


def model_from_weights(path: str | Path) -> tuple[nn.Module, str]:
    """The network a weight file describes, with its weights loaded, and its architecture."""
    sd, arch, filters = read_state_dict(path)
    model = build_model(arch, filters, depth=unet_shape(sd)[1] if arch == "unet" else 3)
    try:
        # not strict only about BatchNorm's batch counters, which the Keras files do not hold
        result = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the {arch} network ({str(exc).splitlines()[0]})") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ModelError(f"{path}: weights do not fit the {arch} network (missing {missing[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]})")
    return model, arch
