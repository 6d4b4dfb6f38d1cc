"""Candidates for the default, compared on the cached probabilities of bench/default_cache.py: each
network alone, ensembles, the anatomical guard, noise rules. 3D Dice and per-slice outliers (slice
Dice < 0.5 where the manual mask has >= 20 voxels) against the manual GM of every labelled case.

    OMP_NUM_THREADS=1 nice -n 10 python3 bench/default_candidates.py [--cache /tmp/sctgm-default-cache]

gm_challenge_2018 cases (gmc-*) were large-robust's training data, and their masks were most likely
made by correcting `large`: read them as agreement with `large`, not as held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

import sctgm.io
from sctgm.model.registry import Preprocessing, load_registry
from sctgm.recipe import DEFAULT_TO_NATIVE
from sctgm.segment import postprocess
from sctgm.segment.enhance import AUTO_THRESHOLD_REL
from sctgm.segment.grid import Window
from sctgm.segment.grid import to_native as grid_to_native
from sctgm.segment.ensemble import combine, logit_mean, prefer_where_disagreeing
from sctgm.segment.guard import guard
from sctgm.segment.preprocess import prepare

from default_cache import CASES, VARIANTS

OUTLIER_DICE, OUTLIER_MIN_VOXELS = 0.5, 20


def variant_tag(v: str) -> str:
    return v.replace(" ", "").replace("%", "pc")


class Case:
    def __init__(self, name: str) -> None:
        img_path, man_path, cord_path = CASES[name]
        self.name = name
        self.img = nib.load(str(img_path))
        self.manual = np.asanyarray(nib.load(str(man_path)).dataobj) > 0.5
        self.cord = None if cord_path is None else np.asanyarray(nib.load(str(cord_path)).dataobj) > 0.5
        self.zooms = tuple(float(z) for z in self.img.header.get_zooms()[:3])
        prep = Preprocessing.from_entry(load_registry()["models"]["large"]["preprocessing"], "large")
        self.prep = replace(prep, enhancement={"denoise": "off"})

    def load(self, cache: Path, variant: str, enh: str) -> dict | None:
        p = cache / f"{self.name}__{variant_tag(variant)}__{enh}.npz"
        if not p.exists():
            return None
        d = dict(np.load(p))
        header = self.img.header.copy()
        header.set_data_dtype(np.float32)
        header.set_slope_inter(1.0, 0.0)
        image = sctgm.io.image_from_nifti(nib.Nifti1Image(d["data"], self.img.affine, header))
        d["vol"] = prepare(image, self.prep)
        d["meta"] = json.loads(str(d["meta"]))
        for m in ("large", "large-robust"):
            d[f"win_{m}"] = [Window((int(a), int(b)), (int(c), int(e))) for a, b, c, e in d[f"win_{m}"]]
        if "prob_large-robust_on_large" not in d:
            d["prob_large-robust_on_large"] = d["prob_large-robust"]
        return d


def to_native(prob: np.ndarray, windows: list[Window], vol, threshold: float = 0.999,
              rule: str = DEFAULT_TO_NATIVE) -> np.ndarray:
    """What segment_image does after the network (canonical layout; all cases are LAS); ``rule``: the
    rule back to the native grid (``Preprocessing.to_native``)."""
    mask = np.zeros(vol.data.shape, dtype=bool)
    for k, w in enumerate(windows):
        box, v = grid_to_native((prob[k] > threshold).astype(np.float32), vol.grid, w, rule)
        mask[box[0], box[1], k] = v >= 0.5
    return postprocess.fill_holes(postprocess.keep_largest_components(mask))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / s


def slice_outliers(mask: np.ndarray, manual: np.ndarray) -> list[int]:
    return [k for k in range(manual.shape[2]) if manual[:, :, k].sum() >= OUTLIER_MIN_VOXELS
            and dice(mask[:, :, k], manual[:, :, k]) < OUTLIER_DICE]


def candidates(case: Case, d: dict) -> dict[str, np.ndarray]:
    vol = d["vol"]
    wl, wr = d["win_large"], d["win_large-robust"]
    pl, pr, prl = d["prob_large"], d["prob_large-robust"], d["prob_large-robust_on_large"]
    L = to_native(pl, wl, vol)
    R = to_native(prl, wl, vol)  # large-robust on large's windows (what an ensemble feeds it)
    out = {"large": L, "large-robust": to_native(pr, wr, vol)}
    out["mean@.999"] = to_native((pl + prl) / 2, wl, vol)
    out["mean@.5"] = to_native((pl + prl) / 2, wl, vol, 0.5)
    E = to_native(logit_mean([pl, prl]), wl, vol)
    out["logit@.999"] = E
    out["large+guard"] = guard(L, case.zooms, alternative=R)[0]
    out["logit+guard"] = guard(E, case.zooms, alternative=L)[0]
    out["logit+R where disagree"] = prefer_where_disagreeing(E, L, R)[0]
    out["v1 (logit, R where disagree, guard)"] = guard(prefer_where_disagreeing(E, L, R)[0], case.zooms,
                                                      alternative=L)[0]
    out["v2 (logit, consistent network where disagree, guard)"] = combine(E, L, R, case.zooms, whole_volume=False).mask
    if case.cord is not None:
        out["v2 + cord mask"] = combine(E, L, R, case.zooms, cord=case.cord, whole_volume=False).mask
    # the rule back to the native grid: the fraction of each voxel's footprint that is GM (grid.py)
    La, Ra = to_native(pl, wl, vol, rule="area"), to_native(prl, wl, vol, rule="area")
    out["large, area"] = La
    out["large-robust, area"] = to_native(pr, wr, vol, rule="area")
    Ea = to_native(logit_mean([pl, prl]), wl, vol, rule="area")
    out["logit@.999, area"] = Ea
    out["v3 (v2, back to the native grid by area)"] = combine(Ea, La, Ra, case.zooms, whole_volume=False).mask
    # where the networks disagree on most slices, the one whose mask follows the cord better (ensemble.py)
    out["default v4 (v3, one network where most slices disagree)"] = combine(Ea, La, Ra, case.zooms).mask
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sctgm-default-cache"))
    ap.add_argument("--enh", default="auto", help="off, nlm, nlm0 (cached), or auto: nlm above the auto threshold")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows: dict[tuple[str, str, str], tuple[float, list[int]]] = {}
    variants = args.variants.split(",")
    cases = args.cases.split(",")
    for cname in cases:
        case = Case(cname)
        for v in variants:
            d = case.load(args.cache, v, "off" if args.enh == "auto" else args.enh)
            if d is not None and args.enh == "auto" and d["meta"]["noise"]["sigma_rel_p99"] > AUTO_THRESHOLD_REL:
                d = case.load(args.cache, v, "nlm")  # what --denoise auto does: NLM above the threshold
            if d is None:
                continue
            for cand, mask in candidates(case, d).items():
                rows[(cand, cname, v)] = (dice(mask, case.manual), slice_outliers(mask, case.manual))
    cands = list(dict.fromkeys(k[0] for k in rows))
    print(f"enhancement {args.enh}; Dice (outlier slices in brackets)")
    for cname in cases:
        print(f"\n## {cname}\n| candidate | " + " | ".join(variants) + " |")
        for c in cands:
            cells = []
            for v in variants:
                if (c, cname, v) in rows:
                    dd, o = rows[(c, cname, v)]
                    cells.append(f"{dd:.3f}" + (f" [{len(o)}]" if o else ""))
                else:
                    cells.append("-")
            print(f"| {c} | " + " | ".join(cells) + " |")
    print("\n## summary: mean over sct_testing cases | gmc | outliers total | max loss 2% vs clean (all cases)")
    for c in cands:
        def mean_over(cs: list[str], v: str) -> float:
            vals = [rows[(c, x, v)][0] for x in cs if (c, x, v) in rows]
            return float(np.mean(vals)) if vals else float("nan")
        sct = [x for x in cases if not x.startswith("gmc")]
        gmc = [x for x in cases if x.startswith("gmc")]
        n_out = sum(len(rows[k][1]) for k in rows if k[0] == c)
        losses = [rows[(c, x, "clean")][0] - rows[(c, x, "noise 2%")][0] for x in cases
                  if (c, x, "clean") in rows and (c, x, "noise 2%") in rows]
        print(f"| {c} | " + " ".join(f"{mean_over(sct, v):.3f}" for v in variants) + " | "
              + " ".join(f"{mean_over(gmc, v):.3f}" for v in variants)
              + f" | {n_out} | {max(losses) if losses else float('nan'):+.3f} |")
    print("\n## leave one case out: the candidate with the best mean Dice over the other cases' cells, "
          "scored on the held-out case (mean of its variants); gmc-10062Ses1/Ses2 (one subject) leave together")
    for held in cases:
        group = {x for x in cases if x.split("Ses")[0] == held.split("Ses")[0]}
        def score(c: str, cs: list[str]) -> float:
            vals = [rows[(c, x, v)][0] for x in cs for v in variants if (c, x, v) in rows]
            full = sum((("large", x, v) in rows) for x in cs for v in variants)
            return float(np.mean(vals)) if vals and len(vals) == full else -1.0
        others = [x for x in cases if x not in group]
        best = max(cands, key=lambda c: score(c, others))
        print(f"| {held} | chosen: {best} | {score(best, [held]):.3f} | large: {score('large', [held]):.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"|".join(k): [v[0], v[1]] for k, v in rows.items()}))


if __name__ == "__main__":
    main()
