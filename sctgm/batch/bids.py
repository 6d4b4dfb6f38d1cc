"""BIDS datasets: find the anatomical images to segment, describe the derivative dataset (the
derivatives' names are made by :func:`sctgm.naming.bids_outputs`).

Only raw data is searched: ``sub-<label>/[ses-<label>/]anat/*.nii[.gz]``. Nothing else is walked, so
``derivatives/``, ``sourcedata/``, ``code/`` and dot-folders are never read as input.

Derivative names follow spine-generic and SCT-based pipelines: the source file's name (its entities
and suffix) followed by ``_label-<GM|WM>_seg`` (binary masks) or ``_label-GM_probseg`` (soft map), in
the source's ``sub-*/[ses-*/]anat/`` folder of the derivative dataset, e.g.
``derivatives/sct-gm/sub-01/ses-02/anat/sub-01_ses-02_acq-cspine_T2star_label-GM_seg.nii.gz``.

Provenance uses BIDS URIs: a derivative's ``Sources`` are ``bids:raw:<path in the raw dataset>`` and the
derivative's ``dataset_description.json`` maps ``raw`` in ``DatasetLinks`` (``bids::`` would name the
derivative dataset itself, not the raw one).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..exceptions import DatasetError, OutputError
from ..filesystem import read_small_json
from ..labels import existing_manual_mask
from ..naming import NIFTI_SUFFIXES, listed, split_nifti_name
from ..writing import save_json

log = logging.getLogger(__name__)

#: Entity keys in the order the BIDS specification requires in file names (schema
#: ``rules/entities.yaml``; ``tpl``, ``cohort``, ``atlas``, ``scale`` and ``prov`` come from its
#: derivative extensions).
ENTITY_ORDER: tuple[str, ...] = (
    "sub", "tpl", "ses", "cohort", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain",
    "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split",
    "recording", "chunk", "atlas", "seg", "scale", "res", "den", "label", "prov", "desc",
)
BIDS_VERSION = "1.10.0"
PIPELINE_NAME = "sct-gm"
RAW_LINK = "raw"  # the DatasetLinks key naming the raw dataset in BIDS URIs
#: T2star (SCT and spine-generic) and T2starw (the BIDS specification's name for T2*-weighted images).
DEFAULT_SUFFIXES = ("T2star", "T2starw")

_ENTITY = re.compile(r"^([a-zA-Z]+)-([0-9a-zA-Z+]+)$")
_SUFFIX = re.compile(r"^[a-zA-Z0-9]+$")
#: Cord masks looked up in ``derivatives/labels``: spine-generic's current name, then its older one.
CORD_LABEL_SUFFIXES = ("_label-SC_seg", "_seg-manual")


@dataclass(frozen=True)
class BidsImage:
    """One raw image of a BIDS dataset, with the entities parsed from its name."""

    root: Path  # the dataset root (absolute)
    path: Path  # the image (absolute), inside root
    entities: tuple[tuple[str, str], ...]  # (key, label) in file-name order, starting with ("sub", ...)
    suffix: str  # e.g. "T2star"
    extension: str  # ".nii.gz" or ".nii"

    @property
    def subject(self) -> str:
        """The participant label, without ``sub-``."""
        return dict(self.entities)["sub"]

    @property
    def session(self) -> str | None:
        """The session label, without ``ses-``; None when the dataset has no sessions."""
        return dict(self.entities).get("ses")

    @property
    def stem(self) -> str:
        """The file name without its extension: ``sub-01_ses-02_T2star``."""
        return split_nifti_name(self.path.name)[0]

    @property
    def relpath(self) -> str:
        """The path inside the dataset, with forward slashes: ``sub-01/ses-02/anat/...``."""
        return self.path.relative_to(self.root).as_posix()

    @property
    def qc_subject(self) -> str:
        """How the QC report names it: ``sub-01`` or ``sub-01_ses-02``."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def uri(self) -> str:
        """Its BIDS URI from a derivative dataset: ``bids:raw:sub-01/anat/sub-01_T2star.nii.gz``."""
        return bids_uri(self.relpath)


def bids_uri(path_in_raw: str, dataset: str = RAW_LINK) -> str:
    """``bids:<dataset>:<path>``; ``dataset`` must be a key of the derivative's ``DatasetLinks``."""
    return f"bids:{dataset}:{path_in_raw}"


def parse_name(name: str) -> tuple[tuple[tuple[str, str], ...], str, str] | None:
    """(entities, suffix, extension) of a raw BIDS NIfTI file name, or None when it is not one.

    >>> parse_name("sub-01_ses-02_run-1_T2star.nii.gz")
    ((('sub', '01'), ('ses', '02'), ('run', '1')), 'T2star', '.nii.gz')
    """
    stem, ext = split_nifti_name(name)
    if not ext:
        return None
    *pairs, suffix = stem.split("_")
    if not pairs or not _SUFFIX.match(suffix):
        return None
    entities = []
    for part in pairs:
        m = _ENTITY.match(part)
        if m is None:
            return None
        entities.append((m.group(1), m.group(2)))
    if entities[0][0] != "sub" or len({k for k, _ in entities}) != len(entities):
        return None
    return tuple(entities), suffix, ext


