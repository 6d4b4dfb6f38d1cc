"""Cheaper arithmetic on the CPU (issue 24): every way tried to run the networks faster than ONNX
Runtime's fp32, side by side in one run: ms per slice, and the masks against fp32's.

    PYTHONPATH=. nice -n 10 python bench/precision_cpu.py            # challenge and large (~30 min on 2 busy cores)
    PYTHONPATH=. python bench/precision_cpu.py --models challenge --quick   # clean cases only, 2 repetitions
    PYTHONPATH=. python bench/precision_cpu.py --models --whole large-ensemble  # a model as sct-gm runs it
    PYTHONPATH=. python bench/precision_cpu.py --candidates bf16 --cases all   # + the 4 gm_challenge volumes

Candidates: the graph with its BatchNorms folded into the next convolutions (exactly, and with the
zero-padded border left approximate), ONNX Runtime static int8 (QDQ, per-channel int8 weights, uint8
activations) of the plain and of the folded graph, with the first and last layers kept in fp32 or
only the ASPP branches quantised; OpenVINO in fp32, in bf16 (every layer, and with the layers the
network keeps in fp32 under bf16: sct-gm's ``--precision bf16``) and on the int8 graph; PyTorch bf16.

Timing: the 11 real 200x200 windows of t2s_uncropped, one slice a call, every candidate once per
repetition, interleaved, minimum kept; ``--threads`` (default 1) for every engine. Masks: the whole
pipeline on the held-out labelled cases in ../shared (t2s_uncropped, t2s, mt1; ``--cases all`` adds
the 4 gm_challenge_2018 run-1 volumes) and their variants (Rician
noise 1, 3, 5 % of the 99th percentile, a bias field; seeded, sctgm.segment.degrade), with each
candidate swapped in for the network: min and mean Dice against fp32's mask, and the worst change of
Dice against the manual mask. int8 calibration: windows of unlabelled scans only (the gm_challenge
run-2 rescans and sct_tutorial_data mt1), listed with their sha256 in the output.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path

import nibabel as nib
import numpy as np

from cases import ALL_LABELLED, DATA, LABELLED, MODELS_DIR, T2S_UNCROPPED, dice, require_shared

from sctgm.engines.fold import fold_batchnorms
from sctgm.engines.hardware import cpu_flags
from sctgm.engines.onnx import OnnxNetwork
from sctgm.engines.quantise import quantise_int8
from sctgm.io import load_image
from sctgm.model.install import ensure_model
from sctgm.model.weights import load_safetensors
from sctgm.networks.dilated import NETWORK
from sctgm.segment.degrade import add_rician_noise, smooth_bias_field
from sctgm.segment.pipeline import Segmenter

#: Unlabelled real scans whose windows calibrate int8 (none of them is a case measured on).
CALIBRATION = [DATA / f"gm_challenge_2018/sub-{s}/anat/sub-{s}_run-2_T2starw.nii.gz"
               for s in ("9669", "10062Ses1", "10062Ses2", "9584")] + [DATA / "sct_tutorial_data/mt/mt1.nii.gz"]
VARIANTS = {"clean": (0.0, False), "noise 1%": (0.01, False), "noise 3%": (0.03, False), "noise 5%": (0.05, False),
            "bias": (0.0, True)}
PLAIN_INT8 = "int8 (ONNX Runtime QDQ), plain graph"
TRUNK_AND_HEAD = ("conv2d_1/conv", "conv2d_2/conv", "rate2_1/conv", "rate2_2/conv", "amort/conv", "logits")
INSTRUCTION_SETS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def captured_windows(seg: Segmenter, paths: list[Path]) -> np.ndarray:
    """The standardised windows the pipeline feeds the network for these images, (N, 1, H, W)."""
    seen: list[np.ndarray] = []
    run = seg.network.runner.run
    seg.network.runner.run = lambda batch: (seen.append(np.array(batch)), run(batch))[1]  # type: ignore[method-assign]
    try:
        for p in paths:
            seg.segment_image(load_image(p))
    finally:
        seg.network.runner.run = run  # type: ignore[method-assign]
    return np.concatenate(seen)


class Runner:
    """Any callable (N, 1, H, W) -> probabilities, as an engine the pipeline can use."""

    preferred_batch_size = 1

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.run = fn


def openvino_runner(graph: bytes, precision: str, threads: int, fp32_nodes: tuple[str, ...] = ()) -> Runner:
    """sct-gm's OpenVINO engine (``precision`` 'fp32' or 'bf16', ``fp32_nodes`` kept fp32 under bf16)."""
    from sctgm.engines.openvino import OpenVinoNetwork

    return Runner(OpenVinoNetwork(graph, precision=precision, threads=threads, fp32_nodes=fp32_nodes).run)


