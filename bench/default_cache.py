"""Cache the networks' fine-grid probabilities of every labelled case in ../shared and its noise /
bias variants, for `large` and `large-robust`, with and without denoising, so that combinations
(ensembles, guards, noise rules) can be evaluated in seconds (bench/default_candidates.py).

    OMP_NUM_THREADS=1 nice -n 10 python3 bench/default_cache.py [--out /tmp/sctgm-default-cache]

Per case x variant x enhancement (off, nlm: the noise above 3 % of p99, nlm0: all the noise) one
``.npz``: the enhanced canonical volume, each model's windows and probabilities from its own
placement (exactly what ``segment_image`` thresholds), and `large-robust` on `large`'s windows.
Noise draws are seeded by (case, variant) as in bench/robustness.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np

import sctgm
import sctgm.io
from cases import ALL_LABELLED, MODELS_DIR
from robustness import VARIANTS, degraded  # noqa: F401 (VARIANTS: read by default_candidates)
from robustness_default import seed_of
from sctgm.segment import enhance, placement

MODELS = MODELS_DIR
#: case -> (image, manual GM, cord mask or None): every labelled case in ../shared
CASES = ALL_LABELLED
ENHANCEMENTS = {"off": enhance.Enhancement(), "nlm": enhance.Enhancement(denoise="nlm"),
                "nlm0": enhance.Enhancement(denoise="nlm", noise_floor_rel=0.0)}
MODEL_NAMES = ("large", "large-robust")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sctgm-default-cache"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--variants", default="clean,noise 1%,noise 2%,noise 3%,bias")
    ap.add_argument("--enh", default="off,nlm,nlm0")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    segs = {m: sctgm.Segmenter.from_name(m, device="cpu", mirror=str(MODELS), threads=1,
                                         cache_dir="/tmp/sctgm-bench-cache") for m in MODEL_NAMES}
    no_stage = sctgm.SegmentOptions(denoise="off")
    for enh_name in args.enh.split(","):
        for case in args.cases.split(","):
            img_path, _, _ = CASES[case]
            img = nib.load(str(img_path))
            assert nib.aff2axcodes(img.affine) == ("L", "A", "S"), case
            zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
            data = np.asarray(img.get_fdata(dtype=np.float32))
            header = img.header.copy()
            header.set_data_dtype(np.float32)
            header.set_slope_inter(1.0, 0.0)
            for variant in args.variants.split(","):
                path = args.out / f"{case}__{variant.replace(' ', '').replace('%', 'pc')}__{enh_name}.npz"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                vol0 = degraded(data, zooms, variant, seed_of(case, variant))
                enhanced, report = enhance.apply(vol0, zooms, ENHANCEMENTS[enh_name])  # type: ignore[arg-type]
                enhanced = np.asarray(enhanced, dtype=np.float32)
                image = sctgm.io.image_from_nifti(nib.Nifti1Image(enhanced, img.affine, header))
                t1 = time.perf_counter()
                out: dict[str, np.ndarray] = {"data": enhanced}
                meta: dict[str, object] = {"noise": report.get("noise"), "enhance_s": round(t1 - t0, 3)}
                own = {}
                for m, seg in segs.items():
                    vol = seg.prepare(image, no_stage)
                    centres = np.tile(placement.slice_centre(vol.grid), (vol.n_slices, 1))
                    ts = time.perf_counter()
                    windows, prob, passes = seg._locate_and_predict(vol, centres, no_stage, None)
                    meta[f"{m}_s"] = round(time.perf_counter() - ts, 3)
                    meta[f"{m}_passes"] = passes
                    own[m] = windows
                    out[f"prob_{m}"] = prob
                    out[f"win_{m}"] = np.array([list(w.origin) + list(w.size) for w in windows])
                if own["large"] != own["large-robust"]:
                    vol = segs["large-robust"].prepare(image, no_stage)
                    out["prob_large-robust_on_large"] = segs["large-robust"]._predict_windows(
                        vol, own["large"], no_stage, None)
                meta["denoise"] = report.get("denoise")
                meta["denoise_sigma"] = report.get("denoise_sigma")
                out["meta"] = np.array(json.dumps(meta))
                tmp = path.with_suffix(".tmp.npz")
                np.savez_compressed(tmp, **out)
                tmp.replace(path)
                print(f"{path.name}: enhance {t1 - t0:.1f} s, nets {time.perf_counter() - t1:.1f} s", flush=True)


if __name__ == "__main__":
    main()
