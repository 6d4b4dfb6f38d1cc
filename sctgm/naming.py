"""Every name sct-gm gives an output, in one place.

Two layouts (:mod:`sctgm.segment.outputs` writes both through one function):

- SCT, beside the input (``sct_deepseg_gm``'s habits): ``t2s.nii.gz`` -> ``t2s_gmseg.nii.gz`` and its
  sidecar ``t2s_gmseg.json``, ``t2s_wmseg.nii.gz`` (cord minus GM), ``t2s_gmseg_prob.nii.gz``;
- BIDS derivatives (spine-generic and SCT-based pipelines): the source's stem followed by
  ``_label-<GM|WM>_seg`` (masks) or ``_label-GM_probseg`` (soft map), each with a ``.json`` sidecar, in
  the source's ``sub-*/[ses-*/]anat/`` folder of the derivative dataset.

Pure functions of names (and :class:`OutputSet`, the named outputs of one run as one value): nothing
here touches the file system.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
#: The NIfTI outputs, in writing order: the GM mask, the WM mask (cord minus GM), the GM probability
#: map. A NIfTI key ``k`` has its sidecar under ``k + "_sidecar"`` (BIDS: every output; SCT: the GM
#: mask's sidecar describes the whole set).
NIFTI_KEYS = ("gm", "wm", "prob")
LAYOUTS = ("sct", "bids")

#: A reviewer's corrected GM mask beside its image (the QC editor, :mod:`sctgm.labels`), and in a BIDS
#: dataset's ``derivatives/labels`` (spine-generic's names).
MANUAL_GM_SUFFIX = "_gmseg-manual"
BIDS_MANUAL_GM_SUFFIX = "_label-GM_seg"

#: Stems of what sct-gm writes (SCT layout beside the input; BIDS layout in a derivative dataset,
#: :func:`bids_outputs`) and of the QC editor's corrections: never taken as images by a batch.
_OUTPUT_STEMS = re.compile(rf"({GM_SUFFIX}|{WM_SUFFIX}|{GM_SUFFIX}{PROB_SUFFIX}|{MANUAL_GM_SUFFIX}"
                           r"|_label-GM_seg|_label-WM_seg|_label-GM_probseg)$")

def listed(value: Any) -> list[Any]:
    """``value`` as a list: one path or name given where several may be (a notebook's
    ``segment_files("scan.nii.gz", ...)``, ``participants="03"``) is one item, not its characters;
    None is none."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, bytes, os.PathLike)) else list(value)


