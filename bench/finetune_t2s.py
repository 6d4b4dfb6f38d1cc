"""Fine-tuning on t2s_uncropped with slice-block cross-validation (first half of the slices /
second half): window Dice on the held-out half before and after, for the chosen inits.

The windows are built with segment's own code (reorientation, 0.25 mm grid, window placement,
standardisation over the image's stack of windows); held-out windows are 200x200 centred on the
GM (where segment's relocation puts them), training windows larger so crops can shift and rotate.
Dice is pooled over the held-out slices on the fine grid, at fixed thresholds (0.5, 0.999) and at
the best one (an oracle, optimistic); training uses NO validation (fixed steps, last model), so
the held-out half is never used for choices.

    PYTHONPATH=. python3 -u bench/finetune_t2s.py [--steps 100] [--inits challenge,large]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from sctgm import crop
from sctgm.inference import Standardisation
from sctgm.io import load_image
from sctgm.orientation import reorientation_for
from sctgm.resample import fine_grid, sample_window
from sctgm.training.augment import AugmentConfig
from sctgm.training.loop import DEFAULT_THRESHOLDS, SliceSet, TrainConfig, predict_slices, train_loop, validation_dice
from sctgm.training.models import model_from_weights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
T2S = SHARED / "data" / "sct_testing_data" / "t2s"
MODELS = SHARED / "models" / "deepseg_gm"
MARGIN_PX = 48  # extra fine pixels on each side of a training window


def labelled_windows(image_path: Path, mask_path: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray],
                                                                   list[np.ndarray]]:
    """Per labelled slice: (training window, its target, 200x200 held-out window, its target)."""
    img, msk = load_image(image_path), load_image(mask_path, what="mask", allow_constant=True)
    reo = reorientation_for(img.affine, img.data.shape)
    data, mask = reo.apply(img.data), reo.apply(msk.data) > 0.5
    zooms = tuple(float(img.zooms_mm[i]) for i in np.argsort(reo.to_canonical[:, 0]))
    grid = fine_grid(data.shape, zooms)  # type: ignore[arg-type]
    size = crop.window_size(grid)
    big = crop.window_size(grid, crop.CROP_PX + 2 * MARGIN_PX)
    s = np.asarray(grid.native_per_fine)
    labelled = [k for k in range(data.shape[2]) if mask[:, :, k].any()]
    centres = {k: np.asarray(ndimage.center_of_mass(mask[:, :, k])) / s for k in labelled}
    windows = {k: crop.window_at(centres[k], grid, size) for k in labelled}
    crops = np.stack([sample_window(data[:, :, k], grid, windows[k]) for k in labelled])
    std = Standardisation.of(crops)  # as segment: the whole stack of the image's windows
    out: tuple[list, list, list, list] = ([], [], [], [])
    for k in labelled:
        wb = crop.window_at(centres[k], grid, big)
        out[0].append(std(sample_window(data[:, :, k], grid, wb)))
        out[1].append(np.clip(sample_window(mask[:, :, k].astype(np.float32), grid, wb), 0, 1))
        out[2].append(std(sample_window(data[:, :, k], grid, windows[k])))
        out[3].append(np.clip(sample_window(mask[:, :, k].astype(np.float32), grid, windows[k]), 0, 1))
    return out


def scores(model: torch.nn.Module, images: list[np.ndarray], targets: list[np.ndarray]) -> dict[float, float]:
    return validation_dice(predict_slices(model, images, torch.device("cpu")), targets, DEFAULT_THRESHOLDS)


def fmt(d: dict[float, float]) -> str:
    best = max(d, key=d.get)  # type: ignore[arg-type]
    return f"Dice@0.5 {d[0.5]:.3f}  @0.999 {d[0.999]:.3f}  best {d[best]:.3f} (@{best})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--inits", default="challenge")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--bn", default="frozen")
    ap.add_argument("--flip", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folds", default="AB,BA", help="fit/held-out halves, e.g. AB (fit A, test B)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f}; steps {args.steps}, lr {args.lr}, bn {args.bn}, flip {args.flip}")
    tr_img, tr_tgt, te_img, te_tgt = labelled_windows(T2S / "t2s_uncropped.nii.gz", T2S / "t2s_uncropped_gmseg_manual.nii.gz")
    n = len(tr_img)
    halves = {"A": list(range(n // 2)), "B": list(range(n // 2, n))}
    cfg = TrainConfig(max_steps=args.steps, batch_size=4, crop_px=200, lr=args.lr, warmup_steps=max(1, args.steps // 20),
                      bn=args.bn, val_every=10 ** 6, augment=dataclasses.replace(AugmentConfig(), flip_p=args.flip))
    for init in args.inits.split(","):
        for fit, held in args.folds.split(","):
            model, _ = model_from_weights(MODELS / f"{init}_model.hdf5")
            before = scores(model, [te_img[k] for k in halves[held]], [te_tgt[k] for k in halves[held]])
            train = [SliceSet(f"t2s-{fit}", [tr_img[k] for k in halves[fit]], [tr_tgt[k] for k in halves[fit]])]
            t = time.perf_counter()
            r = train_loop(model, train, [], cfg, pretrained=True)
            after = scores(model, [te_img[k] for k in halves[held]], [te_tgt[k] for k in halves[held]])
            print(f"{init:9s} fit {fit} ({len(halves[fit])} sl) -> held-out {held}: before {fmt(before)}")
            print(f"{'':9s} {'':25s} after  {fmt(after)}   [{time.perf_counter() - t:.0f} s, "
                  f"{r.steps / (r.data_seconds + r.step_seconds):.2f} steps/s, data {100 * r.data_seconds / (r.data_seconds + r.step_seconds):.1f} %]",
                  flush=True)


if __name__ == "__main__":
    main()
