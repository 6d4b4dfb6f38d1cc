"""Noise-stability distillation (issue 20's last lever): a copy of a network (the student) is trained so
that on a noisy copy of a window it gives what the network itself (the teacher) gives on the clean
window, and is then scored as the default's partner. No manual mask is used in training.

    python bench/distill_noise.py train --out /tmp/distill --steps 200           # CPU: ~6 s a step
    python bench/distill_noise.py score --student /tmp/distill/s200.pt --cases t2s,mt1 --draws 6
    python bench/distill_noise.py train --teacher large ...; ... score --teacher large --student ...
    python bench/distill_noise.py train --teacher large --batch 16 --crop 96 --lr 3e-4 --bce-weight 0.3
    python bench/distill_noise.py stability --teacher large --student /tmp/distill/s150.pt --cases gmc-9584

`--crop N` trains on N x N crops of the windows (the centre, moved by up to 16 pixels), about 4x as
many (smaller) windows per CPU second at N = 96. The teacher runs on the same clean crop, so both see
the same zero border and the same context; but that context is not the pipeline's: the dilated
convolutions reach tens of pixels into the zero border and the pooled branch averages over the crop,
so on a 96-pixel crop `large`'s mask differs from its whole-window mask inside the crop by 8.8 % of
the GM (128 pixels: 3.9 %; docs/robustness.md), and the student learns targets the pipeline never
produces.

`stability` says how much a network's mask moves under noise, without a manual mask: the windows are
placed on the clean image and kept, and each 2 % draw's mask (at the published threshold) is compared
with the clean one, pixel by pixel: flipped pixels and lost GM pixels per clean GM pixel, and the
mean squared logit change (clamped at +-12); the teacher first, then the student. The volumes are
prepared without the denoiser (`--denoise off`); `score` runs `auto`, under whose threshold the 2 %
draws of t2s, mt1 and the gm_challenge volumes read (docs/robustness.md), so there the two agree.

`score` runs the default (rule v4, footprint area, guard; `--denoise auto`) on each labelled case clean
and with `--draws` draws of 2 % Rician noise (bench/robustness_default.py's seeds), once with the
shipped pair and once with the student in its teacher's place (the windows placed by the shipped
`large`; both partners on PyTorch, within 2e-4 of ONNX Runtime), and prints the 2 % loss.

The oracle of docs/robustness.md bounds what this can reach: with either network's output on the noisy
scan replaced by its output on the clean one, every case's 2 % loss falls within the goal.

What the student is fed is what the pipeline feeds the network: windows placed by `large` and
standardised as one stack (`Standardisation.of`); the loss is on the *logits* (`module.logits`,
clamped at +-12) plus a cross-entropy of the logit shifted to the published threshold against the
teacher's clean mask, over the pixels near that threshold. `train` first checks that the teacher's
probabilities on the clean windows equal the pipeline's own (an earlier experiment fed raw
intensities and probabilities and measured nothing). Training images: unlabelled scans of ../shared
(the rescans of two gm_challenge_2018 subjects, spine_generic_unf01, sct_tutorial_data/mt), so the
sct_testing cases and sub-10062 are held out by subject. Runs on a GPU when one is there
(`--device`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

import sctgm
import sctgm.io
from cases import ALL_LABELLED, DATA, MODELS_DIR, dice, outlier_slices, require_shared
from default_candidates import to_native as candidate_to_native
from robustness import degraded
from robustness_default import DRAW_SEED_STEP, GOAL_LOSS_2PC, seed_of
from sctgm.segment import ensemble, placement
from sctgm.enhancement import Enhancement
from sctgm.segment.enhance import apply as enhance
from sctgm.segment.degrade import add_rician_noise
from sctgm.segment.preprocess import Standardisation, sample

GMC = DATA / "gm_challenge_2018"
TRAIN_IMAGES = (GMC / "sub-9584/anat/sub-9584_run-2_T2starw.nii.gz",
                GMC / "sub-9669/anat/sub-9669_run-2_T2starw.nii.gz",
                DATA / "spine_generic_unf01/sub-unf01/anat/sub-unf01_T2star.nii.gz",
                DATA / "sct_tutorial_data/mt/mt1.nii.gz")
WEIGHTS = {"large-robust": Path(sctgm.__file__).parent / "model/shipped/large-robust/model.safetensors",
           "large": MODELS_DIR / "large_model.hdf5"}
THRESHOLD = 0.999
THRESHOLD_LOGIT = float(np.log(THRESHOLD / (1 - THRESHOLD)))
CLAMP = 12.0
CROP_JITTER = 16  # pixels (0.25 mm): a crop's centre moves this far from the window's, which is the cord's
NO_STAGE = sctgm.SegmentOptions(denoise="off")


def segmenter(name: str) -> sctgm.Segmenter:
    return sctgm.Segmenter.from_name(name, device="cpu", mirror=str(MODELS_DIR), threads=2)


def load(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    img = nib.load(str(path))
    return img, np.asarray(img.get_fdata(dtype=np.float32))


def as_image(img: nib.Nifti1Image, data: np.ndarray) -> sctgm.io.LoadedImage:
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    return sctgm.io.image_from_nifti(nib.Nifti1Image(np.asarray(data, np.float32), img.affine, header))


def windows_of(seg: sctgm.Segmenter, image: sctgm.io.LoadedImage):
    """`large`'s windows (the default feeds both networks these), the prepared volume, its probabilities."""
    vol = seg.prepare(image, NO_STAGE)
    centres = np.tile(placement.slice_centre(vol.grid), (vol.n_slices, 1))
    windows, prob, _ = seg._locate_and_predict(vol, centres, NO_STAGE, None)
    return windows, vol, prob


