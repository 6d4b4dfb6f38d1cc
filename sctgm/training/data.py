"""Labelled images -> training and validation windows, cut by segmentation's own code.

A labelled image is an image and its manual GM mask (or, in the GM challenge layout, several raters'
masks merged by majority vote: :func:`challenge_vote`). Its windows come from
:mod:`sctgm.segment.preprocess` exactly as ``segment`` builds its network inputs (canonical view,
fine grid of the model's ``spacing_mm``, windows of its ``crop_px``, one standardisation over the
stack of windows of the whole volume), so a trained model sees in use what it saw in training:

- **network windows** (``crop_px``, e.g. 200x200 fine pixels) centred on the GM centroid of each
  slice (slices without GM take the nearest slice's centre, as segment's cord centroids do);
  :meth:`LabelledVolume.network_inputs` is, pixel for pixel, what segment feeds the network for
  those window origins (tests/training/test_data.py intercepts the engine to prove it);
- **training windows**, larger by ``margin_px`` on each side (room for the shift, rotation and scale
  of :mod:`sctgm.training.augment`), centred the same way, sampled by the same
  :func:`~sctgm.segment.preprocess.sample` and standardised with the *same* statistics as the
  network windows (the fine-grid samples of a pixel do not depend on the window that holds it).

A *labelled slice* is an axial slice (canonical third axis) in which the GM mask has at least
``MIN_LABEL_VOXELS`` voxel (> 0.5). Slices without GM are taken as not labelled, not as "no GM
here": a mask may label a subset of slices (e.g. the slices corrected after QC), and the
network is never taught that a slice without a label has no GM.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..exceptions import InputImageError
from ..io import LoadedImage, load_image, read_nifti
from ..recipe import Preprocessing
from ..segment import placement
from ..segment.grid import Window
from ..segment.preprocess import (PreparedVolume, Standardisation, canonical_mask, prepare, sample, sample_mask,
                                  windows_at)

log = logging.getLogger(__name__)

#: A slice is labelled when its GM mask has at least this many voxels.
MIN_LABEL_VOXELS = 1

#: Training windows exceed the network window by this many fine pixels on each side (0.25 mm
#: pixels: 16 mm), enough for the default shift (16 px), rotation (20 deg) and scale (1.15) of a
#: 200-pixel crop without reaching the window's edge.
TRAIN_MARGIN_PX = 64


class TrainingDataError(InputImageError):
    """A labelled image or mask that cannot be trained on (the message names the file)."""


@dataclass(frozen=True)
class LabelledImage:
    """One image to train on: its GM mask(s) and the subject it belongs to (validation holds out
    whole subjects). ``challenge``: the masks are raters' label maps of the GM challenge layout
    (GM 1, WM 2), merged by :func:`challenge_vote`; else exactly one binary GM mask."""

    image: Path
    masks: tuple[Path, ...]
    subject: str
    challenge: bool = False
    #: The file's S-I voxel indices a reviewer saved (the mask's sidecar, :mod:`sctgm.labels`): only
    #: those are labelled; None: every slice holding GM is.
    slices: tuple[int, ...] | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.image, *self.masks)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _raw_mask_values(path: Path) -> np.ndarray:
    """The mask's voxel values as stored (with scaling), NaN kept: load_image replaces NaN by 0, and a
    NaN in a mask is a broken mask, not background."""
    try:
        img = read_nifti(path)  # the header checked first: a mask claiming gigabytes is refused unread
    except InputImageError as exc:
        raise TrainingDataError(str(exc)) from None
    try:
        return np.asarray(img.dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises several types on damaged files
        raise TrainingDataError(f"{path}: not a readable NIfTI mask ({' '.join(str(exc).split())})") from None


def check_binary_mask(path: Path, values: np.ndarray) -> None:
    """Refuse masks with NaN, negative values or values above 1 (labels), all-zero or all-one masks.
    A soft mask (values strictly between 0 and 1, e.g. a corrected mask resampled with linear
    interpolation) is binarised at 0.5 like every mask sct-gm reads (metrics, QC), with one warning
    naming the file (docs/train.md, "Soft masks")."""
    if np.isnan(values).any():
        raise TrainingDataError(f"{path}: the GM mask holds NaN values; expected 0 (background) and 1 (GM)")
    if values.min() < 0 or values.max() > 1:
        raise TrainingDataError(f"{path}: the GM mask holds values from {values.min():g} to {values.max():g}; "
                                f"expected a binary mask (0 background, 1 GM), not a label map")
    soft = int(np.count_nonzero((values > 0) & (values < 1)))
    if soft:
        log.warning("%s: a soft GM mask (%d voxels strictly between 0 and 1); binarised at 0.5 (GM: > 0.5)",
                    path, soft, extra={"parameter": "masks"})
    gm = values > 0.5
    if not gm.any():
        raise TrainingDataError(f"{path}: the GM mask is empty (no voxel > 0.5): nothing to learn from")
    if gm.all():
        raise TrainingDataError(f"{path}: the GM mask is 1 everywhere: not a GM segmentation")


def challenge_vote(paths: Sequence[Path]) -> np.ndarray:
    """The GM challenge's raters' masks (label 1 GM, 2 WM, 0 background) merged by majority vote:
    a voxel is GM when at least half the raters labelled it GM (ties count as GM), float32 0/1."""
    votes = None
    for p in paths:
        v = _raw_mask_values(p)
        if np.isnan(v).any() or v.min() < 0 or v.max() > 2 or not np.allclose(v, np.round(v)):
            raise TrainingDataError(f"{p}: expected the GM challenge's labels 0 (background), 1 (GM), 2 (WM)")
        gm = (np.round(v) == 1).astype(np.int32)
        if votes is not None and gm.shape != votes.shape:
            raise TrainingDataError(f"{p}: shape {gm.shape} differs from the other raters' masks {votes.shape}")
        votes = gm if votes is None else votes + gm
    if votes is None:
        raise TrainingDataError("no rater mask given")
    return (2 * votes >= len(paths)).astype(np.float32)


def load_labelled(item: LabelledImage) -> tuple[LoadedImage, LoadedImage]:
    """The image and its binary GM mask (validated: same grid is checked in :func:`labelled_volume`)."""
    image = load_image(item.image)
    if item.challenge:
        data = challenge_vote(item.masks)
        check_binary_mask(item.masks[0], data)
    else:
        if len(item.masks) != 1:
            raise TrainingDataError(f"{item.image}: {len(item.masks)} masks given; expected one GM mask")
        check_binary_mask(item.masks[0], _raw_mask_values(item.masks[0]))
        data = None
    mask = load_image(item.masks[0], what="GM mask", allow_constant=True)
    if data is not None:
        if data.shape != mask.data.shape:
            raise TrainingDataError(f"{item.masks[0]}: shape {data.shape} differs from the image's")
        mask = replace(mask, data=data)
    return image, mask


@dataclass
class LabelledVolume:
    """The labelled slices of one image, cut into windows. ``slices``: canonical slice indices;
    ``windows`` / ``train_windows``: their network / training windows; ``standardisation``: the
    statistics of the network windows of every slice (what segment computes for these origins);
    ``network_raw`` etc.: float32 (N, H, W) stacks for the labelled slices only."""

    name: str
    subject: str
    prepared: PreparedVolume
    gm: np.ndarray  # the canonical GM mask (bool), for validation metrics
    slices: list[int]
    windows: list[Window]  # network windows of every slice (index = canonical slice)
    train_windows: list[Window]  # training windows of every slice
    standardisation: Standardisation
    inputs: np.ndarray  # standardised network windows of the labelled slices
    targets: np.ndarray  # GM in [0, 1] on the same pixels
    train_inputs: np.ndarray  # standardised training windows of the labelled slices
    train_targets: np.ndarray

    def network_inputs(self) -> np.ndarray:
        """Standardised network windows of *every* slice: segment's network input for these origins."""
        raw = sample(self.prepared, self.windows)
        return self.standardisation(raw)


