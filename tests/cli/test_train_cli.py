"""sct-gm train through the CLI: bad inputs (one line naming the file, exit != 0, no MODEL_DIR left)
and an interrupted run resumed to the uninterrupted weights. Tiny phantoms, tiny networks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main
from sctgm.training.phantom import write_phantom_nifti

from ..conftest import interrupt_training_at

TINY = ["--init", "none", "--arch", "unet", "--filters", "4", "--threads", "1", "--device", "cpu"]


@pytest.fixture
def pair(tmp_path):
    img, gm = write_phantom_nifti(tmp_path / "data", np.random.default_rng(0), name="sub-01_T2star", shape=(32, 32, 4))
    return img, gm


def _mask_like(img: Path, data: np.ndarray, path: Path) -> Path:
    ref = nib.load(str(img))
    nii = nib.Nifti1Image(data.astype(np.float32), ref.affine)
    nii.set_qform(ref.affine, code=1)
    nii.set_sform(ref.affine, code=1)
    nib.save(nii, str(path))
    return path


def _run(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def _fails(res, *needles: str, out: Path) -> None:
    assert res.exit_code not in (0, None), res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sct-gm: error: "), res.output
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial*"))


def test_mask_on_another_grid(pair, tmp_path):
    img, _ = pair
    bad = tmp_path / "gm_grid.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 30, 4), np.float32) * 0, np.diag([0.5, 0.5, 4.0, 1.0])), str(bad))
    arr = np.zeros((32, 30, 4), np.float32)
    arr[10:14, 10:14, 1] = 1
    nib.save(nib.Nifti1Image(arr, np.diag([0.5, 0.5, 4.0, 1.0])), str(bad))
    _fails(_run("-i", str(img), "-r", str(bad), "-o", str(tmp_path / "m"), *TINY), "gm_grid.nii.gz", "grid",
           out=tmp_path / "m")


@pytest.mark.parametrize("kind, needle", [("empty", "empty"), ("ones", "1 everywhere"), ("nan", "NaN"),
                                          ("labels", "label map"), ("soft", "empty")])
def test_bad_masks(pair, tmp_path, kind, needle):
    img, gm = pair
    data = np.asarray(nib.load(str(gm)).dataobj, dtype=np.float32)
    bad = {"empty": np.zeros_like(data), "ones": np.ones_like(data), "nan": np.where(data > 0, np.nan, 0),
           "labels": data * 2, "soft": data * 0.4}[kind]  # soft: values <= 0.5 only: no labelled slice
    path = _mask_like(img, bad, tmp_path / f"gm_{kind}.nii.gz")
    _fails(_run("-i", str(img), "-r", str(path), "-o", str(tmp_path / "m"), *TINY), path.name, needle,
           out=tmp_path / "m")


def test_empty_validation_set(tmp_path):
    img, gm = write_phantom_nifti(tmp_path, np.random.default_rng(0), name="sub-01_T2star", shape=(32, 32, 4),
                                  labelled=[2])  # one labelled slice: nothing to hold out
    _fails(_run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "m"), *TINY), "validation set is empty",
           out=tmp_path / "m")


def test_unknown_validation_subject(pair, tmp_path):
    img, gm = pair
    _fails(_run("-i", str(img), "-r", str(gm), "--val", "sub-09", "-o", str(tmp_path / "m"), *TINY), "sub-09",
           out=tmp_path / "m")


def test_existing_model_dir_needs_resume_or_overwrite(pair, tmp_path):
    img, gm = pair
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    res = _run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "m"), *TINY)
    assert res.exit_code != 0 and "already exists" in res.output and str(tmp_path / "m") in res.output
    assert (tmp_path / "m" / "keep.txt").read_text() == "x"


def test_unwritable_folder(pair, tmp_path):
    img, gm = pair
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    res = _run("-i", str(img), "-r", str(gm), "-o", str(blocker / "m"), *TINY)
    assert res.exit_code != 0 and res.output.startswith("sct-gm: error: ") and "afile" in res.output
    assert blocker.read_text() == "not a folder"


def test_unknown_init(pair, tmp_path):
    img, gm = pair
    _fails(_run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "m"), "--init", "nosuchmodel"), "nosuchmodel",
           out=tmp_path / "m")


def test_missing_mask_file_and_unpaired_inputs(pair, tmp_path):
    img, _ = pair
    _fails(_run("-i", str(img), "-r", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "m"), *TINY),
           "nope.nii.gz", out=tmp_path / "m")
    _fails(_run("-i", str(img), "-o", str(tmp_path / "m"), *TINY), "-r", out=tmp_path / "m")


def test_resume_without_an_interrupted_run(pair, tmp_path):
    img, gm = pair
    _fails(_run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "m"), "--resume", *TINY), "nothing to resume",
           out=tmp_path / "m")


def test_interrupt_then_resume_equals_an_uninterrupted_run(pair, tmp_path, monkeypatch):
    import sctgm.training.loop as loop
    from sctgm.model.weights import load_safetensors

    img, gm = pair
    args = ["-i", str(img), "-r", str(gm), "--max-steps", "6", "--val-fraction", "0", "--seed", "2", *TINY]
    full = _run(*args, "-o", str(tmp_path / "full"))
    assert full.exit_code == 0, full.output
    save = interrupt_training_at(monkeypatch, 3)
    cut = _run(*args, "-o", str(tmp_path / "cut"))
    assert cut.exit_code == 130 and "--resume" in cut.output and not (tmp_path / "cut").exists()
    assert (tmp_path / ".cut.partial" / "checkpoint.pt").is_file()
    assert not [p for p in (tmp_path / ".cut.partial").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(loop, "save_checkpoint", save)
    again = _run(*args, "-o", str(tmp_path / "cut"), "--resume")
    assert again.exit_code == 0, again.output
    a = load_safetensors(tmp_path / "full" / "model.safetensors")[0]
    b = load_safetensors(tmp_path / "cut" / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    seg = CliRunner().invoke(main, ["segment", "-i", str(img), "-m", str(tmp_path / "cut"), "-o",
                                    str(tmp_path / "seg.nii.gz")])
    assert seg.exit_code == 0 and (tmp_path / "seg.nii.gz").is_file()


def test_augment_recipe_is_recorded_and_unknown_ones_are_refused(pair, tmp_path):
    import json

    from sctgm.training.augment import ROBUST
    img, gm = pair
    out = tmp_path / "robust"
    res = _run("-i", str(img), "-r", str(gm), "-o", str(out), "--augment", "robust", "--max-steps", "2", "-q", *TINY)
    assert res.exit_code == 0, res.output
    (entry,) = json.loads((out / "model.json").read_text())["models"].values()
    recorded = entry["training"]["config"]["augment"]
    assert recorded["noise_p"] == ROBUST.noise_p and recorded["noise_std"] == ROBUST.noise_std
    assert recorded["bias_p"] == ROBUST.bias_p != 0.3  # not the standard recipe's
    assert recorded["val_noise_std"] == [0.15, 0.35]  # validated on noisy copies too
    res = _run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "x"), "--augment", "heavy", *TINY)
    assert res.exit_code == 2 and "--augment" in res.output and "heavy" in res.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--suffix", "T2w"], "BIDS options only apply with --bids DATASET (given: --suffix)"),
    (["--participant-label", "01"], "BIDS options only apply with --bids DATASET (given: --participant-label)"),
    (["--val", "sub-01", "--val-fraction", "0.3"], "--val names the validation subjects and --val-fraction draws them"),
])
def test_an_option_that_would_be_ignored_is_a_usage_error(pair, tmp_path, extra, needle):
    img, gm = pair
    res = _run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "m"), *extra, *TINY)
    assert res.exit_code == 2
    _fails(res, needle, out=tmp_path / "m")


def test_an_output_that_is_a_file_or_no_name_is_said_so(pair, tmp_path, monkeypatch):
    img, gm = pair
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    line = _run("-i", str(img), "-r", str(gm), "-o", str(afile), *TINY).output
    assert "notes.txt: is a file, not a model folder" in line and "already exists" not in line, line
    assert afile.read_text() == "mine"
    monkeypatch.chdir(tmp_path)
    for empty in ("", "."):
        res = _run("-i", str(img), "-r", str(gm), "-o", empty, *TINY)
        assert res.exit_code == 3 and f"output {empty!r}: not a folder name" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_an_output_named_like_a_shipped_model_is_refused(pair, tmp_path):
    """The trained model takes its folder's name: `-o x/large` would make sidecars and QC say "large"."""
    img, gm = pair
    res = _run("-i", str(img), "-r", str(gm), "-o", str(tmp_path / "large"), *TINY)
    assert res.exit_code == 3
    _fails(res, "'large' is a model sct-gm ships", out=tmp_path / "large")


