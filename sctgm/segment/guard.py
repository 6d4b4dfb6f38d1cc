"""The anatomical guard: GM lies inside the cord, and its position and area follow the neighbouring
slices. Pure functions on canonical masks (LAS, axial slices along axis 2), no network.

:func:`guard` checks each axial slice of a binary GM mask and returns the corrected mask with the
slices it doubts (:class:`SliceDoubt`, canonical slice index, reasons, what was done):

- ``outside_cord``: a GM component lies outside the cord. With a cord mask, "outside" means fewer
  than half of its voxels inside the (1 mm dilated) cord; without one, its centroid lies farther than
  :data:`JUMP_MM` (plus the centreline's own drift over that distance) from where the neighbouring
  slices put the GM (the median of the centroids of up to :data:`NEIGHBOURS` GM slices each side).
  Such components are removed (``re-placed`` when GM is left on the slice).
- ``area_jump``: the slice's GM area differs from its neighbours' median by more than a factor
  :data:`AREA_RATIO` (or the slice lost all its GM while its neighbours have some).
- ``networks_disagree``: an ``alternative`` mask (another network) overlaps this slice's GM with a
  Dice under :data:`DISAGREE_DICE`.

Where a slice is left empty or its area jumps, the alternative's GM on that slice (its components
inside the cord) replaces it if its own area agrees with the neighbours (``replaced``); otherwise an
emptied slice stays empty (``dropped``) and a jumping one is kept (``kept``). Every doubted slice is
reported, so a reviewer starts with them (sidecar, QC report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: GM farther than this (mm) from where its neighbours put it is outside the cord (half a cord's width).
JUMP_MM = 5.0
#: The cord's centreline may drift by this much (mm per mm along the cord) between slices.
DRIFT_PER_MM = 0.3
#: A slice's GM area outside [median / ratio, median x ratio] of its neighbours jumps.
AREA_RATIO = 2.5
#: Neighbouring GM slices looked at on each side.
NEIGHBOURS = 2
#: Below this slice Dice between the networks, the slice is doubtful.
DISAGREE_DICE = 0.7
#: Slices whose neighbours hold fewer GM voxels than this are not judged on area (cord ends).
MIN_NEIGHBOUR_VOXELS = 10

OUTSIDE_CORD = "outside_cord"
AREA_JUMP = "area_jump"
NETWORKS_DISAGREE = "networks_disagree"
REASON_TEXT = {
    OUTSIDE_CORD: "GM outside the cord (removed)",
    AREA_JUMP: "GM area far from its neighbours'",
    NETWORKS_DISAGREE: "the networks disagree",
}


@dataclass(frozen=True)
class SliceDoubt:
    """One doubtful slice: canonical index, reasons, and what the guard did (``kept``,
    ``re-placed``: outside GM removed; ``replaced``: the alternative's GM used; ``dropped``: emptied).
    A combination (:mod:`.ensemble`) adds the networks' slice Dice and ``network``: whose GM the slice
    holds (0 the first network, 1 the second; None: the combination's, or none)."""

    slice: int
    reasons: tuple[str, ...]
    action: str
    dice_between_networks: float | None = None
    network: int | None = None


_EIGHT = np.ones((3, 3), dtype=bool)


def _centroid_mm(sl: np.ndarray, zooms_mm: Sequence[float]) -> np.ndarray:
    return np.asarray(ndimage.center_of_mass(sl)) * np.asarray(zooms_mm[:2], dtype=float)


def _neighbours(k: int, has: np.ndarray) -> list[int]:
    below = [j for j in range(k - 1, -1, -1) if has[j]][:NEIGHBOURS]
    above = [j for j in range(k + 1, has.size) if has[j]][:NEIGHBOURS]
    return below + above


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / s


def _inside(sl: np.ndarray, zooms_mm: Sequence[float], cord_sl: np.ndarray | None,
            expected_mm: np.ndarray | None, tolerance_mm: float) -> tuple[np.ndarray, bool]:
    """``sl`` without its components outside the cord; and whether any was removed."""
    labels, n = ndimage.label(sl, structure=_EIGHT)
    if n == 0:
        return sl, False
    keep = np.zeros(n + 1, dtype=bool)
    for c in range(1, n + 1):
        comp = labels == c
        if cord_sl is not None:
            keep[c] = (comp & cord_sl).sum() >= 0.5 * comp.sum()
        elif expected_mm is not None:
            keep[c] = float(np.linalg.norm(_centroid_mm(comp, zooms_mm) - expected_mm)) <= tolerance_mm
        else:
            keep[c] = True
    out = keep[labels]
    return out, bool((~keep[1:]).any())


def guard(gm: np.ndarray, zooms_mm: Sequence[float], *, cord: np.ndarray | None = None,
          alternative: np.ndarray | None = None) -> tuple[np.ndarray, list[SliceDoubt]]:
    """Check a canonical binary GM mask slice by slice (see the module docstring). ``cord``: a
    canonical cord mask (slices with less than 1 mm2 of cord are judged as if it were absent);
    ``alternative``: another network's canonical GM mask, consulted where a slice is doubtful.
    Returns the corrected mask (bool) and the doubtful slices, by canonical index."""
    gm = np.asarray(gm) > 0
    out = gm.copy()
    nz = gm.shape[2]
    z_mm = float(zooms_mm[2])
    px_mm2 = float(zooms_mm[0]) * float(zooms_mm[1])
    cord_ok = None
    if cord is not None:
        cord = np.asarray(cord) > 0
        grow = max(1, int(round(1.0 / min(float(zooms_mm[0]), float(zooms_mm[1])))))
        cord_ok = [cord[:, :, k].sum() * px_mm2 >= 1.0 for k in range(nz)]
        cord = np.stack([ndimage.binary_dilation(cord[:, :, k], _EIGHT, iterations=grow) for k in range(nz)],
                        axis=2)
    alt = None if alternative is None else np.asarray(alternative) > 0

    # 1. the position rule, judged against the neighbours of the network's own mask
    has = gm.reshape(-1, nz).sum(axis=0) >= MIN_NEIGHBOUR_VOXELS
    cent = [(_centroid_mm(gm[:, :, k], zooms_mm) if has[k] else None) for k in range(nz)]
    reasons: dict[int, list[str]] = {}
    actions: dict[int, str] = {}

    def expected(k: int, mask_has: np.ndarray) -> tuple[np.ndarray | None, float]:
        nb = _neighbours(k, mask_has)
        if len(nb) < 2:
            return None, 0.0
        return _expected_position(k, nb, [cent[j] for j in nb], z_mm)  # type: ignore[misc]

    for k in range(nz):
        if not gm[:, :, k].any():
            continue
        cord_sl = cord[:, :, k] if cord is not None and cord_ok[k] else None  # type: ignore[index]
        exp, tol = expected(k, has)
        kept, removed = _inside(gm[:, :, k], zooms_mm, cord_sl, exp, tol)
        if removed:
            out[:, :, k] = kept
            reasons.setdefault(k, []).append(OUTSIDE_CORD)
            actions[k] = "re-placed" if kept.any() else "dropped"

    # 2. the area rule, on the cleaned mask, against the cleaned neighbours
    area = out.reshape(-1, nz).sum(axis=0).astype(float)
    has_out = area >= MIN_NEIGHBOUR_VOXELS
    for k in range(nz):
        nb = _neighbours(k, has_out)
        if len(nb) < 2 or not (area[k] > 0 or k in reasons or _between(k, has_out)):
            continue
        ref = float(np.median(area[nb]))
        ratio_ok = ref > 0 and area[k] > 0 and 1.0 / AREA_RATIO <= area[k] / ref <= AREA_RATIO
        if ratio_ok:
            continue
        reasons.setdefault(k, []).append(AREA_JUMP)
        actions.setdefault(k, "kept")
        if alt is not None:
            cord_sl = cord[:, :, k] if cord is not None and cord_ok[k] else None  # type: ignore[index]
            exp, tol = expected(k, has)
            cand, _ = _inside(alt[:, :, k], zooms_mm, cord_sl, exp, tol)
            a = float(cand.sum())
            if a > 0 and 1.0 / AREA_RATIO <= a / ref <= AREA_RATIO:
                out[:, :, k] = cand
                actions[k] = "replaced"

    # 3. agreement between the networks, on what is left
    doubts: list[SliceDoubt] = []
    for k in range(nz):
        d = None
        if alt is not None and (out[:, :, k].any() or alt[:, :, k].any()):
            d = _dice(gm[:, :, k], alt[:, :, k])
            if d < DISAGREE_DICE and (gm[:, :, k].sum() + alt[:, :, k].sum()) >= 2 * MIN_NEIGHBOUR_VOXELS:
                reasons.setdefault(k, []).append(NETWORKS_DISAGREE)
                actions.setdefault(k, "kept")
        if k in reasons:
            doubts.append(SliceDoubt(k, tuple(reasons[k]), actions[k],
                                     None if d is None else round(d, 3)))
    return out, doubts


def neighbour_consistency(candidate: np.ndarray, k: int, reference: np.ndarray, zooms_mm: Sequence[float], *,
                          skip: Sequence[int] = ()) -> float:
    """How far ``candidate`` (a 2D GM mask for slice ``k``) lies from what the neighbouring slices of
    ``reference`` (a 3D canonical GM mask) lead one to expect: ``|log(area / their median area)| /
    log(AREA_RATIO)`` plus the distance of its centroid from their median centroid over the position
    rule's tolerance (JUMP_MM + drift): each term reaches 1 where :func:`guard` starts doubting. The
    neighbours are up to :data:`NEIGHBOURS` slices each side holding at least
    :data:`MIN_NEIGHBOUR_VOXELS` voxels, not in ``skip``. Returns 0.0 when fewer than two neighbours
    can be judged (nothing to compare with); for an empty candidate, ``inf`` between GM slices and 1.0
    (the guard's doubt level) where the GM ends."""
    ref = np.asarray(reference) > 0
    nz = ref.shape[2]
    area = ref.reshape(-1, nz).sum(axis=0)
    has = area >= MIN_NEIGHBOUR_VOXELS
    has[k] = False
    for j in skip:
        has[j] = False
    nb = _neighbours(k, has)
    if len(nb) < 2:
        return 0.0
    cand = np.asarray(candidate) > 0
    n = int(cand.sum())
    if n == 0:  # a gap between GM slices is not anatomy; an end of the GM (cord end, cut) may be
        return float("inf") if _between(k, has) else 1.0
    return _score(n, _centroid_mm(cand, zooms_mm), k, nb, area, lambda j: _centroid_mm(ref[:, :, j], zooms_mm),
                  zooms_mm)


def _score(n: int, centre_mm: np.ndarray, k: int, nb: Sequence[int], area: np.ndarray,
           centroid_of: Callable[[int], np.ndarray], zooms_mm: Sequence[float]) -> float:
    """:func:`neighbour_consistency` of a slice ``k`` of ``n`` voxels centred at ``centre_mm``, against
    the neighbouring slices ``nb`` (their areas ``area[nb]``, their centroids ``centroid_of(j)``)."""
    ref_centre, tolerance_mm = _expected_position(k, nb, [centroid_of(j) for j in nb], float(zooms_mm[2]))
    off_mm = float(np.linalg.norm(centre_mm - ref_centre))
    return abs(float(np.log(n / float(np.median(area[nb]))))) / float(np.log(AREA_RATIO)) + off_mm / tolerance_mm


def doubt_along_cord(gm: np.ndarray, zooms_mm: Sequence[float], slices: Sequence[int]) -> float:
    """How far a whole canonical GM mask is from following the cord: the sum over ``slices`` (those
    where GM is expected, e.g. where either of two networks found it) of :func:`neighbour_consistency` of each slice against the mask's own neighbouring slices,
    each capped at 1 (the level where :func:`guard` starts doubting), so a slice counts between 0 (as
    its neighbours lead one to expect) and 1 (doubtful), however far it strays. A slice holding fewer
    than :data:`MIN_NEIGHBOUR_VOXELS` voxels counts 1: given the slices where GM is expected (e.g.
    where another network found it), a mask that lost its GM there is doubtful, not "without
    neighbours to judge". Each slice's area and centroid are computed once (linear in the slices)."""
    gm = np.asarray(gm) > 0
    nz = gm.shape[2]
    area = gm.reshape(-1, nz).sum(axis=0)
    has = area >= MIN_NEIGHBOUR_VOXELS
    centroids: dict[int, np.ndarray] = {}

    def centroid_of(j: int) -> np.ndarray:
        if j not in centroids:
            centroids[j] = _centroid_mm(gm[:, :, j], zooms_mm)
        return centroids[j]

    total = 0.0
    for k in slices:
        if area[k] < MIN_NEIGHBOUR_VOXELS:
            total += 1.0
            continue
        nb = _neighbours(k, has)  # never k itself
        if len(nb) >= 2:
            total += min(1.0, _score(int(area[k]), centroid_of(k), k, nb, area, centroid_of, zooms_mm))
    return total


def _expected_position(k: int, nb: Sequence[int], centroids_mm: Sequence[np.ndarray],
                       z_mm: float) -> tuple[np.ndarray, float]:
    """Where the neighbouring slices ``nb`` (their GM centroids) put slice ``k``'s GM, and how far from
    it GM may lie: :data:`JUMP_MM` plus the centreline's drift over the farthest neighbour."""
    far_mm = max(abs(j - k) for j in nb) * z_mm
    return np.median(np.stack(list(centroids_mm)), axis=0), JUMP_MM + DRIFT_PER_MM * far_mm


def _between(k: int, has: np.ndarray) -> bool:
    """Slice ``k`` lies between slices that have GM."""
    return bool(has[:k].any() and has[k + 1:].any())
