"""The PyTorch engine: a model's torch module (:mod:`sctgm.networks`) on a CPU or a CUDA device, and the
one precision policy (:func:`precision_context`) that inference and training's validation share.

torch is imported here, and only when this engine is chosen (it takes seconds to import).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..exceptions import InvalidOptionError
from .hardware import check_device


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'; 'cuda' or 'cuda:N' (error if unavailable)."""
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidOptionError(f"device {device!r}: no CUDA device is available here; use 'cpu' or 'auto'",
                                 parameter="device")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InvalidOptionError(f"device {device!r}: not a device name; expected auto, cpu, cuda or cuda:N",
                                 parameter="device") from None


def precision_context(precision: str, device: torch.device) -> contextlib.ExitStack:
    """The arithmetic of a forward pass, as a recipe's ``precision`` (:data:`sctgm.recipe.PRECISIONS`)
    says: ``fp32`` (the policy for every model, inference and validation alike): float32 with TF32 off,
    because TF32 changes probabilities near the 0.999 threshold (``bench/precision.py`` measures it);
    ``tf32``: cuDNN may use TF32; ``bf16``/``fp16``: autocast to that type."""
    stack = contextlib.ExitStack()
    cudnn = torch.backends.cudnn
    stack.enter_context(cudnn.flags(enabled=True, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                                    allow_tf32=precision == "tf32"))
    if precision in ("bf16", "fp16"):
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16))
    return stack


class TorchNetwork:
    """The network in eval mode on its device; ``run`` maps (N, 1, H, W) float32 slices to
    probabilities of the same shape, computed at ``precision`` (:func:`precision_context`)."""

    engine = "torch"

    def __init__(self, net: torch.nn.Module, state_dict: dict[str, np.ndarray], device: str | torch.device = "auto",
                 *, threads: int | None = None, origin: str = "", precision: str = "fp32") -> None:
        from ..exceptions import ModelError

        self.torch_device = device if isinstance(device, torch.device) else resolve_device(device)
        self.device = str(self.torch_device)
        self.threads = threads
        self.precision = precision
        # CPU: one slice a call is the fastest and leanest (docs/speed.md); GPU: enough slices to
        # fill the device.
        self.preferred_batch_size = 1 if self.torch_device.type == "cpu" else 32
        try:
            net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{origin}: weights do not fit the network ({str(exc).splitlines()[0]})") from None
        # channels-last lets oneDNN (CPU) and cuDNN (GPU) pick their faster NHWC convolutions.
        self.net = net.eval().to(self.torch_device, memory_format=torch.channels_last)

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.torch_device)
        x = x.contiguous(memory_format=torch.channels_last)
        # torch's thread count is per process: set it for this call only, and give it back
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode(), precision_context(self.precision, self.torch_device):
                prob = self.net(x)
        finally:
            torch.set_num_threads(before)
        return prob.float().cpu().numpy()
