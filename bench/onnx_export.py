"""The ONNX graph two ways, side by side: written by hand from the state dict (what sct-gm keeps,
sctgm/networks/dilated.py) and exported from the torch module by ``torch.onnx.export`` (TorchScript
exporter, opset 17, dynamic N/H/W).

    python bench/onnx_export.py            # ~3 min on 2 cores; needs ../shared and torch

Per model: seconds to build the graph, its size, ONNX Runtime ms per slice (1 thread, the real
200x200 windows of t2s_uncropped, one slice a call as the engine runs), the largest probability
difference to the torch module (fp32) and the GM pixels at 0.999 that differ between the two graphs.
"""

from __future__ import annotations

import io
import time
import warnings

import numpy as np

from cases import MODELS_DIR, require_shared
from speed import network_inputs
from sctgm.model.install import ensure_model
from sctgm.model.weights import load_safetensors
from sctgm.networks import network_for


def ms_per_slice(graph: bytes, x: np.ndarray) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    session.run(["prob"], {"x": x[:1]})  # warm-up
    t0 = time.perf_counter()
    out = np.concatenate([session.run(["prob"], {"x": x[i:i + 1]})[0] for i in range(len(x))])
    return (time.perf_counter() - t0) / len(x) * 1000, out


def main() -> None:
    import torch

    import onnx  # noqa: F401  (imported before timing: both ways need it)

    require_shared()
    warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
    torch.set_num_threads(1)
    print("| model | graph | build s | MB | ORT ms/slice | max abs prob diff to torch | GM px != hand-written |")
    print("|---|---|---|---|---|---|---|")
    for model in ("challenge", "large"):
        installed = ensure_model(model, mirror=str(MODELS_DIR))
        net = network_for(installed.architecture, model)
        sd, _ = load_safetensors(installed.weights_path)
        x = network_inputs(model)[:40]
        module = net.torch_module(installed.architecture)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        module.eval()
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).numpy()
        t0 = time.perf_counter()
        hand = net.onnx_graph(sd, installed.architecture, model)
        t_hand = time.perf_counter() - t0
        t0 = time.perf_counter()
        buf = io.BytesIO()
        torch.onnx.export(module, (torch.from_numpy(x[:1]),), buf, input_names=["x"], output_names=["prob"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "prob": {0: "n", 2: "h", 3: "w"}})
        exported, t_export = buf.getvalue(), time.perf_counter() - t0
        results = {}
        for name, graph, seconds in (("hand-written", hand, t_hand), ("torch.onnx.export", exported, t_export)):
            ms, prob = ms_per_slice(graph, x)
            results[name] = prob
            flips = int(((prob > 0.999) != (results["hand-written"] > 0.999)).sum())
            print(f"| {model} | {name} | {seconds:.2f} | {len(graph) / 1e6:.2f} | {ms:.0f} "
                  f"| {float(np.abs(prob - ref).max()):.1e} | {flips} |", flush=True)


if __name__ == "__main__":
    main()
