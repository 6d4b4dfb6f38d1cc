"""sct-gm on a CUDA GPU: the masks it gives against the CPU's, and slices per second.

    python bench/gpu.py                    # needs a CUDA device and ../shared

For each model: the labelled cases segmented with the PyTorch engine on the GPU and with the default
CPU engine (ONNX Runtime) must give the same masks; then network throughput over 400 real 200x200
windows (t2s_uncropped's, repeated) at several batch sizes, and one whole 512x512x400 volume.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import speed
from cases import MODELS_DIR, TESTING

from sctgm.engines import load_network, predict
from sctgm.io import load_image
from sctgm.model.install import ensure_model
from sctgm.segment.pipeline import Segmenter

DATA = TESTING
CASES = {"t2s_uncropped": DATA / "t2s" / "t2s_uncropped.nii.gz", "t2s": DATA / "t2s" / "t2s.nii.gz",
         "mt1": DATA / "mt" / "mt1.nii.gz"}


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device here")
    print(f"# bench/gpu.py: {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
    print("| model | case | GM voxels CPU (onnxruntime) | GM voxels GPU (torch) | voxels that differ |")
    print("|---|---|---|---|---|")
    for model in ("challenge", "large"):
        cpu = Segmenter.from_name(model, device="cpu", mirror=str(MODELS_DIR))
        gpu = Segmenter.from_name(model, device="cuda", mirror=str(MODELS_DIR))
        assert gpu.network.engine == "torch" and gpu.network.device.startswith("cuda")
        for case, path in CASES.items():
            a = cpu.segment_image(load_image(path)).gm
            b = gpu.segment_image(load_image(path)).gm
            print(f"| {model} | {case} | {int(a.sum())} | {int(b.sum())} | {int((a != b).sum())} |")
    print("\n| model | batch size | ms per slice | slices/s |")
    print("|---|---|---|---|")
    for model in ("challenge", "large"):
        x = speed.network_inputs(model)[:, 0]
        x = np.concatenate([x] * (400 // len(x) + 1))[:400]
        net = load_network(ensure_model(model, mirror=str(MODELS_DIR)), "cuda", engine="torch")
        for bs in (8, 32, 128):
            predict(net, x[:bs], batch_size=bs)  # warm-up: cuDNN picks its kernels
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            predict(net, x, batch_size=bs)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            print(f"| {model} | {bs} | {1000 * dt / len(x):.2f} | {len(x) / dt:.0f} |")
    tmp = Path(tempfile.mkdtemp())
    big = speed.big_volume(tmp)
    print("\n| whole command on 512x512x400 (0.5 mm) | wall s | peak RSS MiB |")
    print("|---|---|---|")
    for model in ("challenge", "large"):
        for device in ("cuda", "cpu"):
            wall, rss, code = speed.run_command(speed.segment_cmd([big], model, tmp, "--device", device))
            print(f"| {model}, --device {device} | {wall:.1f} | {rss:.0f} |" + ("" if code == 0 else f" exit {code}"))
    subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv"], check=False)


if __name__ == "__main__":
    main()
