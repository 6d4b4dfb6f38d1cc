"""Fine-tuning on ../shared labelled data with slice-block cross-validation: Dice before and after,
as users see it, for the published inits and a U-Net from scratch, with speed figures.

For each dataset (t2s_uncropped: 11 labelled slices; mt1: 5) the labelled slices are split into two
contiguous blocks A (first half) and B (second half); a model is fitted on one block and tested on
the other, both ways (never interleaved slices). Per fold and init it prints:

- Dice before / after: the weights go through the real segmentation (safetensors file + registry
  record -> :class:`sctgm.segment.pipeline.Segmenter`, ONNX Runtime on the CPU, window placement,
  relocation, post-processing, back to the native grid), then 3D Dice against the manual mask over
  the held-out slices only, at the published threshold 0.999 and at 0.5 (a fine-tuned model's
  threshold is normally chosen on validation slices; here no held-out slice is used for any choice);
- the held-out window Dice logged every ``--val-every`` steps (monitoring only: the LAST model is
  the one scored, never the best by held-out Dice);
- wall time of the fit, steps/s, and the share of the loop spent outside the network step
  (sampling + augmentation), which must stay under 10 % on the CPU.

The U-Net goes the same way (its registry architecture row ``unet``). Training windows come from
:mod:`sctgm.training.data` (what ``sct-gm train`` uses: segment's preprocessing, windows centred on
the GM, larger than the network window so that crops can shift and rotate).

    PYTHONPATH=. python3 -u bench/finetune.py [--steps 200] [--inits challenge,large,unet] [--threads 1]
    PYTHONPATH=. python3 -u bench/finetune.py --quick      # a few steps, to check it runs (~3 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cases import MODELS_DIR, TESTING
from sctgm.io import load_image
from sctgm.model.install import sha256_of
from sctgm.model.registry import InstalledModel
from sctgm.recipe import Preprocessing, Recipe
from sctgm.model.weights import save_safetensors, state_dict_from_keras
from sctgm.segment.pipeline import Segmenter, SegmentOptions
from sctgm.segment.preprocess import prepare
from sctgm.training.augment import AugmentConfig
from sctgm.training.defaults import DEFAULT_BN_FINETUNE, DEFAULT_WARMUP_STEPS
from sctgm.training.data import LabelledImage, LabelledVolume, labelled_volume, load_labelled
from sctgm.training.loop import DEFAULT_THRESHOLDS, SliceSet, TrainConfig, TrainProgress, train_loop
from sctgm.training.models import build_model, model_from_weights

DATA = TESTING
MODELS = MODELS_DIR
DATASETS = {  # name: (image, manual GM mask, cord mask or None)
    "t2s": (DATA / "t2s" / "t2s_uncropped.nii.gz", DATA / "t2s" / "t2s_uncropped_gmseg_manual.nii.gz", None),
    "mt1": (DATA / "mt" / "mt1.nii.gz", DATA / "mt" / "mt1_gmseg_goldstandard.nii.gz", DATA / "mt" / "mt1_seg.nii.gz"),
}
UNET_FILTERS = 16
UNET_DEPTH = 3


@dataclass
class Labelled:
    """One image's labelled slices (:class:`sctgm.training.data.LabelledVolume`) and where it came from."""

    name: str
    image_path: Path
    cord_path: Path | None
    volume: LabelledVolume
    seconds: float

    @property
    def slices(self) -> list[int]:
        return self.volume.slices


