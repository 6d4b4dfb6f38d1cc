"""The labelled cases the bench scripts measure on (../shared beside the repo), and their Dice.

Kept here, not imported from tests/: bench and tests do not depend on each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS_DIR = SHARED / "models" / "deepseg_gm"
TESTING = SHARED / "data" / "sct_testing_data"

#: name -> (image, manual GM mask, cord mask or None)
LABELLED = {
    "t2s_uncropped": (TESTING / "t2s/t2s_uncropped.nii.gz", TESTING / "t2s/t2s_uncropped_gmseg_manual.nii.gz", None),
    "t2s": (TESTING / "t2s/t2s.nii.gz", TESTING / "t2s/t2s_gmseg_manual.nii.gz", TESTING / "t2s/t2s_seg.nii.gz"),
    "mt1": (TESTING / "mt/mt1.nii.gz", TESTING / "mt/mt1_gmseg_goldstandard.nii.gz", TESTING / "mt/mt1_seg.nii.gz"),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """3D Dice of two masks (>= 0.5), 1.0 when both are empty (sctgm.metrics.dice_3d says NaN)."""
    from sctgm.metrics import dice_3d

    value = dice_3d(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))
    return 1.0 if np.isnan(value) else value
