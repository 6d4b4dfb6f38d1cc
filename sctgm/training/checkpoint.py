"""Training checkpoints: everything a run needs to continue bit for bit, written atomically and sealed
by a hash.

A checkpoint holds the model, optimizer and scheduler states, the state of the training generator
(every random draw of the loop comes from it), the step, the best model so far, the log and the run's
signature (its data, options and thread count: a resume must match it). The file is
``SCTGM-CK2`` + the sha256 of the payload + the payload (``torch.save`` of that dict), so a
damaged file (flipped bytes that ``torch.load`` would still read into other weights) is refused. It
is serialised in memory, written to a temporary file in the same folder, flushed, then renamed over
the previous one: an interruption (Ctrl-C, kill -9, a full disk) leaves the last good checkpoint and
no half-written file. It is read with ``torch.load(weights_only=True)``: tensors and plain containers
only, nothing unpickled.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..exceptions import OutputError

#: Bump when the checkpoint's content changes.
CHECKPOINT_VERSION = 2
_MAGIC = b"SCTGM-CK2\n"


class CheckpointError(OutputError):
    """An interrupted run's checkpoint is damaged, foreign or from another sct-gm: it cannot be resumed."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically.
    Raises :class:`~sctgm.exceptions.OutputError` naming ``path`` when it cannot be written (disk full)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **state}, buffer)
    payload = buffer.getvalue()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: the checkpoint cannot be written ({exc.strerror or exc}); the last good "
                          f"one, if any, is kept") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (its hash checked; no arbitrary unpickling).
    Raises :class:`CheckpointError` for a damaged, foreign or older file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    head = len(_MAGIC) + 32
    if not data.startswith(_MAGIC) or len(data) < head:
        raise CheckpointError(f"{path}: not an sct-gm training checkpoint of this version (version "
                              f"{CHECKPOINT_VERSION}); overwrite the interrupted run to start again", parameter="overwrite")
    payload = memoryview(data)[head:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC):head]:
        raise CheckpointError(f"{path}: the checkpoint is damaged (its content does not match its sha256); "
                              f"overwrite the interrupted run to start again", parameter="overwrite")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types on a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable sct-gm training checkpoint ({' '.join(str(exc).split())})",
                              parameter="overwrite") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version') if isinstance(state, dict) else '?'}; "
                              f"this sct-gm reads version {CHECKPOINT_VERSION}", parameter="overwrite")
    return state