def labelled_data(name: str) -> Labelled:
    """Windows of the labelled slices, cut by the trainer's own code (segment's preprocessing)."""
    t0 = time.perf_counter()
    image_path, mask_path, cord_path = DATASETS[name]
    image, mask = load_labelled(LabelledImage(image_path, (mask_path,), name))
    volume = labelled_volume(image, mask, Preprocessing(), name=name, subject=name)
    return Labelled(name, image_path, cord_path, volume, time.perf_counter() - t0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def segmenter_for(state_dict: dict[str, np.ndarray], filters: int, arch: str, folder: Path,
                  threads: int) -> Segmenter:
    """A Segmenter on these weights as a user gets it: safetensors file + registry record (the
    architecture row of ``arch``), ONNX Runtime on the CPU."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_safetensors(state_dict, filters, path)
    network = {"name": "unet", "filters": filters, "depth": UNET_DEPTH} if arch == "unet" else {"filters": filters}
    model = InstalledModel(f"bench-{arch}", "0", path, "safetensors", sha256_of(path), Recipe(network))
    return Segmenter(model, device="cpu", engine="onnxruntime", threads=threads, cache_dir=str(folder))


def held_out_dice(seg: Segmenter, data: Labelled, held: list[int]) -> dict[float, float]:
    """3D Dice of the real segmentation vs the manual mask over the held-out slices (canonical
    indices), at thresholds 0.999 and 0.5."""
    image = load_image(data.image_path)
    cord = load_image(data.cord_path, what="mask") if data.cord_path else None
    vol = prepare(image, Preprocessing())
    ks = [data.slices[i] for i in held]
    out = {}
    for th in (0.999, 0.5):
        gm = seg.segment_image(image, cord=cord, options=SegmentOptions(threshold=th)).gm
        gm_c = vol.reorientation.apply(gm) > 0
        out[th] = dice(gm_c[:, :, ks], data.volume.gm[:, :, ks])
    return out


def initial_model(init: str) -> tuple[torch.nn.Module, str, int, bool]:
    """(network, architecture, filters, pretrained) for an init name."""
    if init == "unet":
        torch.manual_seed(0)
        return build_model("unet", UNET_FILTERS, depth=UNET_DEPTH), "unet", UNET_FILTERS, False
    model, architecture = model_from_weights(MODELS / f"{init}_model.hdf5")
    return model, "dilated", state_dict_from_keras(MODELS / f"{init}_model.hdf5")[1], True


def fmt(d: dict[float, float]) -> str:
    return f"{d[0.999]:.3f}/{d[0.5]:.3f}"


def run_fold(data: Labelled, init: str, fit: list[int], held: list[int], cfg: TrainConfig, tmp: Path,
             threads: int) -> dict[str, object]:
    model, arch, filters, pretrained = initial_model(init)
    before = None
    if pretrained:
        sd0 = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
        before = held_out_dice(segmenter_for(sd0, filters, arch, tmp / f"{init}-before", threads), data, held)
    v = data.volume
    train = [SliceSet(f"{data.name}-fit", [v.train_inputs[i] for i in fit], [v.train_targets[i] for i in fit])]
    val = [SliceSet(f"{data.name}-held", [v.inputs[i] for i in held], [v.targets[i] for i in held])]
    last: dict[str, torch.Tensor] = {}

    def keep_last(p: TrainProgress) -> None:  # the loop restores the best-by-validation model; score the last
        if p.step == p.max_steps:
            last.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    t = time.perf_counter()
    r = train_loop(model, train, val, cfg, pretrained=pretrained, progress=keep_last)
    wall = time.perf_counter() - t
    model.load_state_dict(last)
    model.eval()
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    after = held_out_dice(segmenter_for(sd, filters, arch, tmp / f"{init}-after", threads), data, held)
    loop_s = r.data_seconds + r.step_seconds
    curve = [(e["step"], e["val_dice"]) for e in r.log if e["val_dice"] is not None]
    return {"before": before, "after": after, "wall": wall, "steps_per_s": r.steps / loop_s,
            "data_pct": 100 * r.data_seconds / loop_s, "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="4 steps, t2s only: checks that everything runs")
    ap.add_argument("--inits", default="challenge,large,unet", help="comma-separated: challenge, large, unet")
    ap.add_argument("--datasets", default="t2s,mt1")
    ap.add_argument("--folds", default="AB,BA", help="fit/held-out blocks: AB = fit A, test B")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--unet-lr", type=float, default=1e-3, help="lr of the U-Net trained from scratch")
    ap.add_argument("--bn", default=DEFAULT_BN_FINETUNE, choices=("frozen", "train"),
                    help="BatchNorm when fine-tuning (sct-gm train's default); from scratch it always trains")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--val-every", type=int, default=25, help="held-out window Dice logged every N steps")
    ap.add_argument("--flip", type=float, default=0.0)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.datasets, args.val_every = 4, "t2s", 2
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}; "
          f"steps {args.steps}, batch {args.batch}, lr {args.lr} (U-Net {args.unet_lr}), bn {args.bn}; "
          f"Dice = 3D on held-out slices @0.999/@0.5", flush=True)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sctgm-finetune-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.datasets.split(","):
            data = labelled_data(name)
            n = len(data.slices)
            blocks = {"A": list(range(n // 2)), "B": list(range(n // 2, n))}
            crop = min(200, *data.volume.prepared.window_px)  # as sctgm.train: never beyond the window
            print(f"{name}: {n} labelled slices, A = {blocks['A']}, B = {blocks['B']}, crops {crop} px "
                  f"(windows built in {data.seconds:.1f} s)", flush=True)
            for init in args.inits.split(","):
                for fit, held in args.folds.split(","):
                    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, crop_px=crop,
                                      lr=args.unet_lr if init == "unet" else args.lr,
                                      bn="train" if init == "unet" else args.bn,
                                      warmup_steps=min(DEFAULT_WARMUP_STEPS, max(1, args.steps // 4)),
                                      val_every=args.val_every,
                                      augment=dataclasses.replace(AugmentConfig(), flip_p=args.flip),
                                      thresholds=DEFAULT_THRESHOLDS)
                    r = run_fold(data, init, blocks[fit], blocks[held], cfg, tmp / f"{name}-{fit}", args.threads)
                    before = "   -   " if r["before"] is None else fmt(r["before"])  # type: ignore[arg-type]
                    curve = " ".join(f"{s}:{d:.3f}" for s, d in r["curve"])  # type: ignore[union-attr]
                    print(f"  {init:9s} fit {fit} -> {held}: Dice before {before}  after {fmt(r['after'])}  "  # type: ignore[arg-type]
                          f"| {r['wall']:.0f} s, {r['steps_per_s']:.3f} steps/s, data+aug {r['data_pct']:.1f} %"
                          f" | held-out window Dice {curve}", flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
