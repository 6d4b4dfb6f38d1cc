"""Training checkpoints: everything a run needs to continue bit for bit, written atomically.

A checkpoint holds the model, optimizer and scheduler states, the state of the training generator
(every random draw of the loop comes from it), the step, the best model so far and the log. It is
written to a temporary file in the same folder, flushed, then renamed over the previous one, so an
interruption (Ctrl-C, a killed job) leaves the last good checkpoint and no half-written file. It is
read with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing unpickled.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

#: Bump when the checkpoint's content changes.
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (no arbitrary unpickling)."""
    from ..exceptions import SctGmError

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types on a damaged or foreign file
        raise SctGmError(f"{path}: not a readable sct-gm training checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise SctGmError(f"{path}: checkpoint version {state.get('version') if isinstance(state, dict) else '?'}; "
                         f"this sct-gm reads version {CHECKPOINT_VERSION}")
    return state
