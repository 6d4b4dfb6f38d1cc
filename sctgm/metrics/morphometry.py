"""GM (and, with a cord mask, WM) morphometry per axial slice and per vertebral level.

Areas are in the plane of each canonical axial slice, on the true voxel geometry: the number of
mask pixels (or the sum of their probabilities with ``soft=True``) times the in-plane pixel area
``|c0 x c1|`` of the canonical affine (see :mod:`sctgm.metrics.grid`), whatever the file's orientation.

With a cord mask: ``cord_area_mm2``; GM inside the cord = sum of ``min(gm, cord)`` (the fuzzy
intersection, the plain intersection for binary masks); ``wm_area_mm2`` = cord area - GM inside the
cord; ``gm_cord_ratio`` = GM inside the cord / cord area (NaN where the cord is empty). GM outside
the cord mask is counted in ``gm_area_mm2`` and reported by a warning.

With a vertebral-level label image (integer labels, e.g. SCT's ``*_labeled.nii.gz``: 2 for C2 ...):
each slice gets the most frequent non-zero label of that slice (the smaller on a tie; none when the
slice has no label), and each level a row with the mean and SD (numpy ``std``, ddof=0) of every
area column over its slices.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..exceptions import MetricsError
from .grid import CanonicalMask, check_same_grid, load_mask, warn_if_probabilities
from .overlap import binarize

log = logging.getLogger(__name__)

#: Values may stray this far outside [0, 1] in a soft mask (float storage, interpolation).
SOFT_TOLERANCE = 1e-3


def mask_weights(mask: CanonicalMask, soft: bool) -> np.ndarray:
    """Per-voxel weights: binarised at 0.5 (default) or the probabilities themselves (``soft``)."""
    d = mask.data
    if not soft:
        warn_if_probabilities(mask, "measure soft masks to sum probabilities", parameter="soft")
        return binarize(d).astype(np.float64)
    lo, hi = float(d.min()), float(d.max())
    if lo < -SOFT_TOLERANCE or hi > 1 + SOFT_TOLERANCE:
        raise MetricsError(f"{mask.path}: values range from {lo:g} to {hi:g}, expected probabilities in "
                           f"[0, 1] for a soft mask; measure it as a binary mask (binarised at 0.5)",
                           parameter="soft")
    return np.clip(d, 0.0, 1.0).astype(np.float64)


#: The largest vertebral label accepted: every whole number up to it is exact in float32 (the loader's
#: type), and no label image comes near it (SCT's levels run 1 to ~30, its PMJ label is 50).
MAX_LEVEL_LABEL = 2 ** 24


def check_level_labels(levels: CanonicalMask) -> None:
    """Raise :class:`MetricsError` unless every value of the label image is a whole number from 0
    (no level) to :data:`MAX_LEVEL_LABEL`: a fractional label (a resampled or probability image) has
    no one level, and a huge one no integer to stand for it."""
    d = levels.data
    bad = (d != np.rint(d)) | (d < 0) | (d > MAX_LEVEL_LABEL)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        raise MetricsError(f"{levels.path}: {n_bad} voxels hold values that are not vertebral levels (e.g. "
                           f"{float(d[bad].flat[0]):g}); expected whole numbers from 0 (no level) to "
                           f"{MAX_LEVEL_LABEL}, as in SCT's *_labeled.nii.gz: give the label image itself, "
                           f"not a resampled copy (or resample it with nearest neighbour)", parameter="levels")


def slice_levels(levels: np.ndarray) -> list[int | None]:
    """The vertebral level of each canonical axial slice: its most frequent non-zero label."""
    out: list[int | None] = []
    lab = np.rint(levels).astype(np.int64)
    for k in range(lab.shape[2]):
        v = lab[:, :, k]
        v = v[v != 0]
        if v.size == 0:
            out.append(None)
            continue
        values, counts = np.unique(v, return_counts=True)
        out.append(int(values[np.argmax(counts)]))  # np.unique sorts: argmax keeps the smaller on a tie
    return out


@dataclass(frozen=True)
class MorphometryResult:
    """Per-slice (and per-level) areas of one GM mask."""

    seg_path: Path
    cord_path: Path | None
    levels_path: Path | None
    soft: bool
    slices: list[dict[str, Any]]  # canonical order (inferior to superior): slice, position_mm, level, areas
    levels: list[dict[str, Any]]  # per level: level, n_slices, <area> and <area>_sd
    version: str = field(default=__version__)

    @property
    def area_columns(self) -> tuple[str, ...]:
        if self.cord_path:
            return ("gm_area_mm2", "cord_area_mm2", "wm_area_mm2", "gm_cord_ratio")
        return ("gm_area_mm2",)

    @property
    def columns(self) -> tuple[str, ...]:
        cols = ["file"]
        cols += ["cord_file"] if self.cord_path else []
        cols += ["levels_file"] if self.levels_path else []
        cols += ["sctgm_version", "soft", "scope", "slice", "position_mm"]
        cols += ["level", "n_slices"] if self.levels_path else []
        for name in self.area_columns:
            cols += [name, f"{name}_sd"] if self.levels_path else [name]
        return tuple(cols)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows for CSV/JSON: one per slice (scope 'slice'), then one per level (scope 'level')."""
        base: dict[str, Any] = {"file": str(self.seg_path), "sctgm_version": self.version, "soft": self.soft}
        if self.cord_path:
            base["cord_file"] = str(self.cord_path)
        if self.levels_path:
            base["levels_file"] = str(self.levels_path)
        empty = dict.fromkeys(self.columns)
        rows = [{**empty, **base, "scope": "slice", **r} for r in self.slices]
        rows += [{**empty, **base, "scope": "level", **r} for r in self.levels]
        return [{k: r[k] for k in self.columns} for r in rows]


