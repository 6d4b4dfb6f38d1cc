"""Training you can watch, through the CLI: a line per validation on stderr off a terminal (the init's
at step 0 first), training_log.csv and curves.png written at every validation, warm-up scaled to
the run. Tiny phantoms, tiny networks: seconds."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.training.outputs import MIN_DICE_AXIS_SPAN, dice_axis_limits
from sctgm.training.phantom import write_phantom_nifti

from ..conftest import interrupt_training_at

TINY = ["--init", "none", "--arch", "unet", "--filters", "4", "--threads", "1", "--device", "cpu"]
LINE = re.compile(r"^sct-gm: step +(\d+)/(\d+)  loss +(-|\d\.\d{4})  val Dice (\d\.\d{4})( \(init\))?"
                  r"( \(best \d\.\d{4} at \d+\))?  lr +(-|\d\.\d\de[-+]\d\d)  elapsed \d+m\d\ds  ETA (\?|\d+m\d\ds)$")


@pytest.fixture
def subjects(tmp_path):
    args = []
    for s in (1, 2):
        img, gm = write_phantom_nifti(tmp_path / "data", np.random.default_rng(s), name=f"sub-0{s}_T2star",
                                      shape=(32, 32, 4))
        args += ["-i", str(img), "-r", str(gm)]
    return [*args, *TINY]


def _run(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def test_a_line_per_validation_on_stderr_with_the_init_first(subjects, tmp_path):
    res = _run(*subjects, "--val", "sub-02", "--max-steps", "10", "-o", str(tmp_path / "m"))
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    with open(tmp_path / "m" / "training_log.csv", newline="") as fh:
        validated = [row for row in csv.DictReader(fh) if row["val_dice"]]
    steps = [int(m.group(1)) for m in parsed]  # --max-steps 10 validates every step (it may stop early)
    assert steps == [int(r["step"]) for r in validated] == list(range(0, len(steps))) and len(steps) >= 3
    assert [float(m.group(4)) for m in parsed] == [round(float(r["val_dice"]), 4) for r in validated]
    assert parsed[0].group(5) == " (init)" and parsed[0].group(3) == "-" and parsed[0].group(8) == "?"
    assert all(m.group(6) for m in parsed[1:])  # the best so far beside each later validation
    metrics = next(iter(json.loads((tmp_path / "m" / "model.json").read_text())["models"].values()))[
        "training"]["metrics"]
    assert metrics["init_val_window_dice"] == pytest.approx(float(validated[0]["val_dice"]), abs=1e-6)
    assert f"the init: {metrics['init_val_window_dice']:.3f}" in res.stdout
    quiet = _run(*subjects, "--val", "sub-02", "--max-steps", "2", "-o", str(tmp_path / "q"), "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_without_validation_a_line_still_comes_as_often_as_validations_would(subjects, tmp_path):
    """--val-fraction 0 (e.g. large-robust's recipe): no validation Dice to print, but a log or a
    cluster job must still see the run move, 10 lines a run, the last at the last step."""
    res = _run(*subjects, "--max-steps", "20", "--val-fraction", "0", "-o", str(tmp_path / "m"))
    assert res.exit_code == 0, res.output
    unvalidated = re.compile(r"^sct-gm: step +(\d+)/20  loss \d\.\d{4}  no validation  lr \d\.\d\de[-+]\d\d  "
                             r"elapsed \d+m\d\ds  ETA \d+m\d\ds$")
    parsed = [unvalidated.match(line) for line in res.stderr.splitlines()]
    assert all(parsed), res.stderr
    assert [int(m.group(1)) for m in parsed] == list(range(2, 21, 2))


def test_log_and_curves_exist_while_training_runs(subjects, tmp_path, monkeypatch):
    interrupt_training_at(monkeypatch, 3)
    res = _run(*subjects, "--val", "sub-02", "--max-steps", "10", "-o", str(tmp_path / "m"))
    assert res.exit_code == 130
    partial = tmp_path / ".m.partial"
    with open(partial / "training_log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [0, 1, 2, 3]
    assert (partial / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in partial.iterdir() if ".part" in p.name]  # written atomically


def test_short_runs_leave_warm_up(subjects, tmp_path):
    res = _run(*subjects, "--max-steps", "10", "--val-fraction", "0", "-o", str(tmp_path / "m"), "-q")
    assert res.exit_code == 0, res.output
    entry = next(iter(json.loads((tmp_path / "m" / "model.json").read_text())["models"].values()))
    assert entry["training"]["config"]["warmup_steps"] == 1
    with open(tmp_path / "m" / "training_log.csv", newline="") as fh:
        lr = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(fh) if r["lr"]}
    peak = entry["training"]["config"]["lr"]
    assert lr[1] < lr[2] == pytest.approx(peak) and lr[10] < peak / 2  # warmed up, then decayed


@pytest.mark.parametrize("values", [[0.8688, 0.8700, 0.8694], [0.2, 0.9], [0.995, 1.0], [0.0, 0.01]])
def test_the_dice_axis_does_not_magnify_noise(values):
    lo, hi = dice_axis_limits(values)
    assert 0.0 <= lo <= min(values) and max(values) <= hi <= 1.0
    assert hi - lo >= MIN_DICE_AXIS_SPAN


def test_a_soft_mask_is_binarised_with_one_warning(tmp_path):
    import nibabel as nib

    img, gm = write_phantom_nifti(tmp_path / "data", np.random.default_rng(0), name="sub-01_T2star", shape=(32, 32, 4))
    ref = nib.load(str(gm))
    hard = np.asarray(ref.dataobj, dtype=np.float32)
    soft = np.where(hard > 0.5, 0.9, 0.0).astype(np.float32)
    soft[:, :, 0] *= 0.5  # 0.45: below 0.5, background once binarised
    path = tmp_path / "soft.nii.gz"
    nib.save(nib.Nifti1Image(soft, ref.affine, ref.header), str(path))
    res = _run("-i", str(img), "-r", str(path), "--val-fraction", "0", "--max-steps", "2", "-o", str(tmp_path / "m"),
               *TINY)
    assert res.exit_code == 0, res.output
    n = int(np.count_nonzero(soft))
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]  # beside the progress lines
    assert warnings == [f"sct-gm: warning: {path}: a soft GM mask ({n} voxels strictly between 0 and "
                        f"1); binarised at 0.5 (GM: > 0.5) (option -r/--ref)"]
    entry = next(iter(json.loads((tmp_path / "m" / "model.json").read_text())["models"].values()))
    assert entry["training"]["data"][0]["train_slices"] == [1, 2, 3]  # slice 0 (0.45) holds no GM
