"""Two sct-gm train runs on one -o: the second is refused at once, in one line naming the run that holds
the output (its lock, `.MODEL_DIR.lock` beside MODEL_DIR), and touches nothing of it, whatever its flags
(none, --resume, --overwrite); a run killed with kill -9 never blocks the next. Deterministic: the first
run is held mid-run (after a checkpoint, waiting on its stdin) or its lock is held by the test itself."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sctgm.training.phantom import write_phantom_nifti

from .test_train_safety import REPO, TINY, _one_line, _run  # the same tiny runs, refused the same way


@pytest.fixture
def pair(tmp_path):
    return write_phantom_nifti(tmp_path / "data", np.random.default_rng(0), name="sub-01_T2star", shape=(32, 32, 4))


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None: a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


#: Runs the CLI in a child that stops after its checkpoint at step 3, waiting on stdin (so the test knows
#: exactly where it is), until the test kills it.
_PAUSED = textwrap.dedent("""
    import sys
    import sctgm.training.loop as loop
    from sctgm.cli import main

    save = loop.save_checkpoint

    def pausing_save(path, state):
        save(path, state)
        if state["step"] == 3:
            print("paused at step 3", flush=True)
            sys.stdin.read()

    loop.save_checkpoint = pausing_save
    main(prog_name="sct-gm", args=sys.argv[1:])
""")


def test_a_second_run_on_a_live_runs_output_is_refused_and_a_killed_run_blocks_nothing(pair, tmp_path):
    img, gm = pair
    out, partial, lock = tmp_path / "m", tmp_path / ".m.partial", tmp_path / ".m.lock"
    args = ["-i", str(img), "-r", str(gm), "--max-steps", "6", "--val-fraction", "0", "-q", *TINY, "-o", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    errors = tempfile.TemporaryFile(mode="w+")  # read only on failure; a pipe nobody reads could fill and hang
    first = subprocess.Popen([sys.executable, "-c", _PAUSED, "train", *args], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        ready, _, _ = select.select([first.stdout], [], [], 300)
        assert ready and first.stdout.readline() == "paused at step 3\n", errors.seek(0) or errors.read()
        assert (partial / "checkpoint.pt").is_file() and lock.is_file()
        before = _snapshot(tmp_path)
        for flags in ([], ["--resume"], ["--overwrite", "--seed", "1"]):
            line = _one_line(_run(*args, *flags), 3, f"{out}: another sct-gm train run is writing this model "
                             f"(pid {first.pid} on host {socket.gethostname()}); wait for it to end",
                             "(option -o/--output)")
            assert "interrupted" not in line and "already exists" not in line
            assert _snapshot(tmp_path) == before, flags  # the live run's files, byte for byte
    finally:
        first.kill()  # as kill -9
        first.communicate(timeout=60)
    assert first.returncode == -9 and lock.is_file() and not out.exists()  # its lock file stays ...
    _one_line(_run(*args), 3, "an interrupted run left", str(partial))  # ... and no run holds it now
    res = _run(*args, "--resume")  # ... nor blocks the next
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m"]  # no lock file, no partial folder left


def test_the_lock_is_the_hidden_file_beside_the_output(pair, tmp_path):
    img, gm = pair
    out = tmp_path / "m"
    fd = os.open(tmp_path / ".m.lock", os.O_RDWR | os.O_CREAT, 0o644)  # another run's lock, held
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = _one_line(_run("-i", str(img), "-r", str(gm), "-o", str(out), "--max-steps", "1", *TINY), 3,
                         f"{out}: another sct-gm train run is writing this model; wait for it")
        assert "pid" not in line  # nothing written in the lock file: no holder to name
        assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "data"]
    finally:
        os.close(fd)
    options = ["--max-steps", "1", "--val-fraction", "0", "-q", *TINY]
    res = _run("-i", str(img), "-r", str(gm), "-o", str(out), *options)  # released: the next run takes the
    assert res.exit_code == 0, res.output                                 # file over, and removes it at its end,
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m"]
    _one_line(_run("-i", str(img), "-r", str(gm), "-o", str(out), *options), 3, "already exists")  # as a refused
    _one_line(_run("-i", str(img), "-r", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "n"), *options), 2,
              "nope.nii.gz")  # run does, and a failed one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m"]
