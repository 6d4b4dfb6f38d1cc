"""Writing files so that no reader ever sees half of one: a file written under a temporary name beside
its target and renamed (:func:`atomic_path`, :func:`save_nifti`, :func:`save_json`), a set of files
renamed together (:class:`StagedFiles`), the temporary files a killed writer left
(:func:`remove_leftover_parts`), and the one writable-folder check. Reading is :mod:`sctgm.io`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib

from .exceptions import OutputError
from .filesystem import umask
from .naming import split_nifti_name

log = logging.getLogger(__name__)


def folder_is_writable(folder: str | os.PathLike[str]) -> bool:
    """True when files can be created in ``folder`` (it exists, and we may write and enter it). The one
    writable-folder check of sct-gm: outputs, tables and the QC folder all use it."""
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def check_writable(path: str | os.PathLike[str], *, hint: str = "give a file name ending in .nii.gz or .nii") -> Path:
    """Fail early (before any computation) when ``path`` cannot be written; ``hint`` is the fix shown
    when ``path`` is a folder. Missing output folders are fine (created when the file is written,
    like ``mkdir -p``): the nearest existing one must be a writable folder."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    existing = next((f for f in (folder, *folder.parents) if f.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"{p}: {existing} is a file, not a folder")
    if not folder_is_writable(existing):
        raise OutputError(f"{p}: the output folder {existing} is not writable")
    if p.is_dir():
        raise OutputError(f"{p}: is a folder; {hint}")
    if p.exists() and not p.is_file():  # whatever --overwrite says: a rename would replace /dev/null
        raise OutputError(f"{p}: is not a regular file (a FIFO, a device or a socket); sct-gm never writes "
                          f"there: give a file name")
    return p


def temporary_beside(path: str | os.PathLike[str]) -> Path:
    """A new empty hidden file beside ``path`` with its extension: ``.<stem>.<random>.part<ext>`` (what
    :func:`remove_leftover_parts` recognises)."""
    p = Path(path)
    stem, ext = _stem_and_extension(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)  # a missing output folder is created (check_writable)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{ext}", dir=p.parent if str(p.parent) else ".")
    except OSError as exc:
        raise OutputError(f"{p}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    return Path(tmp)


def _stem_and_extension(p: Path) -> tuple[str, str]:
    """('t2s_gmseg', '.nii.gz') for t2s_gmseg.nii.gz, ('t2s_gmseg', '.json') for t2s_gmseg.json."""
    stem, ext = split_nifti_name(p.name)
    return (stem, ext) if ext else (p.stem, p.suffix)


def _is_part_token(token: str) -> bool:
    """The random part of a temporary name: one word of letters, digits and ``_`` (tempfile's
    alphabet), never a dot, so another output whose name extends this one's stem is not matched."""
    return bool(token) and all(c.isascii() and (c.isalnum() or c == "_") for c in token)


def remove_leftover_parts(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Remove the temporary files (:func:`temporary_beside`) that a killed writer left beside these
    outputs; the caller owns the outputs, so nobody else is writing them. Returns what was removed."""
    removed = []
    for p in map(Path, paths):
        stem, ext = _stem_and_extension(p)
        if not p.parent.is_dir():
            continue
        for tmp in p.parent.glob(f".{glob.escape(stem)}.*.part{ext}"):
            if not _is_part_token(tmp.name[len(stem) + 2:-len(f".part{ext}")]):
                continue  # another output's: `.a.v2.<token>.part.nii.gz` is `a.v2.nii.gz`'s, not `a.nii.gz`'s
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
                log.debug("removed %s, left by an interrupted run", tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension); on success it is renamed onto
    ``path`` in one step, on any exception (Ctrl-C included) it is removed. Readers never see a
    partial file."""
    with StagedFiles() as staged:
        yield staged.reserve(path)
        staged.commit()


class StagedFiles:
    """Files written as one set: each under a temporary name beside its target
    (:func:`temporary_beside`), then all renamed into place (:meth:`commit`), or all removed when
    anything fails first (leaving the ``with`` block by an exception, Ctrl-C included). A rename never
    runs out of space, so a full disk or a file-size limit stops the set before any file is replaced."""

    def __init__(self) -> None:
        self.temporary: dict[Path, Path] = {}  # target -> its temporary file, in staging order

    def reserve(self, path: str | os.PathLike[str]) -> Path:
        """The temporary file for ``path`` (created empty; the caller writes it)."""
        tmp = temporary_beside(path)
        self.temporary[Path(path)] = tmp
        return tmp

    def stage(self, path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
        """``write(temporary path)`` for ``path``; an OSError becomes one :class:`OutputError` naming ``path``."""
        tmp = self.reserve(path)
        try:
            write(tmp)
        except OSError as exc:
            raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from None
        return tmp

    def commit(self, order: Iterable[str | os.PathLike[str]] = ()) -> None:
        """Rename every staged file onto its target: those in ``order`` first, then the others."""
        mode = 0o666 & ~umask()
        for target in [*map(Path, order), *self.temporary]:
            tmp = self.temporary.get(target)
            if tmp is None:
                continue
            try:
                os.chmod(tmp, mode)
                os.replace(tmp, target)
            except OSError as exc:  # the temporary file stays listed: discard() removes it
                raise OutputError(f"{target}: cannot be written ({exc.strerror or exc})") from None
            del self.temporary[target]  # only once renamed (a Ctrl-C before: discard() finds no file)

    def discard(self) -> None:
        """Remove every temporary file not yet renamed."""
        for tmp in self.temporary.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.temporary.clear()

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def save_nifti(img: nib.Nifti1Image, path: str | os.PathLike[str]) -> Path:
    """Write ``img`` atomically to ``path``."""
    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            nib.save(img, str(tmp))
    except OSError as exc:
        raise OutputError(f"{p}: cannot be written ({exc.strerror or exc})") from None
    return p


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON text sct-gm writes (sidecars, records)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"


def save_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON (:func:`json_text`), atomically."""
    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            tmp.write_text(json_text(obj))
    except OSError as exc:
        raise OutputError(f"{p}: cannot be written ({exc.strerror or exc})") from None
    return p
