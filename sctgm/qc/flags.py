"""Automatic plausibility flags for a GM segmentation, one list of reasons per axial slice.

The rules are deliberately simple and explainable, so a reviewer knows why a slice was flagged:

- ``empty_gm``: no GM on a slice that has cord (with a cord mask), or on a slice lying between
  slices that have GM (without one).
- ``area_outlier``: the slice's GM area (mm2) differs from the median of its non-empty neighbours
  (up to ``NEIGHBOURS`` slices each side) by more than a factor ``OUTLIER_RATIO``.
- ``touches_edge``: GM reaches the edge of the crop window drawn around the cord (or lies beyond
  it, or on the image border), i.e. GM far from where the cord is: a leak into CSF or muscle.
- ``doubtful:<reason>``: the segmentation itself doubted the slice (a model that combines networks
  lists its doubtful slices in the sidecar's ``doubtful_slices``: the networks disagree, GM outside
  the cord was removed, the area jumps); :func:`doubtful_flags` turns that list into flags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

EMPTY_GM = "empty_gm"
AREA_OUTLIER = "area_outlier"
TOUCHES_EDGE = "touches_edge"

#: Human text for each flag (the HTML report shows it next to the slice).
FLAG_TEXT: dict[str, str] = {
    EMPTY_GM: "no GM on a slice with cord",
    AREA_OUTLIER: "GM area far from its neighbours",
    TOUCHES_EDGE: "GM reaches the edge of the crop, far from the cord",
}

DOUBTFUL_PREFIX = "doubtful:"
#: Human text of the segmentation's own doubts (sctgm.segment.guard's reasons).
DOUBTFUL_TEXT: dict[str, str] = {
    "doubtful:networks_disagree": "doubtful: the networks disagree here",
    "doubtful:outside_cord": "doubtful: GM outside the cord was removed",
    "doubtful:area_jump": "doubtful: GM area jumps from its neighbours'",
}
FLAG_TEXT.update(DOUBTFUL_TEXT)

#: A slice is an outlier when its GM area is more than this factor above or below the median
#: of its neighbours'. GM area changes by < 30 % between adjacent 2.5-5 mm slices in healthy cords.
OUTLIER_RATIO = 1.6
#: Neighbours looked at on each side for the outlier rule.
NEIGHBOURS = 2
#: A slice "has cord" when the cord mask covers at least this area (mm2).
MIN_CORD_AREA_MM2 = 5.0


def slice_flags(
    gm_area_mm2: Sequence[float],
    cord_area_mm2: Sequence[float] | None,
    gm_touches_edge: Sequence[bool],
) -> list[tuple[str, ...]]:
    """Reasons to look at each axial slice (empty tuple: nothing suspicious).

    All sequences are indexed by the canonical slice index (inferior to superior) and have the same
    length; ``cord_area_mm2`` is None when no cord mask was given.
    """
    gm = np.asarray(gm_area_mm2, dtype=float)
    n = gm.size
    has_gm = gm > 0
    if cord_area_mm2 is not None:
        expects_gm = np.asarray(cord_area_mm2, dtype=float) >= MIN_CORD_AREA_MM2
    else:
        idx = np.flatnonzero(has_gm)
        expects_gm = np.zeros(n, dtype=bool)
        if idx.size:
            expects_gm[idx[0]: idx[-1] + 1] = True
    out: list[tuple[str, ...]] = []
    for k in range(n):
        reasons: list[str] = []
        if expects_gm[k] and not has_gm[k]:
            reasons.append(EMPTY_GM)
        if has_gm[k]:
            lo, hi = max(0, k - NEIGHBOURS), min(n, k + NEIGHBOURS + 1)
            neigh = [gm[j] for j in range(lo, hi) if j != k and has_gm[j]]
            if len(neigh) >= 2:
                ref = float(np.median(neigh))
                if abs(math.log(gm[k] / ref)) > math.log(OUTLIER_RATIO):
                    reasons.append(AREA_OUTLIER)
        if gm_touches_edge[k]:
            reasons.append(TOUCHES_EDGE)
        out.append(tuple(reasons))
    return out


def doubtful_flags(doubtful: Sequence[dict], file_to_canonical: dict[int, int],
                   n: int) -> list[tuple[str, ...]]:
    """Per canonical slice, the flags of a sidecar's ``doubtful_slices`` list (each ``{"slice": file
    index, "reasons": [...], ...}``); unknown reasons keep their name."""
    out: list[list[str]] = [[] for _ in range(n)]
    for d in doubtful:
        k = file_to_canonical.get(int(d["slice"]))
        if k is None:
            continue
        out[k].extend(DOUBTFUL_PREFIX + str(r) for r in d.get("reasons", ()))
    return [tuple(dict.fromkeys(x)) for x in out]