def gm_centres(gm_canonical: np.ndarray, prepared: PreparedVolume) -> np.ndarray:
    """Per-slice fine-grid GM centroids (slices without GM take the nearest labelled slice's)."""
    centres = placement.centres_from_mask(gm_canonical, prepared.grid)
    if centres is None:
        raise TrainingDataError(f"{prepared.image.path}: no GM in the mask")
    return centres


def labelled_slices(gm_canonical: np.ndarray) -> list[int]:
    """Canonical slices whose GM mask has at least :data:`MIN_LABEL_VOXELS` voxels."""
    counts = gm_canonical.reshape(-1, gm_canonical.shape[2]).sum(axis=0)
    return [int(k) for k in np.flatnonzero(counts >= MIN_LABEL_VOXELS)]


def reviewed_slices(vol: PreparedVolume, file_slices: Sequence[int], mask_path: Path) -> list[int]:
    """The canonical slices of the file S-I indices ``file_slices`` (a reviewer's saved slices)."""
    from ..geometry import file_slice_index

    wanted = {int(k) for k in file_slices}
    out = [k for k in range(vol.n_slices) if file_slice_index(vol.reorientation, k) in wanted]
    if len(out) != len(wanted):
        raise TrainingDataError(f"{mask_path}: its sidecar lists slices {sorted(wanted)}, but the image has slices "
                                f"0-{vol.n_slices - 1} along its S-I axis")
    return out


