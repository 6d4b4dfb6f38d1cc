"""The one write path: segment an image file and write its outputs as a set, SCT or BIDS layout.

:func:`segment_and_write` is what a single-file run (:func:`sctgm.segment.files.segment_file`) and
every batch job (:func:`sctgm.batch.jobs.run_job`) call; :func:`sidecar` is the one sidecar schema.
The outputs are one value, an :class:`~sctgm.naming.OutputSet` (names from :mod:`sctgm.naming`), and
they are written as a set (:func:`write_set`): every location is checked before any work
(:func:`check_outputs`: writable, not an input of the command, not a file that sct-gm did not
write), every file is written under a temporary name, then all are renamed into place together
(sidecars first); a failure before the renames removes them all, and the temporary files of a
killed run are removed by the next run of the same outputs. What the segment layer does not write
itself (the QC entry) comes in as an :class:`EntryWriter` from the caller above.

Sidecar schema (JSON, deterministic: no date, so a resumed batch writes the same bytes)::

    {"Description": "...", "SpatialReference": "orig" (BIDS layout only),
     "Sources": [input, cord mask] (SCT: paths as given; BIDS: bids:raw: URIs),
     "GeneratedBy": [{"Name": "sct-gm", "Version": ..., "Model": {Name, Version, Sha256, Filters
                                                                  (+ Networks: [{Name, Version, Sha256,
                                                                  Filters}] for a combination, whose
                                                                  Sha256 covers both networks and the rule)},
                      "Parameters": {threshold, to_native (linear | area: the rule back to the native
                                     grid), keep_largest, fill_holes, tta, batch_size, crop_px,
                                     denoise, bias, clahe, device, engine,
                                     enhancement: {the resolved enhancement settings}}}],
     "Result": {gm_voxels, network_passes, window_px, input_orientation,
                noise_sigma, noise_sigma_rel_p99 (noise / 99th intensity percentile),
                noise_sigma_rel_p99_per_slice (by the file's S-I slice index; null: too little tissue),
                noise_auto_threshold_rel_p99, noise_above_auto_threshold, denoised_with ('off' or the denoiser that ran),
                enhancement_steps,
                and for a model that combines networks (sctgm.segment.ensemble): networks (their names),
                networks_dice_per_slice (slice Dice between them, by the file's S-I slice index),
                doubtful_slices ([{slice: file index, reasons: [networks_disagree | outside_cord |
                area_jump], action: kept | first_network | second_network | re-placed | replaced | dropped,
                networks_dice, network: whose GM the slice holds, or null}]),
                whole_volume_network (the network whose mask stood for the whole volume because the
                two disagreed on most slices, or null)},
     "Sha256": {"Sources": [sha256 of each source file, in the order of "Sources"],
                "Outputs": {"gm": ..., "wm": ..., "prob": ...: sha256 of each NIfTI output of the set},
                "Replaces": {key: sha256 of the sct-gm output this set replaced with other bytes}
                            (only when there was one)}}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import nibabel as nib
import numpy as np

from .._version import __version__
from ..engines import ProgressCallback
from ..exceptions import InputImageError, InvalidOptionError, OutputError
from ..filesystem import file_sha256, read_small_json, same_file
from ..io import LoadedImage, like, read_nifti
from ..labels import SLICES_KEY
from ..naming import LAYOUTS, NIFTI_KEYS, OutputSet, is_manual_label_path
from ..nifti_header import nibabel_messages
from ..recipe import DEFAULT_TO_NATIVE
from ..writing import StagedFiles, check_writable, json_text, remove_leftover_parts
from .noise import noise_keys
from .pipeline import Segmentation, SegmentOptions

if TYPE_CHECKING:
    from ..model.registry import InstalledModel
    from .pipeline import Segmenter

__all__ = ["LAYOUTS", "EntryWriter", "SegmentFileResult", "StagedOutputs", "check_outputs", "is_correction",
           "segment_and_write", "sidecar", "written_by_sctgm"]

log = logging.getLogger(__name__)

_DESCRIPTIONS = {
    "gm": "Spinal cord gray matter mask (uint8, 1 = gray matter) on the source image's voxel grid.",
    "wm": "Spinal cord white matter mask (uint8): the cord mask minus the gray matter.",
    "prob": "Gray matter probability (float32, 0 to 1) on the source image's voxel grid.",
}
_DTYPES = {"gm": np.uint8, "wm": np.uint8, "prob": np.float32}


@dataclass
class SegmentFileResult:
    """What was written for one image (paths; None for what was not asked), and the in-memory result."""

    input: Path
    gm: Path
    sidecar: Path
    wm: Path | None = None
    prob: Path | None = None
    segmentation: Segmentation | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StagedOutputs:
    """The outputs of one image, written under temporary names and not yet renamed into place:
    ``staged`` maps each output key to the temporary file that holds it now."""

    image: LoadedImage
    cord_path: Path | None
    outputs: OutputSet
    staged: dict[str, Path]
    segmentation: Segmentation
    model: InstalledModel


class EntryWriter(Protocol):
    """Something written with an image's outputs by a layer above this one (the QC entry:
    :class:`sctgm.qc.QcEntryWriter`). ``check`` runs before any work and raises when the location
    cannot be written; ``write`` runs once every output is staged and before any is renamed into
    place: what it raises removes the staged outputs, so no output exists without its entry."""

    def check(self) -> None: ...

    def write(self, staged: StagedOutputs) -> None: ...


def sidecar(segmenter: Segmenter, options: SegmentOptions, result: Segmentation, key: str,
            sources: Sequence[str], *, layout: str = "sct", hashes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON sidecar of output ``key`` (``gm``, ``wm`` or ``prob``); see the module docstring.
    ``hashes``: the ``Sha256`` block (sources and outputs), when known."""
    m, info = segmenter.identity, result.info
    out: dict[str, Any] = {"Description": _DESCRIPTIONS[key]}
    if layout == "bids":
        out["SpatialReference"] = "orig"
    out["Sources"] = list(sources) if key != "prob" else list(sources[:1])
    out["GeneratedBy"] = [{
        "Name": "sct-gm",
        "Version": __version__,
        "Model": {"Name": m.name, "Version": m.version, "Sha256": m.sha256, "Filters": m.filters},
        "Parameters": {**asdict(options.effective(m.preprocessing)), "threshold": info["threshold"],
                       "to_native": info.get("to_native", DEFAULT_TO_NATIVE),
                       "device": segmenter.network.device, "engine": segmenter.network.engine,
                       "precision": segmenter.network.precision,
                       **({"precision_fp32_layers": list(segmenter.network.fp32_layers)}
                          if segmenter.network.fp32_layers else {}),
                       "enhancement": options.enhancement(m.preprocessing).to_dict()},
    }]
    if segmenter.partner is not None:  # a combination: each network it ran
        out["GeneratedBy"][0]["Model"]["Networks"] = [
            {"Name": name, "Version": version, "Sha256": n.model.sha256, "Filters": n.model.filters}
            for (name, version), n in zip(segmenter.network_records, (segmenter.network, segmenter.partner))]
    out["Result"] = {k: info[k] for k in ("gm_voxels", "network_passes", "window_px", "input_orientation")}
    out["Result"].update(noise_keys(info.get("enhancement", {})))
    for k in ("networks", "networks_dice_per_slice", "doubtful_slices", "whole_volume_network"):  # a combination
        if k in info:
            out["Result"][k] = info[k]
    if hashes is not None:
        n = len(out["Sources"])
        out["Sha256"] = {"Sources": list(hashes["Sources"][:n]), "Outputs": dict(hashes["Outputs"])}
        if hashes.get("Replaces"):
            out["Sha256"]["Replaces"] = dict(hashes["Replaces"])
    return out


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
    known = _recorded_hashes(data, key)
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


