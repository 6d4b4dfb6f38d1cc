"""A mask saved by the QC editor labels only the slices its sidecar lists (sctgm.labels), and train
uses exactly those (in the file's S-I numbering, whatever the file's orientation)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import sctgm
from sctgm import labels
from sctgm.io import load_image
from sctgm.training.data import TrainingDataError
from sctgm.training.sources import from_bids, from_pairs

from ..qc import editing


def correct(paths: dict, file_slices: list[int]) -> None:
    image = load_image(paths["image"])
    auto = np.asarray(nib.load(str(paths["auto"])).dataobj)
    labels.write_correction(image, paths["auto"], auto, {k: 0 for k in file_slices}, slice_axis=2)


@pytest.mark.parametrize("codes", ["RPI", "LAS"])
def test_train_uses_exactly_the_saved_slices(tmp_path, codes):
    paths = editing.build(tmp_path, {"sub-01": codes}, prob=False)["sub-01"]
    correct(paths, [1, 4])
    items = from_bids(tmp_path / "ds")
    assert [(i.masks[0], i.slices) for i in items] == [(paths["label"], (1, 4))]
    result = sctgm.train(sctgm.TrainSources(bids=tmp_path / "ds", suffixes=["T2star"]), tmp_path / "m",
                         sctgm.TrainOptions(init="none", arch="unet", filters=4, max_steps=1, val_fraction=0.0,
                                            device="cpu", threads=1))
    data = json.loads(result.model_json.read_text())["models"]["m"]["training"]["data"]
    nz = editing.SHAPE[2]
    canonical = sorted(nz - 1 - k if codes == "RPI" else k for k in (1, 4))  # RPI stores S-I flipped
    assert data[0]["train_slices"] == canonical and data[0]["val_slices"] == []


def test_pairs_read_the_sidecar_and_masks_without_one_label_every_gm_slice(tmp_path):
    paths = editing.build(tmp_path, {"sub-01": "LAS"}, prob=False)["sub-01"]
    assert from_pairs([paths["image"]], [paths["auto"]])[0].slices is None
    correct(paths, [2])
    assert from_pairs([paths["image"]], [paths["label"]])[0].slices == (2,)
    side = labels.sidecar_of(paths["label"])
    side.write_text(json.dumps({**json.loads(side.read_text()), labels.SLICES_KEY: [2, 9]}))
    from sctgm.model.registry import Preprocessing
    from sctgm.training.data import read_labelled

    with pytest.raises(TrainingDataError, match="lists slices"):
        read_labelled(from_pairs([paths["image"]], [paths["label"]])[0], Preprocessing())


def test_correction_path_bids_and_beside_the_image(tmp_path):
    paths = editing.build(tmp_path, {"sub-01": "LAS"}, prob=False)["sub-01"]
    t = labels.correction_path(paths["image"])
    assert t.mask == paths["label"] and t.bids_root == tmp_path / "ds"
    ses = tmp_path / "ds" / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T2star.nii.gz"
    assert labels.correction_path(ses).mask == (tmp_path / "ds" / "derivatives" / "labels" / "sub-01" / "ses-2" / "anat"
                                                / "sub-01_ses-2_T2star_label-GM_seg.nii.gz")
    loose = tmp_path / "scans" / "t2s.nii"
    assert labels.correction_path(loose).mask == tmp_path / "scans" / "t2s_gmseg-manual.nii.gz"
    with pytest.raises(sctgm.SctGmError, match="never overwrites"):
        labels.write_correction(load_image(paths["image"]), paths["auto"], np.zeros(editing.SHAPE, np.uint8), {0: 0},
                                slice_axis=2, target=labels.CorrectionTarget(paths["auto"], paths["auto"], None))


def test_write_correction_never_overwrites_a_label_it_did_not_write(tmp_path):
    paths = editing.build(tmp_path, {"sub-01": "LAS"}, prob=False)["sub-01"]
    image, auto = load_image(paths["image"]), np.asarray(nib.load(str(paths["auto"])).dataobj)
    side = labels.sidecar_of(paths["label"])
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text('{"Description": "rater notes"}')  # someone else's sidecar, the mask itself absent
    with pytest.raises(sctgm.SctGmError, match="not written by sct-gm"):
        labels.write_correction(image, paths["auto"], auto, {1: 0}, slice_axis=2)
    assert side.read_text() == '{"Description": "rater notes"}' and not paths["label"].exists()
    side.unlink()
    full = editing.save(paths["label"].with_name("sub-01_T2star_gmseg-manual.nii.gz"), editing.phantom()[2], "LAS",
                        np.uint8)
    before = full.read_bytes()
    assert labels.correction_path(paths["image"]).mask == full  # the mask training reads, not a new one
    with pytest.raises(sctgm.SctGmError, match="not written by sct-gm"):
        labels.write_correction(image, paths["auto"], auto, {1: 0}, slice_axis=2)
    assert full.read_bytes() == before and not paths["label"].exists()
    assert [(i.masks[0], i.slices) for i in from_bids(tmp_path / "ds")] == [(full, None)]
