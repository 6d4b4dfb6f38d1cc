"""kill -9 of a batch's main process leaves no `-j` worker behind (issue #21): a worker whose parent is
gone stops at once instead of segmenting on, as an orphan, into outputs nobody will check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ..conftest import cord_phantom_volume

REPO = Path(__file__).resolve().parents[2]


def _workers(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for c in children:
        try:
            if "spawn_main" in " ".join(c.cmdline()):  # a multiprocessing worker, not the resource tracker
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


def _zombie(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_9_of_the_batch_leaves_no_worker(tmp_path, make_nifti, tiny_model):
    name = tiny_model()
    images = [str(make_nifti(cord_phantom_volume(shape=(60, 56, 12), seed=k), name=f"im{k}.nii.gz")) for k in range(6)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "sctgm", "segment", "-i", *images, "-m", name, "-j", "2", "-q",
                             "--threads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no two workers in 120 s"
            time.sleep(0.05)
            workers = _workers(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=10)
        alive = [w for w in alive if not _zombie(w)]  # ended; left for an init that may never reap it
        assert alive == [], f"{len(alive)} worker(s) outlived their batch by 10 s"
    finally:
        for w in workers:  # never leave an orphan behind, whatever the outcome
            try:
                w.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
