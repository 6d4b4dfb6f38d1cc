"""Every exit code the README documents, through the CLI: each error class gives its code, and the
error is exactly one ``sct-gm: error:`` line on stderr (no usage block, no traceback)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sctgm.cli import INTERNAL_ERROR_EXIT_CODE, main

from ..conftest import cord_phantom_volume

README = Path(__file__).resolve().parents[2] / "README.md"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def img(make_nifti) -> Path:
    return make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")


def _cases(tmp: Path, img: Path, model: str) -> list[tuple[str, int, list[str]]]:
    """(what, documented exit code, arguments)."""
    (tmp / "afile").write_text("not a folder")
    bids = tmp / "ds"
    bids.mkdir()
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    seg = ["segment", "-i", str(img), "-m", model]
    return [
        ("missing input", 2, ["segment", "-i", str(tmp / "nope.nii.gz")]),
        ("not a NIfTI", 2, ["segment", "-i", str(tmp / "afile")]),
        ("-i with --bids", 2, ["segment", "-i", str(img), "--bids", str(bids)]),
        ("no input at all", 2, ["segment"]),
        ("unknown option", 2, ["segment", "-i", str(img), "--no-such-option"]),
        ("misspelt SCT option", 2, ["segment", "-i", str(img), "-qc-datset", "x"]),
        ("threshold out of range", 2, [*seg, "-thr", "1.5"]),
        ("--device gpu", 2, [*seg, "--device", "gpu"]),
        *((f"--device {d}", 2, [*seg, "--device", d]) for d in ("mps", "meta", "cpu:0", "cuda:1x")),  # torch parses some
        ("--wm without -s", 2, [*seg, "--wm"]),
        ("BIDS filter matching nothing", 2, ["segment", "--bids", str(bids), "--derivatives", str(tmp / "d"),
                                             "-m", model]),
        ("metrics on another grid", 2, ["metrics", "-i", str(img), "-r", str(_other_grid(tmp))]),
        ("train: unknown validation subject", 2, ["train", "-i", str(img), "-r", str(img), "--val", "sub-99",
                                                  "-o", str(tmp / "m"), "--init", "none"]),
        ("output under a file", 3, [*seg, "-o", str(tmp / "afile" / "gm.nii.gz")]),
        ("metrics CSV under a file", 3, ["metrics", "-i", str(img), "-o", str(tmp / "afile" / "m.csv")]),
        # a folder where a table goes is an output error for every table option alike
        *((f"{opt} a folder", 3, [*cmd, opt, str(tmp)]) for cmd, opt in (
            (seg, "--summary"), (seg, "--metrics"), (["metrics", "-i", str(img)], "-o"),
            (["metrics", "-i", str(img)], "--json"))),
        ("train: a shipped model's name", 3, ["train", "-i", str(img), "-r", str(img), "-o", str(tmp / "large")]),
        ("unknown model", 4, ["segment", "-i", str(img), "-m", "no-such-model"]),
        ("fetch an unknown model", 4, ["fetch-model", "no-such-model"]),
        ("unreadable Dask scheduler file", 5, [*seg, "--scheduler", str(tmp / "afile")]),
    ]


def _other_grid(tmp: Path) -> Path:
    import nibabel as nib
    import numpy as np

    path = tmp / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)), str(path))
    return path


def test_each_documented_error_has_its_code_and_one_line(tmp_path, img, tiny_model):
    model = tiny_model()
    wrong = []
    for what, code, args in _cases(tmp_path, img, model):
        res = run(*args)
        lines = res.stderr.splitlines()
        if res.exit_code != code or len(lines) != 1 or not lines[0].startswith("sct-gm: error: "):
            wrong.append(f"{what}: exit {res.exit_code} (want {code}), stderr {res.stderr!r}")
    assert wrong == []


def test_cuda_without_a_gpu_is_an_option_error(img, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    res = run("segment", "-i", str(img), "-m", tiny_model(), "--device", "cuda")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "no CUDA device" in res.stderr


def test_bare_library_errors_are_input_errors_and_bugs_are_70(img, monkeypatch, tmp_path):
    import sctgm.qc
    from sctgm.exceptions import SctGmError

    def refuse(*args, **kwargs):
        raise SctGmError("a library error of no particular class")

    monkeypatch.setattr(sctgm.qc, "add_entry", refuse)
    res = run("qc", "-i", str(img), "-s", str(img), "-o", str(tmp_path / "qc"))
    assert res.exit_code == 2 and res.stderr == "sct-gm: error: a library error of no particular class\n"

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(sctgm.qc, "add_entry", bug)
    res = run("qc", "-i", str(img), "-s", str(img), "-o", str(tmp_path / "qc"))
    assert res.exit_code == INTERNAL_ERROR_EXIT_CODE and res.stderr.count("\n") == 1


def test_ctrl_c_is_130_in_one_line(img, monkeypatch, tmp_path):
    import sctgm.qc

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sctgm.qc, "add_entry", interrupted)
    res = run("qc", "-i", str(img), "-s", str(img), "-o", str(tmp_path / "qc"))
    assert res.exit_code == 130 and res.stderr.count("\n") == 1 and res.stderr.startswith("sct-gm: ")


def test_the_readme_lists_these_codes():
    text = " ".join(README.read_text().split())
    for code, what in ((2, "input"), (3, "output"), (4, "model"), (5, "batch executor"), (130, "interrupted"),
                       (70, "an internal error")):
        assert re.search(rf"\b{code} {what}", text), (code, what)
    assert "a batch with failed images: 1" in text


@pytest.mark.parametrize("command", ["segment", "train", "metrics", "qc", "fetch-model"])
def test_every_command_takes_sct_verbosity_levels(command):
    for level in ("0", "1", "2"):
        res = run(command, "-v", level, "--help")
        assert res.exit_code == 0 and "-v, --verbose [0|1|2]" in res.stdout, res.output
    assert run("-v", command, "--help").exit_code == 0  # -v alone before the command name: level 2
