"""SCT and BIDS users' habits, through the CLI: ``-v 0|1|2`` and ``-qc-dataset``/``-qc-subject``,
``T2starw`` images found by default, ``--val sub-01`` named as given, ``fetch-model --list`` names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.training.phantom import write_phantom_nifti

from ..conftest import cord_phantom_volume

TINY_TRAIN = ["--init", "none", "--arch", "unet", "--filters", "4", "--threads", "1", "--device", "cpu"]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _entries(qc: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(qc.glob("entries/*/entry.json"))]


def test_sct_flags_verbosity_and_qc_dataset(tiny_model, make_nifti, tmp_path):
    img = make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")
    res = run("segment", "-i", str(img), "-m", tiny_model(), "--device", "cpu", "-v", "1",
              "-qc", str(tmp_path / "qc"), "-qc-dataset", "cohort-A", "-qc-subject", "patient7")
    assert res.exit_code == 0, res.output
    [entry] = _entries(tmp_path / "qc")
    assert (entry["dataset"], entry["subject"]) == ("cohort-A", "patient7")
    quiet = run("segment", "-i", str(img), "-m", "tiny", "--device", "cpu", "-v", "0")
    assert quiet.exit_code == 0 and quiet.stderr == ""  # level 0: errors only
    again = run("qc", "-v", "2", "-i", str(img), "-s", str(img.with_name("t2s_gmseg.nii.gz")),
                "-qc", str(tmp_path / "qc2"), "-qc-dataset", "cohort-B", "-qc-subject", "p8")
    assert again.exit_code == 0, again.output
    assert [(e["dataset"], e["subject"]) for e in _entries(tmp_path / "qc2")] == [("cohort-B", "p8")]


def test_verbosity_2_shows_the_traceback_and_1_does_not(tmp_path):
    for level, traceback in (("1", False), ("2", True)):
        res = run("segment", "-v", level, "-i", str(tmp_path / "absent.nii.gz"))
        assert res.exit_code == 2 and ("Traceback" in res.stderr) == traceback
        assert res.stderr.splitlines()[-1] == f"sct-gm: error: {tmp_path / 'absent.nii.gz'}: no such file"


def _t2starw_dataset(root: Path) -> Path:
    from sctgm.writing import save_nifti
    import nibabel as nib

    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "w", "BIDSVersion": "1.10.0"}')
    save_nifti(nib.Nifti1Image(cord_phantom_volume(seed=2), np.diag([0.5, 0.5, 5.0, 1.0])),
               root / "sub-01" / "anat" / "sub-01_T2starw.nii.gz")
    return root


def test_t2starw_datasets_work_with_default_options(tiny_model, tmp_path):
    ds = _t2starw_dataset(tmp_path / "ds")
    res = run("segment", "--bids", str(ds), "-m", tiny_model(), "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert (ds / "derivatives" / "sct-gm" / "sub-01" / "anat" / "sub-01_T2starw_label-GM_seg.nii.gz").is_file()
    assert "T2star and T2starw" in " ".join(run("segment", "--help").stdout.split())
    assert "T2star and T2starw" in " ".join(run("train", "--help").stdout.split())


def test_train_finds_the_gm_challenge_t2starw_images_by_default(shared_data, tmp_path, monkeypatch):
    """../shared's gm_challenge_2018 names its images T2starw (the BIDS name): no --suffix needed."""
    from sctgm.training import sources

    found = sources.from_bids(shared_data / "gm_challenge_2018", suffixes=None)
    assert len(found) == 4 and all("T2starw" in it.image.name for it in found)
    res = run("train", "--bids", str(shared_data / "gm_challenge_2018"), "--participant-label", "9584",
              "--val", "sub-nobody", "-o", str(tmp_path / "m"), *TINY_TRAIN)
    assert res.exit_code == 2 and "sub-nobody" in res.stderr and "sub-9584" in res.stderr  # its data was read


def test_val_subject_is_reported_as_given(tmp_path):
    img, gm = write_phantom_nifti(tmp_path / "data", np.random.default_rng(0), name="sub-01_T2star",
                                  shape=(32, 32, 4))
    res = run("train", "-i", str(img), "-r", str(gm), "--val", "sub-02", "-o", str(tmp_path / "m"), *TINY_TRAIN)
    assert res.exit_code == 2 and "sub-02" in res.stderr and "sub-sub-02" not in res.stderr


def test_fetch_model_list_keeps_names_in_the_name_column(tmp_path):
    res = run("fetch-model", "--list", "--cache-dir", str(tmp_path))
    names = [line.split("\t")[0] for line in res.stdout.splitlines()[1:]]
    assert res.exit_code == 0 and "large" in names and all(" " not in n for n in names)


@pytest.mark.parametrize("level", ["0", "1", "2"])
def test_group_level_verbosity_before_the_command(level, tmp_path):
    res = run("-v", level, "segment", "-i", str(tmp_path / "absent.nii.gz"))
    assert res.exit_code == 2 and res.stderr.splitlines()[-1].startswith("sct-gm: error: ")


def test_csv_areas_print_the_digits_the_header_holds(tmp_path):
    import csv

    import nibabel as nib

    mask = np.zeros((20, 20, 2), np.uint8)
    mask[:10, :20, :] = 1  # 200 pixels of 0.3 x 0.3 mm (float32 in the header): 18 mm2
    path = tmp_path / "gm.nii.gz"
    nib.save(nib.Nifti1Image(mask, np.diag([0.3, 0.3, 5.0, 1.0])), str(path))
    res = run("metrics", "-i", str(path), "-o", str(tmp_path / "areas.csv"), "-q")
    assert res.exit_code == 0, res.output
    with open(tmp_path / "areas.csv", newline="") as fh:
        areas = [r["gm_area_mm2"] for r in csv.DictReader(fh) if r["scope"] == "slice"]
    assert areas == ["18", "18"]


def test_a_shared_cache_is_readable_by_the_group(tmp_path, shared_models, monkeypatch):
    import os
    import stat

    old = os.umask(0o002)  # a lab's shared folder: group-writable
    try:
        res = run("fetch-model", "challenge", "--cache-dir", str(tmp_path / "cache"), "--mirror", str(shared_models))
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "cache").rglob("*")}
    assert modes and all(m & 0o044 == 0o044 for m in modes.values()), modes  # group and others may read
    dirs = [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "cache").rglob("*") if p.is_dir()]
    assert dirs and all(m & 0o055 == 0o055 for m in dirs)  # and enter the folders


@pytest.mark.parametrize("args", [()])  # a subcommand with none: one error line (tests/cli/test_cli_consistency.py)
def test_no_arguments_print_the_help_not_one_squashed_line(args):
    res = run(*args)
    assert res.exit_code == 2  # Click's code for "no arguments, here is the help"
    lines = res.stderr.splitlines()
    assert lines[0].startswith("Usage: ") and "Options:" in lines and len(lines) > 5
    assert not res.stderr.startswith("sct-gm: error:")


def test_a_verbosity_out_of_range_names_the_range():
    res = run("-v", "3", "segment")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "3 is not in the range 0<=x<=2" in res.stderr
