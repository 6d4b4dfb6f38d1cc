"""sctgm.model.registry: the registry file, cache folder, install/verify, fallbacks and concurrent installs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from ..serve import ModelServer, make_zip, refused_url
from sctgm.model import install, registry
from sctgm.model.download import DownloadPolicy
from sctgm.exceptions import DownloadError, ModelError, ModelIntegrityError, UnknownModelError
from sctgm.model.install import ensure_model, list_models, resolve_cache_dir
from sctgm.model.registry import MANIFEST_FILE, WEIGHTS_FILE

REPO = Path(__file__).resolve().parents[1]
FAST = DownloadPolicy(attempts=2, backoff_s=0.0, read_timeout_s=5.0)
REAL_LOAD = registry.load_registry
PINNED = "71be26efc4f999c92dbcad4419b9484189995cad"


@pytest.fixture
def set_sources(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[dict[str, str]]], None]:
    """Replace every model's registry sources (tests never reach the internet)."""

    def _set(sources: list[dict[str, str]]) -> None:
        def fake(extra: Any = None) -> dict[str, Any]:
            reg = REAL_LOAD(extra)
            for entry in reg["models"].values():
                entry["sources"] = [dict(s) for s in sources]
            return reg

        monkeypatch.setattr(registry, "load_registry", fake)

    _set([{"kind": "files", "url": refused_url()}])
    return _set


