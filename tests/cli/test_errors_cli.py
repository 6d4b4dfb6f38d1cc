"""The CLI edge: library errors get their flag here (never in the library), unexpected exceptions become
one `internal error` line with their own exit code, batch failures name their input once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import INTERNAL_ERROR_EXIT_CODE, main

from ..conftest import cord_phantom_volume

PACKAGE = Path(__file__).resolve().parents[2] / "sctgm"
#: Flags of other programs that a library message may quote (Dask's own command line).
OTHER_PROGRAMS = {"--scheduler-file", "--nthreads"}


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _message_strings(tree: ast.AST):
    """String pieces of every ``raise X(...)`` and ``log.<level>(...)`` call in a module."""
    for node in ast.walk(tree):
        call = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("debug", "info", "warning", "error") and \
                isinstance(node.func.value, ast.Name) and node.func.value.id == "log":
            call = node
        if call is not None:
            for sub in ast.walk(call):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.lineno, sub.value


def test_library_messages_name_no_cli_flag():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for line, text in _message_strings(ast.parse(path.read_text(), str(path))):
            # long flags anywhere; short ones (-o, -s, -j) as words of their own
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*|(?<=[\s(])-[a-z]{1,3}\b(?![\w-])", text):
                if flag not in OTHER_PROGRAMS:
                    found.append(f"{path.relative_to(PACKAGE)}:{line}: {flag} in {text!r}")
    assert found == []


def test_the_cli_names_the_flag_of_the_argument(tmp_path, make_nifti):
    img = make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")
    res = run("segment", "-i", str(img), "--wm")
    assert res.exit_code == 2  # an option missing another: input (README exit codes)
    assert res.stderr == ("sct-gm: error: the WM mask is cord minus GM and needs a cord mask "
                          "(option -s/--cord-mask)\n")


def test_a_model_error_in_segment_names_the_fetch_command(tiny_model, make_nifti):
    from sctgm.model.install import ensure_model

    model = ensure_model(tiny_model())
    model.weights_path.write_bytes(model.weights_path.read_bytes()[:-10])
    img = make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")
    res = run("segment", "-i", str(img), "-m", "tiny", "--device", "cpu")
    assert res.exit_code == 4 and res.stderr.count("\n") == 1
    assert "force=True" not in res.stderr and res.stderr.rstrip().endswith("(or run `sct-gm fetch-model tiny --force`)")


@pytest.mark.parametrize("verbose", [False, True])
def test_an_unexpected_exception_is_one_line_with_its_own_exit_code(tmp_path, make_nifti, monkeypatch, verbose):
    import sctgm.qc

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(sctgm.qc, "add_entry", broken)
    img = make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")
    res = run(*(["-v"] if verbose else []), "qc", "-i", str(img), "-s", str(img), "-o", str(tmp_path / "qc"))
    assert res.exit_code == INTERNAL_ERROR_EXIT_CODE and INTERNAL_ERROR_EXIT_CODE not in (0, 1, 2, 3, 4, 5, 130)
    last = res.stderr.splitlines()[-1]
    if verbose:
        assert "Traceback (most recent call last)" in res.stderr and "ZeroDivisionError" in res.stderr
        assert last == "sct-gm: error: internal error: ZeroDivisionError: division by zero second line"
    else:
        assert res.stderr == ("sct-gm: error: internal error: ZeroDivisionError: division by zero second line "
                              "(run with -v for the traceback)\n")


def test_click_usage_errors_are_not_internal_errors():
    res = run("segment", "--no-such-option")
    assert res.exit_code == 2 and "internal error" not in res.stderr


def test_a_batch_failure_line_names_the_input_once(tiny_model, make_nifti, tmp_path):
    import nibabel as nib

    good = make_nifti(cord_phantom_volume(seed=1), name="t2s.nii.gz")
    rgb = tmp_path / "rgb.nii.gz"
    data = np.zeros((8, 8, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(rgb))
    res = run("segment", "-i", str(rgb), "-i", str(good), "-m", tiny_model(), "--device", "cpu", "-q")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [f"sct-gm: error: {rgb}: is an RGB colour image (datatype RGB, code 128); "
                                       "expected a grey-level image: convert it to one channel first"]


def test_a_library_warning_gets_the_flag_of_the_running_command(make_nifti):
    data = np.zeros((6, 6, 2), np.float32)
    data[1:4, 1:4, :] = 1.0
    data[0, 0, 0] = 0.7
    res = run("metrics", "-i", str(make_nifti(data, name="fuzzy.nii.gz")))
    assert res.exit_code == 0
    warning = [line for line in res.stderr.splitlines() if "binarised at 0.5" in line]
    assert len(warning) == 1 and warning[0].endswith("measure soft masks to sum probabilities (option --soft)")
