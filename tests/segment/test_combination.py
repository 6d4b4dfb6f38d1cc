"""A segmenter that combines two networks (sctgm.segment.ensemble in the pipeline), on the tiny
random-weight models: cases whose right answer is known exactly."""

from __future__ import annotations

import numpy as np

import sctgm.io
from sctgm.model.install import ensure_model
from sctgm.segment.ensemble import logit_mean
from sctgm.segment.pipeline import Segmenter
from tests.conftest import cord_phantom_volume


def test_a_network_combined_with_itself_gives_its_own_mask(tiny_model, make_nifti) -> None:
    name = tiny_model()
    image = sctgm.io.load_image(make_nifti(cord_phantom_volume()))
    model = ensure_model(name)
    seg = Segmenter(model, device="cpu", partner=model)
    both = seg.segment_image(image, want_prob=True)
    seg.partner = None
    alone = seg.segment_image(image, want_prob=True)
    assert np.array_equal(both.gm, alone.gm)
    assert np.allclose(both.gm_prob, alone.gm_prob, atol=1e-5)
    assert both.info["networks"] == [name, name]
    assert both.info["networks_dice_per_slice"] == [1.0] * image.data.shape[2]
    assert both.info["doubtful_slices"] == [] and both.info["whole_volume_network"] is None
    assert "doubtful_slices" not in alone.info


def test_logit_mean_is_symmetric_and_keeps_agreement() -> None:
    a = np.array([0.9999, 0.5, 0.2, 1e-9], dtype=np.float32)
    b = np.array([0.9999, 0.5, 0.8, 1e-9], dtype=np.float32)
    m = logit_mean([a, b])
    assert np.allclose(m, logit_mean([b, a]))
    assert np.allclose(m[[0, 1]], [0.9999, 0.5], atol=1e-6)
    assert abs(float(m[2]) - 0.5) < 1e-6  # odds 1/4 and 4 average to even odds
    assert m[3] < 1e-6


def _pair_with_slice_2_swapped(tiny_model, make_nifti, monkeypatch, *, first=None, second=None, slices=(2,)):
    """A tiny model combined with itself on a 5-slice phantom, its predictions replaced: GM a disc of
    radius 10 px at the window's centre on every slice, except slice 2 (or ``slices``) of the first
    (``first``) or second (``second``) network: a disc at (c, c) of radius r, given as (c, r)."""
    model = ensure_model(tiny_model())
    seg = Segmenter(model, device="cpu", partner=model, name="tiny-pair")
    image = sctgm.io.load_image(make_nifti(cord_phantom_volume((40, 40, 5)), name="img.nii.gz"))
    x, y = np.mgrid[:80, :80]

    def disc(c: float, r: float) -> np.ndarray:
        return (np.hypot(x - c, y - c) <= r).astype(np.float32)

    def fake(vol, windows, options, progress, network=None):
        assert all(w.size == (80, 80) for w in windows)
        p = np.stack([disc(40, 10)] * len(windows))
        swap = first if network is None else second
        if swap is not None:
            for k in slices:
                p[k] = disc(*swap)
        return p

    monkeypatch.setattr(Segmenter, "_predict_windows", lambda self, *a, **k: fake(*a, **k))
    return model, seg, image


def test_a_slice_where_the_second_network_strays_is_repaired_and_reported(tiny_model, make_nifti, tmp_path,
                                                                          monkeypatch) -> None:
    """The first network sees GM at the centre of every slice; the second agrees except on slice 2,
    where it puts GM 11 mm away: the first network's slice, the one that agrees with its neighbours,
    is used, and the sidecar and the QC report name slice 2 (file index) as doubtful."""
    import json

    from sctgm.naming import sct_outputs
    from sctgm.qc import QcEntryWriter, read_entries
    from sctgm.segment.outputs import segment_and_write

    model, seg, image = _pair_with_slice_2_swapped(tiny_model, make_nifti, monkeypatch, second=(8, 10.0))
    out = sct_outputs(image.path, tmp_path / "gm.nii.gz")
    result = segment_and_write(seg, image, out, entry=QcEntryWriter(tmp_path / "qc")).segmentation
    assert result is not None
    first = result.gm[:, :, 0]
    assert first.sum() > 50 and all(np.array_equal(result.gm[:, :, k], first) for k in range(5))
    # before post-processing: the combined mask (slice 2's log-odds mean of GM and no GM is 0.5: not
    # GM), not the first network's 5 slices
    assert result.info["gm_voxels_before_postprocessing"] == 4 * int(first.sum())
    doubt = result.info["doubtful_slices"]
    assert [(d["slice"], d["action"]) for d in doubt] == [(2, "first_network")]
    assert doubt[0]["reasons"] == ["networks_disagree"]
    meta = json.loads(out["gm_sidecar"].read_text())
    recorded = meta["GeneratedBy"][0]["Model"]
    assert recorded["Name"] == "tiny-pair" and recorded["Sha256"] == seg.identity.sha256 != model.sha256
    assert [n["Sha256"] for n in recorded["Networks"]] == [model.sha256, model.sha256]
    side = meta["Result"]
    assert side["doubtful_slices"] == doubt
    assert side["networks_dice_per_slice"][2] == 0.0 and side["networks_dice_per_slice"][0] == 1.0
    entry = read_entries(tmp_path / "qc")[0]
    assert entry["model"] == "tiny-pair" and entry["model_sha256"] == seg.identity.sha256
    flags = dict(zip(entry["slices"]["index"], entry["slices"]["flags"]))
    assert "doubtful:networks_disagree" in flags[2] and not any(flags[k] for k in (0, 1, 3, 4))


