"""Speed and memory of sct-gm, side by side with ONNX Runtime, in one run (issue 7).

    python bench/speed.py                 # both models, 3 repetitions, the 512x512x400 volume, 20-volume batch
    python bench/speed.py --quick         # challenge only, 2 repetitions, no big volume, 5-volume batch
    python bench/speed.py --device cuda   # adds the PyTorch engine on the GPU (slices/s)

Prints Markdown tables (the README and docs/speed.md quote them). Figures are the minimum over the
repetitions, taken interleaved (every configuration once, then again), so that a disturbance of the
machine hits all of them alike. Compare figures only within one run.

Network rows run the real network inputs of ``t2s_uncropped`` (its 11 standardised 200x200 windows,
captured from the pipeline). "ONNX Runtime" is a plain ``InferenceSession`` on the same graph and
weights with default options, fed the 11 slices in one call: the engine the peer (SCT >= 5.7) runs
this model on. End-to-end rows time the whole ``sct-gm segment`` command in a fresh process (start-up,
imports, model load, resampling, post-processing and write) and read its peak RSS from the kernel.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from cases import MODELS_DIR, T2S_UNCROPPED
from sctgm.engines import load_network, predict
from sctgm.io import load_image
from sctgm.model.install import ensure_model, resolve_cache_dir
from sctgm.segment.pipeline import Segmenter

MODELS = MODELS_DIR
#: The original implementation (SCT 5.6, TensorFlow) on this case: whole command, file written, min
#: of 3, and its peak RSS (../shared/reference/sct_deepseg_gm/README.md, same 2-vCPU machine type).
SCT56 = {"challenge": (6.97, 2.65, 1004), "large": (11.63, 7.15, 1027)}  # (s, forward s, MiB)


def network_inputs(model: str) -> np.ndarray:
    """The standardised windows the pipeline feeds the network for t2s_uncropped, (N, 1, H, W)."""
    seg = Segmenter.from_name(model, device="cpu", engine="onnxruntime", mirror=str(MODELS))
    seen: list[np.ndarray] = []
    run = seg.network.runner.run
    seg.network.runner.run = lambda batch: (seen.append(np.array(batch)), run(batch))[1]  # type: ignore[method-assign]
    seg.segment_image(load_image(T2S_UNCROPPED))
    return np.concatenate(seen)


def network_configs(model: str, x: np.ndarray, device: str) -> dict[str, Callable[[], object]]:
    """Configuration name -> a call that runs the network over all of ``x``."""
    import onnxruntime as ort

    from sctgm.networks.dilated import onnx_graph
    from sctgm.model.weights import load_safetensors

    installed = ensure_model(model, mirror=str(MODELS))
    sd, filters = load_safetensors(installed.weights_path)
    plain = ort.InferenceSession(onnx_graph(sd, {"filters": filters}), providers=["CPUExecutionProvider"])
    ours = load_network(installed, "cpu", engine="onnxruntime", cache_dir=resolve_cache_dir())
    ours_torch = load_network(installed, "cpu", engine="torch")
    ours_bf16 = load_network(installed, "cpu", engine="onnxruntime", cache_dir=resolve_cache_dir(), precision="bf16")
    import torch

    from sctgm.networks.dilated import DilatedGMNet

    eager = DilatedGMNet(filters).eval()
    eager.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    xt = torch.from_numpy(x)

    def eager_batch() -> object:
        with torch.inference_mode():
            return eager(xt)

    configs: dict[str, Callable[[], object]] = {
        "ONNX Runtime, plain session, one call": lambda: plain.run(None, {"x": x}),
        "sct-gm default: onnxruntime, batch 1": lambda: predict(ours, x[:, 0]),
        "sct-gm --engine torch (CPU, channels-last, batch 1)": lambda: predict(ours_torch, x[:, 0]),
        f"{BF16}{bf16_path(ours_bf16)}": lambda: predict(ours_bf16, x[:, 0]),
        "PyTorch eager, NCHW, one call": eager_batch,
    }
    if device.startswith("cuda"):
        gpu = load_network(installed, device, engine="torch")
        configs[f"sct-gm --engine torch --device {device} (batch 32)"] = lambda: predict(gpu, x[:, 0])
    return configs


#: The bf16 row's label (issue 24): OpenVINO's bf16 on CPUs with bf16 instructions.
BF16 = "sct-gm --precision bf16 (OpenVINO, batch 1)"


def bf16_path(loaded: object) -> str:
    """What the bf16 row ran: the layers it kept in fp32, or the fallback to fp32."""
    if getattr(loaded, "precision", "fp32") != "bf16":
        return " (fell back to fp32 here)"
    kept = getattr(getattr(loaded, "runner", None), "fp32_nodes", ())
    return f", {', '.join(kept)} in fp32" if kept else ", every layer bf16"
#: The instruction sets printed in the header: what the fp32, int8 and bf16 kernels can use.
INSTRUCTION_SETS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def time_interleaved(configs: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    for f in configs.values():  # warm-up: first-call allocations and kernel selection
        f()
    best = {k: float("inf") for k in configs}
    for _ in range(reps):
        for k, f in configs.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


#: Runs a command as its child and reports the child's peak RSS (KiB). The command must not be forked
#: from this (large) process directly: Linux starts a forked child's peak RSS at its parent's.
_LAUNCHER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")


def run_command(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of a command, the RSS from the kernel's accounting."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 0:
        print(f"  ! {' '.join(args[2:6])}...: exit {proc.returncode}: {' '.join(lines[-3:-1])[-300:]}", file=sys.stderr)
    return wall, int(lines[-1]) / 1024, proc.returncode


def segment_cmd(inputs: list[Path], model: str, out_dir: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "sctgm", "segment", "-m", model, "-q", *extra]
    for p in inputs:
        cmd += ["-i", str(p)]
    if len(inputs) == 1:
        cmd += ["-o", str(out_dir / "out_gmseg.nii.gz")]
    return cmd


def big_volume(folder: Path) -> Path:
    """512 x 512 x 400 at 0.5 mm in-plane, 1 mm slices: t2s_uncropped (320 x 320 x 11, 0.5 mm) padded in-plane
    and its slices repeated, so the network sees real cord in every slice."""
    img = nib.load(str(T2S_UNCROPPED))
    data = np.asanyarray(img.dataobj)
    pad = ((96, 96), (96, 96), (0, 0))
    data = np.tile(np.pad(data, pad), (1, 1, 400 // data.shape[2] + 1))[:, :, :400]
    affine = img.affine.copy()
    affine[:3, 3] -= 96 * (img.affine[:3, 0] + img.affine[:3, 1])
    # 1 mm slices: 400 of t2s_uncropped's 7.5 mm slices would span 3 m, which io refuses as a broken
    # header (no field of view is that long); the network works slice by slice, so the spacing
    # through the slices changes nothing else.
    affine[:3, 2] *= 1.0 / np.linalg.norm(affine[:3, 2])
    out = folder / "big_512x512x400.nii.gz"
    nib.save(nib.Nifti1Image(data, affine, img.header), str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["challenge", "large"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda[:N] to add the GPU rows")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch-volumes", type=int, default=20)
    args = ap.parse_args()
    if args.quick:
        args.models, args.reps, args.batch_volumes = ["challenge"], 2, 5
    os.environ.setdefault("SCTGM_MIRROR", str(MODELS))

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    import onnxruntime

    print(f"# bench/speed.py, {dt.date.today().isoformat()}: {cpu}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, torch {_package_version()}, "
          f"openvino {_package_version('openvino')}")
    from sctgm.engines.hardware import cpu_flags

    flags = cpu_flags()
    print(f"# instruction sets: {', '.join(f for f in INSTRUCTION_SETS if f in flags) or 'none of those sought'}\n")
    tmp = Path(tempfile.mkdtemp(prefix="sctgm-bench-"))
    checks: list[tuple[str, str, str]] = []
    for model in args.models:
        x = network_inputs(model)
        n = x.shape[0]
        net = time_interleaved(network_configs(model, x, args.device), args.reps)
        ref = net["ONNX Runtime, plain session, one call"]
        e2e: dict[str, tuple[float, float]] = {}
        for _ in range(args.reps):
            runs = [("sct-gm default: onnxruntime, batch 1", ("--device", "cpu")),
                    ("sct-gm --engine torch (CPU, channels-last, batch 1)", ("--engine", "torch", "--device", "cpu"))]
            runs += [(k, ("--device", "cpu", "--precision", "bf16")) for k in net if k.startswith(BF16)]
            runs += [(k, ("--device", args.device)) for k in net if "--device" in k]
            for label, extra in runs:
                wall, rss, _ = run_command(segment_cmd([T2S_UNCROPPED], model, tmp, *extra))
                old = e2e.get(label, (float("inf"), 0.0))
                e2e[label] = (min(old[0], wall), max(old[1], rss))
        print(f"## {model} on t2s_uncropped ({n} slices of {x.shape[2]}x{x.shape[3]}), min of {args.reps}\n")
        print("| engine or configuration | ms per slice | throughput vs ONNX Runtime | end-to-end s | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for label, secs in net.items():
            wall, rss = e2e.get(label, (None, None))
            print(f"| {label} | {1000 * secs / n:.0f} | {ref / secs:.2f}x | "
                  f"{'' if wall is None else f'{wall:.2f}'} | {'' if rss is None else f'{rss:.0f}'} |")
        sct_s, sct_fwd, sct_rss = SCT56[model]
        print(f"| SCT 5.6 (TensorFlow), from its reference README, not this run | {1000 * sct_fwd / n:.0f} "
              f"| | {sct_s:.2f} | {sct_rss} |\n")
        default = "sct-gm default: onnxruntime, batch 1"
        checks += [
            (f"{model}: end-to-end / network time (goal <= 1.3)", f"{e2e[default][0]:.2f} s / {net[default]:.2f} s",
             f"{e2e[default][0] / net[default]:.2f}"),
            (f"{model}: SCT 5.6 whole command / sct-gm (goal >= 3)", f"{sct_s:.2f} s / {e2e[default][0]:.2f} s",
             f"{sct_s / e2e[default][0]:.1f}x"),
            (f"{model}: network throughput vs ONNX Runtime (goal >= 0.9)", "", f"{ref / net[default]:.2f}x"),
        ]
        checks += [(f"{model}: {k} vs sct-gm default fp32 (goal >= 1.8)", f"{1000 * net[k] / n:.0f} vs "
                    f"{1000 * net[default] / n:.0f} ms per slice", f"{net[default] / net[k]:.2f}x")
                   for k in net if k.startswith(BF16)]
        gpu = [k for k in net if "--device" in k]
        for k in gpu:
            checks.append((f"{model}: {k}", f"{1000 * net[k] / n:.1f} ms per slice", f"{n / net[k]:.0f} slices/s"))
        if not args.quick:
            batch_size_table(model, tmp, args.reps)
        if model == args.models[-1]:
            checks += startup_checks(model, tmp, args, net[default])
    checks += default_cost(args.reps)
    print("| check | measured | figure |")
    print("|---|---|---|")
    for row in checks:
        print("| " + " | ".join(row) + " |")


def batch_size_table(model: str, tmp: Path, reps: int) -> None:
    """The measurement behind the default batch size on a CPU: whole command time and peak RSS."""
    print(f"Batch size on the CPU, {model}, whole `sct-gm segment` on t2s_uncropped, min of {reps}:\n")
    print("| --batch-size | end-to-end s | peak RSS MiB |")
    print("|---|---|---|")
    best: dict[int, tuple[float, float]] = {}
    for _ in range(reps):
        for bs in (1, 2, 4, 8):
            wall, rss, _ = run_command(segment_cmd([T2S_UNCROPPED], model, tmp, "--device", "cpu",
                                                   "--batch-size", str(bs)))
            old = best.get(bs, (float("inf"), 0.0))
            best[bs] = (min(old[0], wall), max(old[1], rss))
    for bs, (wall, rss) in best.items():
        print(f"| {bs} | {wall:.2f} | {rss:.0f} |")
    print()


def startup_checks(model: str, tmp: Path, args: argparse.Namespace, net_s: float) -> list[tuple[str, str, str]]:
    """--help and model-load times, a batch of copies of t2s_uncropped in one call, the big volume."""
    rows = []
    helps = [run_command([sys.executable, "-m", "sctgm", "--help"])[0] for _ in range(args.reps)]
    rows.append(("`sct-gm --help` (goal < 0.5 s)", "whole command", f"{min(helps):.2f} s"))
    code = ("import time; from sctgm.model.install import ensure_model, resolve_cache_dir; "
            "from sctgm.engines import load_network; m = ensure_model(%r); t0 = time.perf_counter(); "
            "load_network(m, 'cpu', cache_dir=resolve_cache_dir()); print(time.perf_counter() - t0)") % model
    loads = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(args.reps)]
    rows.append((f"model load, {model} (goal < 0.5 s)", "fresh process, graph cached", f"{min(loads):.3f} s"))
    one, _, _ = run_command(segment_cmd([T2S_UNCROPPED], model, tmp, "--device", "cpu"))
    copies = []
    for i in range(args.batch_volumes):
        copies.append(tmp / f"vol{i:02d}.nii.gz")
        copies[-1].write_bytes(T2S_UNCROPPED.read_bytes())
    runs = [run_command(segment_cmd(copies, model, tmp, "--device", "cpu", "--overwrite")) for _ in range(2)]
    wall, rss, code_ = min(runs)
    if code_ == 0 and all(p.with_name(p.name.replace(".nii.gz", "_gmseg.nii.gz")).is_file() for p in copies):
        budget = args.batch_volumes * net_s + min(loads)
        rows.append((f"{args.batch_volumes} volumes in one call, {model} (goal <= {args.batch_volumes} x network + "
                     "one load)", f"{wall:.1f} s vs {budget:.1f} s; one volume alone {one:.2f} s",
                     f"{wall / budget:.2f}"))
    else:
        rows.append((f"{args.batch_volumes} volumes in one call", "several -i not supported by this build", "n/a"))
    if not args.quick:
        big = big_volume(tmp)
        wall, rss, _ = run_command(segment_cmd([big], model, tmp, "--device", "cpu"))
        rows.append((f"512x512x400 at 0.5 mm, {model} (goal: peak RSS < 2048 MiB)", f"{wall:.0f} s",
                     f"{rss:.0f} MiB"))
    return rows


def default_cost(reps: int) -> list[tuple[str, str, str]]:
    """The default model's cost against `large` alone (issue 20: at most 2x per volume on the CPU):
    ``segment_image`` on t2s_uncropped with the default options, in this process, interleaved."""
    from sctgm.model.registry import load_registry

    default = load_registry()["default"]
    if default == "large":
        return []
    image = load_image(T2S_UNCROPPED)
    segs = {m: Segmenter.from_name(m, device="cpu", engine="onnxruntime", mirror=str(MODELS)) for m in ("large", default)}
    best = time_interleaved({m: (lambda s=s: s.segment_image(image)) for m, s in segs.items()}, reps)
    return [(f"default `{default}` / `large` alone, one volume (goal <= 2)",
             f"{best[default]:.2f} s / {best['large']:.2f} s (segment_image, t2s_uncropped)",
             f"{best[default] / best['large']:.2f}x")]


def _package_version(package: str = "torch") -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001
        return "absent"


if __name__ == "__main__":
    main()
