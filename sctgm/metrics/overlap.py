"""Overlap metrics of two binary masks (the six voxel-count metrics of the spinal cord GM challenge).

Counts are taken over every voxel of the arrays given: for a 2D axial slice that is the whole slice
(the image's field of view), so specificity's true negatives are all background pixels of the slice.
A ratio whose denominator is 0 is undefined and returned as NaN (never a crash, never a guess).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: Masks are binarised at this value (a probability map at 0.5; a 0/1 or 0/255 mask unchanged).
BINARY_THRESHOLD = 0.5


def binarize(mask: np.ndarray) -> np.ndarray:
    """``mask >= 0.5`` as a boolean array."""
    return np.asarray(mask) >= BINARY_THRESHOLD


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


@dataclass(frozen=True)
class OverlapCounts:
    """Confusion counts of a segmentation ``seg`` against a reference ``ref`` (voxels)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def of(cls, seg: np.ndarray, ref: np.ndarray) -> OverlapCounts:
        s, r = binarize(seg), binarize(ref)
        if s.shape != r.shape:
            raise ValueError(f"masks of different shapes {s.shape} and {r.shape}")
        tp = int(np.count_nonzero(s & r))
        fp = int(np.count_nonzero(s)) - tp
        fn = int(np.count_nonzero(r)) - tp
        return cls(tp=tp, fp=fp, fn=fn, tn=int(s.size) - tp - fp - fn)


@dataclass(frozen=True)
class OverlapMetrics:
    """The six overlap metrics; NaN where undefined (see :func:`overlap_metrics`)."""

    dice: float
    jaccard: float
    conformity: float
    sensitivity: float
    specificity: float
    precision: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def overlap_metrics(seg: np.ndarray, ref: np.ndarray) -> OverlapMetrics:
    """Overlap of ``seg`` with the reference ``ref`` (same shape; binarised at 0.5), over all voxels.

    With TP, FP, FN, TN counted over every voxel of the arrays:

    - dice = 2TP / (2TP + FP + FN); NaN when both masks are empty
    - jaccard = TP / (TP + FP + FN); NaN when both are empty
    - conformity = (3 dice - 2) / dice = 1 - (FP + FN) / TP (Chang et al. 2009); NaN when TP = 0
      (it tends to -infinity there)
    - sensitivity (TPR) = TP / (TP + FN); NaN when the reference is empty
    - specificity (TNR) = TN / (TN + FP), the background being every voxel outside the reference in
      the arrays given (the whole slice for a slice); NaN when the reference fills the arrays
    - precision (PPV) = TP / (TP + FP); NaN when the segmentation is empty
    """
    c = OverlapCounts.of(seg, ref)
    return OverlapMetrics(
        dice=_ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        jaccard=_ratio(c.tp, c.tp + c.fp + c.fn),
        conformity=1.0 - (c.fp + c.fn) / c.tp if c.tp else math.nan,
        sensitivity=_ratio(c.tp, c.tp + c.fn),
        specificity=_ratio(c.tn, c.tn + c.fp),
        precision=_ratio(c.tp, c.tp + c.fp),
    )


def dice_3d(seg: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two whole volumes (binarised at 0.5); NaN when both are empty."""
    c = OverlapCounts.of(seg, ref)
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)