def _labels(values: Iterable[str], prefix: str) -> list[str]:
    """Labels as given on a command line ('01', 'sub-01', '01,02') without their prefix. An empty one
    (a script's empty ``$SUBJ``) is refused: left out, it would select every participant or session."""
    out: list[str] = []
    for v in values:
        parts = [p for p in re.split(r"[,\s]+", str(v).strip()) if p]
        if not parts or prefix in parts:
            what, option = ("participant", "participants") if prefix == "sub-" else ("session", "sessions")
            raise DatasetError(f"an empty {what} label ({v!r}) would select every {what}; give the labels, or no "
                               f"option for all", parameter=option)
        out += [part[len(prefix):] if part.startswith(prefix) else part for part in parts]
    return list(dict.fromkeys(out))


def find_images(root: str | os.PathLike[str], *, suffixes: Sequence[str] = DEFAULT_SUFFIXES,
                participants: Sequence[str] = (), sessions: Sequence[str] = (),
                datatype: str = "anat") -> list[BidsImage]:
    """The raw images of ``root`` with one of ``suffixes``, sorted by path, optionally only for some
    ``participants`` (labels with or without ``sub-``) and ``sessions`` (with or without ``ses-``).

    Raises :class:`DatasetError` when ``root`` is not a BIDS dataset (no ``sub-*`` folder), names a
    participant or session that it does not have, or when nothing matches (the message lists the
    suffixes that are there).
    """
    suffixes, participants, sessions = listed(suffixes), listed(participants), listed(sessions)  # "03": one
    base = Path(root).absolute()
    if not base.is_dir():
        raise DatasetError(f"{base}: no such folder; expected the root of a BIDS dataset")
    subjects = sorted(p for p in base.glob("sub-*") if p.is_dir())
    if not subjects:
        raise DatasetError(f"{base}: has no sub-<label> folder; expected the root of a BIDS dataset "
                           f"(sub-<label>/[ses-<label>/]{datatype}/*.nii.gz)")
    if not (base / "dataset_description.json").is_file():
        log.warning("%s: no dataset_description.json; BIDS requires one (read anyway)", base)
    wanted_sub = _labels(participants, "sub-")
    have_sub = [p.name[4:] for p in subjects]
    unknown = [s for s in wanted_sub if s not in have_sub]
    if unknown:
        raise DatasetError(f"{base}: no participant {', '.join('sub-' + s for s in unknown)}; the dataset has "
                           f"{_some(['sub-' + s for s in have_sub])}")
    wanted_ses = _labels(sessions, "ses-")
    if wanted_ses:
        have_ses = sorted({p.name[4:] for s in subjects for p in s.glob("ses-*") if p.is_dir()})
        unknown = [s for s in wanted_ses if s not in have_ses]
        if unknown:
            raise DatasetError(f"{base}: no session {', '.join('ses-' + s for s in unknown)}; the dataset has "
                               f"{_some(['ses-' + s for s in have_ses]) if have_ses else 'no sessions'}")
    found: list[BidsImage] = []
    for sub in subjects:
        if wanted_sub and sub.name[4:] not in wanted_sub:
            continue
        folders = [sub / datatype] + sorted(p / datatype for p in sub.glob("ses-*") if p.is_dir())
        for folder in folders:
            found += _images_in(base, folder)
    if wanted_ses:
        found = [im for im in found if im.session in wanted_ses]
    matched = [im for im in found if im.suffix in suffixes]
    if not matched:
        seen = sorted({im.suffix for im in found})
        among = f"{len(found)} images" + (" of the selected participants/sessions" if wanted_sub or wanted_ses else "")
        present = f"; suffixes present: {', '.join(seen)}" if seen else ""
        raise DatasetError(f"{base}: no {datatype} image with suffix {', '.join(suffixes)} among {among}{present}",
                           parameter="suffixes")
    return _unique_stems(sorted(matched, key=lambda im: im.relpath))