def torch_bf16_runner(sd: dict[str, np.ndarray], filters: int, threads: int) -> Runner:
    import torch

    from sctgm.networks.dilated import DilatedGMNet

    net = DilatedGMNet(filters).eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    net = net.to(memory_format=torch.channels_last)

    def run(b: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)
        x = torch.from_numpy(np.ascontiguousarray(b, np.float32)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x).float().numpy()
    return Runner(run)


def candidates(model: str, cal: np.ndarray, threads: int, only: str) -> dict[str, Runner]:
    import onnx

    sd, filters = load_safetensors(ensure_model(model, mirror=str(MODELS_DIR)).weights_path)
    from sctgm.networks.dilated import onnx_graph

    plain = onnx.ModelProto.FromString(onnx_graph(sd, {"filters": filters}))
    folded = fold_batchnorms(plain)

    def ort(m: object) -> Runner:
        return Runner(OnnxNetwork(m.SerializeToString(), threads=threads).run)  # type: ignore[attr-defined]

    t0 = time.perf_counter()
    recipes = {PLAIN_INT8: (plain, ()),
               "int8, folded graph": (folded, ()),
               "int8, folded, first and last layers fp32": (folded, ("conv2d_1/conv", "amort/conv", "logits")),
               "int8, folded, ASPP branches only": (folded, TRUNK_AND_HEAD)}
    wanted = {"all": tuple(recipes), "main": (PLAIN_INT8,), "bf16": ()}[only]
    int8 = {k: quantise_int8(g, cal, exclude=ex) for k, (g, ex) in recipes.items() if k in wanted}
    if int8:
        print(f"  ({model}: {len(int8)} int8 graph(s) calibrated in {time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"fp32, ONNX Runtime (sct-gm default)": ort(plain)}
    if only == "all":
        out.update({"fp32, BatchNorms folded (exact border)": ort(folded),
                    "fp32, BatchNorms folded (border approximate)": ort(fold_batchnorms(plain, exact_border=False))})
    out.update({k: ort(v) for k, v in int8.items()})
    try:
        out["fp32, OpenVINO"] = openvino_runner(plain.SerializeToString(), "fp32", threads)
        out["bf16, OpenVINO, every layer"] = openvino_runner(plain.SerializeToString(), "bf16", threads)
        kept = ", ".join(NETWORK.bf16_fp32_nodes)
        out[f"bf16, OpenVINO, {kept} in fp32 (sct-gm --precision bf16)"] = openvino_runner(
            plain.SerializeToString(), "bf16", threads, NETWORK.bf16_fp32_nodes)
        if PLAIN_INT8 in int8:
            out["int8, OpenVINO on the plain QDQ graph"] = openvino_runner(int8[PLAIN_INT8].SerializeToString(),
                                                                           "fp32", threads)
    except ImportError:
        print("  (openvino is not installed: its rows are left out)")
    if only == "all":
        out["bf16, PyTorch autocast (oneDNN)"] = torch_bf16_runner(sd, filters, threads)
        return out
    return {k: v for k, v in out.items() if "OpenVINO" not in k or "bf16" in k}


def time_windows(runners: dict[str, Any], x: np.ndarray, reps: int) -> dict[str, float]:
    """Seconds each runner takes over the windows ``x``, one slice a call: every runner once per
    repetition, interleaved, after one warm-up pass; the minimum kept."""
    best = {k: float("inf") for k in runners}
    for r in runners.values():
        [r.run(w[None]) for w in x]
    for _ in range(reps):
        for k, r in runners.items():
            t0 = time.perf_counter()
            for w in x:
                r.run(w[None])
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def variant_files(folder: Path, quick: bool, cases: dict[str, tuple[Path, Path, Path | None]] | None = None
                  ) -> list[tuple[str, str, Path, Path, Path | None]]:
    """(case, variant, image, manual mask, cord mask) for every case (default: the 3 held-out ones)
    and variant, written once; a case's seeds depend on its position only."""
    out = []
    for i, (case, (image, manual, cord)) in enumerate((cases or LABELLED).items()):
        for j, (variant, (sigma, bias)) in enumerate(VARIANTS.items()):
            if quick and variant != "clean":
                continue
            path = image
            if variant != "clean":
                img = nib.load(str(image))
                data = np.asanyarray(img.dataobj).astype(np.float32)
                rng = np.random.default_rng(1000 + 10 * i + j)
                if bias:
                    data = data * smooth_bias_field(data.shape, img.header.get_zooms()[:3], rng)
                if sigma:
                    data = add_rician_noise(data, sigma, rng)
                path = folder / f"{case}_{j}.nii.gz"
                nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
            out.append((case, variant, path, manual, cord))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["challenge", "large"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="clean cases only, 2 repetitions")
    ap.add_argument("--candidates", choices=["all", "main", "bf16"], default="all",
                    help="main: fp32, the two bf16 (OpenVINO) and the plain int8 graph only (a third of the "
                         "time); bf16: fp32 and the two bf16 only (no int8 calibration)")
    ap.add_argument("--cases", choices=["held-out", "all"], default="held-out",
                    help="the masks' cases: the 3 held-out labelled cases (default), or all 7 labelled cases of "
                         "../shared (+ the 4 gm_challenge_2018 run-1 volumes, large-robust's training data)")
    ap.add_argument("--whole", nargs="*", default=[], metavar="MODEL",
                    help="also models as sct-gm runs them, e.g. large-ensemble (two networks): "
                         "--precision bf16 against fp32 on the same volumes")
    args = ap.parse_args()
    require_shared(*CALIBRATION)
    if args.quick:
        args.reps = 2
    import onnxruntime

    flags = cpu_flags()
    print(f"# bench/precision_cpu.py, {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} thread(s) per engine, onnxruntime {onnxruntime.__version__}, "
          f"openvino {_version('openvino')}, torch {_version('torch')}")
    found = ", ".join(f for f in INSTRUCTION_SETS if f in flags)
    print(f"# instruction sets: {found or 'none of ' + ', '.join(INSTRUCTION_SETS)}\n")
    tmp = Path(tempfile.mkdtemp(prefix="sctgm-precision-"))
    items = variant_files(tmp, args.quick, ALL_LABELLED if args.cases == "all" else LABELLED)
    for model in args.models:
        seg = Segmenter.from_name(model, device="cpu", engine="onnxruntime", mirror=str(MODELS_DIR),
                                  threads=args.threads)
        cal = np.empty((0, 1, 1, 1), np.float32)
        if args.candidates != "bf16":  # the bf16 lines need no calibration
            cal_all = captured_windows(seg, CALIBRATION)
            picked = np.random.default_rng(0).choice(len(cal_all), min(24, len(cal_all)), replace=False)
            cal = cal_all[np.sort(picked)]
            print(f"{model}: int8 calibration on {len(cal)} of the {len(cal_all)} windows of "
                  f"{', '.join(p.name for p in CALIBRATION)}; "
                  f"windows sha256 {hashlib.sha256(cal.tobytes()).hexdigest()[:16]}")
        x = captured_windows(seg, [T2S_UNCROPPED])
        runners = candidates(model, cal, args.threads, args.candidates)
        best = time_windows(runners, x, args.reps)
        masks: dict[str, dict[tuple[str, str], np.ndarray]] = {}
        for k, r in runners.items():
            seg.network.runner = r  # type: ignore[assignment]
            masks[k] = {(case, variant): segment(seg, path, cord) for case, variant, path, _, cord in items}
        ref_name = next(iter(runners))
        print(f"\n## {model}: {len(x)} windows of t2s_uncropped, min of {args.reps}; masks on "
              f"{len(items)} cases x variants\n")
        print("| configuration | ms per slice | throughput vs fp32 | min Dice vs fp32 | mean Dice vs fp32 | "
              "worst change of Dice vs manual | cases below 0.995 |")
        print("|---|---|---|---|---|---|---|")
        for k in runners:
            print(f"| {k} | {1000 * best[k] / len(x):.0f} | {best[ref_name] / best[k]:.2f}x | "
                  f"{mask_figures(masks[k], masks[ref_name], items)} |", flush=True)
    if args.whole:
        whole_models(args.whole, items, args.threads)


def segment(seg: Segmenter, path: Path, cord: Path | None) -> np.ndarray:
    cord_image = load_image(cord, what="cord mask", allow_constant=True) if cord else None
    return seg.segment_image(load_image(path), cord=cord_image).gm


def mask_figures(got: dict[tuple[str, str], np.ndarray], want: dict[tuple[str, str], np.ndarray],
                 items: list[tuple[str, str, Path, Path, Path | None]]) -> str:
    """min and mean Dice against ``want`` | worst change of Dice against the manual masks | volumes below 0.995."""
    vs = [dice(got[c, v], want[c, v]) for c, v, *_ in items]
    manual = [dice(got[c, v], _mask(m)) - dice(want[c, v], _mask(m)) for c, v, _, m, _ in items]
    return f"{min(vs):.4f} | {np.mean(vs):.4f} | {min(manual):+.4f} | {sum(d < 0.995 for d in vs)} of {len(vs)}"


def whole_models(models: list[str], items: list[tuple[str, str, Path, Path, Path | None]], threads: int) -> None:
    """Models as sct-gm runs them (a combination's two networks included): ``--precision bf16`` against
    fp32, the whole pipeline on every volume, fp32 and bf16 alternating volume by volume."""
    print(f"\n## whole models, fp32 (ONNX Runtime) against --precision bf16, {len(items)} volumes, "
          f"the two alternating\n")
    print("| model | pipeline s, fp32 | pipeline s, bf16 | throughput vs fp32 | min Dice vs fp32 | mean Dice vs fp32 | "
          "worst change of Dice vs manual | volumes below 0.995 |")
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        segs = {p: Segmenter.from_name(model, device="cpu", mirror=str(MODELS_DIR), threads=threads, precision=p)
                for p in ("fp32", "bf16")}
        masks: dict[str, dict[tuple[str, str], np.ndarray]] = {"fp32": {}, "bf16": {}}
        secs = {"fp32": 0.0, "bf16": 0.0}
        segment(segs["bf16"], items[0][2], items[0][4])  # warm-up (OpenVINO's first call)
        for case, variant, path, _, cord in items:
            for p, seg in segs.items():
                t0 = time.perf_counter()
                masks[p][case, variant] = segment(seg, path, cord)
                secs[p] += time.perf_counter() - t0
        print(f"| {model} | {secs['fp32']:.1f} | {secs['bf16']:.1f} | {secs['fp32'] / secs['bf16']:.2f}x | "
              f"{mask_figures(masks['bf16'], masks['fp32'], items)} |", flush=True)


def _mask(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj) > 0.5


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    main()