def bids_entities(path: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """The BIDS subject and session (``sub-01``, ``ses-02``) of a file named as BIDS names them, in a
    dataset or not: from the file name's entities, else from the nearest folders so named
    (``sub-01/ses-02/anat/t2s.nii.gz``); a session folder counts only below its subject's folder, so
    ``sub-01/ses-02/anat/sub-03_T2w.nii.gz`` has no session and ``p1/ses-01/t2s.nii.gz`` none either.
    None for one there is none of. The batch's summary and the QC report's subject both read them here."""
    p = Path(path)
    named = [re.search(rf"(?:^|_)({key}-[A-Za-z0-9]+)(?=[_.]|$)", p.name) for key in ("sub", "ses")]
    folders = list(p.parent.parts)
    at = {key: max((k for k, part in enumerate(folders) if re.fullmatch(rf"{key}-[A-Za-z0-9]+", part)), default=-1)
          for key in ("sub", "ses")}
    subject = named[0].group(1) if named[0] else (folders[at["sub"]] if at["sub"] >= 0 else None)
    below_subject = at["sub"] >= 0 and at["ses"] > at["sub"] and folders[at["sub"]] == subject
    session = named[1].group(1) if named[1] else (folders[at["ses"]] if below_subject else None)
    return subject, session


#: Significant digits of a float in a table sct-gm writes (metrics CSV, batch summary): the voxel sizes
#: behind every area and distance are float32 in the NIfTI header (about 7 digits), so more digits
#: print their rounding (17.99999995 for 18 mm2).
FLOAT_DIGITS = 7

#: Control characters (a newline or tab in a file name) written as escapes (``\n``, ``\x1b``), so that
#: a name shown in a message or a table cell stays on one line and in one cell.
_ESCAPES = {c: (repr(chr(c))[1:-1] if chr(c) in "\n\r\t" else f"\\x{c:02x}") for c in (*range(32), 127)}


def escape_controls(text: str) -> str:
    """``text`` with its control characters escaped (``\\n`` for a newline); spaces are kept."""
    return text.translate(_ESCAPES)


def is_manual_label_path(path: str | os.PathLike[str]) -> bool:
    """True for a reviewer's GM mask name, which training reads as truth: ``*_gmseg-manual`` anywhere,
    ``*_label-GM_seg`` inside a ``derivatives/labels`` folder (:mod:`sctgm.labels`)."""
    p = Path(path)
    stem = split_nifti_name(p.name)[0]
    if stem.endswith(MANUAL_GM_SUFFIX):
        return True
    parts = p.absolute().parent.parts
    in_labels = any(a == "derivatives" and b == "labels" for a, b in zip(parts, parts[1:]))
    return in_labels and stem.endswith(BIDS_MANUAL_GM_SUFFIX)


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


def output_kinds(*, prob: bool = False, wm: bool = False) -> tuple[str, ...]:
    """The NIfTI outputs a run writes (:data:`NIFTI_KEYS` order): the GM mask always, the WM mask and
    the probability map when asked (the options ``--wm`` and ``--prob``)."""
    return tuple(k for k, wanted in zip(NIFTI_KEYS, (True, wm, prob)) if wanted)


@dataclass(frozen=True, eq=False)  # equality: the Mapping's (same keys and paths)
class OutputSet(Mapping[str, Path]):
    """The files one segmentation writes, by name, as one value: NIfTI keys (:data:`NIFTI_KEYS`) and
    their sidecars (``<key>_sidecar``), and the ``layout`` they follow (``sct`` or ``bids``). A
    read-only mapping key -> path, built once (:func:`sct_outputs`, :func:`bids_outputs`) and handed to
    the one write path (:mod:`sctgm.segment.outputs`), which checks and writes it as a set."""

    paths: dict[str, Path] = field(default_factory=dict)
    layout: str = "sct"
    #: The names of the NIfTI outputs this run does not write (and, in BIDS, their sidecars): an
    #: earlier run's files there described another GM mask and go when this set is written.
    others: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: expected one of {LAYOUTS}")
        if "gm" not in self.paths or "gm_sidecar" not in self.paths:
            raise ValueError("an output set holds at least the GM mask and its sidecar")

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The NIfTI outputs of the set (:data:`NIFTI_KEYS` order)."""
        return tuple(k for k in NIFTI_KEYS if k in self.paths)

    @property
    def sidecars(self) -> tuple[str, ...]:
        """The sidecar keys of the set (``gm_sidecar`` first)."""
        return tuple(f"{k}_sidecar" for k in NIFTI_KEYS if f"{k}_sidecar" in self.paths)

    def sidecar_of(self, key: str) -> str:
        """The key of the sidecar that describes output ``key`` (its own in BIDS, the GM one in SCT)."""
        own = f"{key}_sidecar" if key in NIFTI_KEYS else key
        return own if own in self.paths else "gm_sidecar"


def sct_outputs(input_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                kinds: Iterable[str] = ("gm",)) -> OutputSet:
    """SCT layout: ``gm`` (``<name>_gmseg.nii.gz`` beside the input, or ``output``), its sidecar
    ``gm_sidecar`` (``<gm stem>.json``), and the other ``kinds`` (``wm``, ``prob``, see
    :func:`output_kinds`) named after the GM output."""
    gm = Path(output) if output is not None else derive_output_path(input_path, GM_SUFFIX)
    stem, ext = split_nifti_name(gm)
    if not ext:
        raise OutputError(f"{gm}: the output name must end in .nii.gz or .nii")
    base = stem[: -len(GM_SUFFIX)] if stem.endswith(GM_SUFFIX) else stem
    paths = {"gm": gm, "gm_sidecar": Path(stem + ".json")}
    kinds = set(kinds)
    named = {"wm": Path(base + WM_SUFFIX + ext), "prob": Path(stem + PROB_SUFFIX + ext)}
    paths.update({k: p for k, p in named.items() if k in kinds})
    return OutputSet(paths, "sct", {k: p for k, p in named.items() if k not in kinds})


def is_sctgm_output(path: str | os.PathLike[str]) -> bool:
    """True for names sct-gm writes (``*_gmseg``, ``*_wmseg``, ``*_gmseg_prob`` beside its inputs;
    ``*_label-GM_seg``, ``*_label-WM_seg``, ``*_label-GM_probseg`` in a BIDS derivative dataset), and
    the QC editor's ``*_gmseg-manual``: a batch never takes them as images."""
    return bool(_OUTPUT_STEMS.search(split_nifti_name(Path(path).name)[0]))


def bids_derivative_path(image: BidsSource, derivatives: str | os.PathLike[str], label: str, suffix: str = "seg",
                         extension: str = ".nii.gz") -> Path:
    """``<derivatives>/sub-*/[ses-*/]anat/<source stem>_label-<label>_<suffix><extension>``."""
    folder = Path(derivatives) / image.path.parent.relative_to(image.root)
    return folder / f"{image.stem}_label-{label}_{suffix}{extension}"


def bids_outputs(image: BidsSource, derivatives: str | os.PathLike[str], *,
                 kinds: Iterable[str] = ("gm",)) -> OutputSet:
    """BIDS layout: the GM mask (``gm``) and its sidecar (``gm_sidecar``); the WM mask (``wm``) and the
    GM probability map (``prob``) when in ``kinds``, each with its sidecar."""
    out: dict[str, Path] = {}
    others: dict[str, Path] = {}
    kinds = set(kinds) | {"gm"}
    for key, label, suffix in (("gm", "GM", "seg"), ("wm", "WM", "seg"), ("prob", "GM", "probseg")):
        into = out if key in kinds else others
        into[key] = bids_derivative_path(image, derivatives, label, suffix)
        into[f"{key}_sidecar"] = bids_derivative_path(image, derivatives, label, suffix, ".json")
    return OutputSet(out, "bids", others)