def test_a_partner_that_strays_on_most_slices_leaves_the_volume_to_the_first(tiny_model, make_nifti, tmp_path,
                                                                             monkeypatch, caplog) -> None:
    """The second network puts GM 11 mm away on 3 of the 5 slices: the first network's mask stands for
    the whole volume, a warning says so, the sidecar and the QC entry name it (`whole_volume_network`)
    and the sidecar lists the 3 slices, and `--prob` is the first network's, so thresholding it gives the mask on
    every slice."""
    import json

    from sctgm.naming import sct_outputs
    from sctgm.qc import QcEntryWriter, read_entries
    from sctgm.segment.outputs import segment_and_write

    model, seg, image = _pair_with_slice_2_swapped(tiny_model, make_nifti, monkeypatch, second=(8, 10.0),
                                                   slices=(0, 2, 4))
    out = sct_outputs(image.path, tmp_path / "gm.nii.gz")
    written = segment_and_write(seg, image, out, entry=QcEntryWriter(tmp_path / "qc")).segmentation
    assert read_entries(tmp_path / "qc")[0]["whole_volume_network"] == model.name
    said = [r.getMessage() for r in caplog.records if "disagree on most slices" in r.getMessage()]
    assert said and "(3 of 5)" in said[0] and f"{model.name}'s mask stands for all of it" in said[0]
    assert ";" not in said[0]  # a batch joins a job's warnings with "; "
    result = seg.segment_image(image, want_prob=True)
    assert written is not None and np.array_equal(written.gm, result.gm)
    first = result.gm[:, :, 1]
    assert first.sum() > 50 and all(np.array_equal(result.gm[:, :, k], first) for k in range(5))
    assert result.info["whole_volume_network"] == model.name
    assert [(d["slice"], d["action"]) for d in result.info["doubtful_slices"]] == [
        (0, "first_network"), (2, "first_network"), (4, "first_network")]
    side = json.loads(out["gm_sidecar"].read_text())["Result"]
    assert side["whole_volume_network"] == model.name
    for k in range(5):
        assert np.array_equal(result.gm_prob[:, :, k] > result.info["threshold"], result.gm[:, :, k] > 0), k


def test_a_partner_that_expects_other_windows_is_refused(tiny_model) -> None:
    """The partner predicts the first model's windows and is cut at its threshold: a partner
    registered with another threshold (here 0.9 against 0.5) is refused in one line, not run."""
    import json
    import os

    import pytest

    from sctgm.exceptions import ModelError

    tiny_model("tiny-other", threshold=0.9)
    tiny_model("tiny-pair")
    path = os.environ["SCTGM_REGISTRY"]
    registry = json.loads(open(path).read())
    registry["models"]["tiny-pair"]["combine"] = {"with": "tiny-other"}
    with open(path, "w") as fh:
        json.dump(registry, fh)
    with pytest.raises(ModelError, match="preprocessing .* differs"):
        Segmenter.from_name("tiny-pair", device="cpu")


def _gm_column(nz: int = 9) -> np.ndarray:
    """GM ellipses (4 x 8 px at 0.5 mm) along a cord drifting 1 px per slice."""
    x, y = np.mgrid[:80, :80]
    gm = np.zeros((80, 80, nz), dtype=bool)
    for k in range(nz):
        gm[:, :, k] = ((x - 40 - k) / 4.0) ** 2 + ((y - 38 - 0.5 * k) / 8.0) ** 2 <= 1.0
    return gm