def fed(vol, windows) -> np.ndarray:
    """What the pipeline feeds the network: the windows standardised as one stack."""
    raw = sample(vol, windows)
    return Standardisation.of(raw)(raw)


def logits(module, x: np.ndarray, device: str):
    import torch
    with torch.no_grad():
        return torch.cat([module.logits(torch.from_numpy(x[i:i + 4, None]).to(device))
                          for i in range(0, len(x), 4)])[:, 0]


def draw_seed(case: str, k: int) -> int:
    """The seed of the k-th 2 % noise draw of a case: bench/robustness_default.py's."""
    return seed_of(case, "noise 2%") + DRAW_SEED_STEP * k


def load_student(args: argparse.Namespace):
    """The checkpoint ``--student`` in its teacher's network, or None."""
    import torch
    from sctgm.training.models import model_from_weights

    if not args.student:
        return None
    student = model_from_weights(WEIGHTS[args.teacher])[0].eval()
    student.load_state_dict(torch.load(args.student, map_location="cpu"))
    return student


def train(args: argparse.Namespace) -> None:
    import torch
    from sctgm.training.models import model_from_weights

    earlier = sorted(args.out.glob("s*.pt")) if args.out.is_dir() else []
    if earlier:
        sys.exit(f"{args.out}: holds checkpoints of an earlier run ({earlier[0].name}, ...); give another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    # TF32 convolutions (cuDNN's default) would put ~1e-3 of error into the targets and the check below
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    noisy_options = sctgm.SegmentOptions(denoise=args.train_denoise)
    rng = np.random.default_rng(args.seed)
    seg = segmenter("large")
    teacher = model_from_weights(WEIGHTS[args.teacher])[0].to(args.device).eval()
    student = model_from_weights(WEIGHTS[args.teacher])[0].to(args.device).eval()  # BN running statistics kept
    partner = segmenter(args.teacher)
    clean, targets, noisy = [], [], []
    for path in TRAIN_IMAGES:
        img, data = load(path)
        windows, vol, _ = windows_of(seg, as_image(img, data))
        x = fed(vol, windows)
        t = logits(teacher, x, args.device)
        own = partner._predict_windows(partner.prepare(as_image(img, data), NO_STAGE), windows, NO_STAGE, None)
        gap = float(np.abs(torch.sigmoid(t).cpu().numpy() - own).max())
        if gap > 1e-3:
            sys.exit(f"{path.name}: the teacher's probabilities differ from the pipeline's by {gap:.3g}: "
                     "the student would not be fed what the network is fed")
        draws = [fed(seg.prepare(as_image(img, add_rician_noise(data, rng.uniform(0.005, 0.04), rng)), noisy_options),
                     windows) for _ in range(args.draws)]
        clean.append(x)
        targets.append(t.clamp(-CLAMP, CLAMP))
        noisy.append(np.stack(draws, 1))
        print(f"{path.name}: {len(windows)} windows, teacher checked (max gap {gap:.1e})", flush=True)
    X, T, N = np.concatenate(clean), torch.cat(targets), np.concatenate(noisy)
    if args.crop > min(X.shape[-2:]) - 2 * CROP_JITTER:
        sys.exit(f"--crop {args.crop}: at most {min(X.shape[-2:]) - 2 * CROP_JITTER} for windows of "
                 f"{X.shape[-1]} pixels (a crop moves by up to {CROP_JITTER} pixels)")
    print(f"batches: {args.clean_share:.0%} clean, 15 % white noise, {0.85 - args.clean_share:.0%} Rician copies",
          flush=True)
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(X), args.batch)
        batch, clean_crops = [], []
        for i in idx:
            u = rng.random()
            if u < args.clean_share:  # clean: the student must keep the teacher's answer there
                x = X[i]
            elif u < args.clean_share + 0.15:  # white noise on the 0.25 mm grid, added to the standardised window
                x = X[i] + rng.uniform(0.02, 0.2) * rng.standard_normal(X[i].shape).astype(np.float32)
            else:  # Rician noise of 0.5-4 % of p99 added to the native image
                x = N[i, rng.integers(0, args.draws)]
            if args.crop:
                at = (np.array(X.shape[-2:]) - args.crop) // 2 + rng.integers(-CROP_JITTER, CROP_JITTER + 1, 2)
                box = (slice(at[0], at[0] + args.crop), slice(at[1], at[1] + args.crop))
                x = x[box]
                clean_crops.append(X[i][box])
            batch.append(x)
        s = student.logits(torch.from_numpy(np.ascontiguousarray(np.stack(batch))[:, None]).to(args.device))[:, 0]
        if args.crop:  # the teacher on the same clean crop: the same zero border as the student sees
            t = logits(teacher, np.ascontiguousarray(np.stack(clean_crops)), args.device).clamp(-CLAMP, CLAMP)
        else:
            t = T[idx]
        mse = ((s.clamp(-CLAMP, CLAMP) - t) ** 2).mean()
        near = ((t - THRESHOLD_LOGIT).abs() < 4) | ((s.detach() - THRESHOLD_LOGIT).abs() < 4)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(s - THRESHOLD_LOGIT, (t > THRESHOLD_LOGIT).float(),
                                                                   reduction="none")
        loss = mse + args.bce_weight * (bce * near).sum() / near.sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            print(f"step {step}: loss {loss.item():.3f} (logit mse {mse.item():.3f}), "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        if step % args.every == 0 or step == args.steps:
            torch.save(student.state_dict(), args.out / f"s{step}.pt")


def score(args: argparse.Namespace) -> None:
    import torch
    from sctgm.training.models import model_from_weights

    seg = segmenter("large")
    robust = model_from_weights(WEIGHTS["large-robust"])[0].eval()
    student = load_student(args)
    worst = {k: 0.0 for k in ("shipped", "student")[:1 + (student is not None)]}
    for case in args.cases.split(","):
        img_path, man_path, _ = ALL_LABELLED[case]
        img, data = load(img_path)
        manual = np.asanyarray(nib.load(str(man_path)).dataobj) > 0.5
        # enhancement and Dice are computed on the array as stored: every labelled case is canonical (LAS)
        assert nib.aff2axcodes(img.affine) == ("L", "A", "S"), case
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        seeds = [None] + [draw_seed(case, k) for k in range(args.draws)]
        res: dict[str, list[float]] = {k: [] for k in worst}
        alone: dict[str, list[float]] = {k: [] for k in worst}
        for seed in seeds:
            vol0 = data if seed is None else degraded(data, zooms, "noise 2%", seed)
            vol0 = np.asarray(enhance(vol0, zooms, Enhancement(denoise="auto"))[0], np.float32)  # as --denoise auto
            windows, vol, pl = windows_of(seg, as_image(img, vol0))  # shipped `large` places the windows
            x = fed(vol, windows)
            pr = torch.sigmoid(logits(robust, x, "cpu")).numpy()
            pairs = {"shipped": (pl, pr)}
            alone["shipped"].append(dice(native(pr if args.teacher == "large-robust" else pl, windows, vol), manual))
            if student is not None:
                ps = torch.sigmoid(logits(student, x, "cpu")).numpy()
                pairs["student"] = (pl, ps) if args.teacher == "large-robust" else (ps, pr)
                alone["student"].append(dice(native(ps, windows, vol), manual))
            for k, (p1, p2) in pairs.items():
                both = native(ensemble.logit_mean([p1, p2]), windows, vol)
                mask = ensemble.combine(both, native(p1, windows, vol), native(p2, windows, vol), zooms).mask
                res[k].append(dice(mask, manual))
                if outlier_slices(mask, manual):
                    print(f"  {case} {k}: outlier slices {outlier_slices(mask, manual)}")
        for k, d in res.items():
            loss = d[0] - float(np.mean(d[1:]))
            worst[k] = max(worst[k], loss)
            a = alone[k]
            print(f"{case:14s} {k:8s} {args.teacher:12s} clean {d[0]:.4f}  2 % noise {np.mean(d[1:]):.4f} "
                  f"(mean of {len(d) - 1})  loss {loss:+.4f}  | {args.teacher} alone: clean {a[0]:.4f} "
                  f"loss {a[0] - float(np.mean(a[1:])):+.4f}", flush=True)
    print("worst 2 % loss: " + ", ".join(f"{k} {v:+.4f}" for k, v in worst.items()) + f" (goal <= {GOAL_LOSS_2PC})")


def stability(args: argparse.Namespace) -> None:
    from sctgm.training.models import model_from_weights

    seg = segmenter("large")
    nets = {args.teacher: model_from_weights(WEIGHTS[args.teacher])[0].eval()}
    if args.student:
        nets["student"] = load_student(args)
    for case in args.cases.split(","):
        img_path, _, _ = ALL_LABELLED[case]
        img, data = load(img_path)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        windows, clean_vol, _ = windows_of(seg, as_image(img, data))  # placed on the clean image, then kept
        noisy_vols = [seg.prepare(as_image(img, degraded(data, zooms, "noise 2%", draw_seed(case, k))), NO_STAGE)
                      for k in range(args.draws)]
        for name, net in nets.items():
            clean = logits(net, fed(clean_vol, windows), "cpu").clamp(-CLAMP, CLAMP).numpy()
            gm = clean > THRESHOLD_LOGIT
            if not gm.any():
                print(f"{case:14s} {name:12s} no GM pixel on the clean windows: nothing to compare", flush=True)
                continue
            flips, lost, mse = [], [], []
            for vol in noisy_vols:
                noisy = logits(net, fed(vol, windows), "cpu").clamp(-CLAMP, CLAMP).numpy()
                flips.append(np.sum(gm ^ (noisy > THRESHOLD_LOGIT)) / gm.sum())
                lost.append(np.sum(gm & (noisy <= THRESHOLD_LOGIT)) / gm.sum())
                mse.append(float(np.mean((noisy - clean) ** 2)))
            print(f"{case:14s} {name:12s} GM pixels {int(gm.sum()):6d}  flipped/GM {np.mean(flips):.3f}  "
                  f"lost/GM {np.mean(lost):.3f}  logit mse {np.mean(mse):.3f}  (mean of {args.draws} draws)",
                  flush=True)


def native(prob: np.ndarray, windows, vol) -> np.ndarray:
    """The default's way back to the image's grid (footprint area), as bench/default_candidates.py does."""
    return candidate_to_native(prob, windows, vol, THRESHOLD, rule="area")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("train", "score", "stability"))
    ap.add_argument("--teacher", choices=tuple(WEIGHTS), default="large-robust")
    ap.add_argument("--out", type=Path, default=Path("/tmp/sctgm-distill"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--draws", type=int, default=6, help="noisy copies per training image / 2 %% draws scored")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--crop", type=int, default=0, help="train on N x N crops of the windows (0: whole windows)")
    ap.add_argument("--clean-share", type=float, default=0.2, help="share of clean windows in a batch")
    ap.add_argument("--bce-weight", type=float, default=1.0, help="weight of the cross-entropy at the threshold")
    ap.add_argument("--every", type=int, default=50, help="checkpoint every N steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="train: cuda when available, else cpu (score: cpu)")
    ap.add_argument("--train-denoise", choices=("off", "auto"), default="off",
                    help="train: the noisy copies as --denoise off (measured, docs/robustness.md) or auto sees them")
    ap.add_argument("--student", type=Path, help="score, stability: a checkpoint of train")
    ap.add_argument("--cases", default=",".join(ALL_LABELLED))
    args = ap.parse_args()
    if args.crop < 0:
        ap.error("--crop: a number of pixels, or 0 for whole windows")
    if not 0 <= args.clean_share <= 0.85:
        ap.error("--clean-share: from 0 to 0.85 (15 % of a batch is the white-noise copies)")
    if args.bce_weight < 0:
        ap.error("--bce-weight: 0 or more")
    require_shared(MODELS_DIR, *TRAIN_IMAGES)
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    {"train": train, "score": score, "stability": stability}[args.mode](args)


if __name__ == "__main__":
    main()