def labelled_volume(image: LoadedImage, mask: LoadedImage, prep: Preprocessing, *, name: str = "",
                    subject: str = "", margin_px: int = TRAIN_MARGIN_PX,
                    centres_fine: np.ndarray | None = None,
                    file_slices: Sequence[int] | None = None) -> LabelledVolume:
    """Cut the labelled slices of ``image`` into network and training windows (see the module doc).
    ``centres_fine``: window centres per slice (default: the GM centroids); ``file_slices``: the
    labelled slices, as voxel indices along the file's S-I axis (default: every slice holding GM);
    raises :class:`TrainingDataError` when the mask is on another grid or labels no slice."""
    from ..exceptions import GridMismatchError

    vol = prepare(image, prep)
    try:
        gm = canonical_mask(mask, vol)
    except GridMismatchError as exc:
        raise TrainingDataError(f"{mask.path}: not on the grid of {image.path} ({exc})") from None
    slices = labelled_slices(gm) if file_slices is None else reviewed_slices(vol, file_slices, mask.path)
    if not slices:
        why = "no slice holds GM" if file_slices is None else "its sidecar lists no reviewed slice (LabelledSlices)"
        raise TrainingDataError(f"{mask.path}: no labelled slice ({why})")
    centres = gm_centres(gm, vol) if centres_fine is None else np.asarray(centres_fine, dtype=np.float64)
    windows = windows_at(vol, centres)
    big = (min(vol.window_px[0] + 2 * margin_px, vol.grid.fine_shape[0]),
           min(vol.window_px[1] + 2 * margin_px, vol.grid.fine_shape[1]))
    train_windows = windows_at(replace(vol, window_px=big), centres)
    raw = sample(vol, windows)
    std = Standardisation.of(raw)
    pick = [windows[k] for k in slices]
    tpick = [train_windows[k] for k in slices]
    return LabelledVolume(
        name=name or str(image.path), subject=subject or str(image.path), prepared=vol, gm=gm, slices=slices,
        windows=windows, train_windows=train_windows, standardisation=std,
        inputs=std(raw[slices]), targets=sample_mask(vol, gm, pick, slices),
        train_inputs=std(sample(vol, tpick, slices)), train_targets=sample_mask(vol, gm, tpick, slices))


def read_labelled(item: LabelledImage, prep: Preprocessing, *, margin_px: int = TRAIN_MARGIN_PX) -> LabelledVolume:
    """:func:`load_labelled` then :func:`labelled_volume`."""
    image, mask = load_labelled(item)
    return labelled_volume(image, mask, prep, name=str(item.image), subject=item.subject, margin_px=margin_px,
                           file_slices=item.slices)


def slice_set(volumes: Sequence[LabelledVolume], *, training: bool, name: str = ""):  # -> SliceSet
    """The volumes' slices as one :class:`~sctgm.training.loop.SliceSet` (training windows when
    ``training``, else the network windows validation predicts whole)."""
    from .loop import SliceSet

    images: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for v in volumes:
        a, t = (v.train_inputs, v.train_targets) if training else (v.inputs, v.targets)
        images += list(a)
        targets += list(t)
    return SliceSet(name or ",".join(sorted({v.subject for v in volumes})), images, targets)
