"""A seeded fault campaign (issue #21): kill -9 a batch at random points of its writing, run it again,
and get the bytes of an uninterrupted run, no temporary file, no QC entry twice, no process left.

Kill points are chosen by what the batch has written so far (the k-th new name that appears in its
folders, temporary files included, then a short seeded delay), so they land in the writing phase
rather than in Python's start-up. Only the batch's main process is killed: with -j 2 its workers must
end with it (no orphan left writing outputs)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import cord_phantom_volume

SEED = 21
KILLS = {"1": 3, "2": 2}  # -j 2 starts two workers per run: fewer runs keep the test short
IMAGES = ("sub-01_T2star.nii.gz", "sub-02_T2star.nii.gz", "sub-03_T2star.nii.gz")


def _inputs(folder: Path, make_nifti) -> None:
    folder.mkdir()
    for i, name in enumerate(IMAGES, 1):
        make_nifti(cord_phantom_volume(seed=i), name=f"{folder.name}/{name}")


def _names(folder: Path) -> set[str]:
    """The names in ``folder``, its QC folder and the QC entries (temporary ones included)."""
    out = set()
    for sub in ("", "qc", "qc/entries"):
        try:
            out |= {f"{sub}/{name}" for name in os.listdir(folder / sub)}
        except OSError:
            continue
    return out


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _kill_after(cmd: list[str], folder: Path, new_names: int, delay_s: float) -> tuple[int | None, list[int]]:
    """Run ``cmd`` in ``folder``; SIGKILL its main process once ``new_names`` names have appeared
    there (then ``delay_s``), and give the rest of the run 10 s to end. Returns its exit code when it
    ended first (else None), and the processes still running in ``folder`` then (which are killed)."""
    seen, before = set(), _names(folder)
    proc = subprocess.Popen(cmd, cwd=folder, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and len(seen) < new_names:
            seen |= _names(folder) - before
            time.sleep(0.005)
        time.sleep(delay_s)
        if proc.poll() is not None:
            return proc.returncode, _processes_in(folder)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as `kill -9 <pid>` does
        proc.wait()
        deadline = time.monotonic() + 10
        while _processes_in(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
        return None, _processes_in(folder)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _processes_in(folder):  # a failing run leaves nothing behind either
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _processes_in(folder: Path) -> list[int]:
    """Processes (of this user) whose working directory is ``folder``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(folder):
                out.append(int(pid))
        except OSError:
            continue
    return out


@pytest.mark.parametrize("n_jobs", ["1", "2"])
def test_a_batch_killed_at_random_points_resumes_to_the_same_bytes(tiny_model, make_nifti, tmp_path, monkeypatch,
                                                                  n_jobs):
    name = tiny_model()
    args = ["segment", "-i", *IMAGES, "-m", name, "--device", "cpu", "--prob", "-qc", "qc", "-q", "--threads", "1",
            "-j", n_jobs]
    reference, run = tmp_path / "reference", tmp_path / "run"
    _inputs(reference, make_nifti)
    _inputs(run, make_nifti)
    monkeypatch.chdir(reference)  # relative paths: the sidecars name the sources alike in both folders
    assert CliRunner().invoke(main, args[:-2]).exit_code == 0  # sequential: the same bytes as any -j
    monkeypatch.chdir(tmp_path)
    expected = _outputs(reference)
    assert len(expected) == 3 * 4  # input, mask, probability map, sidecar

    rng = random.Random(SEED)
    cmd = [sys.executable, "-m", "sctgm", *args]
    ended = []
    for _ in range(KILLS[n_jobs]):
        code, left = _kill_after(cmd, run, new_names=rng.randint(1, 12), delay_s=rng.uniform(0.0, 0.03))
        ended.append(code)
        assert left == []  # nothing of the killed batch runs on: no orphan worker
    assert ended.count(None) >= KILLS[n_jobs] // 2, ended  # the kills did land (most hit a write)
    assert subprocess.run(cmd, cwd=run, capture_output=True, timeout=120).returncode == 0

    assert _outputs(run) == expected  # byte-identical, sidecars included
    leftovers = [n for n in _names(run) if ".part" in n]
    assert leftovers == []
    entries = [p for p in (run / "qc" / "entries").iterdir()]
    assert len(entries) == len(IMAGES)  # one QC entry per image, however often it was redone
    index = json.loads((run / "qc" / "index.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert sorted(e["image_name"] for e in index["entries"]) == sorted(IMAGES)
    assert (run / "qc" / "report.json").is_file()
    assert _processes_in(run) == []
