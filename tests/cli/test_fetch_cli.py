"""``sct-gm fetch-model``: Click runner for behaviour, subprocesses for concurrency."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ..serve import ModelServer, refused_url
from sctgm.model import registry
from sctgm.cli import main

REPO = Path(__file__).resolve().parents[1]
REAL_LOAD = registry.load_registry


@pytest.fixture(autouse=True)
def offline_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's network sources point at a closed local port: tests never reach the internet
    (weights shipped in the package keep their folder)."""

    def fake(extra: Any = None) -> dict[str, Any]:
        reg = REAL_LOAD(extra)
        for entry in reg["models"].values():
            entry["sources"] = ([s for s in entry["sources"] if "://" not in s["url"]]
                                or [{"kind": "files", "url": refused_url()}])
        return reg

    monkeypatch.setattr(registry, "load_registry", fake)


@pytest.fixture(autouse=True)
def restore_logging() -> Any:
    """The CLI configures the 'sctgm' logger (handler, level, propagate); undo it after each test."""
    logger = logging.getLogger("sctgm")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["fetch-model", *args])


def test_help_lists_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "fetch-model" in result.output and "Download, verify and install" in result.output


def test_list_then_fetch_then_list(tmp_path: Path, shared_models: Path) -> None:
    before = run("--list", "--cache-dir", str(tmp_path))
    assert before.exit_code == 0, before.output
    lines = before.stdout.splitlines()
    assert lines[0].split("\t") == ["name", "version", "size_bytes", "installed", "path", "description", "default"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [tuple(r[:4]) + (r[6],) for r in rows] == [("challenge", "r20180205", "639742", "missing", "no"),
                                                      ("large", "r20180205", "2041326", "missing", "no"),
                                                      ("large-ensemble", "r20261205.1", "2041326", "missing", "yes"),
                                                      ("large-robust", "r20261201", "1928001", "missing", "no")]
    assert rows[2][4] == str(tmp_path.resolve() / "models" / "large-ensemble" / "r20261205.1")
    assert "232 subjects" in rows[1][5] and "large-robust" in rows[2][5]
    fetched = run("--cache-dir", str(tmp_path))  # the default model, from SCTGM_MIRROR (conftest)
    assert fetched.exit_code == 0 and fetched.stderr == ""  # no progress bars off a terminal
    # the default combines two networks: both are installed
    assert fetched.stdout.strip().splitlines() == [
        f"large-ensemble r20261205.1: {rows[2][4]}/model.safetensors",
        f"large-robust r20261201: {rows[3][4]}/model.safetensors"]
    after = run("--list", "large-ensemble", "large-robust", "--cache-dir", str(tmp_path))
    assert [line.split("\t")[3] for line in after.stdout.splitlines()[1:]] == ["installed", "installed"]


def test_force_downloads_again(server: ModelServer, tmp_path: Path) -> None:
    args = ("challenge", "--mirror", server.url, "--cache-dir", str(tmp_path))
    assert run(*args).exit_code == 0
    assert run(*args).exit_code == 0
    assert server.counts["challenge_model.hdf5"] == 1
    assert run(*args, "--force").exit_code == 0
    assert server.counts["challenge_model.hdf5"] == 2


def test_cache_dir_over_env_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         isolated_home: Path, shared_models: Path) -> None:
    assert run("challenge").exit_code == 0
    assert (isolated_home / ".cache" / "sctgm" / "models" / "challenge" / "r20180205").is_dir()
    monkeypatch.setenv("SCTGM_HOME", str(tmp_path / "env"))
    assert run("challenge").exit_code == 0
    assert (tmp_path / "env" / "models" / "challenge" / "r20180205").is_dir()
    assert run("challenge", "--cache-dir", str(tmp_path / "arg")).exit_code == 0
    assert (tmp_path / "arg" / "models" / "challenge" / "r20180205").is_dir()


def test_all_and_usage_errors(tmp_path: Path, shared_models: Path) -> None:
    result = run("--all", "--cache-dir", str(tmp_path))
    # four models, each once (large-ensemble's second network, large-robust, is in the list already)
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 4  # large-robust from the package
    assert run("--all", "large").exit_code == 2
    assert run("--list", "--force").exit_code == 2
    unknown = run("huge", "--cache-dir", str(tmp_path))
    assert unknown.exit_code == 4 and "unknown model 'huge'" in unknown.stderr


def test_offline_without_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCTGM_MIRROR")
    result = run("large", "--cache-dir", str(tmp_path), "-q")
    assert result.exit_code == 4 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sct-gm: error: model 'large': could not obtain")
    assert "(registry): connection failed" in lines[0] and "refused" in lines[0]
    assert "SCTGM_MIRROR=DIR" in lines[0] and lines[0].endswith("(option --mirror)")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_failing_source_reported_then_next(server: ModelServer, tmp_path: Path) -> None:
    server.behaviour["large_model.hdf5"] = ["404"]
    result = run("large", "--mirror", server.url, "--cache-dir", str(tmp_path))
    assert result.exit_code == 0
    assert "warning: model 'large'" in result.stderr and "HTTP 404" in result.stderr


def test_corrupt_install_refused(tmp_path: Path, shared_models: Path) -> None:
    assert run("large", "--cache-dir", str(tmp_path)).exit_code == 0
    weights = tmp_path / "models" / "large" / "r20180205" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = run("large", "--cache-dir", str(tmp_path))
    assert result.exit_code == 4 and "(option --force)" in result.stderr
    listed = run("--list", "large", "--cache-dir", str(tmp_path))
    assert listed.stdout.splitlines()[1].split("\t")[3] == "corrupt"
    assert run("large", "--force", "--cache-dir", str(tmp_path)).exit_code == 0


def test_eight_cli_processes_cold_cache(shared_models: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SCTGM_MIRROR")
    with ModelServer(shared_models, slow_s=0.2) as srv:
        cmd = [sys.executable, "-m", "sctgm", "fetch-model", "large", "--cache-dir", str(tmp_path),
               "--mirror", srv.url]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        results = [(p.wait(60), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0] * 8, [r[2] for r in results]
    assert len({r[1] for r in results}) == 1 and "model.safetensors" in results[0][1]
    assert dict(srv.counts) == {"large_model.hdf5": 1, "large_model.json": 1}
    assert sorted(p.name for p in (tmp_path / "models" / "large").iterdir()) == ["r20180205"]
    listed = run("--list", "large", "--cache-dir", str(tmp_path))
    assert listed.stdout.splitlines()[1].split("\t")[3] == "installed"