def leftovers(cache: Path) -> list[str]:
    """Everything in the cache but the (deliberately kept, empty) lock files."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() and p.suffix != ".lock")


# ------------------------------------------------------------------------------------ registry file

def test_packaged_registry_matches_shared_files(shared_models: Path) -> None:
    reg = REAL_LOAD()
    assert reg["default"] == "large-ensemble" and set(reg["models"]) >= {"challenge", "large", "large-ensemble"}
    for name, entry in reg["models"].items():
        if name not in ("challenge", "large", "large-ensemble"):  # shipped in the package: tests/model/test_shipped.py
            continue
        assert "Sci Rep. 2018" in entry["citation"] and entry["license"] and entry["training_data"]
        assert entry["preprocessing"]["spacing_mm"] == 0.25 and entry["preprocessing"]["crop_px"] == 200
        for f in entry["files"]:
            assert install.sha256_of(shared_models / f["name"]) == f["sha256"]
            assert (shared_models / f["name"]).stat().st_size == f["size"]
        kinds = [s["kind"] for s in entry["sources"]]
        assert kinds == ["files", "zip"] and PINNED in entry["sources"][0]["url"]


def test_user_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_models: Path) -> None:
    entry = json.loads(json.dumps(REAL_LOAD()["models"]["challenge"]))
    entry["sources"] = [{"kind": "files", "url": str(shared_models)}]  # a registry of one's own: any folder
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"models": {"mine": entry}, "default": "mine"}))
    monkeypatch.setenv("SCTGM_REGISTRY", str(user))
    monkeypatch.delenv("SCTGM_MIRROR")
    reg = registry.load_registry()
    assert reg["default"] == "mine" and "large" in reg["models"]
    model = ensure_model(cache_dir=tmp_path / "c")
    assert model.name == "mine" and model.filters == 32
    user.write_text(json.dumps({"models": {"large": entry}}))
    with pytest.raises(ModelError, match="already registered"):
        registry.load_registry()
    entry["files"][0]["name"] = "../escape.hdf5"
    user.write_text(json.dumps({"models": {"mine": entry}}))
    with pytest.raises(ModelError, match="plain file name"):
        registry.load_registry()
    # a model defined twice in one file is refused, not silently half-overridden by json
    text = json.dumps(entry)
    user.write_text('{"models": {"mine": %s, "mine": %s}}' % (text, text))
    with pytest.raises(ModelError, match="'mine' is defined twice"):
        registry.load_registry()


def test_the_packaged_registry_defines_each_model_once() -> None:
    """json.loads keeps the last of a repeated key: a merge once left `large-ensemble` in the file
    twice. The loader refuses duplicates, so the packaged file loading at all proves it has none."""
    text = (REPO.parent / "data_registry.json").read_text()
    names = list(REAL_LOAD()["models"])
    for name in names:
        assert text.count(f'"{name}": {{') == 1, name


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    assert resolve_cache_dir() == (isolated_home / ".cache" / "sctgm").resolve()
    monkeypatch.setenv("SCTGM_HOME", str(tmp_path / "env"))
    assert resolve_cache_dir() == (tmp_path / "env").resolve()
    assert resolve_cache_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()
    with pytest.raises(ModelError, match="inside the sct-gm package"):
        resolve_cache_dir(Path(registry.__file__).parent / "cache")


# --------------------------------------------------------------------------------- install, verify

@pytest.mark.parametrize("name", ["challenge", "large"])
def test_fresh_install_over_http_loads_like_hdf5(name: str, server: ModelServer, tmp_path: Path,
                                                 shared_models: Path, set_sources: Callable) -> None:
    import torch

    from sctgm.networks.dilated import DilatedGMNet
    from sctgm.model.weights import load_safetensors, state_dict_from_keras

    set_sources([{"kind": "files", "url": server.url}])
    os.environ.pop("SCTGM_MIRROR")
    model = ensure_model(name, cache_dir=tmp_path, policy=FAST)
    assert model.weights_format == "safetensors" and model.weights_path.name == WEIGHTS_FILE
    assert model.weights_path.parent == tmp_path / "models" / name / "r20180205"
    hdf5 = shared_models / f"{name}_model.hdf5"
    assert model.sha256 == install.sha256_of(hdf5)
    assert model.preprocessing.spacing_mm == 0.25 and model.filters == (64 if name == "large" else 32)
    assert sorted(server.counts.values()) == [1, 1]

    def net(sd: dict[str, np.ndarray], filters: int) -> DilatedGMNet:
        m = DilatedGMNet(filters).eval()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        return m

    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, 48, 40)).astype(np.float32))
    with torch.no_grad():
        a = net(*load_safetensors(model.weights_path))(x)
        b = net(*state_dict_from_keras(hdf5))(x)
    assert torch.equal(a, b)
    again = ensure_model(name, cache_dir=tmp_path, policy=FAST)
    assert again == model and sorted(server.counts.values()) == [1, 1]


def test_mirror_folder_from_env(tmp_path: Path, set_sources: Callable, shared_models: Path) -> None:
    model = ensure_model("challenge", cache_dir=tmp_path)  # SCTGM_MIRROR -> ../shared (conftest)
    manifest = json.loads((model.weights_path.parent / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"challenge_model.hdf5", "challenge_model.json", WEIGHTS_FILE}
    assert leftovers(tmp_path) == sorted(f"models/challenge/r20180205/{n}" for n in
                                         [*manifest["files"], MANIFEST_FILE])


@pytest.mark.parametrize("mode", ["404", "refused", "wrong", "half"])
def test_first_source_fails_next_used(mode: str, server: ModelServer, tmp_path: Path, set_sources: Callable,
                                      caplog: pytest.LogCaptureFixture) -> None:
    first = refused_url() if mode == "refused" else server.url
    server.behaviour["large_model.hdf5"] = [mode if mode != "refused" else "ok"]
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        model = ensure_model("large", mirror=first, cache_dir=tmp_path, policy=FAST)  # then SCTGM_MIRROR
    assert model.weights_path.is_file()
    reason = {"404": "HTTP 404", "refused": "refused", "wrong": "sha256", "half": "connection lost"}[mode]
    messages = [r.getMessage() for r in caplog.records]
    assert any(reason in m and "trying the next source" in m for m in messages)


def test_all_sources_fail_leave_nothing(server: ModelServer, tmp_path: Path, set_sources: Callable,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server.behaviour.update({"large_model.hdf5": ["wrong"], "missing.zip": ["404"]})
    monkeypatch.setenv("SCTGM_MIRROR", str(tmp_path / "no-such-folder"))
    set_sources([{"kind": "files", "url": server.url}, {"kind": "zip", "url": server.url + "missing.zip"}])
    mirror = refused_url()
    with pytest.raises(DownloadError) as err:
        ensure_model("large", mirror=mirror, cache_dir=tmp_path / "c", policy=FAST)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model 'large'")
    for part in (f"{mirror}large_model.hdf5 (mirror): connection failed", "refused",
                 "no-such-folder/large_model.hdf5 (SCTGM_MIRROR)", "not found",
                 f"{server.url}large_model.hdf5 (registry): sha256", "missing.zip (registry): HTTP 404",
                 "SCTGM_MIRROR=DIR", "pass DIR as the mirror"):
        assert part in msg
    assert leftovers(tmp_path / "c") == []
    assert [p.name for p in (tmp_path / "c" / "models").iterdir()] == ["large.lock"]


def test_zip_source(server: ModelServer, tmp_path: Path, set_sources: Callable, shared_models: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    server.extra["models.zip"] = make_zip({f"deepseg_gm_models/{n}": (shared_models / n).read_bytes()
                                           for n in ("large_model.hdf5", "large_model.json", "README.txt")})
    monkeypatch.delenv("SCTGM_MIRROR")
    set_sources([{"kind": "files", "url": server.url + "nothing-here/"},
                 {"kind": "zip", "url": server.url + "models.zip"}])
    model = ensure_model("large", cache_dir=tmp_path, policy=FAST)
    assert model.weights_path.is_file() and server.counts["models.zip"] == 1
    manifest = json.loads((model.weights_path.parent / MANIFEST_FILE).read_text())
    assert manifest["sources"][0].endswith("models.zip#large_model.hdf5")
    assert not any(p.name.endswith(".zip") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("member", ["../evil", "/abs/evil"])
def test_unsafe_zip_source_refused(member: str, server: ModelServer, tmp_path: Path, set_sources: Callable,
                                   shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = {n: (shared_models / n).read_bytes() for n in ("large_model.hdf5", "large_model.json")}
    server.extra["evil.zip"] = make_zip({**members, member: b"pwned"})
    monkeypatch.delenv("SCTGM_MIRROR")
    set_sources([{"kind": "zip", "url": server.url + "evil.zip"}])
    with pytest.raises(DownloadError, match=f"member '{member}'.*refusing"):
        ensure_model("large", cache_dir=tmp_path / "c", policy=FAST)
    assert leftovers(tmp_path / "c") == [] and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("victim", [WEIGHTS_FILE, "large_model.hdf5", MANIFEST_FILE])
def test_corrupted_install_detected_then_force(victim: str, tmp_path: Path, set_sources: Callable, shared_models: Path) -> None:
    model = ensure_model("large", cache_dir=tmp_path)
    path = model.weights_path.parent / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"download it again by forcing its install$") as err:
        ensure_model("large", cache_dir=tmp_path)
    assert "ensure_model" not in str(err.value) and err.value.parameter == "force"
    assert [s.state for s in list_models(["large"], cache_dir=tmp_path)] == ["corrupt"]
    fixed = ensure_model("large", cache_dir=tmp_path, force=True)
    assert fixed == model and list_models(["large"], cache_dir=tmp_path)[0].state == "installed"
    assert not [p for p in (tmp_path / "models" / "large").iterdir() if p.name.startswith(".")]


def test_manifest_must_cover_the_weights(tmp_path: Path, set_sources: Callable, shared_models: Path) -> None:
    model = ensure_model("challenge", cache_dir=tmp_path)
    manifest_path = model.weights_path.parent / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"][WEIGHTS_FILE]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match=f"does not list {WEIGHTS_FILE}.*forcing its install"):
        ensure_model("challenge", cache_dir=tmp_path)


def test_stale_temporary_folder_removed(tmp_path: Path, set_sources: Callable, shared_models: Path) -> None:
    stale = tmp_path / "models" / "large" / ".tmp-killed"
    stale.mkdir(parents=True)
    (stale / "large_model.hdf5").write_bytes(b"half")
    ensure_model("large", cache_dir=tmp_path)
    assert not stale.exists()


def test_paths_and_unknown_names(shared_models: Path, tmp_path: Path) -> None:
    from sctgm.model.weights import save_safetensors, state_dict_from_keras

    m = ensure_model(str(shared_models / "challenge_model.hdf5"))
    assert (m.weights_format, m.filters, m.version) == ("keras-hdf5", 32, "user")
    sd, filters = state_dict_from_keras(shared_models / "challenge_model.hdf5")
    save_safetensors(sd, filters, tmp_path / "w.safetensors")
    m = ensure_model(str(tmp_path / "w.safetensors"))
    assert (m.weights_format, m.filters) == ("safetensors", 32)
    with pytest.raises(UnknownModelError, match="no such model file"):
        ensure_model(str(tmp_path / "absent.hdf5"))
    with pytest.raises(UnknownModelError, match="registered models: challenge, large, large-ensemble, large-robust"):
        ensure_model("huge")


def test_list_models(tmp_path: Path, set_sources: Callable, shared_models: Path) -> None:
    rows = list_models(cache_dir=tmp_path)
    assert [(r.name, r.state, r.default) for r in rows] == [("challenge", "missing", False),
                                                            ("large", "missing", False),
                                                            ("large-ensemble", "missing", True),
                                                            ("large-robust", "missing", False)]
    assert rows[1].size_bytes == 2041264 + 62
    ensure_model("challenge", cache_dir=tmp_path)
    assert list_models(["challenge"], cache_dir=tmp_path)[0].state == "installed"


def test_eight_processes_cold_cache_one_download(shared_models: Path, tmp_path: Path) -> None:
    code = ("import sys; from sctgm.model.install import ensure_model; "
            "m = ensure_model('large', mirror=sys.argv[1], cache_dir=sys.argv[2]); print(m.weights_path)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SCTGM_MIRROR")
    with ModelServer(shared_models, slow_s=0.2) as srv:
        cmd = [sys.executable, "-c", code, srv.url, str(tmp_path)]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        results = [(p.wait(60), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0] * 8, [r[2] for r in results]
    assert len({r[1] for r in results}) == 1
    assert dict(srv.counts) == {"large_model.hdf5": 1, "large_model.json": 1}
    assert list_models(["large"], cache_dir=tmp_path)[0].state == "installed"
    assert sorted(p.name for p in (tmp_path / "models" / "large").iterdir()) == ["r20180205"]


def test_a_full_cache_disk_is_one_line_naming_the_folder_and_no_other_source_is_tried(
        server: ModelServer, tmp_path: Path, set_sources: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while writing a downloaded file is the cache's problem, not the source's (F3): one
    ModelError naming the cache folder, and the other sources (SCTGM_MIRROR, the registry) are not
    tried: they would fill the same disk again."""
    import builtins
    import errno

    from click.testing import CliRunner

    from sctgm.cli import main
    from sctgm.model import download

    writes: list[str] = []

    class Full:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> "Full":
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            writes.append(self.f.name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = builtins.open(path, mode, *args, **kwargs)
        return Full(f) if "w" in mode else f

    monkeypatch.setattr(download, "open", full_open, raising=False)
    set_sources([{"kind": "files", "url": server.url + "registry/"}])
    cache = tmp_path / "c"
    with pytest.raises(ModelError, match="No space left on device") as err:
        ensure_model("challenge", mirror=server.url, cache_dir=cache, policy=FAST)
    assert not isinstance(err.value, DownloadError)
    assert f"cannot write in the cache folder {cache / 'models' / 'challenge'}" in str(err.value)
    assert len(writes) == 1 and sum(server.counts.values()) == 1  # the mirror only, once
    assert leftovers(cache) == []
    res = CliRunner().invoke(main, ["fetch-model", "challenge", "--cache-dir", str(cache), "--mirror", server.url])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 4 and len(lines) == 1 and "cannot write in the cache folder" in lines[0], res.stderr


def test_a_model_json_as_sctgm_registry_is_confined_to_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  shared_models: Path) -> None:
    """SCTGM_REGISTRY=MODEL_DIR/model.json read files (/etc, a 0600 secret) that `fetch-model MODEL_DIR`
    refuses to read (F5): a model folder's model.json is confined however it is used."""
    entry = json.loads(json.dumps(REAL_LOAD()["models"]["challenge"]))
    folder = tmp_path / "m"
    folder.mkdir()
    for f in entry["files"]:
        (folder / f["name"]).write_bytes((shared_models / f["name"]).read_bytes())
    model_json = folder / "model.json"
    monkeypatch.setenv("SCTGM_REGISTRY", str(model_json))
    for outside in (str(shared_models), "../elsewhere", shared_models.as_uri(), str(shared_models / "x.zip")):
        kind = "zip" if outside.endswith(".zip") else "files"
        model_json.write_text(json.dumps({"models": {"mine": {**entry, "sources": [{"kind": kind, "url": outside}]}}}))
        with pytest.raises(ModelError, match="outside the model's folder"):
            registry.load_registry()
    model_json.write_text(json.dumps({"models": {"mine": {**entry, "sources": [{"kind": "files", "url": "."}]}}}))
    monkeypatch.delenv("SCTGM_MIRROR")
    assert ensure_model("mine", cache_dir=tmp_path / "c").filters == 32
