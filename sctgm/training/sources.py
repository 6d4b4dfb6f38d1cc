"""Where labelled images come from, and how they are split into training and validation.

- ``-i IMG -r GM_MASK`` pairs (:func:`from_pairs`): the subject is the file name's ``sub-<label>``
  when it has one, else the image's name;
- a BIDS dataset (:func:`from_bids`): the images ``segment --bids`` would process (same
  ``--suffix`` / ``--participant-label`` filters, :func:`sctgm.batch.bids.find_images`) that have a
  manual GM mask in ``derivatives/labels`` (``<stem>_label-GM_seg`` or spine-generic's
  ``<stem>_gmseg-manual``); images without one (e.g. unlabelled rescans) are skipped;
- in either, a mask saved by the QC report's editor (``sct-gm qc --serve``) labels only the slices its
  sidecar lists (:func:`sctgm.labels.labelled_slices_of`); any other mask, every slice holding GM;
- the GM segmentation challenge's own layout (:func:`from_gmchallenge`): ``siteN-scNN-image.nii.gz``
  with ``siteN-scNN-mask-r1..r4.nii.gz`` (GM 1, WM 2), merged by majority vote (ties as GM).

Validation (:func:`split`) holds out whole subjects (``val_subjects``, or ``val_fraction`` of them);
with a single subject, the last contiguous block of each image's labelled slices (never
interleaved slices: neighbours are nearly the same image).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..labels import MANUAL_GM_SUFFIXES, existing_manual_mask, labelled_slices_of
from ..naming import split_nifti_name
from .data import LabelledImage, LabelledVolume, TrainingDataError

#: GM label suffixes looked for in derivatives/labels, in order (the QC editor saves into the same one).
GM_LABEL_SUFFIXES = MANUAL_GM_SUFFIXES
_SUB = re.compile(r"(?:^|[_/])sub-([0-9a-zA-Z]+)")
_CHALLENGE = re.compile(r"^(site\d+-sc\d+)-image\.nii(\.gz)?$")


def subject_of(path: Path) -> str:
    m = _SUB.search(path.name)
    return f"sub-{m.group(1)}" if m else split_nifti_name(path.name)[0]


def from_pairs(images: Sequence[str | os.PathLike[str]], masks: Sequence[str | os.PathLike[str]]) -> list[LabelledImage]:
    if len(images) != len(masks):
        raise TrainingDataError(f"{len(images)} image(s) but {len(masks)} GM mask(s): give one GM mask per image",
                                parameter="masks")
    out = []
    for i, r in zip(images, masks):
        ip, rp = Path(i), Path(r)
        for p in (ip, rp):
            if not p.is_file():
                raise TrainingDataError(f"{p}: no such file")
        out.append(LabelledImage(ip, (rp,), subject_of(ip), slices=labelled_slices_of(rp)))
    return out


def gm_label_of(image: object, labels: Path) -> Path | None:
    """The manual GM mask of a :class:`~sctgm.batch.bids.BidsImage` in a labels derivative, or None."""
    folder = labels / image.path.parent.relative_to(image.root)  # type: ignore[attr-defined]
    return existing_manual_mask(folder, image.stem)  # type: ignore[attr-defined]


def from_bids(root: str | os.PathLike[str], *, suffixes: Sequence[str] | None = None,
              participants: Sequence[str] = (), labels: str | os.PathLike[str] | None = None) -> list[LabelledImage]:
    from ..batch.bids import DEFAULT_SUFFIXES, find_images

    base = Path(root).absolute()
    labels_dir = Path(labels) if labels else base / "derivatives" / "labels"
    found = find_images(base, suffixes=tuple(suffixes or DEFAULT_SUFFIXES), participants=participants)
    out = []
    for im in found:
        gm = gm_label_of(im, labels_dir)
        if gm is not None:
            out.append(LabelledImage(im.path, (gm,), f"sub-{im.subject}",  # sessions stay together
                                     slices=labelled_slices_of(gm)))
    if not out:
        raise TrainingDataError(f"{labels_dir}: none of the {len(found)} selected images has a manual GM mask "
                                f"(<name>{' or <name>'.join(GM_LABEL_SUFFIXES)}.nii.gz)")
    return out


def from_gmchallenge(folder: str | os.PathLike[str]) -> list[LabelledImage]:
    base = Path(folder)
    if not base.is_dir():
        raise TrainingDataError(f"{base}: no such folder (expected the GM challenge's siteN-scNN-image.nii.gz files)")
    out = []
    for img in sorted(base.rglob("site*-image.nii*")):
        m = _CHALLENGE.match(img.name)
        if not m:
            continue
        ext = ".nii.gz" if img.name.endswith(".gz") else ".nii"
        masks = tuple(p for r in range(1, 5) if (p := img.parent / f"{m.group(1)}-mask-r{r}{ext}").is_file())
        if masks:
            out.append(LabelledImage(img, masks, m.group(1), challenge=True))
    if not out:
        raise TrainingDataError(f"{base}: no siteN-scNN-image.nii.gz with siteN-scNN-mask-rN.nii.gz masks")
    return out


@dataclass
class Split:
    """Training and validation volumes (a volume may be cut in two: its ``slices`` say which)."""

    train: list[LabelledVolume]
    val: list[LabelledVolume]
    how: str  # for the log and model.json


def _subset(v: LabelledVolume, idx: Sequence[int]) -> LabelledVolume:
    ix = list(idx)
    return replace(v, slices=[v.slices[i] for i in ix], inputs=v.inputs[ix], targets=v.targets[ix],
                   train_inputs=v.train_inputs[ix], train_targets=v.train_targets[ix])


def split(volumes: Sequence[LabelledVolume], *, val_subjects: Sequence[str] = (), val_fraction: float = 0.2,
          seed: int = 0) -> Split:
    """Hold out ``val_subjects`` (labels with or without ``sub-``), else ``val_fraction`` of the
    subjects (at least one, chosen by ``seed``), else (one subject) the last ``val_fraction`` of each
    image's labelled slices as one contiguous block. ``val_fraction`` 0: no validation."""
    subjects = sorted({v.subject for v in volumes})
    if val_subjects:
        want = {s if s in subjects else f"sub-{s.removeprefix('sub-')}" for s in val_subjects}
        unknown = sorted(w for w in want if w not in subjects)
        if unknown:
            raise TrainingDataError(f"validation subject(s) {', '.join(unknown)}: no such subject among {', '.join(subjects)}",
                                    parameter="val")
        out = Split([v for v in volumes if v.subject not in want], [v for v in volumes if v.subject in want],
                    f"subjects {', '.join(sorted(want))}")
    elif val_fraction <= 0:
        return Split(list(volumes), [], "none")
    elif len(subjects) >= 2:
        n = max(1, round(val_fraction * len(subjects)))
        order = np.random.default_rng(seed).permutation(len(subjects))
        held = {subjects[i] for i in order[:n]}
        out = Split([v for v in volumes if v.subject not in held], [v for v in volumes if v.subject in held],
                    f"subjects {', '.join(sorted(held))}")
    else:
        train, val = [], []
        for v in volumes:
            n = len(v.slices)
            n_val = min(n - 1, math.ceil(val_fraction * n)) if n > 1 else 0
            if n - n_val:
                train.append(_subset(v, range(n - n_val)))
            if n_val:
                val.append(_subset(v, range(n - n_val, n)))
        out = Split(train, val, f"last {val_fraction:.0%} of the labelled slices of {subjects[0]} (one block)")
    if not out.val:
        raise TrainingDataError(f"the validation set is empty ({len(subjects)} subject(s), "
                                f"{sum(len(v.slices) for v in volumes)} labelled slice(s)); label more slices, "
                                f"name validation subjects, or set the validation fraction to 0 to train without "
                                f"validation", parameter="val_fraction")
    if not out.train:
        raise TrainingDataError("no training data is left after holding out the validation set; name fewer "
                                "validation subjects or give a smaller validation fraction", parameter="val_fraction")
    return out
