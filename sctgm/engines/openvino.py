"""The bf16 CPU engine: the network's ONNX graph (the one :mod:`.onnx` builds and caches) compiled by
OpenVINO to run its convolutions in bfloat16, on CPUs with bf16 instructions (AVX-512 BF16, AMX).

Why OpenVINO: ONNX Runtime's CPU kernels have no bf16 convolutions on x86, and its int8 path
(:mod:`.quantise`), though ~2x faster here, moves masks too far at the 0.999 threshold; PyTorch's bf16
(oneDNN) runs at ~1.5x ONNX Runtime's fp32. OpenVINO's bf16 reaches ~2.2x with masks at Dice
0.99-1 against fp32 (docs/speed.md, ``bench/precision_cpu.py``), so it is offered, opt-in.
Accumulation stays in fp32; only the operands are rounded to bf16. An optional dependency
(``pip install sctgm[openvino]``), imported only when this engine is chosen; the choice and the
fallback to fp32 are :func:`sctgm.engines.choice.load_network`'s.

OpenVINO keeps its compiled form of the graph in ``<cache>/openvino/`` (its own cache, keyed by the
graph's bytes, the device, the settings and the OpenVINO version), so a later process compiles in a
fraction of the time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..exceptions import ModelError
from .hardware import available_cores


class OpenVinoNetwork:
    """An OpenVINO CPU model compiled from the network's ONNX graph at ``precision`` ('bf16' or
    'fp32'); ``run`` maps (N, 1, H, W) float32 slices to probabilities of the same shape (float32)."""

    engine = "openvino"
    device = "cpu"
    preferred_batch_size = 1

    def __init__(self, graph: bytes, *, precision: str = "bf16", threads: int | None = None,
                 cache_dir: Path | None = None, origin: str = "") -> None:
        import openvino as ov

        self.precision = precision
        core = ov.Core()
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            # an explicit count, as for ONNX Runtime: a job confined to fewer cores must not oversubscribe
            "INFERENCE_NUM_THREADS": threads or available_cores(),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        attempts = [config] if cache_dir is None else [{**config, "CACHE_DIR": str(cache_dir / "openvino")}, config]
        for k, settings in enumerate(attempts):
            try:
                self.compiled = core.compile_model(core.read_model(graph), "CPU", settings)
                break
            except Exception as exc:  # openvino raises RuntimeError subclasses of its own
                if k + 1 < len(attempts):  # an unwritable or damaged compile cache only costs a compilation
                    continue
                raise ModelError(f"{origin or 'ONNX graph'}: OpenVINO cannot compile it "
                                 f"({(str(exc).splitlines() or ['?'])[0]})") from None
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.array(self.request.infer({0: x})[self.output], dtype=np.float32)
