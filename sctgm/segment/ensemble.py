"""Combining two networks' GM predictions of the same windows: pure functions on arrays.

The measured combination (bench/default_candidates.py, docs/robustness.md) is:

1. :func:`logit_mean` of the two networks' probabilities on the fine grid (the mean of their log-odds,
   i.e. the geometric mean of the odds), thresholded as one network's would be;
2. :func:`prefer_where_disagreeing`: on the slices where the two networks' masks disagree (slice Dice
   under :data:`DISAGREE_DICE`), the second ("robust") network's slice instead: where `large`
   collapses under noise, the network trained for it holds;
3. the anatomical guard (:mod:`.guard`), with the first network as the alternative, removes GM that
   either network put outside the cord and re-fills slices whose area jumps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .guard import NETWORKS_DISAGREE, SliceDoubt, guard

#: The combination rule's name and version (part of a combination's identity: change it with the rule).
RULE = "logit-mean/second-where-disagree/guard v1"
#: Below this slice Dice between the two networks' masks, the second network's slice is used.
DISAGREE_DICE = 0.8
#: Slices where both networks together hold fewer voxels than this are not judged (cord ends).
MIN_VOXELS = 20

_EPS = 1e-7


def logit_mean(probs: Sequence[np.ndarray]) -> np.ndarray:
    """The sigmoid of the mean log-odds of several probability maps of the same pixels (float32).
    Probabilities are clipped to [1e-7, 1 - 1e-7] first (the published networks' sigmoid saturates)."""
    if not probs:
        raise ValueError("logit_mean needs at least one probability map")
    total = np.zeros(np.shape(probs[0]), dtype=np.float64)
    for p in probs:
        q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
        total += np.log(q) - np.log1p(-q)
    return (1.0 / (1.0 + np.exp(-total / len(probs)))).astype(np.float32)


def slice_dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice of two binary volumes per axial slice (axis 2); 1 where both slices are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    inter = (a & b).reshape(-1, a.shape[2]).sum(axis=0)
    total = a.reshape(-1, a.shape[2]).sum(axis=0) + b.reshape(-1, b.shape[2]).sum(axis=0)
    return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)


def disagreeing_slices(first: np.ndarray, second: np.ndarray, *, min_dice: float = DISAGREE_DICE,
                       min_voxels: int = MIN_VOXELS) -> list[int]:
    """Slices (axis 2) where two binary masks overlap with a Dice under ``min_dice`` and hold at least
    ``min_voxels`` voxels between them."""
    d = slice_dice(first, second)
    n = (np.asarray(first) > 0).reshape(-1, first.shape[2]).sum(axis=0) \
        + (np.asarray(second) > 0).reshape(-1, second.shape[2]).sum(axis=0)
    return [int(k) for k in np.flatnonzero((d < min_dice) & (n >= min_voxels))]


def prefer_where_disagreeing(combined: np.ndarray, first: np.ndarray, second: np.ndarray, *,
                             min_dice: float = DISAGREE_DICE) -> tuple[np.ndarray, list[int]]:
    """``combined`` with ``second``'s slice wherever ``first`` and ``second`` disagree
    (:func:`disagreeing_slices`); returns the mask (bool) and those slices."""
    out = np.asarray(combined) > 0
    slices = disagreeing_slices(first, second, min_dice=min_dice)
    if slices:
        out = out.copy()
        out[:, :, slices] = np.asarray(second)[:, :, slices] > 0
    return out, slices


def combine(combined: np.ndarray, first: np.ndarray, second: np.ndarray, zooms_mm: Sequence[float], *,
            cord: np.ndarray | None = None, min_dice: float = DISAGREE_DICE,
            use_guard: bool = True) -> tuple[np.ndarray, list[SliceDoubt]]:
    """Steps 2 and 3 of the module docstring on canonical binary masks: ``combined`` (the thresholded
    :func:`logit_mean`), ``first`` and ``second`` (each network alone, same windows). Returns the
    final mask and the doubtful slices; a slice where the networks disagree and the guard kept the
    second network's GM says action ``second_network``. ``use_guard`` False skips step 3."""
    preferred, slices = prefer_where_disagreeing(combined, first, second, min_dice=min_dice)
    out, doubts = guard(preferred, zooms_mm, cord=cord, alternative=first) if use_guard else (preferred, [])
    d = slice_dice(first, second)
    by_slice = {x.slice: x for x in doubts}
    for k in slices:
        old = by_slice.get(k)
        reasons = tuple(dict.fromkeys((old.reasons if old else ()) + (NETWORKS_DISAGREE,)))
        action = old.action if old is not None and old.action != "kept" else "second_network"
        by_slice[k] = SliceDoubt(k, reasons, action, round(float(d[k]), 3))
    return out, [by_slice[k] for k in sorted(by_slice)]