ZOOMS = (0.5, 0.5, 5.0)


def test_where_the_networks_disagree_the_slice_that_agrees_with_its_neighbours_is_used() -> None:
    """Slice 4: the second network strays onto a larger structure 3 mm away (inside the guard's 5 mm
    tolerance, so only the choice can catch it): the first network's slice is used. Slice 6: the
    first network collapses to a few voxels, as `large` does under noise: the second's is used."""
    from sctgm.segment.ensemble import choose_where_disagreeing, combine

    right = _gm_column()
    first, second = right.copy(), right.copy()
    x, y = np.mgrid[:80, :80]
    second[:, :, 4] = ((x - 50) / 6.0) ** 2 + ((y - 40) / 9.0) ** 2 <= 1.0  # 3 mm off, 1.7x the area
    first[:, :, 6] = False
    first[44:47, 40:43, 6] = True  # 9 voxels of GM left
    mask, chosen = choose_where_disagreeing(right, first, second, ZOOMS)
    assert chosen == {4: 0, 6: 1}
    assert np.array_equal(mask, right)
    out, doubts, whole = combine(right, first, second, ZOOMS)
    assert whole is None
    assert np.array_equal(out, right)
    assert [(d.slice, d.action) for d in doubts] == [(4, "first_network"), (6, "second_network")]
    # the old rule (the second network wherever they disagree) would have kept the stray slice
    from sctgm.segment.ensemble import prefer_where_disagreeing
    assert not np.array_equal(prefer_where_disagreeing(right, first, second)[0][:, :, 4], right[:, :, 4])


def test_when_every_slice_disagrees_the_second_network_is_used() -> None:
    """No slice agrees, so no neighbour can be trusted to judge: the robust (second) network wins
    every tie, as it does where `large` collapses on a whole noisy volume."""
    from sctgm.segment.ensemble import choose_where_disagreeing

    second = _gm_column()
    first = np.roll(second, 12, axis=0)  # 6 mm off everywhere: slice Dice 0
    mask, chosen = choose_where_disagreeing(first | second, first, second, ZOOMS)
    assert chosen == {k: 1 for k in range(9)}
    assert np.array_equal(mask, second)
    # both columns follow a cord equally well: the second network also stands for the whole volume
    from sctgm.segment.ensemble import combine, whole_volume_network

    assert whole_volume_network(first, second, ZOOMS) == 1
    out, doubts, whole = combine(first & second, first, second, ZOOMS)
    assert whole == 1 and np.array_equal(out, second)
    assert [(d.slice, d.action, d.network) for d in doubts] == [(k, "second_network", 1) for k in range(9)]


def _shrunk(gm: np.ndarray, k: int, keep_rows: int) -> np.ndarray:
    """Slice ``k`` of ``gm`` cut to its first ``keep_rows`` rows of GM (a network losing GM)."""
    out = gm.copy()
    rows = np.flatnonzero(gm[:, :, k].any(axis=1))
    out[rows[keep_rows:], :, k] = False
    return out


def test_when_the_first_network_breaks_down_on_most_slices_the_second_stands_for_the_volume() -> None:
    """`large` under noise it never saw: it loses GM on every slice, badly on 5 of 9 (slice Dice
    under 0.8), mildly on the other 4 (Dice above 0.8, so they count as agreeing), and its areas jump
    from slice to slice. The agreeing slices are no reference: the second network's mask stands for
    the volume, including where the two agree (the log-odds mean there follows the first's loss)."""
    from sctgm.segment.ensemble import combine, disagreeing_slices, slice_dice, whole_volume_network
    from sctgm.segment.guard import doubt_along_cord

    right = _gm_column()
    first = right.copy()
    for k, rows in zip(range(9), (3, 6, 2, 6, 3, 6, 2, 6, 3)):  # of its 7 rows
        first = _shrunk(first, k, rows)
    assert disagreeing_slices(first, right) == [0, 2, 4, 6, 8]
    assert (slice_dice(first, right)[[1, 3, 5, 7]] > 0.8).all()
    assert doubt_along_cord(first, ZOOMS, range(9)) > doubt_along_cord(right, ZOOMS, range(9))
    assert whole_volume_network(first, right, ZOOMS) == 1
    combined = first & right  # what the log-odds mean of a lost and a kept pixel gives at 0.999
    out, doubts, whole = combine(combined, first, right, ZOOMS)
    assert whole == 1 and np.array_equal(out, right)
    assert [(d.slice, d.action, d.network) for d in doubts] == [(k, "second_network", 1) for k in (0, 2, 4, 6, 8)]
    # rule v2 kept the combined (shrunk) GM on the four agreeing slices
    v2, _, none = combine(combined, first, right, ZOOMS, whole_volume=False)
    assert none is None and not np.array_equal(v2[:, :, 1], right[:, :, 1])


