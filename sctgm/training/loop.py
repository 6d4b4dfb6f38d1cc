"""The training loop, over labelled slices held in memory.

Inputs are per-subject stacks of standardised fine-grid (0.25 mm) slices, window-sized or larger,
with GM targets in [0, 1] (the caller builds them with segment's own window code). Each step draws
``batch_size`` (subject, slice) pairs, crops ``crop_px`` around the slice's GM (shifted, rotated,
scaled, deformed: :mod:`sctgm.training.augment`), and takes one optimizer step on Dice + BCE. The
init is validated first (step 0), then every ``val_every`` steps the network predicts the validation
windows whole, without augmentation; the best model by validation Dice is kept, training stops early
after ``patience`` validations without improvement, and the probability threshold is chosen on the
validation slices at the end (:func:`choose_threshold`).

Every random draw comes from one ``torch.Generator`` seeded from ``seed`` and saved in checkpoints,
so on a CPU a run is reproducible and a resumed run ends with exactly the weights of an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..exceptions import SctGmError
from ..recipe import DEFAULT_PRECISION
from .augment import AugmentConfig, augment_crops
from .checkpoint import load_checkpoint, save_checkpoint
from .defaults import (DEFAULT_BATCH_SIZE, DEFAULT_BN_FINETUNE, DEFAULT_LR, DEFAULT_MAX_STEPS, DEFAULT_PATIENCE,
                       DEFAULT_WARMUP_STEPS, validation_interval)
from .losses import dice_bce_loss
from .models import precision_context

#: Probability thresholds tried on the validation slices (the published models use 0.999).
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
#: The threshold choice (:func:`choose_threshold`), measured by bench/threshold_choice.py (docs/train.md,
#: "Threshold"): fewer GM voxels than this on the validation windows (about 8 slices) keep the init's
#: threshold (with 2-4 validation slices the best one jumped across 7-11 of the 12 thresholds for Dice
#: differences < 0.001); the Dice curve is averaged over this many neighbouring thresholds before its
#: best is taken (1: none; smoothing over 3 or 5 did not steady the choice).
THRESHOLD_MIN_VOXELS = 2000
THRESHOLD_SMOOTHING = 1


@dataclass
class SliceSet:
    """One subject's labelled slices: standardised images and targets, each a list of (H, W)
    float32 arrays (sizes may differ between slices)."""

    name: str
    images: Sequence[np.ndarray]
    targets: Sequence[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.targets):
            raise SctGmError(f"{self.name}: {len(self.images)} images but {len(self.targets)} targets")
        for img, tgt in zip(self.images, self.targets):
            if img.shape != tgt.shape or img.ndim != 2:
                raise SctGmError(f"{self.name}: image slice {img.shape} and target {tgt.shape} differ or are not 2D")


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters, their defaults those of :mod:`sctgm.training.defaults` (the one source;
    :func:`sctgm.train` resolves a run's from its options). ``bn``: 'frozen' (BatchNorm in eval mode:
    running statistics kept, its scale and shift still learnt), 'train' (statistics updated from each
    batch) or 'auto' (frozen when fine-tuning, train from scratch). ``patience``: validations without
    improvement before stopping (0: never stop early). ``checkpoint_every``: steps between checkpoints
    (0: none). ``precision``: the arithmetic of validation, the model's (its recipe's; the policy is
    fp32, as inference: :func:`sctgm.engines.torch.precision_context`); ``amp``: the training steps
    themselves in fp16 with loss scaling, on CUDA only."""

    max_steps: int = DEFAULT_MAX_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    crop_px: int = 200
    lr: float = DEFAULT_LR
    weight_decay: float = 0.0
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    min_lr_fraction: float = 0.05
    bn: str = DEFAULT_BN_FINETUNE
    val_every: int = validation_interval(DEFAULT_MAX_STEPS)
    patience: int = DEFAULT_PATIENCE
    checkpoint_every: int = 0
    seed: int = 0
    amp: bool = True
    bce_weight: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    default_threshold: float = 0.5
    precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        if self.bn not in ("auto", "frozen", "train"):
            raise SctGmError(f"BatchNorm mode {self.bn!r}: expected auto, frozen or train")
        if self.max_steps < 1 or self.batch_size < 1 or self.crop_px < 16 or self.lr <= 0:
            raise SctGmError("max_steps and batch_size must be >= 1, crop_px >= 16 and lr > 0")


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback receives after each step (and at step 0, the init's validation:
    ``loss`` and ``lr`` None); ``val_dice`` only on validation steps. ``seconds``: elapsed in the run
    (resumed runs included); ``best_dice``/``best_step`` and ``init_dice``: validation so far."""

    step: int
    max_steps: int
    loss: float | None
    lr: float | None
    val_dice: float | None = None
    seconds: float = 0.0
    best_dice: float | None = None
    best_step: int = 0
    init_dice: float | None = None


@dataclass
class TrainResult:
    """The best model (by validation Dice; the last one without validation) and how it was reached."""

    state_dict: dict[str, np.ndarray]
    threshold: float
    val_dice: float | None
    init_dice: float | None  # the init's validation Dice (step 0), None without validation
    best_step: int
    steps: int
    stopped_early: bool
    log: list[dict[str, Any]]
    seconds: float
    data_seconds: float  # sampling + augmentation
    step_seconds: float  # forward + backward + optimizer


ProgressCallback = Callable[[TrainProgress], None]
#: Called with the log so far after each validation (step 0 included): the run's files grow with it.
LogCallback = Callable[[list[dict[str, Any]]], None]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_fraction``."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_bn_mode(model: nn.Module, frozen: bool) -> None:
    """Put the model in training mode, its BatchNorm layers in eval mode when ``frozen``."""
    model.train()
    if frozen:
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.eval()


def pooled_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice over all pixels of all slices together (1.0 when both are empty)."""
    p, t = pred.astype(bool), target >= 0.5
    s = int(p.sum()) + int(t.sum())
    return 1.0 if s == 0 else 2.0 * int((p & t).sum()) / s


