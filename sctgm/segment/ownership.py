"""Which existing files are sct-gm's outputs, and what a run may replace: the sidecars sct-gm wrote
(:func:`read_sidecar`), a reviewer's corrections (:func:`is_correction`, never replaced), an output's
ownership by the sha256 its sidecar records (:func:`written_by_sctgm`), and the check of a set's
locations before any work (:func:`check_outputs`). Used by the write path,
:mod:`sctgm.segment.outputs`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import OutputError
from ..filesystem import file_sha256, read_small_json, same_file
from ..io import read_nifti
from ..labels import SLICES_KEY
from ..naming import NIFTI_KEYS, OutputSet, is_manual_label_path, split_nifti_name
from ..nifti_header import nibabel_messages
from ..writing import check_writable

log = logging.getLogger(__name__)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path`` when it is one sct-gm wrote (any version's schema), else None; read by
    :func:`sctgm.filesystem.read_small_json` (regular files of bounded size only, never blocking)."""
    data = read_small_json(path)
    if not isinstance(data, dict):
        return None
    gen = data.get("GeneratedBy")
    block = gen[0] if isinstance(gen, list) and gen else gen  # sct-gm 0.1: a single record
    return data if isinstance(block, dict) and block.get("Name") == "sct-gm" else None


def is_correction(data: dict[str, Any] | None) -> bool:
    """True for the sidecar of a reviewer's corrected mask (the QC editor's: it lists ``LabelledSlices``,
    :mod:`sctgm.labels`): human work, never a segmentation output, even though sct-gm wrote it."""
    return isinstance(data, dict) and SLICES_KEY in data


def written_by_sctgm(outputs: OutputSet, key: str) -> bool:
    """True when output ``key`` of the set is sct-gm's: the sidecar describing it is an sct-gm
    segmentation sidecar (not a reviewer's correction, :func:`is_correction`) and, where that sidecar
    records sha256 values (``Sha256``), the file is one it records for ``key`` or is damaged (not a
    readable NIfTI image: nobody's work to keep). A readable image with other bytes was edited or
    replaced since, or put there by someone else, and is not sct-gm's: a mask corrected in place, a
    manual ``a_gmseg.nii.gz`` beside the ``a_gmseg.nii`` of an earlier run (they share the sidecar name
    ``a_gmseg.json``), a user's ``a_wmseg.nii.gz`` where an earlier run wrote no WM mask. The file the
    sidecar's run replaced (``Sha256.Replaces``) counts as sct-gm's too: a run killed between renaming
    its sidecar and its masks into place leaves the previous mask under the new sidecar. What exists
    and is not a regular file (a FIFO) is nobody's output and is never opened."""
    data = read_sidecar(outputs[outputs.sidecar_of(key)])
    if data is None or is_correction(data):
        return False
    if key not in outputs.kinds:
        return True  # the sidecar itself
    known = recorded_hashes(data, key)
    if known is None:
        return True  # an older sct-gm's sidecar, which recorded no sha256
    path = outputs[key]
    if not path.is_file():
        return not path.exists()  # a FIFO or a device: refused; a dangling link holds nothing to keep
    try:
        if file_sha256(path) in known:
            return True
    except OSError:
        return True  # unreadable: damaged (check_writable refuses what cannot be replaced)
    return not _readable_nifti(path)


def recorded_hashes(data: dict[str, Any], key: str) -> set[str] | None:
    """The sha256 values a sidecar records for output ``key`` (``Sha256.Outputs`` and ``Replaces``);
    None when it records none at all (an older sct-gm's)."""
    hashes = data.get("Sha256")
    if not isinstance(hashes, dict):
        return None
    blocks = (hashes.get("Outputs"), hashes.get("Replaces"))
    return {b[key] for b in blocks if isinstance(b, dict) and isinstance(b.get(key), str)}


