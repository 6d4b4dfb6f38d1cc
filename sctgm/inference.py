"""Running the network: engine and device choice, model loading, standardisation, batched prediction.

Two engines compute the same function (tests check it): ONNX Runtime (:mod:`sctgm.engine_onnx`), the
fastest on a CPU, and PyTorch (:mod:`sctgm.engine_torch`), for CUDA. ``engine="auto"`` picks ONNX
Runtime on the CPU and PyTorch on a GPU; docs/speed.md has the measurement behind that choice.
Neither onnxruntime nor torch is imported until a network is loaded, and torch not at all on the
ONNX Runtime path.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .exceptions import SctGmError
from .registry import InstalledModel

log = logging.getLogger(__name__)

#: progress(done, total) is called after each batch of slices.
ProgressCallback = Callable[[int, int], None]

ENGINES = ("auto", "onnxruntime", "torch")


class Engine(Protocol):
    engine: str
    device: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class LoadedNetwork:
    """A network ready to run, with the model record it came from. ``engine``: 'onnxruntime' or
    'torch'; ``device``: 'cpu', 'cuda', 'cuda:1', ..."""

    model: InstalledModel
    runner: Engine

    @property
    def engine(self) -> str:
        return self.runner.engine

    @property
    def device(self) -> str:
        return self.runner.device


def _cuda_may_exist() -> bool:
    """False when this machine certainly has no CUDA device, found without importing torch: on
    Linux the NVIDIA driver shows itself in /proc. Elsewhere, torch is asked."""
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    return sys.platform != "darwin"


def choose_engine(engine: str = "auto", device: str = "auto") -> tuple[str, str]:
    """Resolve (engine, device) requests into what will run, e.g. ('auto', 'auto') ->
    ('onnxruntime', 'cpu') on a machine without a GPU and ('torch', 'cuda') with one."""
    from .engine_onnx import onnxruntime_available

    if engine not in ENGINES:
        raise SctGmError(f"--engine {engine}: unknown; expected one of {', '.join(ENGINES)}")
    if device == "auto":
        if engine != "onnxruntime" and _cuda_may_exist():
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = "cpu"
    if engine == "onnxruntime":
        if device != "cpu":
            raise SctGmError(f"--engine onnxruntime runs on the CPU; for --device {device} use --engine torch or auto")
        if not onnxruntime_available():
            raise SctGmError("--engine onnxruntime: onnxruntime is not installed (pip install onnxruntime)")
        return engine, device
    if engine == "auto":
        engine = "onnxruntime" if device == "cpu" and onnxruntime_available() else "torch"
    return engine, device


def load_network(model: InstalledModel, device: str = "auto", *, engine: str = "auto",
                 threads: int | None = None, cache_dir: Path | None = None) -> LoadedNetwork:
    """Load ``model`` on an engine (see :func:`choose_engine`). ``threads``: CPU threads for the
    network (default: the engine's, one per core). ``cache_dir``: where the ONNX graph is kept
    between runs (None: rebuilt each time)."""
    from . import weights

    engine, device = choose_engine(engine, device)
    origin = str(model.weights_path)

    def state_dict() -> tuple[dict[str, np.ndarray], int]:
        if model.weights_format == "safetensors":
            return weights.load_safetensors(model.weights_path)
        return weights.state_dict_from_keras(model.weights_path)

    if engine == "onnxruntime":
        from .engine_onnx import OnnxNetwork, build_graph, cached_graph, graph_cache_path

        cache_file = graph_cache_path(cache_dir, model.sha256, model.filters) if cache_dir else None
        graph = cached_graph(cache_file, lambda: build_graph(*state_dict(), name=model.name))
        try:
            runner: Engine = OnnxNetwork(graph, threads=threads, origin=str(cache_file or origin))
        except SctGmError:
            if cache_file is None:
                raise
            log.warning("%s: damaged; rebuilding the ONNX graph", cache_file)
            cache_file.unlink(missing_ok=True)
            runner = OnnxNetwork(cached_graph(cache_file, lambda: build_graph(*state_dict(), name=model.name)),
                                 threads=threads, origin=origin)
    else:
        from .engine_torch import TorchNetwork

        runner = TorchNetwork(*state_dict(), device, threads=threads, origin=origin)
    log.debug("model %s (%s) on %s / %s", model.name, model.sha256[:12], engine, device)
    return LoadedNetwork(model, runner)


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
    for start in range(0, n, batch_size):
        out[start:start + batch_size] = loaded.runner.run(slices[start:start + batch_size, None])[:, 0]
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return out
