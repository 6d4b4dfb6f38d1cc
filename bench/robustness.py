"""Robustness of the segmentation to noise and intensity inhomogeneity, with and without each
enhancement step: 3D Dice against the manual masks in ../shared for clean images, Rician noise at
1/2/3/5 % of the 99th percentile (seeded) and a smooth bias field, per model, per case and per step,
plus seconds per step and the estimated noise of each variant.

    python bench/robustness.py                       # full grid (~15 min on 2 busy cores)
    python bench/robustness.py --quick               # clean, 2 %, 3 %, bias; off, nlm, auto (~3 min)

Each variant's noise is seeded by (case, variant), so a subset run reproduces the full run's cells.
    python bench/robustness.py --json out.json       # also keep every figure for later analysis

The enhancement runs on the image before segmentation (phase 2 makes it an option of the pipeline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

import sctgm
import sctgm.io
from cases import MODELS_DIR, TESTING, require_shared
from sctgm.segment import enhance
from sctgm.segment.degrade import add_rician_noise, smooth_bias_field

DATA = TESTING
MODELS = MODELS_DIR

CASES = {
    "t2s_uncropped": ("t2s/t2s_uncropped.nii.gz", "t2s/t2s_uncropped_gmseg_manual.nii.gz"),
    "t2s": ("t2s/t2s.nii.gz", "t2s/t2s_gmseg_manual.nii.gz"),
    "mt1": ("mt/mt1.nii.gz", "mt/mt1_gmseg_goldstandard.nii.gz"),
}
#: variant -> (Rician sigma relative to the 99th percentile, bias field?)
VARIANTS = {"clean": (0.0, False), "noise 1%": (0.01, False), "noise 2%": (0.02, False),
            "noise 3%": (0.03, False), "noise 5%": (0.05, False), "bias": (0.0, True)}
#: heavier noise, for the regime where one network breaks down over a volume: run with no enhancement
#: (`--denoise off`; robustness_default.py, default_cache.py), as on a very clean scan whose added
#: noise reads under the denoiser's threshold (issue 20's 7T scan); not in this bench's own run
HEAVY_VARIANTS = {"noise 4%": (0.04, False), "noise 7%": (0.07, False)}
STEPS = {
    "off": enhance.Enhancement(),
    "nlm full": enhance.Enhancement(denoise="nlm", noise_floor_rel=0.0),
    "nlm": enhance.Enhancement(denoise="nlm"),
    "tv": enhance.Enhancement(denoise="tv"),
    "bias n4": enhance.Enhancement(bias="n4"),
    "bias smooth": enhance.Enhancement(bias="smooth"),
    "clahe": enhance.Enhancement(clahe=True),
    "auto": enhance.Enhancement(denoise="auto"),
}
#: steps aimed at intensity, not noise, run on these variants only (keeps the run near 10 minutes)
INTENSITY_STEPS = {"bias n4", "bias smooth", "clahe"}
INTENSITY_VARIANTS = ("clean", "noise 2%", "bias")
QUICK_VARIANTS = ("clean", "noise 2%", "noise 3%", "bias")
QUICK_STEPS = ("off", "nlm", "auto")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) >= 0.5, np.asarray(b) >= 0.5
    s = int(a.sum() + b.sum())
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def degraded(data: np.ndarray, zooms: tuple[float, float, float], variant: str, seed: int) -> np.ndarray:
    sigma_rel, bias = {**VARIANTS, **HEAVY_VARIANTS}[variant]
    rng = np.random.default_rng(seed)
    out = data
    if bias:
        out = out * smooth_bias_field(out.shape, zooms, rng)
    if sigma_rel:
        out = add_rician_noise(out, sigma_rel, rng)
    return out.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"variants {QUICK_VARIANTS}, steps {QUICK_STEPS}".replace("%", "%%"))
    ap.add_argument("--models", default="large,challenge")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--steps", default=None, help="comma-separated subset of " + ",".join(STEPS))
    ap.add_argument("--variants", default=None, help="comma-separated subset of " + ",".join(VARIANTS).replace("%", "%%"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args()
    require_shared()
    variants = args.variants.split(",") if args.variants else list(QUICK_VARIANTS if args.quick else VARIANTS)
    steps = args.steps.split(",") if args.steps else list(QUICK_STEPS if args.quick else STEPS)
    models, cases = args.models.split(","), args.cases.split(",")
    t_start = time.perf_counter()

    # 1. the inputs: each case x variant x step, enhanced once (shared by the models)
    inputs: dict[tuple[str, str, str], tuple[nib.Nifti1Image, str]] = {}
    manual: dict[str, np.ndarray] = {}
    noise: dict[tuple[str, str], float] = {}
    step_seconds: dict[str, list[float]] = {s: [] for s in steps}
    auto_choice: dict[tuple[str, str], str] = {}
    for case in cases:
        img_path, man_path = CASES[case]
        img = nib.load(str(DATA / img_path))
        if nib.aff2axcodes(img.affine)[2] not in "SI":
            sys.exit(f"{case}: axis 2 is not superior-inferior; the bench expects axial slices along axis 2")
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        data = np.asarray(img.get_fdata(dtype=np.float32))
        manual[case] = np.asanyarray(nib.load(str(DATA / man_path)).dataobj)
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        header.set_slope_inter(1.0, 0.0)
        for variant in variants:
            # the seed depends on the case and the variant only: a subset run draws the same noise
            seed = 1000 * list(CASES).index(case) + list(VARIANTS).index(variant)
            vol = degraded(data, zooms, variant, seed=seed)  # type: ignore[arg-type]
            noise[(case, variant)] = enhance.estimate_noise_sigma(vol).relative
            for step in steps:
                if step in INTENSITY_STEPS and variant not in INTENSITY_VARIANTS:
                    continue
                t0 = time.perf_counter()
                out, report = enhance.apply(vol, zooms, STEPS[step], estimate=False)  # type: ignore[arg-type]
                step_seconds[step].append(time.perf_counter() - t0)
                if step == "auto":
                    auto_choice[(case, variant)] = report["denoise"]
                key = hashlib.sha1(np.ascontiguousarray(out).tobytes()).hexdigest()
                inputs[(case, variant, step)] = (nib.Nifti1Image(out, img.affine, header), key)
    t_enhance = time.perf_counter() - t_start

    # 2. segment each distinct input once per model
    results: dict[tuple[str, str, str, str], float] = {}
    seg_seconds: dict[str, float] = {}
    for model in models:
        # after the restructure (issue 11) a segmenter for a model name comes from Segmenter.from_name
        make = getattr(sctgm.Segmenter, "from_name", sctgm.Segmenter)
        seg = make(model, device="cpu", mirror=str(MODELS), threads=args.threads,
                   cache_dir=str(Path("/tmp") / "sctgm-bench-cache"))
        done: dict[str, float] = {}
        # the bench applies each step itself: the pipeline's own enhancement stage stays off
        fields = getattr(sctgm.SegmentOptions, "__dataclass_fields__", {})
        no_stage = sctgm.SegmentOptions(denoise="off") if "denoise" in fields else sctgm.SegmentOptions()
        t0 = time.perf_counter()
        for (case, variant, step), (nifti, key) in inputs.items():
            if key not in done:
                gm = seg.segment_image(sctgm.io.image_from_nifti(nifti), options=no_stage).gm
                done[key] = dice(gm, manual[case])
            results[(model, case, variant, step)] = done[key]
        seg_seconds[model] = time.perf_counter() - t0
        print(f"# {model}: {len(done)} segmentations in {seg_seconds[model]:.0f} s", file=sys.stderr,
              flush=True)

    # 3. print
    print("Estimated noise (sigma / 99th percentile, %) of each variant; auto denoises above "
          f"{100 * enhance.AUTO_THRESHOLD_REL:.1f} %:\n")
    print("| case | " + " | ".join(variants) + " |\n|---|" + "---|" * len(variants))
    for case in cases:
        cells = []
        for v in variants:
            mark = " (auto: " + auto_choice[(case, v)] + ")" if (case, v) in auto_choice else ""
            cells.append(f"{100 * noise[(case, v)]:.2f}{mark}")
        print(f"| {case} | " + " | ".join(cells) + " |")
    print("\n3D Dice against the manual GM ('nlm full' removes all the estimated noise, 'nlm' and 'tv' the "
          f"noise above {100 * enhance.NOISE_FLOOR_REL:.0f} % of p99; '-': not run, "
          f"{', '.join(sorted(INTENSITY_STEPS))} run on {', '.join(INTENSITY_VARIANTS)} only):\n")
    print("| model | case | step | " + " | ".join(variants) + " |\n|---|---|---|" + "---|" * len(variants))
    for model in models:
        for case in cases + ["mean"]:
            for step in steps:
                cs = cases if case == "mean" else [case]
                ds = [float(np.mean([results[(model, c, v, step)] for c in cs]))
                      if all((model, c, v, step) in results for c in cs) else None for v in variants]
                cells = " | ".join("-" if d is None else f"{d:.3f}" for d in ds)
                print(f"| {model} | {case} | {step} | {cells} |")
    if "off" in steps:
        print("\nLoss against the same model's clean image with no enhancement, mean over cases (goals for "
              "the defaults, `auto`: 2 % <= 0.03, 3 % <= 0.06, bias <= 0.01, clean within 0.005):\n")
        print("| model | step | " + " | ".join(f"{v} loss" for v in variants) + " |\n|---|---|" + "---|" * len(variants))
        for model in models:
            ref = float(np.mean([results[(model, c, "clean", "off")] for c in cases]))
            for step in steps:
                ds = [ref - float(np.mean([results[(model, c, v, step)] for c in cases]))
                      if all((model, c, v, step) in results for c in cases) else None for v in variants]
                print(f"| {model} | {step} | " + " | ".join("-" if d is None else f"{d:+.3f}" for d in ds) + " |")
    print("\nSeconds per enhancement step (mean over cases and variants; the largest case dominates):\n")
    print("| step | mean s | max s |\n|---|---|---|")
    for step in steps:
        print(f"| {step} | {np.mean(step_seconds[step]):.2f} | {np.max(step_seconds[step]):.2f} |")
    print(f"\nenhancement {t_enhance:.0f} s; segmentation " +
          ", ".join(f"{m} {s:.0f} s" for m, s in seg_seconds.items()) +
          f"; total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "dice": {"|".join(k): v for k, v in results.items()},
            "noise_rel": {"|".join(k): v for k, v in noise.items()},
            "auto": {"|".join(k): v for k, v in auto_choice.items()},
            "step_seconds": step_seconds, "auto_threshold_rel": enhance.AUTO_THRESHOLD_REL,
        }, indent=1))


if __name__ == "__main__":
    main()
