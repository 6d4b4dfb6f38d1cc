"""sct-gm train against hostile states (issue #21): --overwrite removes only a model folder of its own,
a damaged or mismatched checkpoint is refused with one line naming what differs, a full disk is one
line naming the path, and a seeded campaign of kill -9 at random points, each followed by --resume,
ends with the bytes of an uninterrupted run, no process and no temporary file left behind."""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.training.phantom import write_phantom_nifti

from ..conftest import interrupt_training_at

REPO = Path(__file__).resolve().parents[2]
TINY = ["--init", "none", "--arch", "unet", "--filters", "4", "--threads", "1", "--device", "cpu"]


@pytest.fixture
def pair(tmp_path):
    return write_phantom_nifti(tmp_path / "data", np.random.default_rng(0), name="sub-01_T2star", shape=(32, 32, 4))


def _run(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def _one_line(res, code: int, *needles: str) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == code and len(lines) == 1 and lines[0].startswith("sct-gm: error: "), res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_overwrite_refuses_a_folder_sct_gm_did_not_make(pair, tmp_path):
    img, gm = pair
    for name, make in (("notes", lambda d: (d / "notes.txt").write_text("mine")),
                       ("nested", lambda d: ((d / "sub").mkdir(), (d / "sub" / "a.nii.gz").write_text("x"))),
                       ("mixed", lambda d: ((d / "model.json").write_text("{}"), (d / "thesis.tex").write_text("x"))),
                       ("images", lambda d: (d / "t2s.nii.gz").write_text("x"))):
        folder = tmp_path / name
        folder.mkdir()
        make(folder)
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        res = _run("-i", str(img), "-r", str(gm), "-o", str(folder), "--overwrite", "--max-steps", "1", *TINY)
        _one_line(res, 3, str(folder), "not a model folder written by sct-gm train")
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    res = _run("-i", str(img), "-r", str(gm), "-o", str(blocker), "--overwrite", "--max-steps", "1", *TINY)
    _one_line(res, 3, "a_file")
    assert blocker.read_text() == "keep"


def test_overwrite_replaces_a_model_folder_and_an_interrupted_run_it_made(pair, tmp_path):
    img, gm = pair
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.json").write_text("{}")  # an earlier (here: fake) model folder of sct-gm's own files
    (out / "training_log.csv").write_text("step\n")
    partial = tmp_path / ".m.partial"
    partial.mkdir()
    (partial / "run.json").write_text("{}")
    (partial / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    res = _run("-i", str(img), "-r", str(gm), "-o", str(out), "--overwrite", "--max-steps", "1", "--val-fraction",
               "0", "-q", *TINY)
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and not partial.exists()


def test_a_damaged_or_mismatched_checkpoint_is_refused_naming_what_differs(pair, tmp_path, monkeypatch):
    import sctgm.training.loop as loop

    img, gm = pair
    args = ["-i", str(img), "-r", str(gm), "--max-steps", "6", "--val-fraction", "0", "-o", str(tmp_path / "m"), "-q"]
    save = interrupt_training_at(monkeypatch, 3)
    assert _run(*args, *TINY).exit_code == 130
    monkeypatch.setattr(loop, "save_checkpoint", save)
    partial = tmp_path / ".m.partial"
    for changed, flag in ((["--threads", "2"], "--threads"), (["--seed", "5"], "--seed"),
                          (["--lr", "0.01"], "--lr"), (["--batch-size", "2"], "--batch-size")):
        tiny = [a for a in TINY] if flag != "--threads" else [a for a in TINY if a not in ("--threads", "1")]
        res = _run(*args, *tiny, *changed, "--resume")
        line = _one_line(res, 2, str(partial), f"(option {flag})")
        assert "the interrupted run had" in line
    other = write_phantom_nifti(tmp_path / "other", np.random.default_rng(1), name="sub-01_T2star", shape=(32, 32, 4))
    res = _run(*[str(other[0]) if a == str(img) else str(other[1]) if a == str(gm) else a for a in args], *TINY,
               "--resume")
    _one_line(res, 2, "other training data", "-i")
    ck = partial / "checkpoint.pt"
    data = bytearray(ck.read_bytes())
    for pos in (len(data) // 2, len(data) - 100):  # two flipped bytes inside the weights
        data[pos] ^= 0xFF
    ck.write_bytes(bytes(data))
    _one_line(_run(*args, *TINY, "--resume"), 3, str(ck), "damaged")
    assert not (tmp_path / "m").exists() and ck.read_bytes() == bytes(data)  # refused, nothing removed


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    return env


def test_a_full_disk_during_training_is_one_line_naming_the_path(pair, tmp_path):
    img, gm = pair
    out = tmp_path / "m"
    limit = 60_000  # bytes: run.json fits, the first checkpoint (~0.4 MB) does not

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail (EFBIG)

    proc = subprocess.run([sys.executable, "-m", "sctgm", "train", "-i", str(img), "-r", str(gm), "-o", str(out),
                           "--max-steps", "4", "--val-fraction", "0", "-q", *TINY], capture_output=True, text=True,
                          env=_subprocess_env(), preexec_fn=small_files, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert str(tmp_path / ".m.partial") in lines[0] and "File too large" in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith((".tmp", ".part.json"))]


#: Runs the CLI in a child that kills itself (SIGKILL, as kill -9 would) at one point of the run:
#: "before" the checkpoint of a step is written, "mid" while it is written (its temporary file
#: holds part of it), "after" it is in place, or "outputs" while the finished model is being written.
_KILLER = textwrap.dedent("""
    import os, signal, sys, tempfile
    from pathlib import Path
    import sctgm.training.loop as loop
    import sctgm.training.outputs as outputs
    from sctgm.cli import main

    step, phase = int(sys.argv[1]), sys.argv[2]
    save = loop.save_checkpoint

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def killing_save(path, state):
        if state["step"] == step and phase == "before":
            die()
        if state["step"] == step and phase == "mid":
            fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
            os.write(fd, b"SCTGM-CK2\\n half a checkpoint")
            die()
        save(path, state)
        if state["step"] == step and phase == "after":
            die()

    loop.save_checkpoint = killing_save
    if phase == "outputs":
        outputs.write_curves = lambda *a, **k: die()
    main(prog_name="sct-gm", args=sys.argv[3:])
""")


def test_seeded_kill_campaign_resumes_to_the_bytes_of_an_uninterrupted_run(pair, tmp_path):
    img, gm = pair
    steps = 6
    args = ["train", "-i", str(img), "-r", str(gm), "--max-steps", str(steps), "--val-fraction", "0", "--seed", "3",
            "-q", *TINY]
    full = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "full")])
    assert full.exit_code == 0, full.output
    rng = random.Random(21)
    points = [(step, rng.choice(["before", "mid", "after"])) for step in sorted(rng.sample(range(1, steps), 2))]
    points.append((steps, "outputs"))  # each point lies beyond the checkpoint the previous run left
    out = tmp_path / "cut"
    children = []
    for k, (step, phase) in enumerate(points):
        cmd = [sys.executable, "-c", _KILLER, str(step), phase, *args, "-o", str(out)] + (["--resume"] if k else [])
        proc = subprocess.Popen(cmd, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children.append(proc.pid)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -9, (step, phase, err)  # it died where it was told to
        assert not out.exists()
    again = CliRunner().invoke(main, [*args, "-o", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    for name in ("model.safetensors", "validation.csv"):
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name

    def without_seconds(path: Path) -> list[str]:
        return [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]

    assert without_seconds(out / "training_log.csv") == without_seconds(tmp_path / "full" / "training_log.csv")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "data", "full"]  # no .partial, no temp file
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]  # every child is gone
    shutil.rmtree(out)


def test_a_nifti_name_is_no_model_folder(pair, tmp_path):
    img, gm = pair
    res = _run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "m2.nii.gz"), "--max-steps", "1", *TINY)
    _one_line(res, 3, "m2.nii.gz: is a NIfTI name", "folder")
    assert not list(tmp_path.glob("*m2*"))
