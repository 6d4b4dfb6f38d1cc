"""Outputs as a set, through the CLI (issue #21): never over an input or a file sct-gm did not write,
never into another tool's QC folder, every location checked before any work, all files or none on a
write failure, leftovers of killed writers removed, resume by content. Tiny model: seconds."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import shutil
import stat

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import cord_phantom_volume


def _segment(*args: str):
    return CliRunner().invoke(main, ["segment", *args, "--device", "cpu", "-q"])


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def image(make_nifti, tmp_path):
    (tmp_path / "in").mkdir()
    return make_nifti(cord_phantom_volume(seed=1), name="in/t2s.nii.gz")


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_input_is_never_an_output(tiny_model, image, make_nifti, overwrite):
    cord = make_nifti((cord_phantom_volume(seed=1) > 120).astype(np.uint8), name="in/cord.nii.gz")
    before = _files(image.parent)
    flag = ("--overwrite",) if overwrite else ()
    for out in (image, cord):
        res = _segment("-i", str(image), "-s", str(cord), "-o", str(out), "-m", tiny_model(), *flag)
        assert res.exit_code == 3, res.output
        (line,) = _lines(res.stderr)
        assert str(out) in line and "input" in line
    assert _files(image.parent) == before  # nothing written, nothing replaced


def test_a_file_sctgm_did_not_write_is_kept_without_overwrite(tiny_model, image):
    manual = image.with_name("manual_gmseg.nii.gz")
    shutil.copy(image, manual)  # a manual mask where the output would go; no sct-gm sidecar
    kept = manual.read_bytes()
    res = _segment("-i", str(image), "-o", str(manual), "-m", tiny_model())
    assert res.exit_code == 3 and manual.read_bytes() == kept
    (line,) = _lines(res.stderr)
    assert str(manual) in line and "--overwrite" in line
    assert not manual.with_name("manual_gmseg.json").exists()
    assert _segment("-i", str(image), "-o", str(manual), "-m", "tiny", "--overwrite").exit_code == 0
    assert manual.read_bytes() != kept and manual.with_name("manual_gmseg.json").is_file()
    mine = manual.read_bytes()
    # sct-gm's own outputs: replaced without --overwrite, as before (one file is always segmented again)
    assert _segment("-i", str(image), "-o", str(manual), "-m", "tiny").exit_code == 0
    assert manual.read_bytes() == mine


def test_a_qc_folder_of_another_tool_gets_a_sub_folder(tiny_model, image, tmp_path):
    qc = tmp_path / "qc"
    (qc / "_json").mkdir(parents=True)
    (qc / "index.html").write_text("<html>SCT QC</html>")  # sct_qc's page
    (qc / "_json" / "qc_1.json").write_text("{}")
    theirs = _files(qc)
    res = CliRunner().invoke(main, ["segment", "-i", str(image), "-m", tiny_model(), "--device", "cpu", "-qc", str(qc)])
    assert res.exit_code == 0, res.output
    assert {k: v for k, v in _files(qc).items() if not k.startswith("sct-gm/")} == theirs
    assert (qc / "sct-gm" / "index.html").is_file() and (qc / "sct-gm" / "index.js").is_file()
    assert f"goes to {qc / 'sct-gm'}" in res.stderr
    again = _segment("-i", str(image), "-m", "tiny", "-qc", str(qc))  # its own report is used as it is
    assert again.exit_code == 0 and not (qc / "sct-gm" / "sct-gm").exists()
    assert {k: v for k, v in _files(qc).items() if not k.startswith("sct-gm/")} == theirs


@pytest.mark.parametrize("where", ["qc_under_a_file", "output_under_a_file", "output_is_a_folder"])
def test_every_location_is_checked_before_any_work(tiny_model, image, tmp_path, where):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    args = ["-i", str(image), "-m", tiny_model(), "--prob"]
    if where == "qc_under_a_file":
        args += ["-qc", str(blocker / "qc")]
    elif where == "output_under_a_file":
        args += ["-o", str(blocker / "o_gmseg.nii.gz")]
    else:
        (tmp_path / "o_gmseg_prob.nii.gz").mkdir()  # the probability map's name is a folder
        args += ["-o", str(tmp_path / "o_gmseg.nii.gz")]
    before = _files(tmp_path)
    res = _segment(*args)
    assert res.exit_code == 3 and len(_lines(res.stderr)) == 1
    assert _files(tmp_path) == before  # not one byte written


class _DiskFull:
    """Every file write from the Nth on fails as a full disk does: part of the bytes land, then ENOSPC."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.count = fail_at, 0

    def __call__(self, real):
        def write(this, data, *args, **kwargs):
            self.count += 1
            if self.count >= self.fail_at:
                real(this, data[: len(data) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(this, data, *args, **kwargs)
        return write


def test_a_full_disk_leaves_every_output_or_none(tiny_model, image, tmp_path):
    """``segment --prob -qc``: a full disk at the Nth file write, for every N (masks, sidecar, QC images,
    entry, page files, report.json, index.js), leaves either the whole set or nothing: no mask
    without its sidecar, no QC entry without index.js and report.json, no temporary file."""
    name = tiny_model()
    assert _segment("-i", str(image), "-m", name, "-o", str(tmp_path / "warm_gmseg.nii.gz")).exit_code == 0
    real = {"write_bytes": pathlib.Path.write_bytes, "write_text": pathlib.Path.write_text, "save": nib.save}
    outcomes = []
    for fail_at in range(1, 30):  # until a run has room for all its writes
        for p in image.parent.iterdir():
            if p != image:
                p.unlink()
        qc = tmp_path / f"qc{fail_at}"
        disk = _DiskFull(fail_at)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pathlib.Path, "write_bytes", disk(real["write_bytes"]))
            patch.setattr(pathlib.Path, "write_text", disk(real["write_text"]))
            patch.setattr(nib, "save", lambda img, path: (disk(lambda _, d: None)(None, b"xx"),
                                                          real["save"](img, path)))
            res = _segment("-i", str(image), "-m", name, "--prob", "-qc", str(qc))
        written = sorted(p.name for p in image.parent.iterdir() if p != image)
        outcomes.append(res.exit_code)
        if res.exit_code == 0:
            assert written == ["t2s_gmseg.json", "t2s_gmseg.nii.gz", "t2s_gmseg_prob.nii.gz"]
            assert (qc / "index.js").is_file() and (qc / "report.json").is_file()
            break
        assert res.exit_code == 3 and len(_lines(res.stderr)) == 1, (fail_at, res.output)
        assert written == [], fail_at  # no mask, map or sidecar, and no temporary file
        assert not (qc / "entries").exists() or list((qc / "entries").iterdir()) == [], fail_at
        assert not (qc / "index.html").exists() or ((qc / "index.js").is_file() and (qc / "report.json").is_file())
    assert outcomes[-1] == 0 and outcomes[:-1] == [3] * (len(outcomes) - 1) and len(outcomes) > 10, outcomes


def test_a_killed_writers_leftovers_go_with_the_next_run(tiny_model, image, tmp_path):
    qc = tmp_path / "qc"
    (qc / "_assets").mkdir(parents=True)
    (qc / "index.js").write_text("window.SCTGM_QC = {};\n")
    left = [image.with_name(".t2s_gmseg.k1ll3d.part.nii.gz"), image.with_name(".t2s_gmseg.k1ll3d.part.json"),
            qc / ".index.k1ll3d.part.js", qc / ".index.k1ll3d.part.html", qc / "_assets" / ".qc.k1ll3d.part.css"]
    for p in left:
        p.write_bytes(b"half a file")
    other = image.with_name(".other.k1ll3d.part.nii.gz")  # another output's: not this run's to remove
    other.write_bytes(b"x")
    assert _segment("-i", str(image), "-m", tiny_model(), "-qc", str(qc)).exit_code == 0
    assert [p for p in left if p.exists()] == [] and other.exists()


def _statuses(summary: pathlib.Path) -> list[str]:
    rows = [line.split("\t") for line in summary.read_text().splitlines()]
    return [row[rows[0].index("status")] for row in rows[1:]]


def test_resume_redoes_a_changed_input_and_keeps_an_edited_output(tiny_model, make_nifti, tmp_path):
    (tmp_path / "b").mkdir()
    a = make_nifti(cord_phantom_volume(seed=1), name="b/a.nii.gz")
    b = make_nifti(cord_phantom_volume(seed=2), name="b/b.nii.gz")
    summary = tmp_path / "s.tsv"
    args = ("-i", str(a), str(b), "-m", tiny_model(), "--summary", str(summary))
    assert _segment(*args).exit_code == 0 and _statuses(summary) == ["ok", "ok"]
    assert _segment(*args).exit_code == 0 and _statuses(summary) == ["skipped", "skipped"]
    sidecar = json.loads(a.with_name("a_gmseg.json").read_text())
    assert set(sidecar["Sha256"]) == {"Sources", "Outputs"} and len(sidecar["Sha256"]["Sources"]) == 1
    # another image on the same grid, under the same name
    make_nifti(cord_phantom_volume(seed=7), name="b/a.nii.gz")
    assert _segment(*args).exit_code == 0 and _statuses(summary) == ["ok", "skipped"]
    # an output mask edited (here zeroed out): a valid image, not what sct-gm wrote, so not sct-gm's to
    # replace: the image fails with one line naming it, the edit stays; --overwrite redoes it
    gm = b.with_name("b_gmseg.nii.gz")
    good = gm.read_bytes()
    img = nib.load(str(gm))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine, img.header), str(gm))
    edited = gm.read_bytes()
    assert edited != good
    res = _segment(*args)
    assert res.exit_code == 1 and _statuses(summary) == ["skipped", "failed"]
    assert "edited or replaced since" in res.output and gm.read_bytes() == edited
    assert _segment(*args, "--overwrite").exit_code == 0 and gm.read_bytes() == good
    # a damaged one (cut short: no image anybody could keep) is redone without --overwrite
    gm.write_bytes(good[: len(good) // 2])
    assert _segment(*args).exit_code == 0 and _statuses(summary) == ["skipped", "ok"]
    assert gm.read_bytes() == good


def test_a_manual_mask_is_not_taken_for_the_output_of_its_uncompressed_twin(tiny_model, make_nifti, tmp_path):
    """`a.nii` and `a.nii.gz` give `a_gmseg.nii` and `a_gmseg.nii.gz`, which share the sidecar name
    `a_gmseg.json`: that sidecar describes the first, so a manual `a_gmseg.nii.gz` stays the user's."""
    a_gz = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    a_nii = tmp_path / "a.nii"
    nib.save(nib.load(str(a_gz)), str(a_nii))
    manual = tmp_path / "a_gmseg.nii.gz"
    img = nib.load(str(a_gz))
    nib.save(nib.Nifti1Image(np.ones(img.shape, np.uint8), img.affine), str(manual))
    before = manual.read_bytes()
    assert _segment("-i", str(a_gz), "-m", tiny_model()).exit_code == 3  # no sidecar yet: refused
    assert _segment("-i", str(a_nii), "-m", tiny_model()).exit_code == 0  # writes a_gmseg.nii + a_gmseg.json
    res = _segment("-i", str(a_gz), "-m", tiny_model())
    assert res.exit_code == 3 and "a_gmseg.nii.gz: exists and sct-gm did not write it" in res.output
    assert "the sct-gm sidecar a_gmseg.json describes a_gmseg.nii, not it" in res.output
    assert manual.read_bytes() == before


def test_a_file_size_limit_stops_the_set_before_any_file_is_replaced(tiny_model, image, tmp_path):
    """A real limit (RLIMIT_FSIZE, what a full quota does): the 1 kB mask fits, the 47 kB probability
    map does not. Exit 3 in one line; the previous outputs stay as they were, nothing else is left."""
    import resource
    import subprocess
    import sys

    name = tiny_model()
    assert _segment("-i", str(image), "-m", name, "--prob").exit_code == 0  # outputs of a first run, model cached
    before = _files(image.parent)
    inodes = {p.name: p.stat().st_ino for p in image.parent.iterdir()}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    run = subprocess.run([sys.executable, "-m", "sctgm", "segment", "-i", str(image), "-m", name, "--device", "cpu",
                          "--prob", "-qc", str(tmp_path / "qc"), "--denoise", "nlm", "-q"],
                         capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert run.returncode == 3 and len(_lines(run.stderr)) == 1, run.stderr
    assert "t2s_gmseg_prob.nii.gz" in run.stderr
    assert _files(image.parent) == before  # the first run's set, untouched: no new mask beside an old sidecar
    assert {p.name: p.stat().st_ino for p in image.parent.iterdir()} == inodes  # not even rewritten alike
    assert not (tmp_path / "qc" / "entries").exists() or list((tmp_path / "qc" / "entries").iterdir()) == []


def test_sctgm_qc_into_another_tools_folder_names_its_own_page(make_nifti, image, tmp_path):
    gm = make_nifti((cord_phantom_volume(seed=1) < 90).astype(np.uint8), name="in/t2s_gmseg.nii.gz")
    qc = tmp_path / "qc"
    qc.mkdir()
    (qc / "index.html").write_text("<html>SCT QC</html>")
    res = CliRunner().invoke(main, ["qc", "-i", str(image), "-s", str(gm), "-o", str(qc)])
    assert res.exit_code == 0, res.output
    assert (qc / "index.html").read_text() == "<html>SCT QC</html>"
    assert f"Open: {(qc / 'sct-gm' / 'index.html').resolve().as_uri()}" in res.output


def _correction(mask: pathlib.Path, image: pathlib.Path) -> dict[str, bytes]:
    """A reviewer's correction as the QC editor saves it: a mask and a sidecar by sct-gm listing its slices."""
    shutil.copy(image, mask)
    mask.with_name(mask.name.replace(".nii.gz", ".json")).write_text(json.dumps(
        {"GeneratedBy": [{"Name": "sct-gm", "Version": "0.3"}], "LabelledSlices": [2, 3]}))
    return _files(mask.parent)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_reviewers_correction_is_never_replaced(tiny_model, image, overwrite):
    manual = image.with_name("t2s_gmseg-manual.nii.gz")
    before = _correction(manual, image)
    flag = ("--overwrite",) if overwrite else ()
    for out in (manual, image.with_name("t2s_gmseg-manual.nii")):  # and the same sidecar under the other extension
        res = _segment("-i", str(image), "-o", str(out), "-m", tiny_model(), *flag)
        assert res.exit_code == 3, res.output
        (line,) = _lines(res.stderr)
        assert str(out) in line and "reviewer's corrections" in line
    assert _files(image.parent) == before


def test_a_manual_label_name_needs_overwrite(tiny_model, image, tmp_path):
    labels = tmp_path / "ds" / "derivatives" / "labels" / "sub-01" / "anat"
    labels.mkdir(parents=True)
    for out in (image.with_name("t2s_gmseg-manual.nii.gz"), labels / "sub-01_T2star_label-GM_seg.nii.gz"):
        res = _segment("-i", str(image), "-o", str(out), "-m", tiny_model())
        assert res.exit_code == 3 and not out.exists()
        (line,) = _lines(res.stderr)
        assert str(out) in line and "manual label" in line and "--overwrite" in line
        assert _segment("-i", str(image), "-o", str(out), "-m", "tiny", "--overwrite").exit_code == 0
        assert out.is_file()
    other = tmp_path / "elsewhere_label-GM_seg.nii.gz"  # the BIDS name outside derivatives/labels: an ordinary name
    assert _segment("-i", str(image), "-o", str(other), "-m", "tiny").exit_code == 0


@pytest.mark.parametrize("option", ["--summary", "--metrics"])
def test_batch_tables_never_replace_a_file_sctgm_did_not_write(tiny_model, image, tmp_path, option):
    table = tmp_path / ("mydata.tsv" if option == "--summary" else "notes.csv")
    table.write_text("precious,data\n")
    args = ["-i", str(image), option, str(table), "-m", tiny_model()]
    res = _segment(*args)
    assert res.exit_code == 3 and table.read_text() == "precious,data\n"
    (line,) = _lines(res.stderr)
    assert str(table) in line and "--overwrite" in line
    assert not image.with_name("t2s_gmseg.nii.gz").exists()  # refused before any work
    assert _segment(*args, "--overwrite").exit_code == 0
    first = table.read_text()
    assert first != "precious,data\n" and str(image) in first
    res = _segment(*args)  # sct-gm's own table: written again (merged), no --overwrite needed
    assert res.exit_code == 0, res.output
    assert table.read_text().splitlines()[0] == first.splitlines()[0] and str(image) in table.read_text()


@pytest.mark.parametrize("option", ["-o", "--json"])
def test_metrics_never_replaces_a_file_sctgm_did_not_write(make_nifti, tmp_path, option):
    table = tmp_path / ("notes.csv" if option == "-o" else "notes.json")
    table.write_text("precious,data\n")
    gm = make_nifti((cord_phantom_volume(seed=1) > 150).astype(np.uint8), name="t2s_gm.nii.gz")
    args = ["metrics", "-i", str(gm), option, str(table), "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 3 and table.read_text() == "precious,data\n"
    (line,) = _lines(res.stderr)
    assert str(table) in line and "--overwrite" in line
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    mine = table.read_text()
    assert mine != "precious,data\n"
    assert CliRunner().invoke(main, args).exit_code == 0 and table.read_text() == mine  # its own: replaced


def test_an_input_replaced_while_it_is_segmented_writes_nothing(tiny_model, make_nifti, tmp_path, monkeypatch):
    """The sidecar recorded the hash of the file on disk after the segmentation: an input replaced
    meanwhile left a mask of the old image that a resume then kept as valid for the new one."""
    from sctgm.segment.pipeline import Segmenter

    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    other = make_nifti(cord_phantom_volume(seed=7), name="other.nii.gz")
    original = Segmenter.segment_image

    def swapping(self, image, **kwargs):
        out = original(self, image, **kwargs)
        a.write_bytes(other.read_bytes())  # the input replaced before the outputs are written
        return out

    monkeypatch.setattr(Segmenter, "segment_image", swapping)
    res = _segment("-i", str(a), "-m", tiny_model())
    assert res.exit_code == 2 and "changed or was removed while it was being segmented" in res.output
    assert not list(tmp_path.glob("a_gmseg*"))


def test_a_run_killed_between_its_sidecar_and_its_mask_leaves_outputs_the_next_run_replaces(tiny_model, make_nifti,
                                                                                            tmp_path):
    """Sidecars go into place first: a kill before the mask's rename leaves the previous run's mask
    under the new sidecar. That mask is sct-gm's (the sidecar records it under Sha256.Replaces), so
    the next run replaces it without --overwrite; before, it was refused on every rerun."""
    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    gm, side = tmp_path / "a_gmseg.nii.gz", tmp_path / "a_gmseg.json"
    model = tiny_model()
    assert _segment("-i", str(a), "-m", model, "-thr", "0.9").exit_code == 0
    first = gm.read_bytes()
    assert "Replaces" not in json.loads(side.read_text())["Sha256"]
    assert _segment("-i", str(a), "-m", model, "-thr", "0.1", "--overwrite").exit_code == 0
    second = gm.read_bytes()
    assert second != first  # the thresholds give other masks: the case is real
    assert json.loads(side.read_text())["Sha256"]["Replaces"] == {"gm": hashlib.sha256(first).hexdigest()}
    gm.write_bytes(first)  # the state a kill between the two renames leaves
    res = _segment("-i", str(a), "-m", model, "-thr", "0.1")
    assert res.exit_code == 0, res.output
    assert gm.read_bytes() == second


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_where_an_output_goes_is_refused_not_opened(tiny_model, make_nifti, tmp_path):
    import subprocess
    import sys

    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    model = tiny_model()
    assert _segment("-i", str(a), "-m", model).exit_code == 0
    gm = tmp_path / "a_gmseg.nii.gz"
    gm.unlink()
    os.mkfifo(gm)
    res = subprocess.run([sys.executable, "-m", "sctgm", "segment", "-i", str(a), "-m", model, "-q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and "a_gmseg.nii.gz: is not a regular file" in res.stderr


def test_an_input_removed_while_it_is_segmented_is_one_line(tiny_model, make_nifti, tmp_path, monkeypatch):
    from sctgm.segment.pipeline import Segmenter

    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    original = Segmenter.segment_image

    def removing(self, image, **kwargs):
        out = original(self, image, **kwargs)
        a.unlink()
        return out

    monkeypatch.setattr(Segmenter, "segment_image", removing)
    res = _segment("-i", str(a), "-m", tiny_model())
    assert res.exit_code == 2 and "changed or was removed while it was being segmented" in res.output


def _cord_mask(make_nifti, name: str = "a_seg.nii.gz"):
    cord = np.zeros((60, 56, 4), np.uint8)
    cord[15:45, 14:42, :] = 1  # covers the phantom's cord
    return make_nifti(cord, name=name)


def test_a_users_file_where_an_earlier_run_wrote_no_such_output_is_kept(tiny_model, make_nifti, tmp_path):
    """The shared SCT sidecar of a run without --prob records no probability map: a user's
    `a_gmseg_prob.nii.gz` there is not sct-gm's (it was replaced without --overwrite)."""
    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    model = tiny_model()
    assert _segment("-i", str(a), "-m", model).exit_code == 0
    mine = tmp_path / "a_gmseg_prob.nii.gz"
    nib.save(nib.Nifti1Image(np.full((60, 56, 4), 0.5, np.float32), nib.load(str(a)).affine), str(mine))
    before = mine.read_bytes()
    res = _segment("-i", str(a), "-m", model, "--prob")
    assert res.exit_code == 3 and "a_gmseg_prob.nii.gz: exists and sct-gm did not write it" in res.output
    assert mine.read_bytes() == before


def test_an_output_that_became_a_dangling_link_is_redone(tiny_model, make_nifti, tmp_path):
    """A dropped git-annex/DataLad file is a link whose target is gone: nothing to keep, redone."""
    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    model = tiny_model()
    assert _segment("-i", str(a), "-m", model).exit_code == 0
    gm = tmp_path / "a_gmseg.nii.gz"
    good = gm.read_bytes()
    gm.unlink()
    gm.symlink_to(tmp_path / ".git" / "annex" / "objects" / "gone.nii.gz")
    assert _segment("-i", str(a), "-m", model).exit_code == 0
    assert not gm.is_symlink() and gm.read_bytes() == good


def test_a_run_killed_between_two_mask_renames_resumes_to_the_uninterrupted_bytes(tiny_model, make_nifti,
                                                                                   tmp_path):
    """Sidecar and GM mask renamed, the WM mask not yet: the rerun writes the sidecar the uninterrupted
    run wrote (its Sha256.Replaces keeps the GM mask's predecessor, though the GM mask is already new)."""
    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    cord = _cord_mask(make_nifti)
    model = tiny_model()
    args = ("-i", str(a), "-s", str(cord), "--wm", "-m", model)
    assert _segment(*args, "-thr", "0.9").exit_code == 0
    wm, side = tmp_path / "a_wmseg.nii.gz", tmp_path / "a_gmseg.json"
    old_wm = wm.read_bytes()
    assert _segment(*args, "-thr", "0.1", "--overwrite").exit_code == 0
    done = {p.name: p.read_bytes() for p in (wm, side, tmp_path / "a_gmseg.nii.gz")}
    assert set(json.loads(side.read_text())["Sha256"]["Replaces"]) == {"gm", "wm"}
    wm.write_bytes(old_wm)  # the WM rename never happened
    assert _segment(*args, "-thr", "0.1").exit_code == 0
    assert {p: (tmp_path / p).read_bytes() for p in done} == done


def test_an_earlier_runs_wm_mask_and_soft_map_go_when_a_run_writes_none(tiny_model, image, make_nifti):
    """A WM mask and soft map of a run with --wm --prob describe that run's GM mask: a later run that
    writes no such output removes them (they would sit beside another GM mask, and the next run with
    --wm would refuse them as edited); a file the user edited, or put there, stays."""
    cord = make_nifti((cord_phantom_volume(seed=1) > 120).astype(np.uint8), name="in/cord.nii.gz")
    model = tiny_model()
    full = ("-i", str(image), "-s", str(cord), "--wm", "--prob", "-m", model)
    assert _segment(*full).exit_code == 0
    wm, prob = image.with_name("t2s_wmseg.nii.gz"), image.with_name("t2s_gmseg_prob.nii.gz")
    assert wm.is_file() and prob.is_file()
    res = CliRunner().invoke(main, ["segment", "-i", str(image), "-m", model, "-thr", "0.6", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert not wm.exists() and not prob.exists()
    said = [line for line in _lines(res.stderr) if "removed, an earlier run's output" in line]
    assert len(said) == 2 and str(wm) in said[0] and str(prob) in said[1], res.stderr
    assert _segment(*full).exit_code == 0  # no --overwrite needed: nothing of sct-gm's is left to refuse
    side = json.loads(image.with_name("t2s_gmseg.json").read_text())
    assert set(side["Sha256"]["Outputs"]) == {"gm", "wm", "prob"}
    data = np.asanyarray(nib.load(str(wm)).dataobj).copy()
    data[0, 0, 0] = 1 - data[0, 0, 0]  # a reviewer's edit: still a readable mask, other bytes
    nib.save(nib.Nifti1Image(data, nib.load(str(wm)).affine), str(wm))
    edited = wm.read_bytes()
    assert _segment("-i", str(image), "-m", model).exit_code == 0
    assert wm.read_bytes() == edited and not prob.exists()


def _one_subject_with_a_soft_map(tiny_model, make_nifti, tmp_path):
    """A one-subject BIDS dataset segmented with --prob; returns it and the model."""
    ds = tmp_path / "ds"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    make_nifti(cord_phantom_volume(seed=1), name="ds/sub-01/anat/sub-01_T2star.nii.gz")
    model = tiny_model()
    assert _segment("--bids", str(ds), "--prob", "-m", model).exit_code == 0
    return ds, model


def test_an_earlier_runs_bids_soft_map_goes_with_its_sidecar(tiny_model, make_nifti, tmp_path):
    ds, model = _one_subject_with_a_soft_map(tiny_model, make_nifti, tmp_path)
    anat = ds / "derivatives" / "sct-gm" / "sub-01" / "anat"
    prob = anat / "sub-01_T2star_label-GM_probseg.nii.gz"
    assert prob.is_file() and prob.with_name("sub-01_T2star_label-GM_probseg.json").is_file()
    assert _segment("--bids", str(ds), "--prob", "-m", model).exit_code == 0  # skipped: nothing removed
    assert prob.is_file()
    res = _segment("--bids", str(ds), "-m", model, "-thr", "0.6")  # other settings: segmented again
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in anat.iterdir()) == ["sub-01_T2star_label-GM_seg.json",
                                                      "sub-01_T2star_label-GM_seg.nii.gz"]


def test_only_files_whose_recorded_bytes_match_are_removed_as_an_earlier_runs(tiny_model, image, make_nifti):
    """Found in review: the removal reused the replacement rule, under which a dangling link, an
    unreadable file or a sidecar without hashes counts as sct-gm's; nobody asked to remove those. Nor
    an input of the command, whatever its name."""
    model = tiny_model()
    assert _segment("-i", str(image), "-m", model).exit_code == 0  # GM only: the sidecar records no WM
    wm = image.with_name("t2s_wmseg.nii.gz")
    for make in (lambda: wm.symlink_to(image.with_name("absent.nii.gz")),  # an unfetched annex file
                 lambda: wm.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")):  # a pointer
        make()
        assert _segment("-i", str(image), "-m", model).exit_code == 0
        assert wm.is_symlink() or wm.is_file()
        wm.unlink()
    cord = make_nifti((cord_phantom_volume(seed=1) > 120).astype(np.uint8), name="in/cord.nii.gz")
    out = image.parent / "out" / "a.nii.gz"
    assert _segment("-i", str(image), "-s", str(cord), "-o", str(out), "--wm", "-m", model).exit_code == 0
    its_wm = out.with_name("a_wmseg.nii.gz")
    assert _segment("-i", str(image), "-s", str(its_wm), "-o", str(out), "-m", model).exit_code == 0
    assert its_wm.is_file()  # the -s input stays, though it is the earlier run's WM mask


def test_a_bids_sidecar_left_alone_by_a_killed_removal_goes_too(tiny_model, make_nifti, tmp_path):
    ds, model = _one_subject_with_a_soft_map(tiny_model, make_nifti, tmp_path)
    anat = ds / "derivatives" / "sct-gm" / "sub-01" / "anat"
    (anat / "sub-01_T2star_label-GM_probseg.nii.gz").unlink()  # a kill between the two removals
    assert _segment("--bids", str(ds), "-m", model, "-thr", "0.6").exit_code == 0
    assert sorted(p.name for p in anat.iterdir()) == ["sub-01_T2star_label-GM_seg.json",
                                                      "sub-01_T2star_label-GM_seg.nii.gz"]


def test_the_success_line_is_one_line_whatever_the_file_name(tiny_model, make_nifti, tmp_path):
    """A newline in a file name is escaped in the `wrote ...` line, as in error lines: one line, one run."""
    (tmp_path / "in").mkdir()
    odd = make_nifti(cord_phantom_volume(seed=1), name="in/a\nb.nii.gz")
    res = CliRunner().invoke(main, ["segment", "-i", str(odd), "-m", tiny_model(), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    wrote = [line for line in res.stderr.splitlines() if line.startswith("sct-gm: wrote ")]
    assert len(wrote) == 1 and "a\\nb_gmseg.nii.gz" in wrote[0], res.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_where_an_output_goes_is_refused_even_with_overwrite(tiny_model, image, tmp_path):
    """--overwrite replaces files sct-gm did not write, never a FIFO or a device (as root, a summary
    given as /dev/null and then --overwrite would have replaced /dev/null with a table)."""
    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)
    res = _segment("-i", str(image), "-m", tiny_model(), "--summary", str(fifo), "--overwrite")
    assert res.exit_code == 3 and "is not a regular file" in res.output
    out_fifo = tmp_path / "gm.nii.gz"
    os.mkfifo(out_fifo)
    res = _segment("-i", str(image), "-m", tiny_model(), "-o", str(out_fifo), "--overwrite")
    assert res.exit_code == 3 and "is not a regular file" in res.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISFIFO(os.stat(out_fifo).st_mode)


def test_a_batch_says_where_its_qc_report_is_or_that_it_added_none(tiny_model, make_nifti, tmp_path):
    """The QC link is printed where a report is; a resumed batch whose images were all skipped adds no
    entry, and says so instead of linking a page that does not exist."""
    (tmp_path / "in").mkdir()
    images = [str(make_nifti(cord_phantom_volume(seed=s), name=f"in/sub-0{s}_T2star.nii.gz")) for s in (1, 2)]
    base = ["segment", "-i", *images, "-m", tiny_model(), "--device", "cpu"]
    first = CliRunner().invoke(main, [*base, "-qc", str(tmp_path / "qc")])
    assert first.exit_code == 0 and f"QC report: {(tmp_path / 'qc' / 'index.html').as_uri()}" in first.stderr
    again = CliRunner().invoke(main, [*base, "-qc", str(tmp_path / "qc2")])
    assert again.exit_code == 0 and "no QC entry added: the outputs were already there" in again.stderr
    assert "QC report:" not in again.stderr and not (tmp_path / "qc2" / "index.html").exists()
