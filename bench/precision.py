"""What reduced precision does to the masks, at each model's own threshold (0.999 for the published ones).

    python bench/precision.py                      # CPU: fp32 vs bf16 (and fp16 where torch runs it), ~5 min
    python bench/precision.py --device cuda        # GPU: fp32 vs tf32, bf16, fp16 (all models, all cases)

Each labelled case is segmented end to end (the real pipeline: windows, relocation, threshold,
post-processing, back to the native grid) by the PyTorch engine at every precision of
sctgm.recipe.PRECISIONS that the device runs, side by side in one run; fp32 (TF32 off) is the
reference and the policy. Printed per row: GM voxels, voxels that differ from fp32, Dice of the mask
with fp32's, Dice against the manual mask (fp32 -> this precision), the largest probability change,
the share of voxels whose probability (native grid) sits within 1e-3 of the threshold (where any
rounding can flip a voxel) and seconds. docs/architecture.md ("Precision") keeps the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from cases import LABELLED, MODELS_DIR, dice, require_shared
from sctgm.io import load_image
from sctgm.model.install import ensure_model
from sctgm.recipe import PRECISIONS
from sctgm.segment.pipeline import Segmenter


def runs_on(precision: str, device: str) -> bool:
    """Whether ``precision`` means something distinct and runs on ``device`` (tf32 and fp16 are CUDA's)."""
    import torch

    if precision == "fp32":
        return True
    if device.startswith("cuda"):
        return precision != "bf16" or torch.cuda.is_bf16_supported()
    if precision == "bf16":
        return True  # CPU autocast runs bf16 (native kernels with AVX512-BF16/AMX, emulated otherwise)
    return False  # tf32 is fp32 on a CPU; fp16 autocast on a CPU is emulated and not a deployment case


def segmenter(model: str, precision: str, device: str, threads: int) -> Segmenter:
    installed = ensure_model(model, mirror=str(MODELS_DIR))
    installed = dataclasses.replace(installed, recipe=dataclasses.replace(installed.recipe, precision=precision))
    return Segmenter(installed, device=device, engine="torch", threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--models", default=None, help="comma-separated [default: challenge on a CPU, all on a GPU]")
    ap.add_argument("--cases", default=None, help=f"comma-separated subset of {','.join(LABELLED)} "
                                                   "[default: t2s,mt1 on a CPU, all on a GPU]")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    require_shared()
    gpu = args.device.startswith("cuda")
    models = (args.models or ("challenge,large,large-robust" if gpu else "challenge")).split(",")
    cases = (args.cases or (",".join(LABELLED) if gpu else "t2s,mt1")).split(",")
    precisions = [p for p in args.precisions.split(",") if runs_on(p, args.device)]
    import torch

    name = torch.cuda.get_device_name(args.device) if gpu else "CPU"
    print(f"# bench/precision.py: {name}, torch {torch.__version__}, precisions {', '.join(precisions)}\n")
    print("| model | case | precision | GM voxels | voxels != fp32 | Dice vs fp32 | Dice vs manual (fp32 -> this) "
          "| max abs prob change | voxels with prob within 1e-3 of threshold | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        segs = {p: segmenter(model, p, args.device, args.threads) for p in precisions}
        threshold = segs["fp32"].model.recipe.threshold
        for case in cases:
            image_path, manual_path, cord_path = LABELLED[case]
            image, manual = load_image(image_path), load_image(manual_path, what="mask").data
            cord = load_image(cord_path, what="mask") if cord_path else None
            out = {}
            for p, seg in segs.items():
                t0 = time.perf_counter()
                out[p] = (seg.segment_image(image, cord=cord, want_prob=True), time.perf_counter() - t0)
            ref = out["fp32"][0]
            for p, (res, seconds) in out.items():
                near = float(np.mean(np.abs(res.gm_prob - threshold) < 1e-3))
                print(f"| {model} | {case} | {p} | {int(res.gm.sum())} | {int((res.gm != ref.gm).sum())} "
                      f"| {dice(res.gm, ref.gm):.4f} | {dice(ref.gm, manual):.4f} -> {dice(res.gm, manual):.4f} "
                      f"| {float(np.abs(res.gm_prob - ref.gm_prob).max()):.2e} | {near:.2%} | {seconds:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
