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
