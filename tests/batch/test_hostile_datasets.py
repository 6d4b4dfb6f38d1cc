"""Batches on datasets and names that break naive code (found in review): a derivative description
sct-gm cannot read, FIFOs where JSON is expected, derivatives that resolve into the raw data, sct-gm's
own BIDS outputs met by a glob, names holding markup, tabs, newlines or double spaces, and links whose
content was never fetched. Each fails before its fix."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import cord_phantom_volume


@pytest.fixture
def dataset(make_dataset):
    return make_dataset(2)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_derivative_description_sct_gm_cannot_read_is_another_tools_and_kept(dataset, tiny_model):
    deriv = dataset / "derivatives" / "sct-gm"
    deriv.mkdir(parents=True)
    desc = deriv / "dataset_description.json"
    # valid JSON but for a byte-order mark: another pipeline's file all the same
    desc.write_bytes(b'\xef\xbb\xbf{"Name": "other", "GeneratedBy": [{"Name": "fmriprep"}]}')
    before = desc.read_bytes()
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q")
    assert res.exit_code == 3 and "not a JSON description sct-gm can read" in res.output
    assert desc.read_bytes() == before
    assert not list(deriv.glob("sub-*"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_where_a_description_is_expected_is_not_waited_on(dataset, tmp_path):
    """Reading the raw and the derivative descriptions (a FIFO each) returns at once; before, both
    blocked forever waiting for a writer (run in a child process with a deadline)."""
    os.remove(dataset / "dataset_description.json")
    os.mkfifo(dataset / "dataset_description.json")
    deriv = tmp_path / "deriv"
    deriv.mkdir()
    os.mkfifo(deriv / "dataset_description.json")
    code = ("import sys; from sctgm.batch import bids; from sctgm.exceptions import OutputError\n"
            "d = bids.dataset_description(sys.argv[1], sys.argv[2]); assert 'DOI' not in d['SourceDatasets'][0]\n"
            "try:\n    bids.write_dataset_description(sys.argv[1], sys.argv[2])\n"
            "except OutputError as e:\n    print('refused:', e)\n")
    res = subprocess.run([sys.executable, "-c", code, str(dataset), str(deriv)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout and "not a JSON description" in res.stdout


def test_derivatives_that_resolve_into_a_subject_folder_are_refused(dataset, tiny_model, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(dataset / "sub-01")
    for deriv in (str(dataset / "sub-01" / "anat" / ".." / ".."), str(link)):
        before = sorted(p.name for p in dataset.rglob("*"))
        res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q",
                  "--derivatives", deriv)
        assert res.exit_code == 3 and "must not be written into the raw data" in res.output, (deriv, res.output)
        assert sorted(p.name for p in dataset.rglob("*")) == before


def test_derivatives_into_the_derivatives_folder_itself_or_the_labels_are_refused(dataset, tiny_model):
    """`--derivatives ds/derivatives` (the container) or `ds/derivatives/labels` (the manual labels,
    which training reads as truth): refused before anything is written, as the raw data is."""
    (dataset / "derivatives" / "labels").mkdir(parents=True, exist_ok=True)
    for deriv, what in ((dataset / "derivatives", "the dataset's derivatives folder itself"),
                        (dataset / "derivatives" / "labels", "where the manual labels live"),
                        (dataset / "derivatives" / "labels" / "sct-gm", "where the manual labels live")):
        before = sorted(str(p) for p in dataset.rglob("*"))
        res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q",
                  "--derivatives", str(deriv))
        assert res.exit_code == 3 and f"is {what}" in res.output, (deriv, res.output)
        assert sorted(str(p) for p in dataset.rglob("*")) == before


def test_a_glob_over_a_processed_dataset_leaves_sct_gms_bids_outputs_out(dataset, tiny_model):
    from sctgm.naming import is_sctgm_output

    model = tiny_model()
    assert run("segment", "--bids", str(dataset), "-m", model, "--device", "cpu", "--prob", "-q").exit_code == 0
    outputs = sorted((dataset / "derivatives" / "sct-gm").rglob("*.nii.gz"))
    assert len(outputs) == 4 and all(is_sctgm_output(p) for p in outputs)
    res = run("segment", "-i", str(dataset / "**" / "*.nii.gz"), "-m", model, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert not list(dataset.rglob("*_label-GM_seg_gmseg*")) and not list(dataset.rglob("*probseg_gmseg*"))
    assert len(list(dataset.rglob("sub-0?_T2star_gmseg.nii.gz"))) == 2


def _record(name: str, status: str = "ok", message: str = ""):
    from sctgm.batch.jobs import JobRecord

    return JobRecord(name, "sub-01", None, status, message, 1.0, 0.1)


def test_summary_rows_keep_names_that_differ_in_spaces_and_escape_tabs_and_newlines(tmp_path):
    from sctgm.batch import write_summary

    summary = tmp_path / "summary.tsv"
    names = ["/d/my  scan.nii.gz", "/d/my scan.nii.gz", "/d/a\tb.nii.gz", "/d/a\nb.nii.gz"]
    for _ in range(3):  # a rerun replaces its own rows: never one more per run
        write_summary([_record(n) for n in names], summary)
    lines = summary.read_text().splitlines()
    assert len(lines) == 1 + len(names)
    assert all(len(line.split("\t")) == 7 for line in lines)
    assert sorted(line.split("\t")[2] for line in lines[1:]) == sorted(
        ["/d/my  scan.nii.gz", "/d/my scan.nii.gz", "/d/a\\tb.nii.gz", "/d/a\\nb.nii.gz"])


def test_a_failure_names_an_input_holding_a_newline_once_on_one_line(tmp_path, capsys):
    from sctgm.batch.jobs import Job, failed_record
    from sctgm.cli.batch_view import render_summary
    from sctgm.exceptions import InputImageError
    from sctgm.naming import sct_outputs

    path = tmp_path / "bad\nname.nii.gz"
    job = Job(input=path, outputs=sct_outputs(path), label=str(path))
    record = failed_record(job, InputImageError(f"{path}: not a NIfTI image"))
    assert record.message == "not a NIfTI image"

    class Result:
        records = [record]

    render_summary(Result(), quiet=True)
    text = capsys.readouterr().err
    assert text.count("\n") == 1 and "bad\\nname.nii.gz: not a NIfTI image" in text


def test_names_holding_markup_are_shown_as_they_are_on_a_terminal(monkeypatch, capsys):
    """A bar's description and the summary table on a terminal: `scan[/b]` used to raise rich's
    MarkupError (an internal error once every image was segmented), `a[red]b` lost its brackets."""
    from sctgm.cli import batch_view, progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with progress.counting_bar(False, "sct-gm [x]", "images", describe=batch_view.describe_record) as update:
        assert update is not None
        update(1, 2, _record("/d/scan[/b].nii.gz"))
        update(2, 2, _record("/d/a[red]b.nii.gz", "failed", "oops"))

    class Result:
        records = [_record("/d/a[red]b.nii.gz"), _record("/d/scan[/b].nii.gz")]
        summary = metrics = None

        def count(self, status: str) -> int:
            return sum(r.status == status for r in self.records)

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    batch_view.render_summary(Result(), quiet=False)
    out = capsys.readouterr().out
    assert "a[red]b.nii.gz" in out and "scan[/b].nii.gz" in out


def test_a_link_whose_content_was_never_fetched_is_named(dataset, caplog, tmp_path):
    from sctgm.batch import bids

    missing = dataset / "sub-02" / "anat" / "sub-02_T2star.nii.gz"
    missing.unlink()
    missing.symlink_to(tmp_path / "annex" / "objects" / "MD5E-s1--x.nii.gz")
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        found = bids.find_images(dataset)
    assert [Path(i.path).name for i in found] == ["sub-01_T2star.nii.gz"]
    assert any("sub-02_T2star.nii.gz" in r.getMessage() and "target is missing" in r.getMessage()
               for r in caplog.records)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_given_as_an_image_is_refused_not_waited_on(tmp_path, tiny_model, make_nifti):
    """`segment -i fifo.nii` and a batch holding one: one line naming it; both waited forever before
    (run as child processes with a deadline)."""
    fifo = tmp_path / "fifo.nii"
    os.mkfifo(fifo)
    good = make_nifti(cord_phantom_volume(seed=1), name="good.nii.gz")
    model = tiny_model()  # registered through the environment, which the children inherit
    single = subprocess.run([sys.executable, "-m", "sctgm", "segment", "-i", str(fifo), "-m", model, "-q"],
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 2 and "fifo.nii: is not a regular file" in single.stderr
    batch = subprocess.run([sys.executable, "-m", "sctgm", "segment", "-i", str(fifo), str(good), "-m", model,
                            "--device", "cpu", "-q"], capture_output=True, text=True, timeout=120)
    assert batch.returncode == 1 and "is not a regular file" in batch.stderr, batch.stderr
    assert (tmp_path / "good_gmseg.nii.gz").is_file()


def test_runs_side_by_side_lose_no_row_of_the_dataset_tables(tmp_path, monkeypatch):
    """Two runs of one dataset (one per participant, as on a cluster) merge summary.tsv at the same
    moment: each read the table, then wrote it back with its own rows, losing the other's. The merge is
    now taken in turns (a lock beside the table); the window is widened here to make the race certain."""
    import threading
    import time

    import sctgm.batch as batch

    read = batch._kept_rows

    def slow(*args, **kwargs):
        out = read(*args, **kwargs)
        time.sleep(0.3)
        return out

    monkeypatch.setattr(batch, "_kept_rows", slow)
    summary = tmp_path / "summary.tsv"
    batch.write_summary([_record("/d/sub-00.nii.gz")], summary)
    threads = [threading.Thread(target=batch.write_summary, args=([_record(f"/d/sub-0{k}.nii.gz")], summary))
               for k in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = summary.read_text().splitlines()[1:]
    assert sorted(r.split("\t")[2] for r in rows) == [f"/d/sub-0{k}.nii.gz" for k in range(4)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_where_the_summary_goes_is_refused_not_waited_on(tmp_path, tiny_model, make_nifti):
    fifo = tmp_path / "s.tsv"
    os.mkfifo(fifo)
    good = make_nifti(cord_phantom_volume(seed=1), name="good.nii.gz")
    model = tiny_model()
    res = subprocess.run([sys.executable, "-m", "sctgm", "segment", "-i", str(good), str(good), "-m", model,
                          "--device", "cpu", "-q", "--summary", str(fifo)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 3 and "s.tsv" in res.stderr, res.stderr
    assert not (tmp_path / "good_gmseg.nii.gz").exists()


def test_a_link_loop_in_a_glob_gives_each_file_once(tmp_path, make_nifti, caplog):
    from sctgm.batch import expand_inputs

    (tmp_path / "d").mkdir()
    make_nifti(cord_phantom_volume(seed=1), name="d/a.nii.gz")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        found = expand_inputs([str(tmp_path / "d" / "**" / "*.nii.gz")])
    assert found == [tmp_path / "d" / "a.nii.gz"]
    assert any("same file as another input" in r.getMessage() for r in caplog.records)


def test_what_a_killed_run_left_is_removed_also_where_the_rerun_has_nothing_to_redo(tmp_path, tiny_model,
                                                                                      make_nifti):
    """A run killed while replacing valid outputs (--overwrite) left its temporary files; the next run
    skips those images, and only segmenting removed them: they stayed for ever (the summary's too)."""
    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    b = make_nifti(cord_phantom_volume(seed=2), name="b.nii.gz")
    summary = tmp_path / "s.tsv"
    args = ["segment", "-i", str(a), str(b), "-m", tiny_model(), "--device", "cpu", "-q", "--summary", str(summary)]
    assert run(*args).exit_code == 0
    left = [tmp_path / ".a_gmseg.x1y2.part.nii.gz", tmp_path / ".a_gmseg.q9z8.part.json", tmp_path / ".s.k3j4.part.tsv"]
    for p in left:
        p.write_bytes(b"partial")
    res = run(*args)
    assert res.exit_code == 0 and [line.split("\t")[3] for line in summary.read_text().splitlines()[1:]] == [
        "skipped", "skipped"]
    assert [p for p in left if p.exists()] == []


def test_files_of_an_annexed_dataset_with_equal_content_are_each_segmented(tmp_path, make_nifti):
    """git-annex links files of equal content to one object: both are inputs (before, de-duplication by
    the link's target dropped one without naming it)."""
    from sctgm.batch import expand_inputs

    obj = make_nifti(cord_phantom_volume(seed=1), name="object.nii.gz")
    for s in ("01", "02"):
        (tmp_path / f"sub-{s}").mkdir()
        (tmp_path / f"sub-{s}" / f"sub-{s}_T2star.nii.gz").symlink_to(obj)
    found = expand_inputs([str(tmp_path / "sub-*" / "*.nii.gz")])
    assert [p.parent.name for p in found] == ["sub-01", "sub-02"]


def test_summary_names_with_quotes_backslashes_and_escapes_read_back_as_written(tmp_path):
    from sctgm.batch import write_summary

    summary = tmp_path / "summary.tsv"
    names = ['/d/"q.nii.gz', "/d/x\ty.nii.gz", "/d/x\\ty.nii.gz", "/d/a\\b.nii.gz"]
    write_summary([_record(n) for n in names], summary)
    for k in range(len(names)):  # each later run of one image keeps the others' rows, and its own once
        write_summary([_record(names[k], "skipped")], summary)
    rows = [line.split("\t") for line in summary.read_text().splitlines()[1:]]
    assert len(rows) == len(names) and all(len(r) == 7 and r[3] == "skipped" for r in rows)


def test_a_resume_recognises_a_source_whose_name_holds_a_colon(tmp_path, tiny_model, make_nifti):
    a = make_nifti(cord_phantom_volume(seed=1), name="t2s_10:30.nii.gz")
    b = make_nifti(cord_phantom_volume(seed=2), name="b.nii.gz")
    summary = tmp_path / "s.tsv"
    args = ["segment", "-i", str(a), str(b), "-m", tiny_model(), "--device", "cpu", "-q", "--summary", str(summary)]
    assert run(*args).exit_code == 0
    assert run(*args).exit_code == 0
    assert [line.split("\t")[3] for line in summary.read_text().splitlines()[1:]] == ["skipped", "skipped"]


def test_a_folder_link_followed_by_dotdot_names_another_file_and_both_are_kept(tmp_path, make_nifti):
    """`link/../x.nii.gz` is read by the system in the link target's parent: another file than
    `./x.nii.gz` (text normalisation would have taken them for one and dropped one)."""
    from sctgm.batch import expand_inputs

    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    make_nifti(cord_phantom_volume(seed=1), name="x.nii.gz")
    make_nifti(cord_phantom_volume(seed=2), name="elsewhere/x.nii.gz")
    (tmp_path / "linkdir").symlink_to(tmp_path / "elsewhere" / "deep")
    a, b = str(tmp_path / "linkdir" / ".." / "x.nii.gz"), str(tmp_path / "x.nii.gz")
    assert [str(p) for p in expand_inputs([a, b])] == [a, b]


def test_source_names_are_read_from_uris_posix_and_windows_paths():
    from sctgm.batch.jobs import provenance

    sources = ["bids:raw:sub-01/anat/x.nii.gz", "C:\\data\\t2s.nii.gz", "d/t2s_10:30.nii.gz", "rel.nii.gz"]
    assert provenance({"Sources": sources})[2] == ["x.nii.gz", "t2s.nii.gz", "t2s_10:30.nii.gz", "rel.nii.gz"]

