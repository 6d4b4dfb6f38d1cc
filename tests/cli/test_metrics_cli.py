"""`sct-gm metrics` through Click's CliRunner: both modes, CSV/JSON outputs, and bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["metrics", *args], catch_exceptions=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def masks(make_nifti):
    ref = np.zeros((16, 16, 3), np.float32)
    ref[4:12, 4:12, :2] = 1
    seg = np.roll(ref, 2, axis=0)
    cord = np.zeros_like(ref)
    cord[2:14, 2:14, :] = 1
    z = (0.5, 0.5, 5.0)
    return {"seg": make_nifti(seg, zooms_mm=z, name="seg.nii.gz"), "ref": make_nifti(ref, zooms_mm=z, name="ref.nii.gz"),
            "cord": make_nifti(cord, zooms_mm=z, name="cord.nii.gz"),
            "other_grid": make_nifti(np.zeros((16, 18, 3), np.float32), zooms_mm=z, name="other.nii.gz")}


def test_compare_writes_a_tidy_csv_and_prints_a_table(masks, tmp_path):
    out = tmp_path / "m.csv"
    res = run("-i", str(masks["seg"]), "-r", str(masks["ref"]), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "Dice" in res.output and "3D Dice 0.750" in res.output
    rows = read_csv(out)
    assert [r["scope"] for r in rows] == ["slice", "slice", "slice", "volume"]
    assert {"file", "sctgm_version", "hausdorff_mm", "mean_surface_distance_mm", "dice_3d"} <= set(rows[0])
    assert float(rows[0]["dice"]) == pytest.approx(0.75) and float(rows[0]["hausdorff_mm"]) == pytest.approx(1.0)
    assert rows[2]["dice"] == "NaN" and rows[2]["hausdorff_mm"] == "NaN"      # both empty: undefined
    assert rows[3]["slice"] == "" and rows[3]["n_slices"] == "2"              # summary row: 'does not apply'
    assert not list(tmp_path.glob(".*part*"))


def test_measure_several_inputs_give_one_csv_with_a_block_per_file(masks, tmp_path):
    out = tmp_path / "areas.csv"
    res = run("-i", str(masks["seg"]), "-i", str(masks["ref"]), "-s", str(masks["cord"]), "-o", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert res.output == ""
    rows = read_csv(out)
    assert [Path(r["file"]).name for r in rows] == ["seg.nii.gz"] * 3 + ["ref.nii.gz"] * 3
    assert float(rows[0]["gm_area_mm2"]) == pytest.approx(16.0) and float(rows[0]["cord_area_mm2"]) == pytest.approx(36.0)
    assert float(rows[0]["wm_area_mm2"]) == pytest.approx(20.0) and "gm_cord_ratio" in rows[0]


def test_json_to_stdout_uses_null_for_undefined(masks):
    res = run("-i", str(masks["seg"]), "-r", str(masks["ref"]), "--json", "-")
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["mode"] == "compare" and doc["rows"][2]["dice"] is None and doc["rows"][-1]["scope"] == "volume"


def test_csv_to_stdout_is_the_csv_file_with_unix_line_ends(masks, tmp_path):
    """`-o -` prints the CSV the file would hold (a pipe into cut or awk; no table, no CR), and
    cannot share standard output with `--json -`."""
    out = tmp_path / "m.csv"
    assert run("-i", str(masks["seg"]), "-r", str(masks["ref"]), "-o", str(out), "-q").exit_code == 0
    res = run("-i", str(masks["seg"]), "-r", str(masks["ref"]), "-o", "-")
    assert res.exit_code == 0, res.output
    assert res.output == out.read_bytes().decode().replace("\r\n", "\n") and "\r" not in res.output
    assert res.output.splitlines()[0].startswith("file,") and len(res.output.splitlines()) == 5
    assert not (tmp_path / "-").exists() and not Path("-").exists()
    both = run("-i", str(masks["seg"]), "-r", str(masks["ref"]), "-o", "-", "--json", "-")
    assert both.exit_code == 2 and "standard output" in both.output


def test_one_file_for_both_tables_is_refused(masks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.csv"
    res = run("-i", str(masks["seg"]), "-r", str(masks["ref"]), "-o", str(out), "--json", "./out.csv", "-q")
    assert res.exit_code == 3 and "given for both the CSV and the JSON table" in res.output
    assert res.output.count("\n") == 1 and not out.exists()


def test_json_file(masks, tmp_path):
    res = run("-i", str(masks["seg"]), "--json", str(tmp_path / "a.json"), "-q")
    assert res.exit_code == 0
    assert json.loads((tmp_path / "a.json").read_text())["rows"][0]["gm_area_mm2"] == pytest.approx(16.0)


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file"),
    ("grid", "is not on the grid of"),
    ("pairing", "2 reference files for 1 inputs"),
    ("not_nifti", "not a NIfTI image"),
    ("soft_compare", "compare without soft (option --soft)"),
])
def test_bad_inputs_fail_with_a_message_and_no_csv(masks, tmp_path, case, expected):
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    out = out_dir / "out.csv"
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("not an image")
    args = {
        "missing": ["-i", str(tmp_path / "nope.nii.gz"), "-r", str(masks["ref"])],
        "grid": ["-i", str(masks["other_grid"]), "-r", str(masks["ref"])],
        "pairing": ["-i", str(masks["seg"]), "-r", str(masks["ref"]), "-r", str(masks["seg"])],
        "not_nifti": ["-i", str(masks["seg"]), "-i", str(bad)],
        "soft_compare": ["-i", str(masks["seg"]), "-r", str(masks["ref"]), "--soft"],
    }[case]
    res = run(*args, "-o", str(out))
    assert res.exit_code != 0
    assert expected in res.output and res.output.startswith("sct-gm: error:") and res.output.count("\n") == 1
    assert list(out_dir.iterdir()) == []                      # no CSV, no leftover temporary file


def test_grid_error_names_both_shapes(masks):
    res = run("-i", str(masks["other_grid"]), "-r", str(masks["ref"]))
    assert "(16, 18, 3) vs (16, 16, 3)" in res.output and "affine rows" in res.output


@pytest.mark.parametrize("target, expected", [("afile/m.csv", "is a file, not a folder"), ("m.nii.gz", "is a NIfTI name")])
def test_bad_output_paths_fail_before_any_work(masks, tmp_path, target, expected):
    (tmp_path / "afile").write_text("")
    res = run("-i", str(masks["seg"]), "-o", str(tmp_path / target))
    assert res.exit_code != 0 and expected in res.output
    assert not (tmp_path / target).exists()


def test_existing_csv_is_left_intact_when_the_run_fails(masks, tmp_path):
    out = tmp_path / "m.csv"
    out.write_text("previous results\n")
    res = run("-i", str(masks["seg"]), "-i", str(tmp_path / "absent.nii.gz"), "-o", str(out))
    assert res.exit_code != 0 and out.read_text() == "previous results\n"


def test_help_states_the_definitions():
    res = run("--help")
    assert res.exit_code == 0
    for text in ("TN/(TN+FP)", "skeletonize", "boundary pixels", "dice_3d", "gm_cord_ratio"):
        assert text in res.output


def test_a_missing_output_folder_is_created(masks, tmp_path):
    res = run("-i", str(masks["seg"]), "-o", str(tmp_path / "new" / "sub" / "m.csv"), "-q")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "new" / "sub" / "m.csv").read_text().startswith("file,")