def test_when_the_second_network_strays_on_most_slices_the_first_stands_for_the_volume() -> None:
    """The robust network on a contrast it never saw: on 5 of 9 slices it segments another structure,
    zig-zagging 3 mm either side of the GM (inside the guard's 5 mm tolerance) at 1.7x its area; the
    first network follows the cord, so its mask stands for the volume and the guard consults the
    second only where the first's slice is in doubt (nowhere here)."""
    from sctgm.segment.ensemble import chosen_probability, combine, whole_volume_network

    right = _gm_column()
    second = right.copy()
    x, y = np.mgrid[:80, :80]
    for k in (0, 2, 4, 6, 8):
        side = 1 if k % 4 == 0 else -1
        second[:, :, k] = ((x - 40 - k - 6 * side) / 6.0) ** 2 + ((y - 38 - 0.5 * k) / 9.0) ** 2 <= 1.0
    assert whole_volume_network(right, second, ZOOMS) == 0
    out, doubts, whole = combine(right & second, right, second, ZOOMS)
    assert whole == 0 and np.array_equal(out, right)
    assert {(d.slice, d.action, d.network) for d in doubts} == {(k, "first_network", 0) for k in (0, 2, 4, 6, 8)}
    # --prob: the first network's probabilities on every slice, not the log-odds mean
    mean, p1, p2 = (np.full((9, 4, 4), v, dtype=np.float32) for v in (0.5, 0.1, 0.9))
    assert (chosen_probability(mean, p1, p2, doubts, whole) == 0.1).all()


def test_half_the_slices_disagreeing_is_not_most() -> None:
    """4 of 8 judged slices disagree: no network stands for the volume; 5 of 9 do: one does. Slices
    with fewer than 20 voxels between the two networks are not judged (cord ends)."""
    from sctgm.segment.ensemble import judged_slices, whole_volume_network

    right = _gm_column(8)
    first = right.copy()
    for k in (0, 2, 4, 6):
        first = _shrunk(first, k, 2)
    assert whole_volume_network(first, right, ZOOMS) is None
    first9, right9 = np.concatenate([first, first[:, :, :1]], axis=2), _gm_column(9)
    first9[:, :, 8] = _shrunk(right9, 8, 2)[:, :, 8]
    assert whole_volume_network(first9, right9, ZOOMS) == 1
    tiny = right9.copy()
    tiny[:, :, 8] = False
    tiny[40:42, 42:44, 8] = True  # 4 + 4 voxels: not judged, so 4 of 8 again
    first9[:, :, 8] = tiny[:, :, 8]
    assert whole_volume_network(first9, tiny, ZOOMS) is None
    assert judged_slices(first9, tiny) == list(range(8))  # what the warning counts "of"


def test_a_doubt_of_the_guard_reports_the_dice_between_the_two_networks() -> None:
    """Slice 3 of the combination lost its GM (both networks agree it has little): the guard re-fills
    or reports it, and the Dice it reports is the two networks' on that slice, not the combination's
    against the first network's."""
    from sctgm.segment.ensemble import combine, slice_dice

    right = _gm_column()
    first, second = right.copy(), right.copy()
    second[:, :, 3] = np.roll(right[:, :, 3], 1, axis=1)  # a slightly different, agreeing slice
    combined = right.copy()
    combined[:, :, 3] = False
    out, doubts, _ = combine(combined, first, second, ZOOMS)
    assert [d.slice for d in doubts] == [3] and doubts[0].reasons == ("area_jump",)
    assert doubts[0].dice_between_networks == round(float(slice_dice(first, second)[3]), 3) > 0.8
    assert np.array_equal(out[:, :, 3], first[:, :, 3])  # re-filled from the first network


def test_the_probability_map_of_a_chosen_slice_is_that_networks(tiny_model, make_nifti, monkeypatch) -> None:
    """The first network loses slice 2's GM (a few pixels left), the second keeps it: the mask takes
    the second network's slice, and so does `--prob`, so thresholding the map gives the mask there
    (the log-odds mean of 0 and 1 is 0.5, which would not)."""
    _, seg, image = _pair_with_slice_2_swapped(tiny_model, make_nifti, monkeypatch, first=(40, 1.5))
    result = seg.segment_image(image, want_prob=True)
    assert [(d["slice"], d["action"]) for d in result.info["doubtful_slices"]] == [(2, "second_network")]
    threshold = result.info["threshold"]
    assert result.gm[:, :, 2].sum() > 50
    for k in range(5):
        assert np.array_equal(result.gm_prob[:, :, k] > threshold, result.gm[:, :, k] > 0), k