def morphometry_masks(gm: CanonicalMask, cord: CanonicalMask | None = None,
                      levels: CanonicalMask | None = None, soft: bool = False) -> MorphometryResult:
    """:func:`morphometry` on masks already loaded with :func:`~sctgm.metrics.grid.load_mask`."""
    for other in (cord, levels):
        if other is not None:
            check_same_grid(gm, other)
    if levels is not None:
        check_level_labels(levels)
    px = gm.pixel_area_mm2
    w_gm = mask_weights(gm, soft)
    gm_area = w_gm.sum(axis=(0, 1)) * px
    columns: dict[str, np.ndarray] = {"gm_area_mm2": gm_area}
    if cord is not None:
        w_cord = mask_weights(cord, soft)
        cord_area = w_cord.sum(axis=(0, 1)) * px
        gm_in = np.minimum(w_gm, w_cord).sum(axis=(0, 1)) * px
        outside = int(np.count_nonzero(w_gm > w_cord + SOFT_TOLERANCE))
        if outside:
            log.warning("%s: %d GM voxels lie outside the cord mask %s; they are left out of the WM area "
                        "and of the GM/cord ratio", gm.path, outside, cord.path)
        columns["cord_area_mm2"] = cord_area
        columns["wm_area_mm2"] = cord_area - gm_in
        with np.errstate(invalid="ignore", divide="ignore"):
            columns["gm_cord_ratio"] = np.where(cord_area > 0, gm_in / np.where(cord_area > 0, cord_area, 1),
                                                np.nan)
    per_slice_level = slice_levels(levels.data) if levels is not None else [None] * gm.n_slices
    positions = gm.slice_positions_mm()
    slices = []
    for k in range(gm.n_slices):
        row: dict[str, Any] = {"slice": gm.file_slice_index(k), "position_mm": float(positions[k])}
        if levels is not None:
            row["level"] = per_slice_level[k]
        row.update({name: float(v[k]) for name, v in columns.items()})
        slices.append(row)
    level_rows = []
    for lv in sorted({x for x in per_slice_level if x is not None}):
        ks = [k for k, x in enumerate(per_slice_level) if x == lv]
        row = {"level": lv, "n_slices": len(ks)}
        for name, v in columns.items():
            vals = v[ks]
            vals = vals[~np.isnan(vals)]
            row[name] = float(vals.mean()) if vals.size else math.nan
            row[f"{name}_sd"] = float(vals.std()) if vals.size else math.nan
        level_rows.append(row)
    return MorphometryResult(seg_path=gm.path, cord_path=cord.path if cord else None,
                             levels_path=levels.path if levels else None, soft=soft, slices=slices,
                             levels=level_rows)


def morphometry(seg_path: str | os.PathLike[str], cord_path: str | os.PathLike[str] | None = None,
                levels_path: str | os.PathLike[str] | None = None, soft: bool = False) -> MorphometryResult:
    """GM area per axial slice of the mask in ``seg_path``; with ``cord_path`` also cord and WM areas
    and the GM/cord ratio; with ``levels_path`` (vertebral labels) the level of each slice and the
    per-level mean and SD. ``soft``: areas are sums of probabilities instead of binarising at 0.5.
    All masks must share one voxel grid (any storage orientation)."""
    gm = load_mask(seg_path, what="GM mask")
    cord = load_mask(cord_path, what="cord mask") if cord_path is not None else None
    levels = load_mask(levels_path, what="vertebral level image", labels=True) if levels_path is not None else None
    return morphometry_masks(gm, cord, levels, soft=soft)
