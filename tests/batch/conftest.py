"""Fixtures of the batch tests."""

from __future__ import annotations

import numpy as np
import pytest

from sctgm.writing import save_nifti

from ..conftest import cord_phantom_volume


@pytest.fixture
def make_dataset(tmp_path):
    """Factory: a BIDS dataset ``tmp_path/ds`` of ``n`` subjects (``sub-01``...), one phantom T2star
    image each (0.5 x 0.5 x 5 mm), and a raw ``dataset_description.json``."""
    import nibabel as nib

    def make(n: int):
        root = tmp_path / "ds"
        for s in range(1, n + 1):
            (root / f"sub-0{s}" / "anat").mkdir(parents=True)
            save_nifti(nib.Nifti1Image(cord_phantom_volume(seed=s), np.diag([0.5, 0.5, 5.0, 1.0])),
                       root / f"sub-0{s}" / "anat" / f"sub-0{s}_T2star.nii.gz")
        (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
        return root

    return make
