"""Combining two networks' GM predictions of the same windows: pure functions on arrays.

The measured combination (bench/default_candidates.py, docs/robustness.md) is:

1. :func:`logit_mean` of the two networks' probabilities on the fine grid (the mean of their log-odds,
   i.e. the geometric mean of the odds), thresholded as one network's would be;
2. :func:`choose_where_disagreeing`: on the slices where the two networks' masks disagree (slice Dice
   under :data:`DISAGREE_DICE`), the slice of the network whose GM agrees better with the neighbouring
   slices of the combined mask (area and position, :func:`.guard.neighbour_consistency`), the second
   ("robust") network's on a tie: where `large` collapses under noise, the network trained for it
   holds; where the robust network strays onto another structure, `large`'s slice is kept;
   but where they disagree on most slices (:func:`whole_volume_network`), one network has broken
   down over the volume (`large` under noise it never saw) and the few agreeing slices are no
   reference: the network whose own mask follows the cord better (:func:`.guard.doubt_along_cord`)
   stands for the whole volume instead of steps 1-2;
3. the anatomical guard (:mod:`.guard`), with the first network as the alternative (the other one
   where one network stands for the volume), removes GM that
   either network put outside the cord and re-fills slices whose area jumps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..recipe import DISAGREE_DICE
from .guard import NETWORKS_DISAGREE, SliceDoubt, doubt_along_cord, guard, neighbour_consistency

#: The combination rule's name and version (part of a combination's identity: change it with the rule),
#: numbered as in docs/robustness.md (v3, the rule back to the native grid, is recorded apart: to_native).
RULE = "logit-mean/consistent-network-where-disagree/one-network-where-most-disagree/guard v4"
#: The action recorded for a disagreeing slice, by the index of the network whose slice was used
#: (0: the first, 1: the second, as :attr:`.guard.SliceDoubt.network`).
CHOSE = ("first_network", "second_network")
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


def choose_where_disagreeing(combined: np.ndarray, first: np.ndarray, second: np.ndarray,
                             zooms_mm: Sequence[float], *, min_dice: float = DISAGREE_DICE
                             ) -> tuple[np.ndarray, dict[int, str]]:
    """``combined`` with, on each slice where ``first`` and ``second`` disagree
    (:func:`disagreeing_slices`), the slice of the network that agrees better with the neighbouring
    slices of ``combined`` that are not themselves disagreeing (:func:`.guard.neighbour_consistency`;
    ``second`` on a tie, e.g. when too few neighbours agree to judge). Returns the mask (bool) and
    ``{slice: network}``, 0 for ``first``, 1 for ``second``."""
    out = np.asarray(combined) > 0
    slices = disagreeing_slices(first, second, min_dice=min_dice)
    chosen: dict[int, int] = {}
    if not slices:
        return out, chosen
    reference, out = out, out.copy()
    a, b = np.asarray(first) > 0, np.asarray(second) > 0
    for k in slices:
        score_a = neighbour_consistency(a[:, :, k], k, reference, zooms_mm, skip=slices)
        score_b = neighbour_consistency(b[:, :, k], k, reference, zooms_mm, skip=slices)
        chosen[k] = 1 if score_b <= score_a else 0
        out[:, :, k] = (a, b)[chosen[k]][:, :, k]
    return out, chosen


def judged_slices(first: np.ndarray, second: np.ndarray, *, min_voxels: int = MIN_VOXELS) -> list[int]:
    """The slices (axis 2) where two binary masks hold at least ``min_voxels`` voxels between them:
    those whose agreement is judged (cord ends and empty slices are not)."""
    a, b = np.asarray(first) > 0, np.asarray(second) > 0
    n = a.reshape(-1, a.shape[2]).sum(axis=0) + b.reshape(-1, b.shape[2]).sum(axis=0)
    return [int(k) for k in np.flatnonzero(n >= min_voxels)]


def whole_volume_network(first: np.ndarray, second: np.ndarray, zooms_mm: Sequence[float], *,
                         min_dice: float = DISAGREE_DICE, min_voxels: int = MIN_VOXELS) -> int | None:
    """0 (``first``) or 1 (``second``) when the two binary masks disagree (:func:`disagreeing_slices`) on
    more than half of the slices judged (those holding at least ``min_voxels`` voxels between them):
    the network whose own mask follows the cord better on those slices (:func:`.guard.doubt_along_cord`:
    a network that lost its GM on a slice counts it as doubtful; ``second`` on a tie), which then
    stands for the whole volume; None otherwise."""
    a, b = np.asarray(first) > 0, np.asarray(second) > 0
    judged = judged_slices(a, b, min_voxels=min_voxels)
    if 2 * len(disagreeing_slices(a, b, min_dice=min_dice, min_voxels=min_voxels)) <= len(judged):
        return None
    # judged on the same slices, so a network that lost its GM there counts as doubtful, not as quiet
    return 1 if doubt_along_cord(b, zooms_mm, judged) <= doubt_along_cord(a, zooms_mm, judged) else 0


class Combined(NamedTuple):
    """What :func:`combine` returns: the final canonical mask (bool), the doubtful slices, and the
    index of the network that stood for the whole volume (0: the first, 1: the second; None: the
    combination's)."""

    mask: np.ndarray
    doubts: list[SliceDoubt]
    whole_volume: int | None


def combine(combined: np.ndarray, first: np.ndarray, second: np.ndarray, zooms_mm: Sequence[float], *,
            cord: np.ndarray | None = None, min_dice: float = DISAGREE_DICE,
            use_guard: bool = True, whole_volume: bool = True) -> Combined:
    """Steps 2 and 3 of the module docstring on canonical binary masks: ``combined`` (the thresholded
    :func:`logit_mean`), ``first`` and ``second`` (each network alone, same windows). Where the
    networks disagree on most slices (:func:`whole_volume_network`), one of them has broken down over
    the volume and too few agreeing slices are left to judge slices by: that network's mask, the
    better-following one, replaces ``combined`` and all the disagreeing slices, and the guard consults
    the other. Returns the final mask, the doubtful slices, each with the two networks' slice Dice (a
    slice where the networks disagree whose chosen GM the guard kept says action ``first_network`` or
    ``second_network``), and the whole-volume network. ``use_guard`` False skips step 3;
    ``whole_volume`` False never lets one network stand for the volume (the rule before v4, for
    comparison)."""
    whole = whole_volume_network(first, second, zooms_mm, min_dice=min_dice) if whole_volume else None
    if whole is None:
        chosen_mask, chosen = choose_where_disagreeing(combined, first, second, zooms_mm, min_dice=min_dice)
        base, alt_index = None, 0
    else:
        chosen_mask = np.asarray((first, second)[whole]) > 0
        chosen = {k: whole for k in disagreeing_slices(first, second, min_dice=min_dice)}
        base, alt_index = whole, 1 - whole
    alternative = (first, second)[alt_index]
    out, doubts = guard(chosen_mask, zooms_mm, cord=cord, alternative=alternative) if use_guard \
        else (chosen_mask, [])
    d = slice_dice(first, second)
    by_slice: dict[int, SliceDoubt] = {}
    for x in doubts:  # "the networks disagree" is this module's judgement (first vs second), not the guard's
        reasons = tuple(r for r in x.reasons if r != NETWORKS_DISAGREE)
        if reasons:
            by_slice[x.slice] = SliceDoubt(x.slice, reasons, x.action, round(float(d[x.slice]), 3),
                                           {"replaced": alt_index, "dropped": None}.get(x.action, base))
    for k, which in chosen.items():
        old = by_slice.get(k)
        reasons = tuple(dict.fromkeys((old.reasons if old else ()) + (NETWORKS_DISAGREE,)))
        action = old.action if old is not None and old.action != "kept" else CHOSE[which]
        network = {"replaced": alt_index, "dropped": None}.get(action, which)
        by_slice[k] = SliceDoubt(k, reasons, action, round(float(d[k]), 3), network)
    return Combined(out, [by_slice[k] for k in sorted(by_slice)], whole)


def chosen_probability(mean: np.ndarray, first: np.ndarray, second: np.ndarray,
                       doubts: Sequence[SliceDoubt], whole_volume: int | None = None) -> np.ndarray:
    """The probability map that goes with :func:`combine`'s mask (window k = slice k, as the pipeline
    predicts them): the :func:`logit_mean` ``mean`` (the ``whole_volume`` network's probabilities
    when one stood for the volume), but on a slice whose GM was taken from one network
    (``SliceDoubt.network``) that network's probabilities, and 0 on a slice the guard emptied, so
    that ``--prob`` thresholded on the fine grid gives that network's mask there before the
    per-slice clean-up (largest components, holes) and the guard's removal of GM outside the cord."""
    out = mean.copy() if whole_volume is None else np.array((first, second)[whole_volume], dtype=mean.dtype)
    for x in doubts:
        if x.action == "dropped":
            out[x.slice] = 0.0
        elif x.network is not None:
            out[x.slice] = (first, second)[x.network][x.slice]
    return out
