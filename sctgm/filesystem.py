"""Facts about files on disk, below every layer that reads or writes them: whether two paths name one
file, a file's sha256 (inputs and outputs in sidecars, training records, labels), a small JSON file
read safely (sidecars), the permissions the umask gives (so a cache shared by a lab stays
readable), and a lock on a folder that leaves no file behind (dataset tables merged by runs side by
side)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: A JSON sidecar larger than this is not one sct-gm wrote (about 0.3 kB per slice: 1000 slices, 300 kB).
MAX_JSON_BYTES = 4 << 20


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name one file (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a file's bytes (inputs and outputs in sidecars, training records, labels)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_small_json(path: str | os.PathLike[str], max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in ``path``, or None when it cannot be one sct-gm wrote: not a regular file (a
    FIFO or a device is neither read nor waited on: it is opened without blocking), larger than
    ``max_bytes``, unreadable, not UTF-8, not JSON, or nested too deep to parse."""
    try:  # a device or FIFO is not even opened (opening some has effects) ...
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:  # ... and what was opened is checked again (the name may have been swapped in between)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(max_bytes + 1)
        return json.loads(raw.decode("utf-8")) if len(raw) <= max_bytes else None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    finally:
        os.close(fd)


def modes_from_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` (a file, or a folder and the files directly in it) the permissions a plain
    ``open``/``mkdir`` would under the umask: ``tempfile.mkdtemp`` makes folders 0700 and safetensors
    writes files 0600, which would make a cache shared by a lab (SCTGM_HOME) unreadable to colleagues."""
    p, mask = Path(path), umask()
    if p.is_dir():
        os.chmod(p, 0o777 & ~mask)
        for f in p.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~mask)
    else:
        os.chmod(p, 0o666 & ~mask)


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], timeout_s: float) -> Iterator[bool]:
    """Hold an exclusive advisory lock (``flock``) on ``folder`` itself while the block runs; processes
    taking it on the same folder take turns. Yields True once held, after waiting up to ``timeout_s``
    (TimeoutError after that). Where ``flock`` does not exist (Windows), yields False: no lock.

    Why by hand rather than with ``filelock``: its lock is a file beside the data, left behind in the
    user's folder (a BIDS derivative dataset that must hold only what the pipeline writes, and byte
    for byte what an uninterrupted run writes); a ``flock`` on the folder's own descriptor leaves
    nothing, and the kernel releases it when the process dies (a killed run never blocks the next)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{folder}: locked by another process for {timeout_s:.0f} s") from None
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
