"""Batches, resume and the one write path on the tiny random model: seconds, no ../shared."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from sctgm.batch import BatchSettings, segment_files
from sctgm.segment.files import segment_file
from sctgm.segment.pipeline import SegmentOptions

from ..conftest import cord_phantom_volume


@pytest.fixture
def images(make_nifti, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return [make_nifti(cord_phantom_volume(seed=s), name=f"in/sub-0{s}_T2star.nii.gz") for s in (1, 2)]


def test_batch_resumes_and_redoes_only_what_changed(tiny_model, images):
    settings = BatchSettings(model=tiny_model(), device="cpu", prob=True)
    first = segment_files([str(p) for p in images], settings)
    assert [r.status for r in first.records] == ["ok", "ok"]
    gm = images[0].with_name("sub-01_T2star_gmseg.nii.gz")
    before = {p.name: p.read_bytes() for p in images[0].parent.iterdir() if p.suffix != ".json"}
    again = segment_files([str(p) for p in images], settings)
    assert [r.status for r in again.records] == ["skipped", "skipped"]
    gm.write_bytes(gm.read_bytes()[:100])  # truncated
    third = segment_files([str(p) for p in images], settings)
    assert [r.status for r in third.records] == ["ok", "skipped"]
    after = {p.name: p.read_bytes() for p in images[0].parent.iterdir() if p.suffix != ".json"}
    assert after == before  # redone to the same bytes
    other = segment_files([str(p) for p in images],
                          BatchSettings(model="tiny", device="cpu", prob=True, options=SegmentOptions(tta=True)))
    assert [r.status for r in other.records] == ["ok", "ok"]  # other parameters: redone


def test_single_file_and_batch_write_the_same_files_and_sidecar(tiny_model, images, tmp_path):
    name = tiny_model()
    single = segment_file(images[0], tmp_path / "one_gmseg.nii.gz", model=name, device="cpu", prob=True)
    segment_files([str(images[0])], BatchSettings(model=name, device="cpu", prob=True))
    batch_gm = images[0].with_name("sub-01_T2star_gmseg.nii.gz")
    for a, b in ((single.gm, batch_gm), (single.prob, images[0].with_name("sub-01_T2star_gmseg_prob.nii.gz"))):
        np.testing.assert_array_equal(np.asanyarray(nib.load(str(a)).dataobj), np.asanyarray(nib.load(str(b)).dataobj))
    one = json.loads(single.sidecar.read_text())
    many = json.loads(batch_gm.with_suffix("").with_suffix(".json").read_text())
    assert one == many  # one schema: same model, parameters, sources, result


def test_bids_sidecars_add_only_the_spatial_reference(tiny_model, tmp_path, make_nifti):
    from sctgm.batch import segment_bids

    ds = tmp_path / "ds"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    src = make_nifti(cord_phantom_volume(seed=1), name="ds/sub-01/anat/sub-01_T2star.nii.gz")
    res = segment_bids(ds, BatchSettings(model=tiny_model(), device="cpu"))
    assert res.count("ok") == 1
    bids_meta = json.loads((res.derivatives / "sub-01/anat/sub-01_T2star_label-GM_seg.json").read_text())
    single = segment_file(src, tmp_path / "x_gmseg.nii.gz", model="tiny", device="cpu")
    sct_meta = json.loads(single.sidecar.read_text())
    assert set(bids_meta) - set(sct_meta) == {"SpatialReference"} and set(sct_meta) <= set(bids_meta)
    assert bids_meta["GeneratedBy"] == sct_meta["GeneratedBy"]
    assert bids_meta["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2star.nii.gz"]
