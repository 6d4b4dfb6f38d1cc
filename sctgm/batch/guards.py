"""What a batch must not write, and must not leave behind.

- :func:`check_outside_raw`: the batch's tables are refused inside the raw dataset, except under its
  ``derivatives/`` (or the run's own derivatives folder), as the derivatives folder is.
- :func:`removing_new_empty_folders`: the output folders a run creates and leaves empty (an
  interruption before an image's outputs were renamed into place, an image that failed) are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..exceptions import OutputError

log = logging.getLogger(__name__)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_outside_raw(root: str | os.PathLike[str], derivatives: str | os.PathLike[str],
                      tables: Iterable[tuple[str, str, str | os.PathLike[str] | None]]) -> None:
    """Refuse, before any work, a table location that lies in the raw dataset ``root`` but
    neither under ``root/derivatives`` nor under the run's ``derivatives`` folder (wherever a link or
    ``..`` takes it). ``tables``: (parameter, what, path or None) triples. A table is renamed onto its
    name, so where its *folder* resolves is what counts (a link named like the table is replaced, not
    followed)."""
    raw = os.path.realpath(Path(root).absolute())
    allowed = (os.path.join(raw, "derivatives"), os.path.realpath(Path(derivatives).absolute()))
    for parameter, what, path in tables:
        if path is None:
            continue
        p = Path(path).absolute()
        real = os.path.join(os.path.realpath(p.parent), p.name)
        if _inside(real, raw) and not any(_inside(real, a) and real != a for a in allowed):
            raise OutputError(f"{path}: the {what} must not be written into the raw data; put it outside the "
                              f"dataset or under {Path(root) / 'derivatives'}", parameter=parameter)


def _missing_folders(folders: Iterable[Path]) -> set[Path]:
    """``folders`` and their ancestors that do not exist yet (a dangling link counts as existing)."""
    missing: set[Path] = set()
    for folder in {Path(os.path.abspath(f)) for f in folders}:
        for f in (folder, *folder.parents):
            if f in missing or f.exists() or f.is_symlink():
                break
            missing.add(f)
    return missing


@contextlib.contextmanager
def removing_new_empty_folders(folders: Iterable[Path]) -> Iterator[None]:
    """Note which of ``folders`` (and their ancestors) do not exist yet; when the block ends, however it
    ends (Ctrl-C included), remove those of them that exist and are empty, deepest first. Only folders
    that were not there at the start, and only empty ones (``os.rmdir`` removes nothing else)."""
    created = _missing_folders(folders)
    try:
        yield
    finally:
        for f in sorted(created, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not made, not empty, or not a folder: left as it is
                if f.is_dir() and not f.is_symlink():
                    os.rmdir(f)
