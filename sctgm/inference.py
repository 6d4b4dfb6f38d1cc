"""Running the network: device choice, model loading, standardisation, batched prediction.

torch is imported here and nowhere on the CLI's start-up path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .exceptions import ModelError, SctGmError
from .network import DilatedGMNet
from .registry import InstalledModel

log = logging.getLogger(__name__)

#: progress(done, total) is called after each batch of slices.
ProgressCallback = Callable[[int, int], None]


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'; 'cuda' or 'cuda:N' (error if unavailable)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SctGmError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise SctGmError(f"--device {device}: not a device name; expected auto, cpu, cuda or cuda:N") from None


@dataclass
class LoadedNetwork:
    """A network in eval mode on its device, with the model record it came from."""

    model: InstalledModel
    net: DilatedGMNet
    device: torch.device


def load_network(model: InstalledModel, device: str | torch.device = "auto") -> LoadedNetwork:
    from . import weights

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if model.weights_format == "safetensors":
        sd, filters = weights.load_safetensors(model.weights_path)
    else:
        sd, filters = weights.state_dict_from_keras(model.weights_path)
    net = DilatedGMNet(filters)
    try:
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{model.weights_path}: weights do not fit the network ({str(exc).splitlines()[0]})") from None
    net.eval().to(dev)
    return LoadedNetwork(model, net, dev)


def standardise(crops: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the whole stack of crops, as the reference does per volume."""
    x = crops.astype(np.float64)
    mean, std = float(x.mean()), float(x.std())
    if std == 0.0:
        std = 1.0
    return ((crops - mean) / std).astype(np.float32)


def predict(loaded: LoadedNetwork, slices: np.ndarray, *, batch_size: int = 8,
            progress: ProgressCallback | None = None) -> np.ndarray:
    """Sigmoid GM probability of standardised slices, shape (N, H, W) -> (N, H, W) float32."""
    n = slices.shape[0]
    out = np.empty(slices.shape, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(slices[start:start + batch_size, None]))
            prob = loaded.net(batch.to(loaded.device))
            out[start:start + batch_size] = prob[:, 0].float().cpu().numpy()
            if progress is not None:
                progress(min(start + batch_size, n), n)
    return out
