"""The training loop on the phantom: it learns, it is reproducible, and resume == uninterrupted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from sctgm.training.augment import AugmentConfig
from sctgm.training.checkpoint import load_checkpoint, save_checkpoint
from sctgm.training.loop import SliceSet, TrainConfig, TrainProgress, lr_factor, train_loop
from sctgm.training.losses import dice_bce_loss
from sctgm.training.models import build_model
from sctgm.training.phantom import make_dataset

FAST = TrainConfig(max_steps=8, batch_size=2, crop_px=40, lr=3e-3, warmup_steps=2, val_every=4, seed=1,
                   augment=dataclasses.replace(AugmentConfig(), shift_px=6.0))


@pytest.fixture(scope="module")
def phantom() -> tuple[list[SliceSet], list[SliceSet]]:
    subjects = [SliceSet(s.name, list(s.images), list(s.targets))
                for s in make_dataset(0, 5, n_slices=6, shape_px=(64, 64), size_px=14.0)]
    return subjects[:4], subjects[4:]


def _net(seed: int = 0, filters: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", filters, depth=2)


def test_learns_the_phantom_from_random_weights(phantom) -> None:
    train, val = phantom
    cfg = dataclasses.replace(FAST, max_steps=100, batch_size=4, crop_px=48, lr=1e-2, val_every=20, warmup_steps=5)
    seen: list[TrainProgress] = []
    result = train_loop(_net(filters=8), train, val, cfg, pretrained=False, progress=seen.append)
    assert result.val_dice is not None and result.val_dice >= 0.9
    assert result.threshold in cfg.thresholds
    assert [p.step for p in seen] == list(range(0, 101))  # step 0: the init's validation
    assert sum(p.val_dice is not None for p in seen) == 6
    assert seen[0].loss is None and seen[0].val_dice == result.init_dice < 0.5 < result.val_dice
    assert seen[-1].best_dice == max(p.val_dice for p in seen[1:] if p.val_dice is not None)
    # the returned weights are the best model's
    assert result.best_step in (20, 40, 60, 80, 100)


def test_same_seed_same_weights_other_seed_other_weights(phantom) -> None:
    train, val = phantom
    a = train_loop(_net(), train, val, FAST, pretrained=False)
    b = train_loop(_net(), train, val, FAST, pretrained=False)
    c = train_loop(_net(), train, val, dataclasses.replace(FAST, seed=2), pretrained=False)
    assert all(np.array_equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert [e["loss"] for e in a.log] == [e["loss"] for e in b.log]
    assert not all(np.array_equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("bn", ["train", "frozen"])
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(phantom, tmp_path: Path, bn: str) -> None:
    train, val = phantom
    cfg = dataclasses.replace(FAST, max_steps=10, checkpoint_every=3, bn=bn)
    whole = train_loop(_net(), train, val, cfg, pretrained=False, checkpoint_path=tmp_path / "a.pt")

    def stop_at_7(p: TrainProgress) -> None:
        if p.step == 7:
            raise _Interrupt  # as Ctrl-C would, after step 7 (the last checkpoint is step 6)

    ck = tmp_path / "b.pt"
    with pytest.raises(_Interrupt):
        train_loop(_net(), train, val, cfg, pretrained=False, checkpoint_path=ck, progress=stop_at_7)
    assert load_checkpoint(ck)["step"] == 6
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*.tmp"))
    # resumed with a differently initialised model: everything comes from the checkpoint
    resumed = train_loop(_net(seed=5), train, val, cfg, pretrained=False, checkpoint_path=ck, resume=True)
    assert resumed.steps == whole.steps == 10
    for k in whole.state_dict:
        assert np.array_equal(whole.state_dict[k], resumed.state_dict[k]), k
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in whole.log]
    assert resumed.best_step == whole.best_step and resumed.threshold == whole.threshold


def test_frozen_batchnorm_keeps_running_statistics(phantom) -> None:
    train, val = phantom
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    result = train_loop(net, train, val, dataclasses.replace(FAST, bn="frozen"), pretrained=True)
    assert all(np.array_equal(before[k].numpy(), result.state_dict[k]) for k in before)
    moved = train_loop(_net(), train, val, dataclasses.replace(FAST, bn="train"), pretrained=True)
    assert not all(np.array_equal(before[k].numpy(), moved.state_dict[k]) for k in before)


def test_early_stopping(phantom) -> None:
    train, val = phantom
    cfg = dataclasses.replace(FAST, max_steps=200, lr=1e-9, warmup_steps=0, val_every=2, patience=2)
    result = train_loop(_net(), train, val, cfg, pretrained=False)
    assert result.stopped_early and result.steps < 200


def test_without_validation_the_last_model_and_default_threshold(phantom) -> None:
    train, _ = phantom
    result = train_loop(_net(), train, [], FAST, pretrained=False)
    assert result.val_dice is None and result.threshold == FAST.default_threshold and result.best_step == 8


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = TrainConfig(max_steps=100, warmup_steps=10, min_lr_fraction=0.1)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] < f[5] < f[9] <= 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[99] == pytest.approx(0.1, abs=0.01)


def test_loss_small_on_a_perfect_prediction_large_on_the_opposite() -> None:
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:10, 5:12] = 1
    good = dice_bce_loss((target * 2 - 1) * 20, target)
    bad = dice_bce_loss((1 - target * 2) * 20, target)
    assert float(good) < 0.01 < 1.0 < float(bad)


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 3, "w": torch.ones(2)})
    with pytest.raises(Exception):
        save_checkpoint(path, {"step": 4, "bad": lambda: None})  # cannot be pickled
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_the_threshold_is_the_inits_on_few_gm_voxels_else_the_best_nearest_the_inits() -> None:
    from sctgm.training.loop import THRESHOLD_MIN_VOXELS, choose_threshold

    scores = {0.3: 0.80, 0.5: 0.85, 0.9: 0.86, 0.999: 0.86}
    assert choose_threshold(scores, THRESHOLD_MIN_VOXELS - 1, 0.5) == 0.5  # too few voxels: the init's
    assert choose_threshold(scores, THRESHOLD_MIN_VOXELS, 0.5) == 0.9  # the best, the tie nearest 0.5
    assert choose_threshold(scores, THRESHOLD_MIN_VOXELS, 0.999) == 0.999  # the tie nearest the init's