def intact_outputs(outputs: OutputSet, kinds: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """For each output of ``kinds`` that is a file whose sha256 its sct-gm sidecar records: (that
    sha256, the sha256 that sidecar records as replaced by it, if any)."""
    out: dict[str, tuple[str, str | None]] = {}
    for k in kinds:
        data = read_sidecar(outputs[outputs.sidecar_of(k)])
        known = recorded_hashes(data, k) if data is not None and not is_correction(data) else None
        if known and outputs[k].is_file():
            sha = file_sha256(outputs[k])
            if sha in known:
                replaced = data["Sha256"].get("Replaces") if data is not None else None
                out[k] = (sha, replaced.get(k) if isinstance(replaced, dict) else None)
    return out


def stale_outputs(outputs: OutputSet, inputs: Sequence[Path]) -> list[str]:
    """The keys of the sct-gm outputs an earlier run left under the names this set does not write
    (``outputs.others``: a WM mask or soft map of a run with ``--wm`` / ``--prob``): they describe the
    GM mask this set replaces. Stricter than :func:`written_by_sctgm`, since nobody asked to replace
    them: the sct-gm sidecar describing the file must record its sha256 for that output, and the
    file must have those bytes; nothing unreadable, dangling, recorded by an older sct-gm without
    hashes, or an input of this command. In BIDS, an sct-gm sidecar whose file is gone (a run killed
    between the two removals) is stale too."""
    stale: list[str] = []
    for k in NIFTI_KEYS:
        path = outputs.others.get(k)
        if path is None:
            continue
        own = outputs.others.get(f"{k}_sidecar")
        data = read_sidecar(own if own is not None else outputs[outputs.sidecar_of(k)])
        if data is None or is_correction(data) or any(same_file(path, src) for src in inputs):
            continue
        if not (path.exists() or path.is_symlink()):
            if own is not None and own.is_file() and not any(same_file(own, src) for src in inputs):
                stale.append(k)  # its file already removed
            continue
        try:
            if path.is_file() and file_sha256(path) in (recorded_hashes(data, k) or set()):
                stale.append(k)
        except OSError:
            continue  # unreadable: not known to be sct-gm's
    return stale


def remove_stale(outputs: OutputSet, stale: Sequence[str]) -> None:
    """Remove the earlier run's outputs (:func:`stale_outputs`), then in BIDS their sidecars; what
    cannot be removed is said in a warning."""
    for k in stale:
        for path in (outputs.others[k], outputs.others.get(f"{k}_sidecar")):
            if path is None or not (path.exists() or path.is_symlink()):
                continue
            try:
                path.unlink()
            except OSError as exc:
                log.warning("%s: an earlier run's output that describes the previous GM mask could not be "
                            "removed (%s)", path, exc.strerror or exc)
                break  # its sidecar stays with it
            if path == outputs.others[k]:
                log.warning("%s: removed, an earlier run's output that described the previous GM mask "
                            "(this run writes no %s)", path, "WM mask" if k == "wm" else "probability map")


def _readable_nifti(path: Path) -> bool:
    """True when ``path`` reads whole as a NIfTI image (header, and every voxel: gzip CRC included)."""
    try:
        img = read_nifti(path)  # its header checked first: reads bounded by what it announces
        with nibabel_messages():  # nibabel's notices about a damaged file stay silent
            np.asanyarray(img.dataobj)
    except Exception:  # noqa: BLE001 - any failure to read means damaged
        return False
    return True


def check_outputs(outputs: OutputSet, inputs: Sequence[str | Path], *, overwrite: bool = False) -> None:
    """Fail before any work when an output of the set cannot or must not be written: its folder is
    missing or not writable, it is a folder, it is one of ``inputs`` or a reviewer's correction
    (:func:`is_correction`; never, even with ``overwrite``), or, unless ``overwrite``: it has a
    manual-label name (:func:`~sctgm.naming.is_manual_label_path`, which training reads as truth) or it
    exists and sct-gm did not write it (:func:`written_by_sctgm`)."""
    for path in outputs.values():
        check_writable(path)
        for src in inputs:
            if src is not None and same_file(path, src):
                raise OutputError(f"{path}: is an input of this command; sct-gm never writes over its inputs: "
                                  f"give another output name")
    for key in outputs.sidecars:
        if is_correction(read_sidecar(outputs[key])):
            mask = outputs[key[: -len("_sidecar")]]
            raise OutputError(f"{mask}: holds a reviewer's corrections (its sidecar {outputs[key].name} lists "
                              f"{SLICES_KEY}); sct-gm never writes over them: give another output name")
    if overwrite:
        return
    for key in outputs.kinds:
        if is_manual_label_path(outputs[key]):
            raise OutputError(f"{outputs[key]}: is a manual label name, which training reads as a reviewer's mask; "
                              f"give another output name, or allow it", parameter="overwrite")
    for key, path in outputs.items():
        if (path.exists() or path.is_symlink()) and not written_by_sctgm(outputs, key):
            sidecar = outputs[outputs.sidecar_of(key)]
            own = outputs.sidecar_of(key) == f"{key}_sidecar"  # SCT's WM mask shares the GM mask's sidecar
            sibling = _described_sibling(outputs, outputs.sidecar_of(key)) if own else None
            why = (f"the sct-gm sidecar {sidecar.name} describes {sibling.name}, not it" if sibling is not None
                   else "its bytes differ from what the sct-gm sidecar records: edited or replaced since"
                   if read_sidecar(sidecar) is not None else "no sct-gm sidecar describes it")
            raise OutputError(f"{path}: exists and sct-gm did not write it ({why}); move it away, or allow "
                              f"replacing it", parameter="overwrite")
    for key in outputs.sidecars:  # the files are sct-gm's, or absent: is the sidecar this set's to replace?
        other = _described_sibling(outputs, key)
        if other is not None:
            raise OutputError(f"{outputs[key]}: is the sidecar of {other} (the same name with another extension: "
                              f"another run's outputs); replacing it would leave that mask without it: give "
                              f"another output name, or allow it", parameter="overwrite")


def _described_sibling(outputs: OutputSet, sidecar_key: str) -> Path | None:
    """The mask under the other NIfTI extension (``a_gmseg.nii.gz`` for ``a_gmseg.nii``) that the existing
    sct-gm sidecar ``sidecar_key`` describes, when it describes that one and not this set's: ``a.nii``
    and ``a.nii.gz`` share the sidecar name ``a_gmseg.json``."""
    data = read_sidecar(outputs[sidecar_key])
    key = sidecar_key[: -len("_sidecar")]
    known = recorded_hashes(data, key) if data is not None and not is_correction(data) else None
    if not known:
        return None
    stem, ext = split_nifti_name(outputs[key])
    other_ext = ext[:-3] if ext.lower() == ".nii.gz" else ext + (".GZ" if ext.isupper() else ".gz")
    sibling = Path(stem + other_ext)
    try:
        ours = outputs[key].is_file() and file_sha256(outputs[key]) in known
        return sibling if not ours and sibling.is_file() and file_sha256(sibling) in known else None
    except OSError:
        return None