def test_where_the_gm_ends_an_empty_slice_can_win_but_never_inside_the_run() -> None:
    """Slice 8, the last with GM: the first network sees none there, the second a blob 4x the
    neighbours' area (another structure, at the GM's position, so the guard's position rule keeps
    it): "the GM ends here" agrees better, and the slice stays empty. Slice 4, inside the run: an
    empty slice is a gap, never anatomy, so the second network's GM is used."""
    from sctgm.segment.ensemble import choose_where_disagreeing, combine

    right = _gm_column()
    first, second = right.copy(), right.copy()
    first[:, :, 8] = False
    x, y = np.mgrid[:80, :80]
    second[:, :, 8] = ((x - 48) / 8.0) ** 2 + ((y - 42) / 16.0) ** 2 <= 1.0  # 4x the area, same centre
    first[:, :, 4] = False
    combined = first & second
    mask, chosen = choose_where_disagreeing(combined, first, second, ZOOMS)
    assert chosen == {4: 1, 8: 0}
    assert not mask[:, :, 8].any() and np.array_equal(mask[:, :, 4], right[:, :, 4])
    out, doubts, _ = combine(combined, first, second, ZOOMS)
    assert not out[:, :, 8].any()
    assert {(d.slice, d.action, d.network) for d in doubts} == {(4, "second_network", 1), (8, "first_network", 0)}


def test_the_probabilities_follow_whose_gm_a_slice_holds_also_after_the_guard() -> None:
    """The first network collapses on slice 3; the second has the GM there plus a blob outside the
    cord. The second's slice is chosen, the guard removes the blob (re-placed): the slice still holds
    the second network's GM, and the probability map there is the second's; a slice the guard
    empties gets 0."""
    from sctgm.segment.ensemble import chosen_probability, combine
    from sctgm.segment.guard import SliceDoubt

    right = _gm_column()
    first, second = right.copy(), right.copy()
    first[:, :, 3] = False
    first[44:46, 40:42, 3] = True
    second[2:8, 2:8, 3] = True  # 19 mm from the GM
    out, doubts, _ = combine(first & second, first, second, ZOOMS)
    assert np.array_equal(out, right)
    (d,) = doubts
    assert (d.slice, d.action, d.network) == (3, "re-placed", 1) and "outside_cord" in d.reasons
    mean, p1, p2 = (np.full((9, 4, 4), v, dtype=np.float32) for v in (0.5, 0.1, 0.9))
    prob = chosen_probability(mean, p1, p2, doubts)
    assert (prob[3] == 0.9).all() and (np.delete(prob, 3, axis=0) == 0.5).all()
    dropped = chosen_probability(mean, p1, p2, [SliceDoubt(5, ("outside_cord",), "dropped")])
    assert (dropped[5] == 0).all() and (dropped[4] == 0.5).all()


def test_a_network_that_lost_its_gm_never_stands_for_the_volume() -> None:
    """`large` at heavy noise: no GM at all, or a few voxels on each slice, or GM on one slice only.
    Its own slices have no neighbours to be judged against, yet on the slices where GM is expected it
    is the doubtful one: the second network stands for the volume, and the output keeps its GM."""
    from sctgm.segment.ensemble import combine, whole_volume_network
    from sctgm.segment.guard import doubt_along_cord

    right = _gm_column()
    empty = np.zeros_like(right)
    few = np.zeros_like(right)
    few[40:43, 38:41, :] = True  # 9 voxels per slice
    one = np.zeros_like(right)
    one[:, :, 4] = right[:, :, 4]
    judged = list(range(9))
    assert doubt_along_cord(empty, ZOOMS, judged) == doubt_along_cord(few, ZOOMS, judged) == 9.0
    assert doubt_along_cord(right, ZOOMS, judged) < 1.0
    for lost in (empty, few, one):
        assert whole_volume_network(lost, right, ZOOMS) == 1
        out, _, whole = combine(lost & right, lost, right, ZOOMS)
        assert whole == 1 and np.array_equal(out, right)
        # and symmetrically, the robust network losing its GM leaves the volume to the first
        assert whole_volume_network(right, lost, ZOOMS) == 0
