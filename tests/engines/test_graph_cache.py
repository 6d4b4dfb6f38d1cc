"""The cached ONNX graph is used only when it holds the weights of the model being run (issue #21):
replacing a model's cached graph and its .sha256 by another model's, through the CLI, must not run
the other model's weights."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import cord_phantom_volume, random_state_dict


def test_a_swapped_graph_and_digest_do_not_run_other_weights(tmp_path, make_nifti, monkeypatch):
    from sctgm.model.install import sha256_of
    from sctgm.model.weights import save_safetensors

    models = {}
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        folder = tmp_path / name
        folder.mkdir()
        save_safetensors(random_state_dict(4, seed=seed), 4, folder / "w.safetensors")
        models[name] = {"description": name, "version": "t1",
                        "architecture": {"name": "perone2018-dilated", "filters": 4},
                        "preprocessing": {"threshold": 0.5},
                        "files": [{"name": "w.safetensors", "role": "weights", "format": "safetensors",
                                   "size": (folder / "w.safetensors").stat().st_size,
                                   "sha256": sha256_of(folder / "w.safetensors")}],
                        "sources": [{"kind": "files", "url": str(folder)}]}
    (tmp_path / "registry.json").write_text(json.dumps({"models": models}))
    monkeypatch.setenv("SCTGM_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("SCTGM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SCTGM_MIRROR", raising=False)
    image = make_nifti(cord_phantom_volume(seed=2), name="t2s.nii.gz")

    def probabilities(model: str, out: str) -> np.ndarray:
        res = CliRunner().invoke(main, ["segment", "-i", str(image), "-m", model, "--prob", "-o",
                                        str(tmp_path / f"{out}.nii.gz")])
        assert res.exit_code == 0, res.output
        return np.asarray(nib.load(str(tmp_path / f"{out}_prob.nii.gz")).dataobj)

    a, b = probabilities("tiny-a", "a"), probabilities("tiny-b", "b")
    assert not np.array_equal(a, b)
    graphs = {p.name.split("-")[0]: p for p in (tmp_path / "cache" / "onnx").glob("*.onnx")}
    assert len(graphs) == 2
    a_graph, b_graph = (graphs[sha256_of(tmp_path / n / "w.safetensors")[:20]] for n in ("tiny-a", "tiny-b"))
    shutil.copyfile(b_graph, a_graph)  # tiny-a's cache now holds tiny-b's graph, with its matching digest
    shutil.copyfile(f"{b_graph}.sha256", f"{a_graph}.sha256")
    again = probabilities("tiny-a", "a2")
    np.testing.assert_array_equal(again, a)
    assert a_graph.read_bytes() != b_graph.read_bytes()  # rebuilt from tiny-a's weights
