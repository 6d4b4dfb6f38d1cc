"""MODEL_DIR claimed by one training run (:func:`claimed`): a lock held from the checks of what is at the
output to the final rename, and those checks (``--resume``, ``--overwrite``: only what sct-gm train made).

The lock is an exclusive, non-blocking ``flock`` on ``.<name>.lock`` beside MODEL_DIR (beside
``.<name>.partial``, the run's working folder). A second run on the same output (``--resume`` and
``--overwrite`` included) is refused at once, naming the holder: its pid and host, which the holder
writes into the file. The kernel releases a ``flock`` when its process dies, so a run killed with
``kill -9`` never blocks the next: its lock file stays (hidden, a few bytes) and the next run takes it
over. A run that ends (finished, failed or interrupted) removes the file, so nothing is left beside
MODEL_DIR.

Why by hand rather than with ``filelock`` (the model cache's lock, ``model/install.py``): filelock
keeps its lock file after release, by design, and its 3.x releases truncate the file when they open
it, which would erase the holder's pid before a refused run reads it; :func:`sctgm.filesystem.folder_lock`
locks a folder, which would serialise every run writing in the same parent folder. Without ``flock``
(Windows), filelock's lock is used: the same refusal, without the holder's pid. On a file system that
refuses locks (ENOLCK: some network mounts) the run goes on unguarded, with a warning saying so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..exceptions import OutputError
from ..naming import split_nifti_name
from . import outputs

try:
    import fcntl
except ImportError:  # not POSIX: filelock's lock instead (_filelock)
    fcntl = None  # type: ignore[assignment]

#: The suffix of the lock file: ``.<MODEL_DIR name>.lock`` in MODEL_DIR's parent folder.
LOCK_SUFFIX = ".lock"

_CONTENDED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})
# ENOTSUP: macOS's (EOPNOTSUPP is another number there); EBADF: NFS's flock on a read-only descriptor
_NO_FLOCK = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF})

log = logging.getLogger(__name__)


class RunInProgressError(OutputError):
    """Another ``sct-gm train`` run holds the lock of this MODEL_DIR (it is writing this model)."""


def lock_path(out: Path) -> Path:
    """Where the lock of MODEL_DIR ``out`` lives: ``.<name>.lock`` beside it."""
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[Path]:
    """Hold the lock of MODEL_DIR ``out`` while the block runs (``out``'s parent folder must exist).
    Raises :class:`RunInProgressError` at once when another run holds it, OSError when the lock file
    cannot be made (an unwritable folder). Yields the lock file's path; removes the file on the way out."""
    path = lock_path(out)
    if fcntl is None:
        with _filelock(path, out):
            yield path
        return
    fd = _acquire(path, out)
    try:
        yield path
    finally:
        try:  # removed while held (a run about to take the old file sees it gone, and opens a new one)
            if os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd)):
                os.unlink(path)
        except OSError:
            pass
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(path: Path, out: Path) -> int:
    """The descriptor of ``path``, locked (the file at ``path`` now, not one removed meanwhile)."""
    # O_NONBLOCK: a FIFO put there is not waited on (it is refused below)
    flags = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    while True:
        try:
            fd = os.open(path, flags | os.O_RDWR | os.O_CREAT, 0o666)  # no O_TRUNC: the content is the holder's
        except PermissionError as denied:  # another user's file (a lab's shared folder): a lock needs no write
            try:                            # access; no file and a read-only folder: the folder's error
                fd = os.open(path, flags | os.O_RDONLY)
            except OSError:
                if path.exists():
                    raise OutputError(f"{out}: its lock file {path} cannot be opened ({denied.strerror}); if no "
                                      f"sct-gm train run is writing this model, remove it", parameter="output") from None
                raise denied from None
        except OSError as exc:  # a link or a folder at the lock's name
            if exc.errno in (errno.ELOOP, errno.EISDIR):
                raise OutputError(f"{out}: {path}, where its lock goes, is a link or a folder; move it away",
                                  parameter="output") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputError(f"{out}: {path}, where its lock goes, is not a regular file; move it away",
                              parameter="output")
        with contextlib.suppress(OSError):  # readable by all (a kill -9 under umask 077 must not block others)
            os.fchmod(fd, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _NO_FLOCK:  # a file system without locks: train all the same, unguarded
                log.warning("%s: cannot be locked (%s); another sct-gm train run on the same output would not be "
                            "detected", path, exc.strerror or exc)
                return fd
            holder = _holder(fd) if exc.errno in _CONTENDED else None
            os.close(fd)
            if exc.errno in _CONTENDED:
                raise _busy(out, holder) from None
            raise
        try:  # the file we locked may have been removed by the run ending just now: lock the new one
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            break
        os.close(fd)
    try:  # a file there that no run wrote (not empty, no holder record) is not sct-gm's to rewrite
        foreign = os.pread(fd, 4096, 0).strip() != b"" and _holder(fd) is None
    except OSError:
        foreign = False
    if foreign:
        os.close(fd)
        raise OutputError(f"{out}: {path}, where its lock goes, holds a file sct-gm did not write; move it away",
                          parameter="output")
    try:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
    except OSError:  # a full disk: the lock holds all the same, a refused run only lacks the pid
        pass
    return fd


def _holder(fd: int) -> str | None:
    """``pid N on host H`` from a held lock file, or None (not written yet, or not ours)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {int(record['pid'])} on host {str(record['host'])}"
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _busy(out: Path, holder: str | None) -> RunInProgressError:
    who = f" ({holder})" if holder else ""
    return RunInProgressError(f"{out}: another sct-gm train run is writing this model{who}; wait for it to end or "
                              f"choose another output folder", parameter="output")


@contextlib.contextmanager
def _filelock(path: Path, out: Path) -> Iterator[None]:
    import filelock

    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise _busy(out, None) from None
    try:
        yield
    finally:
        lock.release()


def _check_name(out: Path) -> None:
    """Refuse an output that cannot be a model folder, before anything is locked or made."""
    if split_nifti_name(out.name)[1]:  # `-o model.nii.gz`: a mask's name, surely not the folder meant
        raise OutputError(f"{out}: is a NIfTI name; the trained model is a folder (e.g. models/my_gm)",
                          parameter="output")
    for up in (out.parent, *out.parent.parents):
        if up.exists() and not up.is_dir():
            raise OutputError(f"{up}: is a file, not a folder; the model folder cannot be written under it")


def _check_output(out: Path, partial: Path, *, resume: bool, overwrite: bool, remove: bool = True) -> None:
    """What is at MODEL_DIR and its partial folder allows this run (checked with the run's lock held, so that
    no other run is writing them); with ``overwrite``, an interrupted run's partial folder is removed
    (only when ``remove``: never without the lock)."""
    present = out.exists() or out.is_symlink()
    if out.exists() and not out.is_dir():  # a file (or a link to one): no model folder, even with overwrite
        raise OutputError(f"{out}: is a file, not a model folder; choose another output folder", parameter="output")
    if present and not overwrite:
        hint = "overwrite it to replace it" if resume else "overwrite it or choose another output folder"
        raise OutputError(f"{out}: already exists ({'the run is finished' if resume else 'a model folder'}); {hint}",
                          parameter="overwrite")
    if present:
        check_own(out, "a model folder")  # --overwrite replaces only what sct-gm train made
    if resume and not partial.is_dir():
        raise OutputError(f"{out}: nothing to resume (no interrupted run in {partial})")
    if not resume and (partial.exists() or partial.is_symlink()):
        if not overwrite:
            raise OutputError(f"{out}: an interrupted run left {partial}; resume it or overwrite it to start "
                              f"again", parameter="resume")
        check_own(partial, "an interrupted run")
        if remove:
            shutil.rmtree(partial)


@contextlib.contextmanager
def claimed(out: Path, partial: Path, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Claim MODEL_DIR ``out`` for the block (the run, to its final rename): hold its lock (:func:`run_lock`: one
    run per output, another refused at once), then check what is at ``out`` and ``partial``. Raises
    :class:`~sctgm.exceptions.OutputError` (:class:`RunInProgressError` while another run holds the lock)."""
    _check_name(out)
    if not out.parent.is_dir():  # nothing there yet: only `nothing to resume` can be said before making it
        _check_output(out, partial, resume=resume, overwrite=overwrite, remove=False)
    with contextlib.ExitStack() as held:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(run_lock(out))
            probe = tempfile.TemporaryFile(dir=out.parent)
            probe.close()
        except OSError as exc:  # an unwritable folder: what is there is said first, as without a lock
            _check_output(out, partial, resume=resume, overwrite=overwrite, remove=False)
            raise OutputError(f"{out.parent}: cannot write the model folder there ({exc.strerror or exc})") from None
        _check_output(out, partial, resume=resume, overwrite=overwrite)
        yield


def check_own(folder: Path, what: str) -> None:
    """Refuse to remove ``folder`` unless sct-gm train made it: a real folder (not a link) that is empty
    or holds a model.json, run.json or checkpoint, and nothing but the files a run writes."""
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else None
    foreign = None if found is None else [n for n in found if n not in outputs.RUN_FILES
                                          and not outputs.is_run_temp(n)]
    own = {outputs.MODEL_JSON, outputs.RUN_FILE, outputs.CHECKPOINT}
    if found is None or foreign or (found and not own & set(found)):
        why = ("it is not a folder" if found is None else f"it holds {', '.join(map(repr, foreign[:3]))}"
               if foreign else "it holds no model.json, run.json or checkpoint")
        raise OutputError(f"{folder}: not {what} written by sct-gm train ({why}); refusing to replace it, "
                          f"choose another output folder", parameter="output")
