"""A damaged install in the cache (its manifest.json of the wrong types or not a file, a weight file
turned into a folder or a FIFO) is a one-line model-integrity error (exit 4) in every command, never an
internal error nor a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.exceptions import ModelIntegrityError
from sctgm.model.install import ensure_model, list_models
from sctgm.model.registry import MANIFEST_FILE, WEIGHTS_FILE


def _edit_manifest(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        change(manifest)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return damage


def _replace(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).unlink()
        make(folder / name)
    return damage


DAMAGE = {
    "files_a_list": (_edit_manifest(lambda m: m.update(files=[WEIGHTS_FILE])), "not a manifest"),
    "manifest_a_list": (_edit_manifest(lambda m: (m.clear(), m.update(x=[]))), "not a manifest"),
    "size_missing": (_edit_manifest(lambda m: m["files"][WEIGHTS_FILE].pop("size")), "integer 'size'"),
    "record_a_string": (_edit_manifest(lambda m: m["files"].update({WEIGHTS_FILE: "x"})), "integer 'size'"),
    "name_outside": (_edit_manifest(lambda m: m["files"].update({"../../x": {"size": 1, "sha256": "0"}})),
                     "'../../x'"),
    "manifest_fifo": (_replace(MANIFEST_FILE, os.mkfifo), "not a manifest"),
    "manifest_folder": (_replace(MANIFEST_FILE, Path.mkdir), "not a manifest"),
    "weights_folder": (_replace(WEIGHTS_FILE, Path.mkdir), f"{WEIGHTS_FILE} is not a regular file"),
    "weights_fifo": (_replace(WEIGHTS_FILE, os.mkfifo), f"{WEIGHTS_FILE} is not a regular file"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_install_is_an_integrity_error(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 no_hang: None) -> None:
    damage, needle = DAMAGE[kind]
    model = ensure_model("challenge", cache_dir=tmp_path)  # from SCTGM_MIRROR (conftest)
    damage(model.weights_path.parent)
    with pytest.raises(ModelIntegrityError, match="model 'challenge'") as err:
        ensure_model("challenge", cache_dir=tmp_path)
    assert needle in str(err.value)
    assert [s.state for s in list_models(["challenge"], cache_dir=tmp_path)] == ["corrupt"]
    monkeypatch.setenv("SCTGM_HOME", str(tmp_path))
    for args in (["fetch-model", "challenge"], ["fetch-model", "--list"]):
        res = CliRunner().invoke(main, args)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        if args[-1] == "--list":
            assert res.exit_code == 0 and "corrupt" in res.stdout, res.output
            continue
        assert res.exit_code == 4 and len(lines) == 1 and needle in lines[0], res.stderr
    assert ensure_model("challenge", cache_dir=tmp_path, force=True).weights_path.is_file()  # --force repairs it


def test_the_cli_names_the_command_that_repairs_a_damaged_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   make_nifti) -> None:
    """Only `sct-gm fetch-model challenge --force`, not the library call, in a command's message."""
    from ..conftest import cord_phantom_volume

    model = ensure_model("challenge", cache_dir=tmp_path)
    (model.weights_path.parent / "challenge_model.hdf5").write_bytes(b"altered")
    monkeypatch.setenv("SCTGM_HOME", str(tmp_path))
    image = make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")
    res = CliRunner().invoke(main, ["segment", "-i", str(image), "-m", "challenge", "-o", str(tmp_path / "s.nii.gz")])
    assert res.exit_code == 4, res.output
    assert "ensure_model" not in res.stderr and "force=True" not in res.stderr
    assert res.stderr.strip().endswith("(or run `sct-gm fetch-model challenge --force`)"), res.stderr
