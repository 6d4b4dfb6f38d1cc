"""The one write path: segment an image file and write its outputs as a set, SCT or BIDS layout.

:func:`segment_and_write` is what a single-file run (:func:`sctgm.segment.files.segment_file`) and
every batch job (:func:`sctgm.batch.jobs.run_job`) call; :func:`sidecar` is the one sidecar schema.
The outputs are one value, an :class:`~sctgm.naming.OutputSet` (names from :mod:`sctgm.naming`), and
they are written as a set (:func:`write_set`): every location is checked before any work
(:func:`~sctgm.segment.ownership.check_outputs`: writable, not an input of the command, not a file
that sct-gm did not write), every file is written under a temporary name, then all are renamed into place together
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
from ..exceptions import InputImageError, InvalidOptionError
from ..filesystem import file_sha256
from ..io import LoadedImage, like
from ..naming import LAYOUTS, OutputSet
from ..recipe import DEFAULT_TO_NATIVE
from ..writing import StagedFiles, json_text, remove_leftover_parts
from .noise import noise_keys
from .ownership import (check_outputs, intact_outputs, is_correction, read_sidecar, remove_stale, stale_outputs,
                        written_by_sctgm)
from .pipeline import Segmentation, SegmentOptions, say_if_empty

if TYPE_CHECKING:
    from ..model.registry import InstalledModel
    from .pipeline import Segmenter

__all__ = ["LAYOUTS", "EntryWriter", "SegmentFileResult", "StagedOutputs", "check_outputs", "is_correction",
           "read_sidecar", "segment_and_write", "sidecar", "written_by_sctgm"]

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
    say_if_empty(result, image.path)
    arrays = {"gm": result.gm, "wm": result.wm, "prob": result.gm_prob}
    kinds = [k for k in outputs.kinds if arrays[k] is not None]
    hashes: dict[str, Any] = {"Sources": source_sha, "Outputs": {}}
    previous = intact_outputs(outputs, kinds)
    stale = stale_outputs(outputs, inputs)
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
        remove_stale(outputs, stale)
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
