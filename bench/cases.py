"""The one place bench/ learns where ../shared is, and the labelled cases measured on, with their Dice.

Every bench script imports this module as ``from cases import ...``: run the scripts from the repo
root as ``python bench/<script>.py`` (Python puts ``bench/`` first on ``sys.path``, so this import
works with no ``sys.path`` edits) with sct-gm installed from this checkout (``pip install -e .``;
in a worktree whose sct-gm is installed from elsewhere, ``PYTHONPATH=. python bench/<script>.py``).
Kept here, not imported from tests/: bench and tests do not depend on each other.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: ../shared beside the repo (read-only): published weights, labelled data, reference outputs.
SHARED = REPO.parent / "shared"
MODELS_DIR = SHARED / "models" / "deepseg_gm"
DATA = SHARED / "data"
TESTING = DATA / "sct_testing_data"
T2S_UNCROPPED = TESTING / "t2s" / "t2s_uncropped.nii.gz"

#: name -> (image, manual GM mask, cord mask or None)
LABELLED = {
    "t2s_uncropped": (TESTING / "t2s/t2s_uncropped.nii.gz", TESTING / "t2s/t2s_uncropped_gmseg_manual.nii.gz", None),
    "t2s": (TESTING / "t2s/t2s.nii.gz", TESTING / "t2s/t2s_gmseg_manual.nii.gz", TESTING / "t2s/t2s_seg.nii.gz"),
    "mt1": (TESTING / "mt/mt1.nii.gz", TESTING / "mt/mt1_gmseg_goldstandard.nii.gz", TESTING / "mt/mt1_seg.nii.gz"),
}


def require_shared(*paths: Path) -> None:
    """Exit with one line naming the first of ``paths`` (default: the testing data and the published
    weights) that is absent: the bench scripts measure on ../shared and have nothing to do without it."""
    for path in paths or (TESTING, MODELS_DIR):
        if not path.exists():
            sys.exit(f"{path} is absent: the shared data folder beside the repo ({SHARED}) is needed")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """3D Dice of two masks (>= 0.5), 1.0 when both are empty (sctgm.metrics.dice_3d says NaN)."""
    from sctgm.metrics import dice_3d

    value = dice_3d(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))
    return 1.0 if np.isnan(value) else value


def _gm_challenge() -> dict[str, tuple[Path, Path, Path | None]]:
    root = DATA / "gm_challenge_2018"
    out: dict[str, tuple[Path, Path, Path | None]] = {}
    for sub in ("sub-10062Ses1", "sub-10062Ses2", "sub-9584", "sub-9669"):
        lab = root / "derivatives/labels" / sub / "anat" / f"{sub}_run-1_T2starw"
        out[f"gmc-{sub[4:]}"] = (root / sub / "anat" / f"{sub}_run-1_T2starw.nii.gz",
                                 Path(f"{lab}_gmseg-manual.nii.gz"), Path(f"{lab}_seg-manual.nii.gz"))
    return out


#: The four labelled gm_challenge_2018 volumes (run-1): large-robust's training data, and masks most
#: likely made by correcting `large` (data/README.md): agreement with `large`, not held-out accuracy.
GM_CHALLENGE = _gm_challenge()
#: Every labelled case in ../shared (the held-out three first).
ALL_LABELLED = {**LABELLED, **GM_CHALLENGE}

#: A slice is an outlier when its Dice is under this and its manual mask holds at least this many voxels.
OUTLIER_DICE, OUTLIER_MIN_VOXELS = 0.5, 20


def outlier_slices(mask: np.ndarray, manual: np.ndarray) -> list[int]:
    """Axial slices (axis 2 of the arrays as given) where ``mask`` misses the manual GM: slice Dice
    under :data:`OUTLIER_DICE` where the manual mask has at least :data:`OUTLIER_MIN_VOXELS` voxels."""
    m, g = np.asarray(mask) >= 0.5, np.asarray(manual) >= 0.5
    out = []
    for k in range(g.shape[2]):
        n = int(g[:, :, k].sum())
        if n >= OUTLIER_MIN_VOXELS and 2.0 * float((m[:, :, k] & g[:, :, k]).sum()) / (n + int(m[:, :, k].sum())) < OUTLIER_DICE:
            out.append(k)
    return out
