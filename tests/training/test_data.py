"""sctgm.training.data: training windows are segment's network windows (tiny model, phantom NIfTI)."""

from __future__ import annotations

import numpy as np
import pytest

from sctgm.io import load_image
from sctgm.segment.pipeline import SegmentOptions
from sctgm.training.data import (LabelledImage, TrainingDataError, challenge_vote, labelled_volume, read_labelled,
                                 slice_set)
from sctgm.training.phantom import write_phantom_nifti


@pytest.mark.parametrize("axcodes", ["LAS", "PIR"])
def test_training_windows_equal_what_segment_feeds_the_network(tiny_model, tmp_path, monkeypatch, axcodes):
    from sctgm.segment.pipeline import Segmenter

    img_path, gm_path = write_phantom_nifti(tmp_path, np.random.default_rng(1), axcodes=axcodes,
                                            shape=(48, 48, 5), labelled=[1, 2, 4])
    seg = Segmenter.from_name(tiny_model("small", crop_px=64), device="cpu")
    fed = []
    run = seg.network.runner.run
    monkeypatch.setattr(seg.network.runner, "run", lambda batch: fed.append(batch.copy()) or run(batch))
    image = load_image(img_path)
    res = seg.segment_image(image, options=SegmentOptions(batch_size=64))
    vol = seg.prepare(image)
    centres = np.array(res.info["window_origins"]) + np.array(vol.window_px) / 2
    lv = labelled_volume(image, load_image(gm_path, allow_constant=True), seg.model.preprocessing,
                         centres_fine=centres)
    assert [list(w.origin) for w in lv.windows] == res.info["window_origins"]
    assert lv.slices == [1, 2, 4]  # only the slices that carry GM
    assert np.array_equal(fed[-1][:, 0], lv.network_inputs())
    assert np.array_equal(fed[-1][lv.slices, 0], lv.inputs)
    # the larger training windows hold the network windows' pixels unchanged
    for i, k in enumerate(lv.slices):
        w, t = lv.windows[k], lv.train_windows[k]
        di, dj = w.origin[0] - t.origin[0], w.origin[1] - t.origin[1]
        assert np.array_equal(lv.train_inputs[i, di:di + w.size[0], dj:dj + w.size[1]], lv.inputs[i])
        assert np.array_equal(lv.train_targets[i, di:di + w.size[0], dj:dj + w.size[1]], lv.targets[i])


def test_windows_are_centred_on_the_gm_and_cover_it(tmp_path):
    from sctgm.model.registry import Preprocessing

    img, gm = write_phantom_nifti(tmp_path, np.random.default_rng(2), axcodes="RPI", shape=(60, 56, 4))
    lv = read_labelled(LabelledImage(img, (gm,), "sub-01"), Preprocessing(crop_px=64), margin_px=16)
    assert lv.inputs.shape == (4, 64, 64) and lv.train_inputs.shape == (4, 96, 96)
    total_gm = load_image(gm, allow_constant=True).data.sum() * 4  # 0.5 mm -> 0.25 mm pixels
    assert abs(lv.targets.sum() - total_gm) / total_gm < 0.05  # the GM lies inside the windows
    ss = slice_set([lv], training=True)
    assert len(ss.images) == 4 and ss.name == "sub-01"


def test_challenge_masks_are_merged_by_majority_vote_ties_as_gm(make_nifti):
    a = np.zeros((4, 4, 1), np.float32)
    r = [a.copy() for _ in range(4)]
    r[0][0, 0] = r[1][0, 0] = 1  # 2 of 4: a tie -> GM
    r[0][1, 1] = 1  # 1 of 4 -> not GM
    r[0][2, 2] = r[1][2, 2] = r[2][2, 2] = 1
    r[3][3, 3] = 2  # WM is not GM
    vote = challenge_vote([make_nifti(x, shape=x.shape) for x in r])
    assert vote[0, 0, 0] == 1 and vote[1, 1, 0] == 0 and vote[2, 2, 0] == 1 and vote[3, 3, 0] == 0
    bad = a.copy()
    bad[0, 0] = 3
    with pytest.raises(TrainingDataError, match="challenge"):
        challenge_vote([make_nifti(bad, shape=bad.shape)])


def test_a_sidecar_listing_no_reviewed_slice_is_said_so(tmp_path):
    """A reviewer's mask whose sidecar lists no slice: the message names the sidecar's empty list, not
    "no slice holds GM" (its slices do hold GM)."""
    import dataclasses

    from sctgm.model.registry import Preprocessing

    img_path, gm_path = write_phantom_nifti(tmp_path, np.random.default_rng(2), shape=(48, 48, 5), labelled=[1, 2])
    image, mask = load_image(img_path), load_image(gm_path, allow_constant=True)
    with pytest.raises(TrainingDataError, match="its sidecar lists no reviewed slice"):
        labelled_volume(image, mask, Preprocessing(), file_slices=[])
    with pytest.raises(TrainingDataError, match=r"no labelled slice \(no slice holds GM\)"):
        labelled_volume(image, dataclasses.replace(mask, data=np.zeros_like(mask.data)), Preprocessing())
