"""The bf16 CPU engine: the network's ONNX graph (the one :mod:`.onnx` builds and caches) compiled by
OpenVINO to run its convolutions in bfloat16, on CPUs with bf16 instructions (AVX-512 BF16, AMX).

Why OpenVINO: ONNX Runtime's CPU kernels have no bf16 convolutions on x86, and its int8 path
(:mod:`.quantise`), though ~2x faster here, moves masks too far at the 0.999 threshold; PyTorch's bf16
(oneDNN) runs at ~1.5x ONNX Runtime's fp32. OpenVINO's bf16, the first convolution kept in fp32,
reaches ~2x with masks at Dice >= 0.998 against fp32 (docs/speed.md, ``bench/precision_cpu.py``), so
it is offered, opt-in.
Accumulation stays in fp32; only the operands are rounded to bf16. The layers a network names in
``bf16_fp32_nodes`` stay in fp32 (:func:`read_model`): for the dilated network the first convolution,
whose input is the image, where bf16's rounding moved masks most (``bench/bf16_layers.py``). An optional dependency
(``pip install sctgm[openvino]``), imported only when this engine is chosen; the choice and the
fallback to fp32 are :func:`sctgm.engines.choice.load_network`'s.

OpenVINO keeps its compiled form of the graph in ``<cache>/openvino/`` (its own cache, keyed by the
graph, its runtime attributes included, the device, the settings and the OpenVINO version: the graph
with layers kept in fp32 and the plain one are two entries, tests/engines/test_bf16_layers.py), so a
later process compiles in a fraction of the time.
"""

from __future__ import annotations

import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ModelError
from .hardware import available_cores


class OpenVinoNetwork:
    """An OpenVINO CPU model compiled from the network's ONNX graph at ``precision`` ('bf16' or
    'fp32'), the ONNX nodes named in ``fp32_nodes`` kept in fp32 under bf16; ``run`` maps
    (N, 1, H, W) float32 slices to probabilities of the same shape (float32)."""

    engine = "openvino"
    device = "cpu"
    preferred_batch_size = 1

    def __init__(self, graph: bytes, *, precision: str = "bf16", threads: int | None = None,
                 cache_dir: Path | None = None, origin: str = "", fp32_nodes: Collection[str] = ()) -> None:
        import openvino as ov

        self.precision = precision
        #: the ONNX nodes kept in fp32 under bf16 (:func:`read_model`)
        self.fp32_nodes = tuple(fp32_nodes) if precision == "bf16" else ()
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
                self.compiled = core.compile_model(read_model(core, graph, self.fp32_nodes), "CPU", settings)
                break
            except Exception as exc:  # openvino raises RuntimeError subclasses of its own
                if k + 1 < len(attempts):  # an unwritable or damaged compile cache only costs a compilation
                    continue
                raise ModelError(f"{origin or 'ONNX graph'}: OpenVINO cannot compile it "
                                 f"({(str(exc).splitlines() or ['?'])[0]})") from None
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        # one request, used by one call at a time: a Segmenter shared by threads (a notebook's pool) got
        # "Infer Request is busy", or another call's output, without this (ONNX Runtime and torch are safe)
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            return np.array(self.request.infer({0: x})[self.output], dtype=np.float32)  # a copy

    def fp32_nodes_honoured(self) -> bool:
        """Whether every layer compiled from the nodes named in :attr:`fp32_nodes` runs in fp32 (the
        compiled model's ``runtimePrecision``): an OpenVINO that ignores the marks runs them in bf16
        without a word, and the masks then miss the bar they were chosen for (docs/speed.md)."""
        if not self.fp32_nodes:
            return True
        seen: dict[str, list[str]] = {n: [] for n in self.fp32_nodes}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "runtimePrecision" not in info.keys() or "originalLayersNames" not in info.keys():
                continue
            layers = info["originalLayersNames"].astype(str).split(",")
            for n in seen:
                if any(x == n or x.startswith(n + "/") for x in layers):
                    seen[n].append(info["runtimePrecision"].astype(str))
        return all(precisions and all(p == "f32" for p in precisions) for precisions in seen.values())


#: The runtime attributes that keep a node in its original precision under a lower inference
#: precision, as OpenVINO's IR writes them: ``ov::DisablePrecisionConversion`` (the CPU plugin keeps
#: a node whose conversion to f16 is disabled in fp32 under bf16 too) and the older
#: ``disable_fp16_compression``. Measured: OpenVINO 2026.3 and later honour them; 2024.6-2026.2 do
#: not, silently, which :meth:`OpenVinoNetwork.fp32_nodes_honoured` catches (hence the package's
#: ``openvino>=2026.3``).
KEEP_PRECISION = ({"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:f16"},
                  {"name": "disable_fp16_compression", "version": "0"})


def read_model(core: Any, graph: bytes, fp32_nodes: Collection[str] = ()) -> Any:
    """The ONNX graph as an OpenVINO model whose operations made from the ONNX nodes named in
    ``fp32_nodes`` (each with what OpenVINO splits off it, e.g. ``conv/WithoutBiases``) keep fp32
    under a bf16 inference precision.

    Why through the IR's XML: OpenVINO's Python API stores only strings in a node's runtime info, and
    the CPU plugin reads the attribute as its C++ type (a string there fails the compilation); its IR
    reader builds that type from the XML. Measured: the marked convolutions report ``runtimePrecision``
    f32 in the compiled model, and their outputs differ from plain bf16's (tests/engines/test_bf16_layers.py)."""
    model = core.read_model(graph)
    if not fp32_nodes:
        return model
    import openvino as ov

    names = tuple(fp32_nodes)
    with tempfile.TemporaryDirectory(prefix="sctgm-ov-") as folder:
        xml_path = Path(folder) / "model.xml"
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
        root = ET.parse(xml_path).getroot()
        weights = np.fromfile(xml_path.with_suffix(".bin"), dtype=np.uint8)
    marked: set[str] = set()
    for layer in root.iter("layer"):
        name = layer.get("name", "")
        hits = {n for n in names if name == n or name.startswith(n + "/")}
        if layer.get("type") not in ("Const", "Parameter", "Result") and hits:
            marked |= hits
            info = layer.find("rt_info")
            info = ET.SubElement(layer, "rt_info") if info is None else info
            for attribute in KEEP_PRECISION:
                ET.SubElement(info, "attribute", attribute)
    if set(names) - marked:  # a network naming a node its graph lacks: nothing would be kept in fp32
        raise ModelError(f"the network's bf16_fp32_nodes {sorted(set(names) - marked)} name no layer of its graph")
    return core.read_model(ET.tostring(root, encoding="unicode"), ov.Tensor(weights))
