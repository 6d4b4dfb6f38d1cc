"""`sct-gm metrics` on inputs that are not what they claim (review r1): a vertebral label image with
fractional or huge values, a probability map given to compare mode."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.exceptions import MetricsError
from sctgm.metrics import compare, morphometry


def _gm(shape: tuple[int, int, int] = (8, 8, 3)) -> np.ndarray:
    gm = np.zeros(shape, np.float32)
    gm[2:5, 2:6, :] = 1
    return gm


@pytest.mark.parametrize("label, shown", [(1e19, "1e+19"), (3.4, "3.4"), (-2.0, "-2"), (2.0 ** 25, "3.35544e+07")])
def test_levels_that_are_not_whole_numbers_in_range_are_refused_in_one_line(make_nifti, label, shown):
    """1e19 became int64's minimum with a raw numpy RuntimeWarning; 3.4 was rounded to 3 silently."""
    levels = np.zeros((8, 8, 3), np.float32)
    levels[:, :, 0], levels[:, :, 1:] = 3, label
    gm, lv = make_nifti(_gm(), zooms_mm=(1, 1, 5)), make_nifti(levels, zooms_mm=(1, 1, 5))
    expected = f"128 voxels hold values that are not vertebral levels (e.g. {shown})"
    with pytest.raises(MetricsError, match=re.escape(expected)):
        morphometry(gm, levels_path=lv)
    res = CliRunner().invoke(main, ["metrics", "-i", str(gm), "--levels", str(lv), "-q"], catch_exceptions=False)
    lines = res.stderr.splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"sct-gm: error: {lv}: ") and "(option --levels)" in lines[0], lines[0]


def test_whole_number_levels_stored_as_floats_are_still_read(make_nifti):
    levels = np.zeros((8, 8, 3), np.float32)
    levels[:, :, 0], levels[:, :, 1:] = 3.0, 4.0
    rows = morphometry(make_nifti(_gm(), zooms_mm=(1, 1, 5)), levels_path=make_nifti(levels, zooms_mm=(1, 1, 5))).rows
    assert [r["level"] for r in rows if r["scope"] == "level"] == [3, 4]


@pytest.mark.parametrize("which", ["seg", "ref"])
def test_compare_warns_when_it_binarises_a_probability_map(make_nifti, caplog, which):
    """As measure mode does: the map's voxels strictly between 0 and 1 are counted in one warning."""
    prob = _gm() * 0.7
    prob[0, 0, 0] = 0.2
    masks = {"seg": make_nifti(_gm()), "ref": make_nifti(_gm())}
    masks[which] = make_nifti(prob, name="prob.nii.gz")
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        compare(masks["seg"], masks["ref"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{masks[which]}: 37 voxels lie strictly between 0 and 1 (a probability map?); they were "
                      f"binarised at 0.5; the metrics compare binary masks"], warned


def test_compare_of_binary_masks_says_nothing(make_nifti, caplog):
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        compare(make_nifti(_gm()), make_nifti(_gm()))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
