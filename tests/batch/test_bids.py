"""BIDS discovery, filters, derivative names and dataset_description, without running the network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sctgm import naming
from sctgm.batch import bids
from sctgm.batch import expand_inputs, plan_bids, plan_files
from sctgm.cli.options import spread_greedy
from sctgm.exceptions import DatasetError, OutputError
from sctgm.batch.jobs import BatchSettings

from ..conftest import DATA_DIR


def entity_keys(name: str) -> list[str]:
    """The entity keys of a file name, in order (``key-label`` parts; the suffixes are skipped)."""
    stem = name.split(".")[0]
    return [part.split("-")[0] for part in stem.split("_") if re.fullmatch(r"[a-zA-Z]+-[0-9a-zA-Z+]+", part)]


def assert_entity_order(name: str) -> None:
    keys = entity_keys(name)
    assert all(k in bids.ENTITY_ORDER for k in keys), name
    positions = [bids.ENTITY_ORDER.index(k) for k in keys]
    assert positions == sorted(positions) and len(set(keys)) == len(keys), f"{name}: entities out of BIDS order"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.diag([0.5, 0.5, 5.0, 1.0])), str(path))
    return path


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for rel in ("sub-01/ses-01/anat/sub-01_ses-01_T2star.nii.gz",
                "sub-01/ses-02/anat/sub-01_ses-02_acq-cspine_run-1_T2star.nii.gz",
                "sub-01/ses-02/anat/sub-01_ses-02_T2w.nii.gz",
                "sub-02/anat/sub-02_T2star.nii",
                "sub-02/anat/sub-02_flip-1_mt-on_MTS.nii.gz",
                "sub-02/anat/notes_T2star.nii.gz",             # not a BIDS name: skipped
                "sub-02/anat/sub-03_T2star.nii.gz",            # wrong subject for its folder: skipped
                "sub-02/func/sub-02_task-rest_bold.nii.gz",     # another datatype
                "derivatives/labels/sub-01/ses-01/anat/sub-01_ses-01_T2star_label-SC_seg.nii.gz",
                "sourcedata/sub-09/anat/sub-09_T2star.nii.gz",
                ".git/sub-08/anat/sub-08_T2star.nii.gz"):
        _touch(root / rel)
    (root / "sub-01/ses-01/anat/sub-01_ses-01_T2star.json").write_text("{}")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    return root


def test_parse_name_reads_entities_suffix_and_extension():
    assert bids.parse_name("sub-01_ses-02_acq-cspine_run-1_T2star.nii.gz") == (
        (("sub", "01"), ("ses", "02"), ("acq", "cspine"), ("run", "1")), "T2star", ".nii.gz")
    assert bids.parse_name("sub-01_T2star.nii") == ((("sub", "01"),), "T2star", ".nii")
    for bad in ("notes_T2star.nii.gz", "sub-01_T2star.json", "ses-01_sub-01_T2star.nii.gz", "sub-01.nii.gz",
                "sub-01_sub-02_T2star.nii.gz", "sub-01_acq-a_b_T2star.nii.gz"):
        assert bids.parse_name(bad) is None, bad


def test_find_images_walks_raw_anat_only_and_filters(tiny_dataset, caplog):
    found = bids.find_images(tiny_dataset)
    assert [im.relpath for im in found] == ["sub-01/ses-01/anat/sub-01_ses-01_T2star.nii.gz",
                                            "sub-01/ses-02/anat/sub-01_ses-02_acq-cspine_run-1_T2star.nii.gz",
                                            "sub-02/anat/sub-02_T2star.nii"]
    assert (found[1].subject, found[1].session, found[1].suffix) == ("01", "02", "T2star")
    assert found[2].session is None and found[2].qc_subject == "sub-02" and found[1].qc_subject == "sub-01_ses-02"
    assert "notes_T2star.nii.gz: not a BIDS file name" in caplog.text
    assert "sub-03_T2star.nii.gz: its sub-/ses- entities do not match its folder" in caplog.text

    assert [im.path.name for im in bids.find_images(tiny_dataset, participants=["sub-02"])] == ["sub-02_T2star.nii"]
    assert [im.session for im in bids.find_images(tiny_dataset, sessions=["02"])] == ["02"]
    both = bids.find_images(tiny_dataset, suffixes=["MTS", "T2w"], participants=["01 02"])
    assert [im.path.name for im in both] == ["sub-01_ses-02_T2w.nii.gz", "sub-02_flip-1_mt-on_MTS.nii.gz"]


def test_find_images_errors_name_the_problem(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match=r"no participant sub-07; the dataset has sub-01, sub-02"):
        bids.find_images(tiny_dataset, participants=["07"])
    with pytest.raises(DatasetError, match=r"no session ses-09; the dataset has ses-01, ses-02"):
        bids.find_images(tiny_dataset, sessions=["ses-09"])
    with pytest.raises(DatasetError, match=r"no anat image with suffix T1w .*suffixes present: MTS, T2star, T2w"):
        bids.find_images(tiny_dataset, suffixes=["T1w"])
    with pytest.raises(DatasetError, match="has no sub-<label> folder"):
        bids.find_images(tmp_path)
    for empty in ("", " ", ",", "sub-"):  # a script's empty $SUBJ: never "every participant"
        with pytest.raises(DatasetError, match="an empty participant label .* would select every participant") as err:
            bids.find_images(tiny_dataset, participants=["01", empty])
        assert err.value.parameter == "participants"
    with pytest.raises(DatasetError, match="an empty session label"):
        bids.find_images(tiny_dataset, sessions=[""])
    # one label or suffix as a string is one item (a notebook's participants="02"), not its characters
    assert bids.find_images(tiny_dataset, participants="02", suffixes="T2star") == \
        bids.find_images(tiny_dataset, participants=["02"], suffixes=["T2star"])
    with pytest.raises(DatasetError, match="no such folder"):
        bids.find_images(tmp_path / "absent")


def test_derivative_names_follow_spine_generic_and_the_bids_entity_order(tiny_dataset):
    image = bids.find_images(tiny_dataset, sessions=["02"])[0]
    deriv = tiny_dataset / "derivatives" / "sct-gm"
    out = naming.bids_outputs(image, deriv, kinds=("gm", "wm", "prob"))
    folder = deriv / "sub-01" / "ses-02" / "anat"
    stem = "sub-01_ses-02_acq-cspine_run-1_T2star"
    assert out == {"gm": folder / f"{stem}_label-GM_seg.nii.gz", "gm_sidecar": folder / f"{stem}_label-GM_seg.json",
                   "wm": folder / f"{stem}_label-WM_seg.nii.gz", "wm_sidecar": folder / f"{stem}_label-WM_seg.json",
                   "prob": folder / f"{stem}_label-GM_probseg.nii.gz",
                   "prob_sidecar": folder / f"{stem}_label-GM_probseg.json"}
    for p in out.values():
        assert_entity_order(p.name)
    assert entity_keys(out["gm"].name) == ["sub", "ses", "acq", "run", "label"]
    assert image.uri == f"bids:raw:sub-01/ses-02/anat/{stem}.nii.gz"
    with pytest.raises(AssertionError, match="out of BIDS order"):
        assert_entity_order("sub-01_run-1_acq-x_T2star.nii.gz")  # the checker itself can fail


def test_plan_bids_uses_labels_cord_masks_and_refuses_writing_into_raw_data(tiny_dataset):
    jobs, deriv = plan_bids(tiny_dataset, BatchSettings(wm=True))
    assert deriv == tiny_dataset.absolute() / "derivatives" / "sct-gm"
    with_cord = jobs[0]
    assert with_cord.cord is not None and with_cord.cord.name == "sub-01_ses-01_T2star_label-SC_seg.nii.gz"
    assert with_cord.sources == ("bids:raw:sub-01/ses-01/anat/sub-01_ses-01_T2star.nii.gz",
                                 "bids:raw:derivatives/labels/sub-01/ses-01/anat/sub-01_ses-01_T2star_label-SC_seg.nii.gz")
    assert "wm" in with_cord.outputs and "wm" not in jobs[1].outputs and "no cord mask" in jobs[1].note
    assert (with_cord.subject, with_cord.session, jobs[2].session) == ("sub-01", "ses-01", None)
    no_labels, _ = plan_bids(tiny_dataset, BatchSettings(wm=True), cord_labels=False)
    assert no_labels[0].cord is None and "wm" not in no_labels[0].outputs
    with pytest.raises(OutputError, match="must not be written into the raw data"):
        plan_bids(tiny_dataset, BatchSettings(), derivatives=tiny_dataset / "sub-01")


def test_spine_generic_subject_finds_its_manual_cord_mask(shared_data):
    root = DATA_DIR / "spine_generic_unf01"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    images = bids.find_images(root)
    assert [im.relpath for im in images] == ["sub-unf01/anat/sub-unf01_T2star.nii.gz"]
    cord = bids.find_cord_label(images[0], root / "derivatives" / "labels")
    assert cord is not None and cord.name == "sub-unf01_T2star_seg-manual.nii.gz"


def test_dataset_description_links_the_raw_dataset(tiny_dataset, tmp_path):
    deriv = tiny_dataset / "derivatives" / "sct-gm"
    path = bids.write_dataset_description(tiny_dataset, deriv)
    desc = json.loads(path.read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    assert desc["GeneratedBy"][0]["Name"] == "sct-gm" and desc["GeneratedBy"][0]["Version"]
    assert desc["DatasetLinks"] == {"raw": "../.."} and desc["SourceDatasets"] == [{"URL": "../.."}]
    assert (deriv / desc["DatasetLinks"]["raw"]).resolve() == tiny_dataset.resolve()
    assert path.read_bytes() == bids.write_dataset_description(tiny_dataset, deriv).read_bytes()  # deterministic
    elsewhere = json.loads(bids.write_dataset_description(tiny_dataset, tmp_path / "out").read_text())
    assert elsewhere["DatasetLinks"]["raw"] == tiny_dataset.absolute().as_uri()
    other = tmp_path / "fmriprep"
    other.mkdir()
    (other / "dataset_description.json").write_text(json.dumps({"GeneratedBy": [{"Name": "fMRIPrep"}]}))
    with pytest.raises(OutputError, match="made by fMRIPrep"):
        bids.write_dataset_description(tiny_dataset, other)


def test_expand_inputs_globs_and_leaves_out_sctgm_outputs(tmp_path):
    for name in ("b.nii.gz", "a.nii.gz", "a_gmseg.nii.gz", "a_gmseg_prob.nii.gz", "a_wmseg.nii", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.nii").write_bytes(b"x")
    got = expand_inputs([str(tmp_path / "*.nii*"), str(tmp_path / "b.nii.gz"), str(tmp_path / "**" / "c.nii")])
    assert got == [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", tmp_path / "sub" / "c.nii"]
    assert expand_inputs([str(tmp_path / "missing.nii.gz")]) == [tmp_path / "missing.nii.gz"]  # fails as a job
    with pytest.raises(DatasetError, match=r"zz\*\.nii\.gz: the pattern matches no NIfTI file"):
        expand_inputs([str(tmp_path / "zz*.nii.gz")])
    with pytest.raises(OutputError, match="one output file name given for 2 inputs"):
        plan_files([str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")], BatchSettings(), output=tmp_path / "o.nii.gz")
    jobs = plan_files([str(tmp_path / "[ab].nii.gz")], BatchSettings(prob=True))
    assert [j.outputs["gm"].name for j in jobs] == ["a_gmseg.nii.gz", "b_gmseg.nii.gz"]
    assert jobs[0].outputs["gm_sidecar"].name == "a_gmseg.json" and jobs[0].outputs["prob"].name == "a_gmseg_prob.nii.gz"


def test_spread_greedy_turns_value_lists_into_repeated_options():
    assert spread_greedy(["-i", "a", "b", "-m", "x", "--participant-label", "01", "02", "-q"],
                         ("-i", "--participant-label")) == [
        "-i", "a", "-i", "b", "-m", "x", "--participant-label", "01", "--participant-label", "02", "-q"]
    assert spread_greedy(["-m", "a", "b"], ("-i",)) == ["-m", "a", "b"]  # not greedy: left to click
    assert spread_greedy(["-i", "a", "--", "-x"], ("-i",)) == ["-i", "a", "--", "-x"]


def test_a_value_list_flag_followed_by_another_flag_says_it_needs_a_value(tmp_path):
    """Found in the user audit: `--participant-label -j 2` took `-j` as the label and then said
    "Got unexpected extra argument (2)"."""
    from click.testing import CliRunner

    from sctgm.cli import main

    for args, flag in ((["--bids", str(tmp_path), "--participant-label", "-j", "2"], "--participant-label"),
                       (["-i", "-m", "challenge"], "-i")):
        res = CliRunner().invoke(main, ["segment", *args])
        assert res.exit_code == 2, res.output
        (line,) = [x for x in res.stderr.splitlines() if x.strip()]
        assert line.startswith(f"sct-gm: error: {flag} needs a value before {args[args.index(flag) + 1]}"), line


def test_segment_cli_rejects_conflicting_batch_options(tmp_path):
    from click.testing import CliRunner

    from sctgm.cli import main

    cases = [(["--bids", str(tmp_path), "-i", "x.nii.gz"], "exclude each other"),
             (["-i", "x.nii.gz", "--participant-label", "01"], "only apply with --bids"),
             (["-i", "a.nii.gz", "b.nii.gz", "-qc-subject", "s"], "-qc-subject names one image"),
             (["-i", "a.nii.gz", "b.nii.gz", "-j", "2", "--scheduler", "tcp://x:1"], "exclude each other"),
             (["-i", "a.nii.gz", "b.nii.gz", "--metrics"], "--metrics needs the CSV path"),
             ([], "give the image(s) to segment")]
    for args, message in cases:
        res = CliRunner().invoke(main, ["segment", *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
