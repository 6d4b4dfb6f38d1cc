"""What a batch must not leave behind.

- :func:`removing_new_empty_folders`: the output folders a run creates and leaves empty (an
  interruption before an image's outputs were renamed into place, an image that failed) are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


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
