"""Training speed on this machine: steps/s of fine-tuning the published networks (and a U-Net from
scratch) at batch 4 of 200x200 crops, and the share of each step spent outside the network
(sampling + augmentation). Run alone: other processes on the cores change the figures.

    PYTHONPATH=. python3 bench/train_speed.py [--steps 12] [--threads 2] [--models challenge,large,unet16]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from cases import MODELS_DIR
from sctgm.training.augment import AugmentConfig, augment_crops
from sctgm.training.loop import SliceSet, TrainConfig, train_loop
from sctgm.training.models import build_model, model_from_weights
from sctgm.training.phantom import make_dataset

MODELS = MODELS_DIR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--models", default="challenge,large,unet16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    subjects = [SliceSet(s.name, list(s.images), list(s.targets))
                for s in make_dataset(0, 2, n_slices=8, shape_px=(260, 260), size_px=45.0)]

    # augmentation alone, a whole batch (all augmentations on: the worst case)
    cfg = dataclasses.replace(AugmentConfig(), elastic_p=1.0, gamma_p=1.0, bias_p=1.0, noise_p=1.0, blur_p=1.0,
                              lowres_p=1.0)
    g = torch.Generator().manual_seed(0)
    imgs = [torch.from_numpy(a) for a in subjects[0].images[:args.batch]]
    tgts = [torch.from_numpy(a) for a in subjects[0].targets[:args.batch]]
    centres = torch.full((args.batch, 2), 130.0, dtype=torch.float64)
    for label, c in (("default", AugmentConfig()), ("all on", cfg)):
        augment_crops(imgs, tgts, centres, (200, 200), c, g)
        t = time.perf_counter()
        for _ in range(20):
            augment_crops(imgs, tgts, centres, (200, 200), c, g)
        print(f"augmentation ({label}): {(time.perf_counter() - t) / 20 * 1000:.1f} ms a batch of {args.batch}")

    for name in args.models.split(","):
        if name.startswith("unet"):
            torch.manual_seed(0)
            model, pretrained = build_model("unet", int(name[4:])), False
        else:
            model, _ = model_from_weights(MODELS / f"{name}_model.hdf5")
            pretrained = True
        tc = TrainConfig(max_steps=args.steps + 2, batch_size=args.batch, crop_px=200, val_every=10 ** 6)
        # two warm-up steps, then the timed ones
        warm = train_loop(model, subjects, [], dataclasses.replace(tc, max_steps=2), pretrained=pretrained)
        r = train_loop(model, subjects, [], tc, pretrained=pretrained)
        data, step = r.data_seconds, r.step_seconds
        print(f"{name:10s} {r.steps / (data + step):.2f} steps/s ({(data + step) / r.steps:.2f} s/step), "
              f"data+augmentation {100 * data / (data + step):.1f} % of the step (warm-up {warm.seconds:.1f} s)")


if __name__ == "__main__":
    main()
