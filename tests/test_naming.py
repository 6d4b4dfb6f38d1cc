"""sctgm.naming: SCT output names (the BIDS derivative names are checked in tests/batch/test_bids.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sctgm import naming
from sctgm.exceptions import OutputError


def test_sct_names_sit_beside_the_input_and_follow_the_gm_output():
    out = naming.sct_outputs("d/t2s.nii.gz", kinds=naming.output_kinds(prob=True, wm=True))
    assert out == {"gm": Path("d/t2s_gmseg.nii.gz"), "gm_sidecar": Path("d/t2s_gmseg.json"),
                   "wm": Path("d/t2s_wmseg.nii.gz"), "prob": Path("d/t2s_gmseg_prob.nii.gz")}
    named = naming.sct_outputs("t2s.nii", "o/mask.nii", kinds=("gm", "prob"))
    assert named == {"gm": Path("o/mask.nii"), "gm_sidecar": Path("o/mask.json"), "prob": Path("o/mask_prob.nii")}
    with pytest.raises(OutputError, match="must end in .nii.gz or .nii"):
        naming.sct_outputs("t2s.nii.gz", "mask.png")


@pytest.mark.parametrize("name,is_output", [("t2s_gmseg.nii.gz", True), ("t2s_wmseg.nii", True),
                                            ("t2s_gmseg_prob.nii.gz", True), ("t2s.nii.gz", False),
                                            ("t2s_seg.nii.gz", False)])
def test_sctgm_outputs_are_recognised_by_name(name, is_output):
    assert naming.is_sctgm_output(Path("x") / name) is is_output
    assert naming.split_nifti_name(name)[1] in (".nii.gz", ".nii")


@pytest.mark.parametrize("path, subject, session", [
    ("data/sub-01/ses-02/anat/t2s.nii.gz", "sub-01", "ses-02"),  # folders only
    ("data/sub-01/ses-02/anat/sub-01_ses-03_T2starw.nii.gz", "sub-01", "ses-03"),  # the name first
    ("sub-study/x/sub-03_T2star.nii.gz", "sub-03", None),  # not the first "sub-" of the path
    ("sub-study/scan.nii.gz", "sub-study", None),  # a folder so named is all there is
    ("mysub-01data/scan.nii.gz", None, None),  # a folder must be named sub-<label>, whole
    ("a/x_sub-02_ses-1.nii", "sub-02", "ses-1"),
    ("t2s.nii.gz", None, None),
    ("sub-01/ses-02/anat/sub-03_T2w.nii.gz", "sub-03", None),  # another subject's session folder: not its
    ("p1/ses-01/t2s.nii.gz", None, None),  # a session folder with no subject above it
    ("sub-01/anat/sub-01_ses-01_acq-x_T2star.nii.gz", "sub-01", "ses-01"),
])
def test_bids_entities_of_a_file_outside_a_dataset(path, subject, session):
    from sctgm.naming import bids_entities

    assert bids_entities(path) == (subject, session)