def _some(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _images_in(root: Path, folder: Path) -> list[BidsImage]:
    if not folder.is_dir():
        return []
    sub = folder.parent.name if folder.parent.name.startswith("sub-") else folder.parent.parent.name
    ses = folder.parent.name if folder.parent.name.startswith("ses-") else None
    out = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.lower().endswith(NIFTI_SUFFIXES):
            continue
        if not f.is_file():
            if f.is_symlink() and not f.exists():  # git-annex / DataLad content not fetched yet
                log.warning("%s: a link whose target is missing (content not fetched? `datalad get` or "
                            "`git annex get` it); skipped", f)
            continue
        parsed = parse_name(f.name)
        if parsed is None:
            log.warning("%s: not a BIDS file name (sub-<label>[_<key>-<label>...]_<suffix>.nii.gz); skipped", f)
            continue
        entities, suffix, ext = parsed
        e = dict(entities)
        if f"sub-{e['sub']}" != sub or (f"ses-{e['ses']}" if "ses" in e else None) != ses:
            log.warning("%s: its sub-/ses- entities do not match its folder; skipped", f)
            continue
        out.append(BidsImage(root=root, path=f, entities=entities, suffix=suffix, extension=ext))
    return out


def _unique_stems(images: list[BidsImage]) -> list[BidsImage]:
    """One image per name: when both x.nii and x.nii.gz exist, keep x.nii.gz (same outputs)."""
    by_stem: dict[str, BidsImage] = {}
    for im in images:
        key = im.path.parent.as_posix() + "/" + im.stem
        if key in by_stem:
            keep = im if im.extension == ".nii.gz" else by_stem[key]
            log.warning("%s and %s: the same image name twice; using %s", by_stem[key].path.name, im.path.name,
                        keep.path.name)
            by_stem[key] = keep
        else:
            by_stem[key] = im
    return list(by_stem.values())


# -------------------------------------------------------------------------------- derivatives

def find_cord_label(image: BidsImage, labels: str | os.PathLike[str]) -> Path | None:
    """The manual cord mask of ``image`` in a labels derivative (spine-generic convention:
    ``derivatives/labels/sub-*/[ses-*/]anat/<stem>_label-SC_seg.nii.gz``, or the older
    ``<stem>_seg-manual.nii.gz``), or None."""
    return existing_manual_mask(Path(labels) / image.path.parent.relative_to(image.root), image.stem,
                                CORD_LABEL_SUFFIXES)


def raw_link(raw_root: str | os.PathLike[str], derivatives: str | os.PathLike[str]) -> str:
    """Where the derivative dataset finds the raw one: a relative path (``../..``) when it lies inside
    the raw dataset, else an absolute ``file://`` URI."""
    raw, deriv = Path(raw_root).absolute(), Path(derivatives).absolute()
    if deriv == raw or raw in deriv.parents:
        return Path(os.path.relpath(raw, deriv)).as_posix()
    return raw.as_uri()


def dataset_description(raw_root: str | os.PathLike[str], derivatives: str | os.PathLike[str]) -> dict[str, Any]:
    """The derivative's ``dataset_description.json`` (deterministic: no date, so a resumed run writes
    the same file as an uninterrupted one)."""
    link = raw_link(raw_root, derivatives)
    desc: dict[str, Any] = {
        "Name": "sct-gm: spinal cord gray matter segmentation",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": PIPELINE_NAME,
            "Version": __version__,
            "Description": "Spinal cord gray matter segmentation with the dilated network of Perone et al. "
                           "(Sci Rep 2018); model, sha256 and parameters in each file's JSON sidecar.",
        }],
        "SourceDatasets": [{"URL": link}],
        "DatasetLinks": {RAW_LINK: link},
    }
    raw_desc = _read_json(Path(raw_root) / "dataset_description.json")
    if raw_desc.get("DatasetDOI"):
        desc["SourceDatasets"][0]["DOI"] = raw_desc["DatasetDOI"]
    return desc


def check_dataset_description(derivatives: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse (unless ``overwrite``) a derivative folder whose ``dataset_description.json`` says another
    pipeline made it, or that sct-gm cannot read; writes nothing. Returns the description's path."""
    path = Path(derivatives) / "dataset_description.json"
    if (path.exists() or path.is_symlink()) and not overwrite:
        existing = read_small_json(path)  # never waited on (a FIFO), bounded
        if not isinstance(existing, dict):  # another tool's file all the same (a BOM, a syntax slip, ...)
            raise OutputError(f"{path}: exists and is not a JSON description sct-gm can read (not a regular "
                              f"UTF-8 JSON file of a few MiB at most); choose another derivatives folder "
                              f"(or overwrite)", parameter="derivatives")
        generated = existing.get("GeneratedBy")
        names = [g.get("Name") for g in generated if isinstance(g, dict)] if isinstance(generated, list) else []
        if PIPELINE_NAME not in names:
            raise OutputError(f"{path}: describes a dataset made by {', '.join(map(str, names)) or 'another tool'}, "
                              f"not {PIPELINE_NAME}; choose another derivatives folder (or overwrite)",
                              parameter="derivatives")
    return path


def write_dataset_description(raw_root: str | os.PathLike[str], derivatives: str | os.PathLike[str], *,
                              overwrite: bool = False) -> Path:
    """Create the derivative folder and write its ``dataset_description.json``. Refuses (unless
    ``overwrite``) a folder whose description says another pipeline made it
    (:func:`check_dataset_description`)."""
    deriv = Path(derivatives)
    path = check_dataset_description(deriv, overwrite=overwrite)
    try:
        deriv.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{deriv}: cannot create the derivatives folder ({exc.strerror or exc})") from None
    return save_json(dataset_description(raw_root, deriv), path)


def _read_json(path: Path) -> dict[str, Any]:
    data = read_small_json(path)  # a regular file of bounded size, never waited on (a FIFO)
    return data if isinstance(data, dict) else {}