def _recorded_hashes(data: dict[str, Any], key: str) -> set[str] | None:
    """The sha256 values a sidecar records for output ``key`` (``Sha256.Outputs`` and ``Replaces``);
    None when it records none at all (an older sct-gm's)."""
    hashes = data.get("Sha256")
    if not isinstance(hashes, dict):
        return None
    blocks = (hashes.get("Outputs"), hashes.get("Replaces"))
    return {b[key] for b in blocks if isinstance(b, dict) and isinstance(b.get(key), str)}


def _intact_outputs(outputs: OutputSet, kinds: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """For each output of ``kinds`` that is a file whose sha256 its sct-gm sidecar records: (that
    sha256, the sha256 that sidecar records as replaced by it, if any)."""
    out: dict[str, tuple[str, str | None]] = {}
    for k in kinds:
        data = read_sidecar(outputs[outputs.sidecar_of(k)])
        known = _recorded_hashes(data, k) if data is not None and not is_correction(data) else None
        if known and outputs[k].is_file():
            sha = file_sha256(outputs[k])
            if sha in known:
                replaced = data["Sha256"].get("Replaces") if data is not None else None
                out[k] = (sha, replaced.get(k) if isinstance(replaced, dict) else None)
    return out


def _stale_outputs(outputs: OutputSet, inputs: Sequence[Path]) -> list[str]:
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
            if path.is_file() and file_sha256(path) in (_recorded_hashes(data, k) or set()):
                stale.append(k)
        except OSError:
            continue  # unreadable: not known to be sct-gm's
    return stale


def _remove_stale(outputs: OutputSet, stale: Sequence[str]) -> None:
    """Remove the earlier run's outputs (:func:`_stale_outputs`), then in BIDS their sidecars; what
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
            why = ("its bytes differ from what the sct-gm sidecar records: edited or replaced since"
                   if read_sidecar(outputs[outputs.sidecar_of(key)]) is not None else "no sct-gm sidecar describes it")
            raise OutputError(f"{path}: exists and sct-gm did not write it ({why}); move it away, or allow "
                              f"replacing it", parameter="overwrite")


def segment_and_write(segmenter: Segmenter, image: LoadedImage, outputs: OutputSet, *,
                      cord: LoadedImage | None = None, options: SegmentOptions = SegmentOptions(),
                      sources: Sequence[str] | None = None, entry: EntryWriter | None = None,
                      overwrite: bool = False, progress: ProgressCallback | None = None) -> SegmentFileResult:
    """Segment ``image`` (and its ``cord`` mask) and write ``outputs`` as a set (see the module docstring).

    ``sources``: what the sidecars name as sources (default: the image and cord mask paths);
    ``entry``: written with the outputs (the QC entry); ``overwrite``: replace files that sct-gm did
    not write (never an input). The callers load and check the inputs (a batch also refuses
    non-axial images, :func:`sctgm.segment.preprocess.check_axial`); missing output folders are
    created when the first file is staged.
    """
    if "wm" in outputs and cord is None:
        raise InvalidOptionError(f"{image.path}: the WM mask is cord minus GM and needs a cord mask")
    cord_path = cord.path if cord is not None else None
    inputs = [image.path] + ([cord_path] if cord_path is not None else [])
    check_outputs(outputs, inputs, overwrite=overwrite)
    if entry is not None:
        entry.check()
    remove_leftover_parts(outputs.values())
    # the sources' sha256 on both sides of the segmentation: the sidecar must describe the bytes that
    # were segmented, and a file replaced meanwhile would leave a mask that a resume keeps for ever
    source_sha = [file_sha256(p) for p in inputs]
    result = segmenter.segment_image(image, cord=cord, options=options, want_prob="prob" in outputs,
                                     progress=progress)
    _check_unchanged(inputs, source_sha)
    arrays = {"gm": result.gm, "wm": result.wm, "prob": result.gm_prob}
    kinds = [k for k in outputs.kinds if arrays[k] is not None]
    hashes: dict[str, Any] = {"Sources": source_sha, "Outputs": {}}
    previous = _intact_outputs(outputs, kinds)
    stale = _stale_outputs(outputs, inputs)
    if sources is None:
        sources = [str(p) for p in inputs]
    with StagedFiles() as staged:
        temporary = {}
        for key in kinds:
            temporary[key] = staged.stage(outputs[key], lambda tmp, key=key: _save(image, arrays[key], key, tmp))
            hashes["Outputs"][key] = file_sha256(temporary[key])
        # sct-gm's outputs this set replaces with other bytes: still sct-gm's should a kill land between
        # the renames (written_by_sctgm). An output already in place (a run killed after some renames)
        # keeps what its sidecar recorded as replaced: a resumed run writes the uninterrupted run's bytes
        hashes["Replaces"] = {}
        for k, (sha, replaced) in previous.items():
            if sha != hashes["Outputs"][k]:
                hashes["Replaces"][k] = sha
            elif replaced is not None:
                hashes["Replaces"][k] = replaced
        for key in outputs.sidecars:
            described = key[: -len("_sidecar")]
            meta = sidecar(segmenter, options, result, described, sources, layout=outputs.layout, hashes=hashes)
            temporary[key] = staged.stage(outputs[key], lambda tmp, text=json_text(meta): tmp.write_text(text))
        if entry is not None:
            entry.write(StagedOutputs(image, cord_path, outputs, temporary, result, segmenter.identity))
        # An earlier run's outputs this set does not write go before the renames: a kill between
        # leaves the old GM mask and sidecar without them, never them beside the new GM mask.
        _remove_stale(outputs, stale)
        # Sidecars first: a run killed between two renames leaves outputs that an sct-gm sidecar
        # describes (so the next run may replace them) with another recorded sha256 (so a resume redoes them).
        staged.commit(outputs[k] for k in outputs.sidecars)
    written = SegmentFileResult(input=image.path, gm=outputs["gm"], sidecar=outputs["gm_sidecar"],
                                segmentation=result)
    written.wm, written.prob = (outputs[k] if k in kinds else None for k in ("wm", "prob"))
    return written


def _check_unchanged(inputs: Sequence[Path], sha: Sequence[str]) -> None:
    """InputImageError when a source is no longer the file that was hashed before the segmentation."""
    for path, before in zip(inputs, sha):
        try:
            same = file_sha256(path) == before
        except OSError:
            same = False
        if not same:
            raise InputImageError(f"{path}: changed or was removed while it was being segmented; nothing was "
                                  f"written: run again")


def _save(image: LoadedImage, data: np.ndarray, key: str, path: Path) -> None:
    nib.save(like(image.nifti, data, _DTYPES[key]), str(path))
