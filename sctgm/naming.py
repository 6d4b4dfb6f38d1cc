"""Every name sct-gm gives an output, in one place.

Two layouts (:mod:`sctgm.segment.outputs` writes both through one function):

- SCT, beside the input (``sct_deepseg_gm``'s habits): ``t2s.nii.gz`` -> ``t2s_gmseg.nii.gz`` and its
  sidecar ``t2s_gmseg.json``, ``t2s_wmseg.nii.gz`` (cord minus GM), ``t2s_gmseg_prob.nii.gz``;
- BIDS derivatives (spine-generic and SCT-based pipelines): the source's stem followed by
  ``_label-<GM|WM>_seg`` (masks) or ``_label-GM_probseg`` (soft map), each with a ``.json`` sidecar, in
  the source's ``sub-*/[ses-*/]anat/`` folder of the derivative dataset.

Pure functions of names: nothing here touches the file system.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from .exceptions import OutputError


class BidsSource(Protocol):
    """A raw BIDS image as :class:`sctgm.batch.bids.BidsImage` describes it."""

    root: Path  # the dataset root
    path: Path  # the image, inside root

    @property
    def stem(self) -> str: ...  # the file name without its extension

NIFTI_SUFFIXES = (".nii.gz", ".nii")
GM_SUFFIX = "_gmseg"
WM_SUFFIX = "_wmseg"
PROB_SUFFIX = "_prob"  # appended to the GM output's stem: t2s_gmseg -> t2s_gmseg_prob
#: Output keys of a job: a NIfTI key ``k`` has its sidecar under ``k + "_sidecar"`` (BIDS: every
#: output; SCT: the GM mask only).
NIFTI_KEYS = ("gm", "wm", "prob")

_OUTPUT_STEMS = re.compile(rf"({GM_SUFFIX}|{WM_SUFFIX}|{GM_SUFFIX}{PROB_SUFFIX})$")


def split_nifti_name(path: str | os.PathLike[str]) -> tuple[str, str]:
    """('dir/t2s', '.nii.gz') for 'dir/t2s.nii.gz'; the extension is '' when it is not a NIfTI one."""
    s = os.fspath(path)
    for suffix in NIFTI_SUFFIXES:
        if s.lower().endswith(suffix):
            return s[: -len(suffix)], s[-len(suffix):]
    return s, ""


def derive_output_path(input_path: str | os.PathLike[str], suffix: str, ext: str | None = None) -> Path:
    """The output file next to the input: t2s.nii.gz + '_gmseg' -> t2s_gmseg.nii.gz (the input's
    NIfTI extension is kept unless ``ext`` is given; '.nii.gz' when the input has none)."""
    stem, in_ext = split_nifti_name(input_path)
    return Path(stem + suffix + (ext or in_ext or ".nii.gz"))


def sct_outputs(input_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                prob: bool = False, wm: bool = False) -> dict[str, Path]:
    """SCT layout: ``gm`` (``<name>_gmseg.nii.gz`` beside the input, or ``output``), its sidecar
    ``gm_sidecar`` (``<gm stem>.json``), and optionally ``wm`` and ``prob`` named after the GM output."""
    gm = Path(output) if output is not None else derive_output_path(input_path, GM_SUFFIX)
    stem, ext = split_nifti_name(gm)
    if not ext:
        raise OutputError(f"{gm}: the output name must end in .nii.gz or .nii")
    base = stem[: -len(GM_SUFFIX)] if stem.endswith(GM_SUFFIX) else stem
    paths = {"gm": gm, "gm_sidecar": Path(stem + ".json")}
    if wm:
        paths["wm"] = Path(base + WM_SUFFIX + ext)
    if prob:
        paths["prob"] = Path(stem + PROB_SUFFIX + ext)
    return paths


def is_sctgm_output(path: str | os.PathLike[str]) -> bool:
    """True for names sct-gm writes beside its inputs (``*_gmseg``, ``*_wmseg``, ``*_gmseg_prob``)."""
    return bool(_OUTPUT_STEMS.search(split_nifti_name(Path(path).name)[0]))


def bids_derivative_path(image: BidsSource, derivatives: str | os.PathLike[str], label: str, suffix: str = "seg",
                         extension: str = ".nii.gz") -> Path:
    """``<derivatives>/sub-*/[ses-*/]anat/<source stem>_label-<label>_<suffix><extension>``."""
    folder = Path(derivatives) / image.path.parent.relative_to(image.root)
    return folder / f"{image.stem}_label-{label}_{suffix}{extension}"


def bids_outputs(image: BidsSource, derivatives: str | os.PathLike[str], *, wm: bool = False,
                 prob: bool = False) -> dict[str, Path]:
    """BIDS layout: the GM mask (``gm``) and its sidecar (``gm_sidecar``); the WM mask (``wm``) and the
    GM probability map (``prob``) when asked, each with its sidecar."""
    out: dict[str, Path] = {}
    for key, label, suffix, wanted in (("gm", "GM", "seg", True), ("wm", "WM", "seg", wm),
                                       ("prob", "GM", "probseg", prob)):
        if wanted:
            out[key] = bids_derivative_path(image, derivatives, label, suffix)
            out[f"{key}_sidecar"] = bids_derivative_path(image, derivatives, label, suffix, ".json")
    return out
