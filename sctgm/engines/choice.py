"""Running the network: engine and device choice, model loading, batched prediction.

Two engines compute the same function (tests check it): ONNX Runtime (:mod:`sctgm.engines.onnx`), the
fastest on a CPU, and PyTorch (:mod:`sctgm.engines.torch`), for CUDA. Which network a model is comes
from its recipe's ``network`` (:mod:`sctgm.networks`). ``engine="auto"`` picks ONNX
Runtime on the CPU and PyTorch on a GPU; docs/speed.md has the measurement behind that choice. The
network is the one the model's recipe names (:mod:`sctgm.networks`), run at the recipe's precision.
Neither onnxruntime nor torch is imported until a network is loaded, and torch not at all on the
ONNX Runtime path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..exceptions import InvalidOptionError, ModelError
from ..model.registry import InstalledModel
from ..networks import network_for
from .hardware import (check_device, cpu_has_bf16, cuda_may_exist, onnxruntime_available, openvino_available,
                       require_torch, torch_available)

log = logging.getLogger(__name__)

#: progress(done, total) is called after each batch of slices.
ProgressCallback = Callable[[int, int], None]

ENGINES = ("auto", "onnxruntime", "torch")
#: The precisions a network can run at on the CPU engines: fp32 (ONNX Runtime, the default) and bf16
#: (OpenVINO, on CPUs with bf16 instructions, the network's ``bf16_fp32_nodes`` kept in fp32; docs/speed.md).
CPU_PRECISIONS = ("fp32", "bf16")


class Engine(Protocol):
    engine: str
    device: str
    preferred_batch_size: int
    precision: str

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

    @property
    def preferred_batch_size(self) -> int:
        return self.runner.preferred_batch_size

    @property
    def precision(self) -> str:
        """The arithmetic the network runs in ('fp32', 'bf16'), after any fallback."""
        return getattr(self.runner, "precision", "fp32")

    @property
    def fp32_layers(self) -> tuple[str, ...]:
        """The layers kept in fp32 under bf16 (the network's ``bf16_fp32_nodes`` on OpenVINO; else none)."""
        return tuple(getattr(self.runner, "fp32_nodes", ()))


def choose_engine(engine: str = "auto", device: str = "auto") -> tuple[str, str]:
    """Resolve (engine, device) requests into what will run, e.g. ('auto', 'auto') ->
    ('onnxruntime', 'cpu') on a machine without a GPU and ('torch', 'cuda') with one."""
    if engine not in ENGINES:
        raise InvalidOptionError(f"engine {engine!r}: unknown; expected one of {', '.join(ENGINES)}", parameter="engine")
    check_device(device)
    if engine == "torch":
        require_torch("engine 'torch'")
    if device == "auto":
        if engine != "onnxruntime" and cuda_may_exist() and torch_available():
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = "cpu"
    if engine == "onnxruntime":
        if device != "cpu":
            raise InvalidOptionError(f"engine 'onnxruntime' runs on the CPU; for device {device!r} use engine 'torch' or 'auto'",
                                     parameter="engine")
        if not onnxruntime_available():
            raise InvalidOptionError("engine 'onnxruntime': onnxruntime is not installed (pip install onnxruntime)",
                                     parameter="engine")
        return engine, device
    if engine == "auto":
        engine = "onnxruntime" if device == "cpu" and onnxruntime_available() else "torch"
        if engine == "torch":
            require_torch(f"device {device!r}" if device != "cpu" else "engine 'torch' (onnxruntime is missing)")
    return engine, device


def cpu_precision(precision: str) -> str:
    """The precision a CPU network will run at when ``precision`` is asked for: 'bf16' where this CPU
    has bf16 instructions and OpenVINO is installed, else 'fp32' with one warning saying why."""
    if precision not in CPU_PRECISIONS:
        raise InvalidOptionError(f"precision {precision!r}: unknown; expected one of {', '.join(CPU_PRECISIONS)}",
                                 parameter="precision")
    if precision == "bf16":
        if not cpu_has_bf16():
            log.warning("precision bf16: this CPU has no bf16 instructions (AVX-512 BF16 or AMX); running in fp32")
            return "fp32"
        if not openvino_available():
            log.warning("precision bf16: OpenVINO is not installed (pip install 'sctgm[openvino]'); running in fp32")
            return "fp32"
    return precision


def load_network(model: InstalledModel, device: str = "auto", *, engine: str = "auto",
                 threads: int | None = None, cache_dir: Path | None = None,
                 precision: str | None = None) -> LoadedNetwork:
    """Load ``model`` on an engine (see :func:`choose_engine`). ``threads``: CPU threads for the
    network (default: the engine's, one per core). ``cache_dir``: where the ONNX graph is kept
    between runs (None: rebuilt each time). ``precision``: overrides the recipe's (None: the
    recipe's, :data:`sctgm.recipe.PRECISIONS`); on the CPU engine, bf16 runs the ONNX graph on
    OpenVINO where the CPU can (:func:`cpu_precision`, else fp32 with one warning)."""
    from ..recipe import PRECISIONS

    from ..model import weights

    engine, device = choose_engine(engine, device)
    network = network_for(model.architecture, model.name)
    precision = precision or model.recipe.precision
    if precision not in PRECISIONS:
        raise InvalidOptionError(f"precision {precision!r}: unknown; expected one of {', '.join(PRECISIONS)}",
                                 parameter="precision")
    origin = str(model.weights_path)

    def state_dict() -> dict[str, np.ndarray]:
        if model.weights_format == "safetensors":
            return weights.load_safetensors(model.weights_path)[0]
        return weights.state_dict_from_keras(model.weights_path)[0]

    if engine == "onnxruntime":
        from .onnx import OnnxNetwork, cached_graph, graph_cache_path, graph_holds_weights

        if precision not in CPU_PRECISIONS:
            raise ModelError(f"model '{model.name}': precision {precision} runs on the torch engine only "
                             f"(the CPU engine runs fp32 and bf16); choose the torch engine", parameter="engine")
        cache_file = graph_cache_path(cache_dir, model.sha256, model.architecture) if cache_dir else None
        # a cached graph is used only when it holds this model's (verified) weights
        graph = cached_graph(cache_file, lambda: network.onnx_graph(state_dict(), model.architecture, model.name),
                             made_from=lambda g: graph_holds_weights(g, state_dict()))
        if cpu_precision(precision) == "bf16":
            from .openvino import OpenVinoNetwork

            runner: Engine = OpenVinoNetwork(graph, precision="bf16", threads=threads, cache_dir=cache_dir,
                                             origin=str(cache_file or origin), fp32_nodes=network.bf16_fp32_nodes)
            if not runner.fp32_nodes_honoured():  # type: ignore[attr-defined]
                import openvino

                log.warning("precision bf16: OpenVINO %s runs %s in bf16, which the masks need in fp32 "
                            "(2026.3 or later keeps them); running in fp32", openvino.__version__,
                            ", ".join(network.bf16_fp32_nodes))
                runner = OnnxNetwork(graph, threads=threads, origin=str(cache_file or origin))
        else:
            runner = OnnxNetwork(graph, threads=threads, origin=str(cache_file or origin))
    else:
        from .torch import TorchNetwork

        runner = TorchNetwork(network.torch_module(model.architecture), state_dict(), device, threads=threads,
                              origin=origin, precision=precision)
    log.debug("model %s (%s) on %s / %s", model.name, model.sha256[:12], engine, device)
    return LoadedNetwork(model, runner)


def predict(loaded: LoadedNetwork, slices: np.ndarray, *,
            standardise: Callable[[np.ndarray], np.ndarray] | None = None,
            batch_size: int | None = None, progress: ProgressCallback | None = None) -> np.ndarray:
    """Sigmoid GM probability of slices, shape (N, H, W) -> (N, H, W) float32, in batches of
    ``batch_size`` slices (None: the engine's preferred size, which bounds memory). ``standardise``:
    applied to each batch (None: the slices are already standardised)."""
    n = slices.shape[0]
    batch_size = batch_size or loaded.preferred_batch_size
    out = np.empty(slices.shape, dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = slices[start:start + batch_size, None]
        if standardise is not None:
            batch = standardise(batch)
        out[start:start + batch_size] = loaded.runner.run(batch)[:, 0]
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return out
