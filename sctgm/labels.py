"""Manual GM labels: where a reviewer's corrected mask lives, its sidecar, and which slices it labels.

A corrected mask is the automatic mask with the slices a reviewer saved replaced by their edits; its
JSON sidecar lists those slices (``LabelledSlices``, voxel indices along the file's S-I array axis),
and only those count as labelled for training (:func:`labelled_slices_of`), so an uncorrected
slice is never taught as truth. Where it is saved (:func:`correction_path`):

- image in a BIDS dataset (``<root>/sub-XX/[ses-YY/]<datatype>/<image>`` with
  ``<root>/dataset_description.json``): ``<root>/derivatives/labels/sub-XX/[ses-YY/]<datatype>/
  <image stem>_label-GM_seg.nii.gz``, where ``sct-gm train --bids`` reads manual GM labels;
- elsewhere: beside the image, ``<image stem>_gmseg-manual.nii.gz`` (``train -i IMG -r MASK``).

A manual GM mask already there (either suffix, ``.nii`` or ``.nii.gz``, the one ``train --bids``
reads: :func:`existing_manual_mask`) is the target instead, so a save never writes a second mask
that training would read in place of it. The editor writes only a mask it wrote itself
(:func:`written_by_editor`); one made elsewhere (e.g. spine-generic's full ``_gmseg-manual``,
every slice labelled) opens read-only and :func:`write_correction` refuses it.

The image and the automatic mask are never written. :func:`write_correction` writes the mask, then
its sidecar, each atomically (temporary file + rename): a killed writer leaves the old pair or a new
mask whose new slice the old sidecar does not list yet (that slice is simply not labelled). Callers
serialise concurrent writers of one file (:mod:`sctgm.qc.serve` holds a lock).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .exceptions import OutputError
from .filesystem import file_sha256, read_small_json, same_file
from .io import LoadedImage, like
from .naming import BIDS_MANUAL_GM_SUFFIX, MANUAL_GM_SUFFIX, NIFTI_SUFFIXES, split_nifti_name
from .writing import save_json, save_nifti

#: BIDS derivative suffix of a manual GM mask (spine-generic's name), and the name beside the image.
BIDS_LABEL_SUFFIX = BIDS_MANUAL_GM_SUFFIX
MANUAL_SUFFIX = MANUAL_GM_SUFFIX
LABELS_DERIVATIVE = Path("derivatives") / "labels"
#: Manual GM mask names in a labels derivative, in the order ``train --bids`` prefers them.
MANUAL_GM_SUFFIXES = (BIDS_LABEL_SUFFIX, MANUAL_SUFFIX)
#: Sidecar key: the file's S-I voxel indices a reviewer saved (the only labelled slices).
SLICES_KEY = "LabelledSlices"
_BIDS_SUB = re.compile(r"^sub-[0-9a-zA-Z]+$")
_BIDS_SES = re.compile(r"^ses-[0-9a-zA-Z]+$")


@dataclass(frozen=True)
class CorrectionTarget:
    """Where the correction of ``image`` goes: the mask, its sidecar, and the BIDS root (or None)."""

    mask: Path
    sidecar: Path
    bids_root: Path | None


def bids_root_of(image: str | os.PathLike[str]) -> Path | None:
    """The BIDS dataset holding ``image`` as raw data (``sub-*/[ses-*/]<datatype>/``), or None."""
    p = Path(image).absolute()
    parents = p.parents
    for n_up in (3, 4):  # sub/datatype/file, sub/ses/datatype/file
        if len(parents) <= n_up - 1:
            continue
        root = parents[n_up - 1]
        rel = p.relative_to(root).parts
        if not _BIDS_SUB.match(rel[0]) or (n_up == 4 and not _BIDS_SES.match(rel[1])):
            continue
        if "derivatives" in root.parts or not (root / "dataset_description.json").is_file():
            continue
        return root
    return None


def existing_manual_mask(folder: Path, stem: str, suffixes: tuple[str, ...] = MANUAL_GM_SUFFIXES) -> Path | None:
    """The first ``folder/<stem><suffix><ext>`` that is a file (suffixes, then extensions, in order), or None;
    also finds manual cord masks (:func:`sctgm.batch.bids.find_cord_label`)."""
    for suffix in suffixes:
        for ext in NIFTI_SUFFIXES:
            candidate = folder / f"{stem}{suffix}{ext}"
            if candidate.is_file():
                return candidate
    return None


def correction_path(image: str | os.PathLike[str]) -> CorrectionTarget:
    """Where a reviewer's corrected GM mask of ``image`` is saved: the manual GM mask already there
    (the one training reads), else a new one (see the module doc)."""
    p = Path(image).absolute()
    stem, _ = split_nifti_name(p.name)
    root = bids_root_of(p)
    if root is not None:  # beside the image outside BIDS, _label-GM_seg may be sct-gm's automatic mask
        folder, suffixes = root / LABELS_DERIVATIVE / p.parent.relative_to(root), MANUAL_GM_SUFFIXES
    else:
        folder, suffixes = p.parent, (MANUAL_SUFFIX,)
    mask = existing_manual_mask(folder, stem, suffixes) or folder / f"{stem}{suffixes[0]}.nii.gz"
    return CorrectionTarget(mask, sidecar_of(mask), root)


def sidecar_of(mask: str | os.PathLike[str]) -> Path:
    """``X.nii.gz`` -> ``X.json``."""
    return Path(split_nifti_name(mask)[0] + ".json")


def read_sidecar(mask: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The mask's JSON sidecar, or None when it has none (or an unreadable one, or something other
    than a regular file of bounded size: :func:`sctgm.filesystem.read_small_json`)."""
    obj = read_small_json(sidecar_of(mask))
    return obj if isinstance(obj, dict) else None


