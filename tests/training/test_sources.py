"""sctgm.training.sources: BIDS and GM-challenge discovery, and the validation split (no training)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from sctgm.model.registry import Preprocessing
from sctgm.training.data import TrainingDataError, read_labelled
from sctgm.training.phantom import write_phantom_nifti
from sctgm.training.sources import from_bids, from_gmchallenge, split


def test_bids_takes_the_images_with_a_manual_gm_mask(tmp_path):
    root = tmp_path / "ds"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    rng = np.random.default_rng(0)
    for sub, suffix in (("01", "_label-GM_seg"), ("02", "_gmseg-manual")):
        anat = root / f"sub-{sub}" / "anat"
        img, gm = write_phantom_nifti(anat, rng, name=f"sub-{sub}_run-1_T2star", shape=(32, 32, 3))
        shutil.copy(img, anat / f"sub-{sub}_run-2_T2star.nii.gz")  # an unlabelled rescan
        labels = root / "derivatives" / "labels" / f"sub-{sub}" / "anat"
        labels.mkdir(parents=True)
        gm.rename(labels / f"sub-{sub}_run-1_T2star{suffix}.nii.gz")
    items = from_bids(root)
    assert [(i.image.name, i.masks[0].name, i.subject) for i in items] == [
        ("sub-01_run-1_T2star.nii.gz", "sub-01_run-1_T2star_label-GM_seg.nii.gz", "sub-01"),
        ("sub-02_run-1_T2star.nii.gz", "sub-02_run-1_T2star_gmseg-manual.nii.gz", "sub-02")]
    assert [i.subject for i in from_bids(root, participants=["02"])] == ["sub-02"]
    with pytest.raises(TrainingDataError, match="manual GM mask"):
        from_bids(root, participants=["01"], labels=tmp_path / "nolabels")


def test_gmchallenge_layout_and_majority_vote(tmp_path):
    img, gm = write_phantom_nifti(tmp_path / "src", np.random.default_rng(0), shape=(32, 32, 3))
    ref = nib.load(str(gm))
    g = np.asarray(ref.dataobj)
    folder = tmp_path / "challenge"
    folder.mkdir()
    shutil.copy(img, folder / "site1-sc01-image.nii.gz")
    for r in range(1, 5):
        lab = np.where(g > 0, 1.0, 0.0)
        if r >= 3:  # two raters of four miss slice 0's GM (a tie: still GM), three miss slice 1's
            lab[:, :, 0] = 0
        if r >= 2:
            lab[:, :, 1] = 0
        lab = np.where((lab == 0) & (g == 0), 0, lab) + 2 * ((g == 0) & (np.arange(32)[:, None, None] == 16))
        nib.save(nib.Nifti1Image(lab.astype(np.float32), ref.affine, ref.header), str(folder / f"site1-sc01-mask-r{r}.nii.gz"))
    items = from_gmchallenge(folder)
    assert len(items) == 1 and items[0].challenge and len(items[0].masks) == 4 and items[0].subject == "site1-sc01"
    lv = read_labelled(items[0], Preprocessing(crop_px=48))
    assert lv.slices == [0, 2]  # slice 1: only 1 of 4 raters -> not GM -> not labelled


def test_one_subject_is_split_into_contiguous_blocks(tmp_path):
    img, gm = write_phantom_nifti(tmp_path, np.random.default_rng(0), name="sub-01_T2star", shape=(32, 32, 10))
    from sctgm.training.data import LabelledImage

    v = read_labelled(LabelledImage(img, (gm,), "sub-01"), Preprocessing(crop_px=48))
    s = split([v], val_fraction=0.2)
    assert s.train[0].slices == list(range(8)) and s.val[0].slices == [8, 9]
    assert s.train[0].inputs.shape[0] == 8 and s.val[0].targets.shape[0] == 2
    assert split([v], val_fraction=0.0).val == []


def test_subjects_are_held_out_whole(tmp_path):
    from dataclasses import replace

    from sctgm.training.data import LabelledImage

    img, gm = write_phantom_nifti(tmp_path, np.random.default_rng(0), shape=(32, 32, 3))
    v = read_labelled(LabelledImage(img, (gm,), "sub-01"), Preprocessing(crop_px=48))
    vols = [replace(v, subject=f"sub-{i:02d}") for i in range(1, 11)]
    s = split(vols, val_fraction=0.2, seed=0)
    assert len(s.val) == 2 and not {x.subject for x in s.val} & {x.subject for x in s.train}
    assert {x.subject for x in split(vols, val_subjects=["03"]).val} == {"sub-03"}
