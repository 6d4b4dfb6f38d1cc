"""`sct-gm qc` beside sct-gm's own outputs: what the GM mask's sidecar tells the entry."""

from __future__ import annotations

import numpy as np

from tests.segment.test_combination import _pair_with_slice_2_swapped


def test_sct_gm_qc_beside_the_outputs_reads_their_sidecar(tiny_model, make_nifti, tmp_path, monkeypatch) -> None:
    """`sct-gm qc` on the default model's outputs, added afterwards: the entry gets the doubtful slices,
    the whole-volume network and the model from the sidecar, as `segment --qc` gives them; once the
    mask is edited (its hash no longer the one recorded), the sidecar is not this mask's and is ignored."""
    from click.testing import CliRunner

    from sctgm.cli import main
    from sctgm.naming import sct_outputs
    from sctgm.qc import read_entries
    from sctgm.segment.outputs import segment_and_write

    model, seg, image = _pair_with_slice_2_swapped(tiny_model, make_nifti, monkeypatch, second=(8, 10.0),
                                                   slices=(0, 2, 4))
    out = sct_outputs(image.path, tmp_path / "gm.nii.gz")
    segment_and_write(seg, image, out)
    res = CliRunner().invoke(main, ["qc", "-i", str(image.path), "-s", str(out["gm"]), "-o", str(tmp_path / "qc")])
    assert res.exit_code == 0, res.output
    entry = read_entries(tmp_path / "qc")[0]
    assert entry["model"] == "tiny-pair" and entry["model_sha256"] == seg.identity.sha256
    assert entry["whole_volume_network"] == model.name
    assert [d["slice"] for d in entry["doubtful_slices"]] == [0, 2, 4]
    assert entry["noise"]["denoised_with"] == "off"
    import nibabel as nib

    edited = nib.load(str(out["gm"]))
    data = np.asarray(edited.dataobj).copy()
    data[:, :, 0] = 0
    nib.save(nib.Nifti1Image(data, edited.affine, edited.header), str(tmp_path / "edited_gm.nii.gz"))
    (tmp_path / "edited_gm.json").write_text(out["gm_sidecar"].read_text())
    res = CliRunner().invoke(main, ["qc", "-i", str(image.path), "-s", str(tmp_path / "edited_gm.nii.gz"),
                                    "-o", str(tmp_path / "qc2")])
    assert res.exit_code == 0, res.output
    entry = read_entries(tmp_path / "qc2")[0]
    assert entry["model"] is None and entry["whole_volume_network"] is None and entry["doubtful_slices"] == []


def test_a_hostile_sidecar_with_the_masks_hash_is_not_trusted(tmp_path, make_nifti) -> None:
    """A sidecar that records the mask's hash (anyone can) but holds values of the wrong shape: the
    entry is added, without them, and `sct-gm qc` exits 0 with no traceback."""
    import json

    from click.testing import CliRunner

    from sctgm.cli import main
    from sctgm.filesystem import file_sha256
    from sctgm.qc import read_entries
    from tests.conftest import cord_phantom_volume

    image = make_nifti(cord_phantom_volume((40, 40, 5)), name="img.nii.gz")
    gm = make_nifti((cord_phantom_volume((40, 40, 5)) > 0.6).astype(np.uint8), name="img_gmseg.nii.gz")
    side = {"GeneratedBy": [{"Name": "sct-gm", "Model": {"Name": ["x"], "Sha256": 7}}],
            "Result": {"doubtful_slices": [{"slice": "0; rm -rf", "reasons": "all"}, 3],
                       "whole_volume_network": {"a": 1}, "noise_sigma": "<script>", "noise_sigma_rel_p99": 0.02,
                       "noise_sigma_rel_p99_per_slice": [0.02, "x"], "noise_auto_threshold_rel_p99": 0.035,
                       "noise_above_auto_threshold": "yes", "denoised_with": 3, "enhancement_steps": [None]},
            "Sha256": {"Outputs": {"gm": file_sha256(gm)}}}
    (tmp_path / "img_gmseg.json").write_text(json.dumps(side))
    assert gm.parent == tmp_path
    res = CliRunner().invoke(main, ["qc", "-i", str(image), "-s", str(gm), "-o", str(tmp_path / "qc")])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    entry = read_entries(tmp_path / "qc")[0]
    assert entry["model"] is None and entry["model_sha256"] is None
    assert entry["doubtful_slices"] == [] and entry["whole_volume_network"] is None
    assert isinstance(entry["noise"]["noise_sigma"], float)  # estimated from the image instead


def _qc_with_sidecar(tmp_path, make_nifti, prefix, write_sidecar):
    """`sct-gm qc` on a phantom mask whose sidecar ``write_sidecar(path, gm_hash, image_hash)`` makes;
    returns the CLI result and the entry (or None)."""
    from click.testing import CliRunner

    from sctgm.cli import main
    from sctgm.filesystem import file_sha256
    from sctgm.qc import read_entries
    from tests.conftest import cord_phantom_volume

    image = make_nifti(cord_phantom_volume((40, 40, 5)), name=f"{prefix}img.nii.gz")
    gm = make_nifti((cord_phantom_volume((40, 40, 5)) > 0.6).astype(np.uint8), name=f"{prefix}img_gmseg.nii.gz")
    write_sidecar(gm.parent / f"{prefix}img_gmseg.json", file_sha256(gm), file_sha256(image))
    qc = tmp_path / f"{prefix}qc"
    res = CliRunner().invoke(main, ["qc", "-i", str(image), "-s", str(gm), "-o", str(qc)])
    entries = read_entries(qc) if qc.exists() else []
    return res, entries[0] if entries else None