def labelled_slices_of(mask: str | os.PathLike[str]) -> tuple[int, ...] | None:
    """The file S-I slice indices a reviewer saved in ``mask`` (from its sidecar), or None when the
    sidecar does not say (a mask made elsewhere: every slice holding GM counts as labelled)."""
    side = read_sidecar(mask)
    if side is None or not isinstance(side.get(SLICES_KEY), list):
        return None
    return tuple(sorted({int(k) for k in side[SLICES_KEY] if isinstance(k, int) and not isinstance(k, bool)}))


def written_by_editor(mask: str | os.PathLike[str]) -> bool:
    """Whether ``mask``'s sidecar says sct-gm's editor wrote it (``GeneratedBy`` sct-gm and a
    ``LabelledSlices`` list); False with no sidecar (a mask made elsewhere labels every slice)."""
    side = read_sidecar(mask)
    if side is None or not isinstance(side.get(SLICES_KEY), list):
        return False
    gen = side.get("GeneratedBy")
    return isinstance(gen, list) and bool(gen) and isinstance(gen[0], dict) and gen[0].get("Name") == "sct-gm"


def _shown(path: Path, root: Path | None) -> str:
    """A path as the sidecar records it: relative to the BIDS root when inside it."""
    if root is not None:
        try:
            return Path(path).absolute().relative_to(root).as_posix()
        except ValueError:
            pass
    return str(Path(path).absolute())


def write_correction(image: LoadedImage, automatic_mask: str | os.PathLike[str], volume: np.ndarray,
                     saved: Mapping[int, int], *, slice_axis: int, target: CorrectionTarget | None = None,
                     tool: str = "sct-gm qc --serve") -> dict[str, Any]:
    """Write ``volume`` (0/1, the image's array shape and orientation) as the corrected GM mask of
    ``image`` and record in its sidecar the slices just ``saved`` ({file slice index: voxels changed
    from the automatic mask}) besides those saved before. Returns the sidecar written.

    Refuses (:class:`~sctgm.exceptions.OutputError`) to write onto the image or the automatic mask,
    or onto a mask or sidecar that sct-gm's editor did not write (:func:`written_by_editor`)."""
    target = target or correction_path(image.path)
    auto = Path(automatic_mask).absolute()
    for p in (target.mask, target.sidecar):
        if any(same_file(p, q) for q in (image.path, auto, sidecar_of(auto))):
            raise OutputError(f"{p}: is the image or the automatic mask; a correction never overwrites them")
    if (target.mask.exists() or target.sidecar.exists()) and not written_by_editor(target.mask):
        made = target.mask if target.mask.exists() else target.sidecar
        raise OutputError(f"{made}: a manual GM label not written by sct-gm's editor; it is left as it is "
                          "(sct-gm never overwrites a file it did not write)")
    vol = np.asarray(volume)
    if vol.shape != image.data.shape[:3] or not np.isin(vol, (0, 1)).all():
        raise OutputError(f"{target.mask}: the corrected mask must be 0/1 of shape {image.data.shape[:3]}")
    before = read_sidecar(target.mask) or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    history = [h for h in before.get("Corrections", []) if isinstance(h, dict)]
    history += [{"Slice": int(k), "Saved": now, "VoxelsChangedFromAutomatic": int(n)} for k, n in sorted(saved.items())]
    slices = sorted(set(labelled_slices_of(target.mask) or ()) | {int(k) for k in saved})
    source = {"Path": _shown(auto, target.bids_root), "SHA256": file_sha256(auto)}
    first = (before.get("GeneratedBy") or [{}])[0]
    generated = {"Name": "sct-gm", "Version": __version__, "Description": f"manual correction ({tool})",
                 "StartedFrom": first.get("StartedFrom", source) if isinstance(first, dict) else source}
    if generated["StartedFrom"] != source:
        generated["LastAutomaticMask"] = source  # a later batch's automatic mask was open in the editor
    sidecar = {
        "Description": "GM mask corrected by a reviewer: the automatic mask with the slices in "
                       f"{SLICES_KEY} (voxel indices along the image's array axis {slice_axis}, S-I) checked and "
                       "corrected; only those slices are labelled",
        "GeneratedBy": [generated],
        "Sources": [_shown(Path(image.path), target.bids_root)],
        "SliceAxis": int(slice_axis),
        SLICES_KEY: slices,
        "Corrections": history,
    }
    try:
        target.mask.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{target.mask.parent}: cannot create the labels folder ({exc.strerror or exc})") from None
    if target.bids_root is not None:
        ensure_labels_description(target.bids_root)
    save_nifti(like(image.nifti, vol.astype(np.uint8), np.uint8), target.mask)
    save_json(sidecar, target.sidecar)  # last: a slice is labelled only once the mask holding it is in place
    return sidecar


def ensure_labels_description(root: Path) -> None:
    """``derivatives/labels/dataset_description.json`` (a BIDS derivative needs one) when absent."""
    path = root / LABELS_DERIVATIVE / "dataset_description.json"
    if path.exists():
        return
    save_json({"Name": "Manual labels", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
               "GeneratedBy": [{"Name": "Manual", "Description": "corrected by reviewers (sct-gm qc --serve)"}]},
              path)

