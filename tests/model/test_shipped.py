"""Models whose weights ship inside the package (``large-robust``): the registry entry verifies the
shipped files, ``fetch-model`` installs them with no network and no mirror, and the model card and
training record belong to these very weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sctgm.model import install, registry

PACKAGE = Path(registry.__file__).resolve().parents[1]


def shipped_models() -> dict[str, dict]:
    reg = registry.load_registry()
    return {name: entry for name, entry in reg["models"].items()
            if any(Path(s["url"]).is_relative_to(PACKAGE) for s in entry["sources"] if "://" not in s["url"])}


def test_large_robust_ships_in_the_package() -> None:
    models = shipped_models()
    assert "large-robust" in models
    for name, entry in models.items():
        (source,) = entry["sources"]
        folder = Path(source["url"])
        assert folder.is_dir() and folder.is_relative_to(PACKAGE / "model" / "shipped"), name
        for f in entry["files"]:
            assert (folder / f["name"]).stat().st_size == f["size"], f["name"]
            assert install.sha256_of(folder / f["name"]) == f["sha256"], f["name"]


def test_fetch_model_installs_a_shipped_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SCTGM_MIRROR", str(tmp_path / "mirror-without-these-files"))
    entry = shipped_models()["large-robust"]
    installed = install.ensure_model("large-robust", cache_dir=tmp_path)
    weights = next(f for f in entry["files"] if f["role"] == "weights")
    assert installed.sha256 == weights["sha256"] and installed.filters == 64
    assert installed.weights_path.is_relative_to(tmp_path)  # installed into the cache, not used in place
    assert install.list_models(["large-robust"], cache_dir=tmp_path)[0].state == "installed"
    assert not [r for r in caplog.records if r.levelno >= 30]  # the package folder is tried before any mirror


def test_the_card_and_training_record_describe_these_weights() -> None:
    entry = shipped_models()["large-robust"]
    folder = Path(entry["sources"][0]["url"])
    weights = next(f for f in entry["files"] if f["role"] == "weights")
    (record_name,) = [f["name"] for f in entry["files"] if f["role"] == "metadata"]
    (trained,) = json.loads((folder / record_name).read_text())["models"].values()
    assert trained["files"][0]["sha256"] == weights["sha256"]  # the record of the run that made these weights
    t = trained["training"]
    assert "--augment robust" in t["command_line"] and "--init large" in t["command_line"]
    assert t["init"]["name"] == "large" and t["config"]["augment"]["noise_p"] > 0.5
    assert all("gm_challenge_2018" in d["image"] for d in t["data"]) and len(t["data"]) == 4
    assert sum(len(d["train_slices"]) for d in t["data"]) == 72 and t["config"]["max_steps"] == 60
    card = (folder / "README.md").read_text()
    for needle in ("gm_challenge_2018", "sct_testing_data", "--augment robust", weights["sha256"]):
        assert needle in card, needle
    assert entry["preprocessing"]["threshold"] == trained["preprocessing"]["threshold"]


def test_segment_with_large_robust_names_it_in_the_sidecar(shared_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel as nib
    import numpy as np
    from click.testing import CliRunner

    from sctgm.cli import main

    from ..conftest import dice
    monkeypatch.delenv("SCTGM_MIRROR", raising=False)
    monkeypatch.setenv("SCTGM_HOME", str(tmp_path / "cache"))
    image = shared_data / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    out = tmp_path / "t2s_gmseg.nii.gz"
    res = CliRunner().invoke(main, ["segment", "-i", str(image), "-m", "large-robust", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    sidecar = json.loads(out.with_name("t2s_gmseg.json").read_text())
    model = sidecar["GeneratedBy"][0]["Model"]
    weights = next(f for f in shipped_models()["large-robust"]["files"] if f["role"] == "weights")
    assert model["Name"] == "large-robust" and model["Sha256"] == weights["sha256"]
    manual = np.asanyarray(nib.load(str(image.with_name("t2s_gmseg_manual.nii.gz"))).dataobj) > 0.5
    assert dice(np.asanyarray(nib.load(str(out)).dataobj) > 0, manual) >= 0.87  # bench: 0.89 (large 0.90)