def predict_slices(model: nn.Module, images: Sequence[np.ndarray], device: torch.device, *,
                   batch_size: int = 8, precision: str = DEFAULT_PRECISION) -> list[np.ndarray]:
    """Sigmoid probabilities of whole slices, in eval mode, in batches of same-shape slices, at
    ``precision`` as the engines run the model (one policy: :func:`~sctgm.engines.torch.precision_context`)."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    with torch.no_grad(), precision_context(precision, device):
        for idx in by_shape.values():
            for s in range(0, len(idx), batch_size):
                chunk = idx[s:s + batch_size]
                x = torch.from_numpy(np.stack([images[i] for i in chunk])[:, None].astype(np.float32)).to(device)
                p = torch.sigmoid(model.logits(x).float()).cpu().numpy()[:, 0]  # type: ignore[operator]
                for i, pi in zip(chunk, p):
                    out[i] = pi
    model.train(was_training)
    return out  # type: ignore[return-value]


def validation_dice(probs: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                    thresholds: Sequence[float]) -> dict[float, float]:
    """Pooled Dice of the validation slices at each threshold."""
    flat_p = np.concatenate([p.ravel() for p in probs])
    flat_t = np.concatenate([t.ravel() for t in targets])
    return {float(th): pooled_dice(flat_p > th, flat_t) for th in thresholds}


def choose_threshold(scores: dict[float, float], gm_voxels: int, default: float, *,
                     min_voxels: int = THRESHOLD_MIN_VOXELS, smooth: int = THRESHOLD_SMOOTHING) -> float:
    """The threshold kept for the model (docs/train.md, "Threshold"): ``default`` (the init's) when the
    validation slices hold fewer than ``min_voxels`` GM voxels (pooled over slices), else the best of
    the pooled Dice curve (averaged over ``smooth`` neighbouring thresholds; ties: nearest ``default``)."""
    ths = sorted(scores)
    if gm_voxels < min_voxels or not ths:
        return default
    half = smooth // 2
    curve = {th: float(np.mean([scores[t] for t in ths[max(0, i - half):i + half + 1]])) for i, th in enumerate(ths)}
    return max(ths, key=lambda th: (round(curve[th], 9), -abs(th - default)))


class _Sampler:
    """Draws training crops: subject uniformly, then slice, centred on the slice's GM centroid."""

    def __init__(self, train: Sequence[SliceSet]) -> None:
        self.images = [[torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in s.images] for s in train]
        self.targets = [[torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in s.targets] for s in train]
        self.centres = [[self._centre(t) for t in s.targets] for s in train]

    @staticmethod
    def _centre(target: np.ndarray) -> tuple[float, float]:
        fg = np.argwhere(target >= 0.5)
        if fg.size == 0:
            return ((target.shape[0] - 1) / 2, (target.shape[1] - 1) / 2)
        return tuple(float(v) for v in fg.mean(axis=0))  # type: ignore[return-value]

    def batch(self, n: int, crop_px: int, cfg: AugmentConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        subj = torch.randint(len(self.images), (n,), generator=g).tolist()
        pick = torch.rand(n, generator=g).tolist()
        imgs, tgts, centres = [], [], []
        for s, u in zip(subj, pick):
            k = min(int(u * len(self.images[s])), len(self.images[s]) - 1)
            imgs.append(self.images[s][k])
            tgts.append(self.targets[s][k])
            centres.append(self.centres[s][k])
        return augment_crops(imgs, tgts, torch.tensor(centres, dtype=torch.float64), (crop_px, crop_px), cfg, g)


def train_loop(model: nn.Module, train: Sequence[SliceSet], val: Sequence[SliceSet], cfg: TrainConfig, *,
               device: torch.device | str = "cpu", pretrained: bool = True, checkpoint_path: str | Path | None = None,
               resume: bool = False, progress: ProgressCallback | None = None, signature: str = "",
               on_validation: LogCallback | None = None) -> TrainResult:
    """Train ``model`` (which has a ``logits`` method) on ``train``, validating on ``val`` (may be
    empty: then the last model is kept and ``cfg.default_threshold`` returned). ``pretrained``:
    the model holds published/trained weights (``bn='auto'`` then freezes BatchNorm).
    ``checkpoint_path`` with ``resume``: continue the run saved there. ``signature``: the run's data and
    options, stored in every checkpoint (the caller compares it before resuming). ``on_validation``
    receives the log after each validation (the init's, at step 0, first)."""
    if not any(len(s.images) for s in train):
        raise SctGmError("no training slice: every training subject is empty")
    device = torch.device(device)
    use_amp = cfg.amp and device.type == "cuda"
    frozen_bn = cfg.bn == "frozen" or (cfg.bn == "auto" and pretrained)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    g = torch.Generator().manual_seed(cfg.seed)
    sampler = _Sampler(train)
    val_images = [img for s in val for img in s.images]
    val_targets = [t for s in val for t in s.targets]
    val_gm_voxels = int(sum(int((t >= 0.5).sum()) for t in val_targets))

    def validate() -> float:
        probs = predict_slices(model, val_images, device, batch_size=max(cfg.batch_size, 4),
                              precision=cfg.precision)
        scores = validation_dice(probs, val_targets, cfg.thresholds)
        return scores[choose_threshold(scores, val_gm_voxels, cfg.default_threshold)]

    state: dict[str, Any] = {"step": 0, "best_dice": -1.0, "best_step": 0, "best_state": None, "bad_vals": 0,
                             "log": [], "seconds": 0.0, "data_seconds": 0.0, "step_seconds": 0.0,
                             "init_dice": None}
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        ck = load_checkpoint(checkpoint_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        g.set_state(ck["generator"])
        state.update({k: ck[k] for k in state if k in ck})
        resumed_stopped = bool(ck.get("stopped", False))
    else:
        resumed_stopped = False
    t_start = time.perf_counter() - state["seconds"]
    stopped_early = resumed_stopped  # a run that had stopped early before the interruption stays stopped

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def report(entry: dict[str, Any]) -> None:
        if progress is not None:
            best = state["best_dice"] if state["best_dice"] >= 0 else None
            progress(TrainProgress(entry["step"], cfg.max_steps, entry["loss"], entry["lr"], entry["val_dice"],
                                   state["seconds"], best, state["best_step"], state["init_dice"]))
        if on_validation is not None and entry["val_dice"] is not None:
            on_validation(state["log"])

    if val_images and state["step"] == 0 and not state["log"]:  # the init, validated before any step
        state["init_dice"] = validate()
        state["seconds"] = time.perf_counter() - t_start
        state["log"].append({"step": 0, "loss": None, "lr": None, "val_dice": state["init_dice"],
                             "seconds": round(state["seconds"], 3)})
        report(state["log"][-1])

    while state["step"] < cfg.max_steps and not stopped_early:
        step = state["step"]
        set_bn_mode(model, frozen_bn)
        t0 = time.perf_counter()
        x, y = sampler.batch(cfg.batch_size, cfg.crop_px, cfg.augment, g)
        x, y = x.to(device), y.to(device)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model.logits(x)  # type: ignore[operator]
        loss = dice_bce_loss(logits, y, cfg.bce_weight)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        lr = opt.param_groups[0]["lr"]
        sched.step()
        loss_value = float(loss.detach())
        t2 = time.perf_counter()
        state["data_seconds"] += t1 - t0
        state["step_seconds"] += t2 - t1
        state["step"] = step = step + 1
        entry: dict[str, Any] = {"step": step, "loss": loss_value, "lr": lr, "val_dice": None}
        if val_images and (step % cfg.val_every == 0 or step == cfg.max_steps):
            dice = validate()
            entry["val_dice"] = dice
            if dice > state["best_dice"] + 1e-6:
                state.update(best_dice=dice, best_step=step, best_state=snapshot(), bad_vals=0)
            else:
                state["bad_vals"] += 1
        state["seconds"] = time.perf_counter() - t_start
        entry["seconds"] = round(state["seconds"], 3)
        state["log"].append(entry)
        report(entry)
        stop = bool(cfg.patience and state["bad_vals"] >= cfg.patience)
        if checkpoint_path is not None and cfg.checkpoint_every and (
                step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stop):
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "generator": g.get_state(), "stopped": stop, "signature": signature,
                **state})
        if stop:
            stopped_early = True
            break

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    threshold, val_dice = cfg.default_threshold, None
    if val_images:
        scores = validation_dice(predict_slices(model, val_images, device, precision=cfg.precision), val_targets,
                                 cfg.thresholds)
        threshold = choose_threshold(scores, val_gm_voxels, cfg.default_threshold)
        val_dice = scores[threshold]
    model.eval()
    return TrainResult(
        state_dict={k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
                    if not k.endswith("num_batches_tracked")},
        threshold=threshold, val_dice=val_dice, init_dice=state["init_dice"], best_step=state["best_step"] if val_images else state["step"],
        steps=state["step"], stopped_early=stopped_early, log=state["log"], seconds=state["seconds"],
        data_seconds=state["data_seconds"], step_seconds=state["step_seconds"])
