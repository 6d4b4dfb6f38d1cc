"""An offline cache that holds `large` installs the default `large-ensemble` from it: the default's
first network is the same published file, so a node prepared with `sct-gm fetch-model large` (or
upgraded from a version whose default was `large`) needs no network and no mirror."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from sctgm.model.install import ensure_model
from sctgm.model.registry import load_registry


def test_the_default_installs_from_large_already_in_the_cache(shared_models: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    large = ensure_model("large", mirror=str(shared_models), cache_dir=str(cache))
    default = load_registry()["default"]
    assert default != "large"

    def offline(*args: object, **kwargs: object) -> None:
        raise requests.ConnectionError("no network in this test")

    monkeypatch.setattr(requests.Session, "request", offline)
    monkeypatch.setenv("SCTGM_MIRROR", str(tmp_path / "mirror-without-these-files"))
    installed = ensure_model(default, cache_dir=str(cache))
    assert installed.sha256 == large.sha256  # the same weights, verified, taken from the cache
    manifest = (installed.weights_path.parent / "manifest.json").read_text()
    assert str(large.weights_path.parent) in manifest  # recorded as the source


def test_an_earlier_version_of_the_default_in_the_cache_installs_the_new_one(shared_models: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A node upgraded offline holds only the default's previous version (same published file, another
    version folder): the new version installs from it, with no network and no mirror."""
    import shutil

    cache = tmp_path / "cache"
    large = ensure_model("large", mirror=str(shared_models), cache_dir=str(cache))
    default = load_registry()["default"]
    earlier = cache / "models" / default / "r20000101"
    earlier.parent.mkdir(parents=True)
    shutil.move(str(large.weights_path.parent), str(earlier))
    shutil.rmtree(cache / "models" / "large")

    def offline(*args: object, **kwargs: object) -> None:
        raise requests.ConnectionError("no network in this test")

    monkeypatch.setattr(requests.Session, "request", offline)
    monkeypatch.setenv("SCTGM_MIRROR", str(tmp_path / "mirror-without-these-files"))
    installed = ensure_model(default, cache_dir=str(cache))
    assert installed.sha256 == large.sha256 and installed.weights_path.parent != earlier
    assert str(earlier) in (installed.weights_path.parent / "manifest.json").read_text()
