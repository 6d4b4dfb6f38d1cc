"""The ONNX Runtime engine: the network as an ONNX graph, run by ONNX Runtime on the CPU.

Why a second engine: on the CPU, ONNX Runtime's convolutions (im2col blocked into cache + MLAS GEMM)
run this network at ~0.06 s (challenge) / ~0.21 s (large) a 200x200 slice on 2 cores, close to the
machine's fp32 GEMM peak, while PyTorch takes 1.4-1.6x longer in its best configuration found
(channels-last, one slice a call) and 4-5x longer eagerly on a batch (``bench/speed.py`` prints the
comparison; docs/speed.md has the table). It also spares the CLI the 2-3 s import of torch.

The graph comes from the model's network module (:mod:`sctgm.networks`, written from the state dict
with ``onnx.helper``, node for node the torch module, so both engines compute the same function: tests
check they agree within 3e-4, measured <= 1.2e-4, and give the same masks). Built once per model and
kept in the cache folder (``<cache>/onnx/``), so later runs import neither onnx nor torch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ModelError, SctGmError
from .hardware import available_cores

log = logging.getLogger(__name__)

#: Bump when a network module's graph changes, so cached files are rebuilt.
GRAPH_VERSION = 1


def graph_cache_path(cache_dir: Path, model_sha256: str, architecture: dict[str, Any]) -> Path:
    """Where the graph of a model (named by its weights' sha256) is kept; the architecture, the graph
    version and the sct-gm version are part of the name, so a release that maps the weights
    differently never reads an older graph."""
    from .._version import __version__

    arch = f"{architecture.get('name', 'net')}-f{architecture.get('filters', 0)}"
    return cache_dir / "onnx" / f"{model_sha256[:20]}-{arch}-g{GRAPH_VERSION}-v{__version__}.onnx"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def graph_holds_weights(graph: bytes, state_dict: dict[str, np.ndarray]) -> bool:
    """True when every weight array's float32 bytes are in the serialised graph (ONNX stores each
    initializer's raw bytes as they are). A cached graph made from other weights fails this (measured:
    96 of 96 arrays of another random model absent); 0.04 s for the large model, and neither onnx nor
    torch is imported. Hand-written because onnxruntime does not expose a session's initializers and
    parsing the graph with onnx costs that package's import (~1 s)."""
    return all(graph.find(np.ascontiguousarray(v, dtype=np.float32).tobytes()) >= 0
               for v in state_dict.values() if np.asarray(v).dtype.kind == "f")


def cached_graph(cache_file: Path | None, build: Callable[[], bytes],
                 made_from: Callable[[bytes], bool] | None = None) -> bytes:
    """The graph's bytes from ``cache_file`` when present and intact (its sha256 is kept beside it,
    in ``<file>.sha256``) and ``made_from(graph)`` says it holds the model's weights, else ``build()``,
    then stored there, atomically. A damaged or altered cache (a graph and digest both replaced
    included) is rebuilt with a warning; a cache that cannot be written only costs a rebuild next time."""
    if cache_file is not None and cache_file.is_file():
        try:
            data = cache_file.read_bytes()
            if _digest(data) == Path(f"{cache_file}.sha256").read_text().strip() and (
                    made_from is None or made_from(data)):
                return data
        except OSError:
            pass
        log.warning("%s: damaged or altered; rebuilding the ONNX graph", cache_file)
    data = build()
    if cache_file is not None:
        from ..writing import atomic_path

        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            # the digest first: a reader that finds a graph also finds the digest it must match
            with atomic_path(Path(f"{cache_file}.sha256")) as tmp:
                tmp.write_text(_digest(data) + "\n")
            with atomic_path(cache_file) as tmp:
                tmp.write_bytes(data)
        except (OSError, SctGmError) as exc:  # a read-only cache is not an error
            log.debug("could not cache the ONNX graph at %s: %s", cache_file, exc)
    return data


class OnnxNetwork:
    """An ONNX Runtime session over the network's graph; ``run`` maps (N, 1, H, W) float32 slices to
    probabilities of the same shape."""

    engine = "onnxruntime"
    precision = "fp32"
    device = "cpu"
    #: One slice a call is as fast as larger batches on a CPU, and keeps the peak memory of the
    #: large model at ~0.45 GB instead of ~1.6 GB with 8 (docs/speed.md).
    preferred_batch_size = 1

    def __init__(self, graph: bytes, *, threads: int | None = None, origin: str = "") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Always an explicit count: left alone, ONNX Runtime sizes its pool to the host's physical
        # cores and pins its threads, which oversubscribes a job confined to fewer (SLURM, taskset).
        opts.intra_op_num_threads = threads or available_cores()
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"{origin or 'ONNX graph'}: ONNX Runtime cannot load it ({exc})") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["prob"], {"x": np.ascontiguousarray(batch, dtype=np.float32)})[0]

