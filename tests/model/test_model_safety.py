"""Models that a hostile or damaged file cannot turn into a traceback or into other weights (issue
#21), through the CLI: a read-only cache, a malformed model.json, a model.json whose architecture is
not its weights', local sources outside the model folder, a file name with a newline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import cord_phantom_volume, random_state_dict


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(res, code: int, *needles: str) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == code and len(lines) == 1 and lines[0].startswith("sct-gm: error: "), res.stderr
    assert "internal error" not in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def model_folder(folder: Path, *, unet: bool = False) -> Path:
    """A model folder as `sct-gm train` writes it (model.json + model.safetensors), tiny weights."""
    from sctgm.model.install import sha256_of
    from sctgm.model.weights import save_safetensors

    folder.mkdir(parents=True)
    if unet:
        from sctgm.networks.unet import UNet

        sd = {k: v.numpy() for k, v in UNet(4, 2).state_dict().items() if not k.endswith("num_batches_tracked")}
    else:
        sd = random_state_dict(4)
    save_safetensors(sd, 4, folder / "model.safetensors")
    entry = {"description": "test", "version": "t1", "architecture": {"name": "perone2018-dilated", "filters": 4},
             "preprocessing": {"threshold": 0.5},
             "files": [{"name": "model.safetensors", "role": "weights", "format": "safetensors",
                        "size": (folder / "model.safetensors").stat().st_size,
                        "sha256": sha256_of(folder / "model.safetensors")}],
             "sources": [{"kind": "files", "url": "."}]}
    (folder / "model.json").write_text(json.dumps({"schema_version": 1, "models": {folder.name: entry}}))
    return folder


def edit(folder: Path, change) -> Path:
    doc = json.loads((folder / "model.json").read_text())
    (entry,) = doc["models"].values()
    change(entry)
    (folder / "model.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def image(make_nifti):
    return make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")


def test_the_model_folder_helper_makes_a_usable_model(tmp_path, image):
    res = run("segment", "-i", str(image), "-m", str(model_folder(tmp_path / "ok")), "-o", str(tmp_path / "s.nii.gz"))
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name, change", [
    ("arch_list", lambda e: e.update(architecture=["perone2018-dilated", 4])),
    ("arch_string", lambda e: e.update(architecture="perone2018-dilated")),
    ("files_string", lambda e: e.update(files="model.safetensors")),
    ("files_of_strings", lambda e: e.update(files=["model.safetensors"])),
    ("sources_string", lambda e: e.update(sources=".")),
    ("sources_of_strings", lambda e: e.update(sources=["."])),
])
def test_a_malformed_model_json_is_one_line(tmp_path, image, name, change):
    folder = edit(model_folder(tmp_path / name), change)
    for args in (["segment", "-i", str(image), "-m", str(folder), "-o", str(tmp_path / "s.nii.gz")],
                 ["fetch-model", str(folder)]):
        one_line(run(*args), 4, "model.json")
    assert not (tmp_path / "s.nii.gz").exists()


def test_an_architecture_that_is_not_the_weights_is_refused_at_load(tmp_path, image):
    unet_named_dilated = model_folder(tmp_path / "u", unet=True)  # U-Net weights, the dilated network declared
    dilated_named_unet = edit(model_folder(tmp_path / "d"),
                              lambda e: e.update(architecture={"name": "unet", "filters": 4, "depth": 2}))
    wider = edit(model_folder(tmp_path / "w"), lambda e: e["architecture"].update(filters=8))
    for folder in (unet_named_dilated, dilated_named_unet, wider):
        one_line(run("segment", "-i", str(image), "-m", str(folder), "-o", str(tmp_path / "s.nii.gz")), 4,
                 "does not match its weights")
        one_line(run("train", "-i", str(image), "-r", str(image), "--init", str(folder), "-o", str(tmp_path / "t")),
                 4, "does not match its weights")
        assert not (tmp_path / "t").exists() and not (tmp_path / "s.nii.gz").exists()


@pytest.mark.parametrize("url", ["../../etc", "/etc", "..", "file:///etc", "sub/../../elsewhere"])
def test_local_sources_are_confined_to_the_model_folder(tmp_path, image, url):
    folder = edit(model_folder(tmp_path / "m"), lambda e: e.update(sources=[{"kind": "files", "url": url}]))
    one_line(run("fetch-model", str(folder)), 4, "outside the model's folder")
    one_line(run("segment", "-i", str(image), "-m", str(folder), "-o", str(tmp_path / "s.nii.gz")), 4,
             "outside the model's folder")


def test_a_source_inside_the_model_folder_is_fine(tmp_path):
    folder = model_folder(tmp_path / "m")
    (folder / "copy").mkdir()
    (folder / "copy" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    edit(folder, lambda e: e.update(sources=[{"kind": "files", "url": "copy"}, {"kind": "files", "url": "."}]))
    res = run("fetch-model", str(folder))
    assert res.exit_code == 0, res.output


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, image, tiny_model, monkeypatch):
    name = tiny_model()
    cache = tmp_path / "cache"
    (cache / "models" / f"{name}.lock").mkdir(parents=True)  # the lock cannot be created (as in a read-only cache)
    monkeypatch.setenv("SCTGM_HOME", str(cache))
    one_line(run("segment", "-i", str(image), "-m", name, "-o", str(tmp_path / "s.nii.gz")), 4, str(cache / "models"))
    one_line(run("fetch-model", name, "--force"), 4, "cannot write in the cache folder")
    assert not (tmp_path / "s.nii.gz").exists()


def test_a_file_name_with_a_newline_is_one_escaped_line(tmp_path, make_nifti):
    bad = tmp_path / "evil\nsct-gm: error: forged.nii.gz"
    res = run("segment", "-i", str(bad))
    line = one_line(res, 2, "evil\\nsct-gm: error: forged.nii.gz")
    assert "no such file" in line


@pytest.mark.parametrize("same_version", [True, False])
def test_a_model_folder_cannot_take_a_shipped_models_name(tmp_path, monkeypatch, same_version):
    """fetch-model MODEL_DIR would install into the shipped model's cache folder, where `-m challenge`
    would then find it (F4): any name of the packaged registry is refused, whatever its version."""
    folder = model_folder(tmp_path / "challenge")
    if same_version:
        edit(folder, lambda e: e.update(version="r20180205"))
    monkeypatch.setenv("SCTGM_HOME", str(tmp_path / "c"))
    one_line(run("fetch-model", str(folder)), 4, "'challenge' is a name sct-gm already registers")
    assert not (tmp_path / "c" / "models" / "challenge").exists()


def test_a_relative_zip_source_is_relative_to_the_model_folder(tmp_path, monkeypatch):
    """As a 'files' source "." is (F8): before, "w.zip" was looked for in the working folder."""
    from ..serve import make_zip

    folder = model_folder(tmp_path / "m")
    (folder / "w.zip").write_bytes(make_zip({"m/model.safetensors": (folder / "model.safetensors").read_bytes()}))
    edit(folder, lambda e: e.update(sources=[{"kind": "zip", "url": "w.zip"}]))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = run("fetch-model", str(folder), "--cache-dir", str(tmp_path / "c"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "models" / "m" / "t1" / "model.safetensors").is_file()