def _sidecar(gm_hash, image_hash, result, outputs=None):
    return {"GeneratedBy": [{"Name": "sct-gm", "Model": {"Name": "m", "Sha256": "abc"}}], "Result": result,
            "Sha256": {"Sources": [image_hash], "Outputs": {"gm": gm_hash} if outputs is None else outputs}}


NOISE_OK = {"noise_sigma": 1.0, "noise_sigma_rel_p99": 0.02, "noise_sigma_rel_p99_per_slice": None,
            "noise_auto_threshold_rel_p99": 0.035, "noise_above_auto_threshold": False, "denoised_with": "off",
            "enhancement_steps": []}


def test_malformed_sidecars_never_stop_sct_gm_qc(tmp_path, make_nifti) -> None:
    """Each sidecar below records the mask's hash but is malformed or hostile: `sct-gm qc` adds the
    entry (exit 0, no traceback, no hang) and takes only what is of the shape sct-gm writes."""
    import json
    import os

    def as_json(make):
        return lambda path, g, i: path.write_text(json.dumps(make(g, i)))

    cases = {
        "outputs": as_json(lambda g, i: _sidecar(g, i, NOISE_OK, outputs=[g])),
        "reasons": as_json(lambda g, i: _sidecar(g, i, {
            "doubtful_slices": [{"slice": 1, "reasons": ["<img src=x>", "area_jump"], "extra": {"x": [1]}},
                                {"slice": 1, "reasons": ["outside_cord"]}, {"slice": 99, "reasons": ["area_jump"]},
                                {"slice": -1, "reasons": ["area_jump"]}, {"slice": 10 ** 300, "reasons": ["area_jump"]},
                                {"slice": 2, "reasons": ["<img src=x>"]}]})),
        "nan": as_json(lambda g, i: _sidecar(g, i, {
            **NOISE_OK, "noise_sigma": float("nan"), "noise_sigma_rel_p99": float("inf"),
            "doubtful_slices": [{"slice": 0, "reasons": ["area_jump"], "networks_dice": float("nan")}]})),
        "deep": lambda path, g, i: path.write_text(
            '{"GeneratedBy": [{"Name": "sct-gm"}], "Result": ' + "[" * 100000 + "]" * 100000 + "}"),
        "fifo": lambda path, g, i: os.mkfifo(path),
    }
    for name, write_sidecar in cases.items():
        res, entry = _qc_with_sidecar(tmp_path, make_nifti, f"{name}_", write_sidecar)
        assert res.exit_code == 0 and "Traceback" not in res.output, (name, res.output)
        assert entry is not None, name
        sigma = entry["noise"]["noise_sigma"]
        assert isinstance(sigma, float) and sigma == sigma and sigma != 1.0, name  # the image's own estimate
        if name == "reasons":
            assert [(d["slice"], d["reasons"]) for d in entry["doubtful_slices"]] == [(1, ["area_jump"])]
            assert set(entry["doubtful_slices"][0]) == {"slice", "reasons", "action", "networks_dice", "network"}
        elif name == "nan":
            assert entry["doubtful_slices"] == [{"slice": 0, "reasons": ["area_jump"], "action": None,
                                                 "networks_dice": None, "network": None}]
        else:
            assert entry["doubtful_slices"] == [] and entry["model"] is None, name


def test_the_noise_of_another_image_is_not_taken(tmp_path, make_nifti) -> None:
    """The sidecar is this mask's, but `-i` names another image than the one it was made from: the
    doubts and the model are the mask's, the noise is estimated from the image given."""
    import json

    res, entry = _qc_with_sidecar(tmp_path, make_nifti, "other_", lambda path, g, i: path.write_text(
        json.dumps(_sidecar(g, "0" * 64, {**NOISE_OK, "doubtful_slices": [{"slice": 0, "reasons": ["area_jump"]}]}))))
    assert res.exit_code == 0, res.output
    assert entry["model"] == "m" and [d["slice"] for d in entry["doubtful_slices"]] == [0]
    assert entry["noise"]["noise_sigma"] != 1.0


def test_the_sidecars_noise_lists_must_fit_the_image(tmp_path, make_nifti) -> None:
    """Per-slice noise figures not one per slice of the image are dropped (the rest kept); a list of
    steps longer than sct-gm ever writes makes the noise the image's own estimate."""
    import json

    res, entry = _qc_with_sidecar(tmp_path, make_nifti, "long_", lambda path, g, i: path.write_text(json.dumps(
        _sidecar(g, i, {**NOISE_OK, "noise_sigma_rel_p99_per_slice": [0.02] * 3000}))))
    assert res.exit_code == 0 and entry["noise"]["noise_sigma"] == 1.0
    assert entry["noise"]["noise_sigma_rel_p99_per_slice"] is None
    res, entry = _qc_with_sidecar(tmp_path, make_nifti, "fits_", lambda path, g, i: path.write_text(json.dumps(
        _sidecar(g, i, {**NOISE_OK, "noise_sigma_rel_p99_per_slice": [0.02] * 5}))))
    assert entry["noise"]["noise_sigma_rel_p99_per_slice"] == [0.02] * 5
    res, entry = _qc_with_sidecar(tmp_path, make_nifti, "steps_", lambda path, g, i: path.write_text(json.dumps(
        _sidecar(g, i, {**NOISE_OK, "enhancement_steps": ["denoise:nlm"] * 70000}))))
    assert res.exit_code == 0 and entry["noise"]["noise_sigma"] != 1.0
