"""Hostile or wrong-typed JSON in a model file, its metadata or SCTGM_REGISTRY is a one-line model
error (exit 4), never an internal error (exit 70): nesting deep enough to overflow the parser, a
metadata file that is not an object, a zip source's size or sha256 of the wrong type, a relative
network module, a registry whose parts are of the wrong JSON type."""

from __future__ import annotations

import hashlib

import pytest

from ..conftest import cord_phantom_volume
from .test_model_safety import edit, model_folder, one_line, run

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def image(make_nifti):
    return make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")


def test_a_deeply_nested_model_json_is_one_line(tmp_path, image):
    folder = model_folder(tmp_path / "m")
    (folder / "model.json").write_text('{"models": {"m": ' + DEEP + "}}")
    one_line(run("segment", "-i", str(image), "-m", str(folder), "-o", str(tmp_path / "s.nii.gz")), 4,
             "nested too deeply")
    one_line(run("fetch-model", str(folder)), 4, "nested too deeply")


def test_a_model_json_that_is_not_a_file_is_one_line(tmp_path, no_hang):
    import os

    folder = model_folder(tmp_path / "m")
    (folder / "model.json").unlink()
    os.mkfifo(folder / "model.json")
    one_line(run("fetch-model", str(folder / "model.json")), 4, "not a regular file")


@pytest.mark.parametrize("text, needle", [
    ("[1, 2]", "not a JSON object with an integer 'filters'"),
    ('{"filters": "abc"}', "not a JSON object with an integer 'filters'"),
    ("not json", "not a JSON object with an integer 'filters'"),
    ('{"filters": 8}', "meta.json says 8 filters, the registry says 4"),
])
def test_a_bad_metadata_file_is_one_line(tmp_path, text, needle):
    folder = model_folder(tmp_path / "m")
    (folder / "meta.json").write_text(text)
    data = text.encode()
    edit(folder, lambda e: e["files"].append({"name": "meta.json", "role": "metadata", "format": "json",
                                              "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    one_line(run("fetch-model", str(folder), "--cache-dir", str(tmp_path / "c")), 4, needle)


@pytest.mark.parametrize("extra, needle", [
    ({"size": "big"}, "'size' must be a number of bytes"),
    ({"size": -1}, "'size' must be a number of bytes"),
    ({"size": True}, "'size' must be a number of bytes"),
    ({"sha256": 5}, "'sha256' must be 64 lower-case hex digits"),
])
def test_a_zip_source_of_the_wrong_types_is_one_line(tmp_path, extra, needle):
    folder = edit(model_folder(tmp_path / "m"),
                  lambda e: e.update(sources=[{"kind": "zip", "url": "http://127.0.0.1:9/w.zip", **extra}]))
    one_line(run("fetch-model", str(folder), "--cache-dir", str(tmp_path / "c")), 4, needle)


def test_a_relative_network_module_is_one_line(tmp_path, image):
    folder = edit(model_folder(tmp_path / "m"), lambda e: e["architecture"].update(module=".evil"))
    one_line(run("segment", "-i", str(image), "-m", str(folder), "-o", str(tmp_path / "s.nii.gz")), 4,
             "'.evil' is a relative name")


@pytest.mark.parametrize("text, needle", [
    ('{"models": [], "default": "large"}', "'models' is an object"),
    ("[1]", "'models' is an object"),
    ('{"models": {}, "default": ["x"]}', "'default' must be a model name"),
    ('{"models": ' + DEEP + "}", "nested too deeply"),
    ("\xff", "not a readable JSON registry"),
], ids=["models_a_list", "document_a_list", "default_a_list", "nested", "not_utf8"])
def test_a_registry_of_the_wrong_shape_is_one_line(tmp_path, monkeypatch, text, needle):
    reg = tmp_path / "reg.json"
    reg.write_bytes(text.encode("latin-1"))
    monkeypatch.setenv("SCTGM_REGISTRY", str(reg))
    one_line(run("fetch-model", "--list"), 4, needle)
