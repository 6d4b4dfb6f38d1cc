"""Which layers to keep in fp32 under bf16 (issue 24): a per-layer sensitivity scan of OpenVINO's bf16
on the CPU, measured on the masks.

    PYTHONPATH=. nice -n 10 python bench/bf16_layers.py --models large            # every layer alone
    PYTHONPATH=. nice -n 10 python bench/bf16_layers.py --models large --sets "conv2d_1/conv logits" ...

Each candidate runs the whole network in bf16 except the named ONNX nodes (convolutions, with what
OpenVINO fuses into them: bias, ReLU, BatchNorm), kept in fp32 (:func:`sctgm.engines.openvino.read_model`).
For each: ms per slice on the 11 windows of t2s_uncropped (every candidate once per repetition,
interleaved with fp32 on OpenVINO, min kept), and the masks of the whole pipeline on the 3 labelled
cases of ../shared and their 4 degraded variants (as bench/precision_cpu.py): min Dice against ONNX
Runtime's fp32 masks, volumes below 0.995, worst change of Dice against the manual masks, and the
voxels that differ from fp32 in all 15 volumes together.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cases import ALL_LABELLED, LABELLED, MODELS_DIR, T2S_UNCROPPED, dice, require_shared
from precision_cpu import Runner, _mask, captured_windows, time_windows, variant_files

from sctgm.engines.openvino import OpenVinoNetwork
from sctgm.io import load_image
from sctgm.model.install import ensure_model
from sctgm.model.weights import load_safetensors
from sctgm.networks.dilated import ASPP_BRANCHES, TRUNK, branch_layers, onnx_graph
from sctgm.segment.pipeline import Segmenter

#: every convolution of the dilated network, by its ONNX node name, in the order of the graph
CONVS = ([f"{p}/conv" for p, _, _ in TRUNK]
         + [f"{p}/conv" for b, k, d in ASPP_BRANCHES for p, _, _ in branch_layers(b, k, d)]
         + ["amort/conv", "logits"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["large"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sets", nargs="*", default=None,
                    help="candidates, each a space-separated list of ONNX node names kept fp32 "
                         "(default: none, then every convolution alone)")
    ap.add_argument("--cases", choices=["held-out", "all"], default="held-out",
                    help="as bench/precision_cpu.py: all adds the 4 gm_challenge_2018 run-1 volumes")
    args = ap.parse_args()
    require_shared()
    sets = [s.split() for s in args.sets] if args.sets is not None else [[]] + [[c] for c in CONVS]
    items = variant_files(Path(tempfile.mkdtemp(prefix="sctgm-bf16-layers-")), quick=False,
                          cases=ALL_LABELLED if args.cases == "all" else LABELLED)
    for model in args.models:
        sd, filters = load_safetensors(ensure_model(model, mirror=str(MODELS_DIR)).weights_path)
        graph = onnx_graph(sd, {"filters": filters})
        seg = Segmenter.from_name(model, device="cpu", engine="onnxruntime", mirror=str(MODELS_DIR),
                                  threads=args.threads)
        x = captured_windows(seg, [T2S_UNCROPPED])
        ref, ref_probs = {}, []
        seg.network.runner = recording(seg.network.runner.run, ref_probs)  # type: ignore[assignment]
        for case, variant, path, _, cord in items:
            cord_image = load_image(cord, what="cord mask", allow_constant=True) if cord else None
            ref[case, variant] = seg.segment_image(load_image(path), cord=cord_image).gm
        band = near_threshold(flat(ref_probs))
        runners = {"fp32, OpenVINO": OpenVinoNetwork(graph, precision="fp32", threads=args.threads)}
        for s in sets:
            runners[" ".join(s) or "(none: plain bf16)"] = OpenVinoNetwork(graph, threads=args.threads, fp32_nodes=s)
        best = time_windows(runners, x, args.reps)
        print(f"\n## {model}: {len(x)} windows of t2s_uncropped, min of {args.reps}, {args.threads} thread(s); "
              f"masks on {len(items)} volumes\n")
        print("| kept in fp32 | ms per slice | throughput vs OpenVINO fp32 | min Dice vs fp32 | volumes below 0.995 "
              "| worst change of Dice vs manual | voxels that differ | logit RMS error near the threshold | worst volume vs manual |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for k, r in runners.items():
            probs: list[np.ndarray] = []
            seg.network.runner = recording(r.run, probs)  # type: ignore[assignment]
            vs, manual, differ = [], [], 0
            for case, variant, path, m, cord in items:
                cord_image = load_image(cord, what="cord mask", allow_constant=True) if cord else None
                got = seg.segment_image(load_image(path), cord=cord_image).gm
                want = ref[case, variant]
                vs.append(dice(got, want))
                manual.append(dice(got, _mask(m)) - dice(want, _mask(m)))
                differ += int(np.count_nonzero(got != want))
            print(f"| {k} | {1000 * best[k] / len(x):.0f} | {best['fp32, OpenVINO'] / best[k]:.2f}x | {min(vs):.4f} | "
                  f"{sum(d < 0.995 for d in vs)} of {len(vs)} | {min(manual):+.4f} | {differ} | "
                  f"{logit_rms(flat(probs), flat(ref_probs), band):.3f} | "
                  f"{' '.join(items[int(np.argmin(manual))][:2])} |", flush=True)


def recording(run: Callable[[np.ndarray], np.ndarray], into: list[np.ndarray]) -> Runner:
    """``run`` as an engine that also keeps every output (the pipeline calls it in the same order
    with the same windows whatever the network, so two recordings align)."""
    return Runner(lambda b: (into.append(out := run(b)), out)[1])


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays])


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(np.clip(p, 1e-12, 1)) - np.log(np.clip(1 - p, 1e-12, 1))


def near_threshold(p32: np.ndarray, threshold: float = 0.999, width: float = 3.0) -> np.ndarray:
    """The pixels whose fp32 logit is within ``width`` of the threshold's (logit 6.9 at 0.999): the
    only ones whose error can flip a mask."""
    return np.abs(_logit(p32) - _logit(np.float64(threshold))) < width


def logit_rms(p: np.ndarray, p32: np.ndarray, band: np.ndarray) -> float:
    return float(np.sqrt(np.mean((_logit(p[band]) - _logit(p32[band])) ** 2)))


if __name__ == "__main__":
    main()