def test_a_resume_with_another_split_or_init_names_that_option(pair, tmp_path, monkeypatch):
    import sctgm.training.loop as loop

    img, gm = pair
    data = ["-i", str(img), "-r", str(gm), "--max-steps", "6", "--threads", "1", "--device", "cpu", "-q"]
    scratch = ["--init", "none", "--arch", "unet", "--filters", "8"]
    base = _run(*data, *scratch[:-1], "4", "--max-steps", "1", "--val-fraction", "0", "-o", str(tmp_path / "base"))
    assert base.exit_code == 0, base.output
    save = interrupt_training_at(monkeypatch, 3)
    assert _run(*data, *scratch, "--val-fraction", "0.25", "-o", str(tmp_path / "m")).exit_code == 130
    monkeypatch.setattr(loop, "save_checkpoint", save)
    res = _run(*data, *scratch, "--val-fraction", "0.5", "-o", str(tmp_path / "m"), "--resume")
    line = res.output.strip()
    assert res.exit_code == 2 and "the interrupted run had the validation split 'last 25% of the labelled" in line
    assert "this run has 'last 50% of the labelled" in line and line.endswith("(option --val-fraction)"), line
    res = _run(*data, "--init", str(tmp_path / "base"), "--val-fraction", "0.25", "-o", str(tmp_path / "m"), "--resume")
    line = res.output.strip()
    assert res.exit_code == 2 and "the interrupted run had init 'none', this run has 'base'" in line, line
    assert line.endswith("(option --init)"), line
