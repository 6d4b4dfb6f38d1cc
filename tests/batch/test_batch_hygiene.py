"""What a BIDS batch writes and leaves: the derivative's morphometry table never describes a mask that
was replaced; the summary and metrics tables are never written into the raw data; a batch that fails before
its first image (an unknown model) creates nothing, and the folders a run made and left empty (Ctrl-C,
a failed image) are removed. Through the CLI, on the tiny model (seconds)."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from sctgm.cli import main


@pytest.fixture
def dataset(make_dataset):
    return make_dataset(2)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _tree(root):
    """Every path under ``root`` with the bytes of each file (a folder maps to None)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _areas(rows, subject):
    return [float(r["gm_area_mm2"]) for r in rows if r["subject"] == subject and r["scope"] == "slice"]


def _measured(deriv, subject):
    """The slice areas of the mask now on disk, measured afresh (``sct-gm metrics``'s own code)."""
    from sctgm.metrics import morphometry

    gm = deriv / subject / "anat" / f"{subject}_T2star_label-GM_seg.nii.gz"
    return pytest.approx([r["gm_area_mm2"] for r in morphometry(gm).rows if r["scope"] == "slice"], rel=1e-6)


# ------------------------------------------------------------------- 1. the morphometry table stays current

def test_a_run_without_metrics_that_segments_again_keeps_the_morphometry_table_current(dataset, tiny_model):
    model = tiny_model()
    deriv = dataset / "derivatives" / "sct-gm"
    base = ["segment", "--bids", str(dataset), "-m", model, "--device", "cpu"]
    assert run(*base, "--metrics", "-q").exit_code == 0
    before = _rows(deriv / "morphometry.csv")
    assert _areas(before, "sub-01") == _measured(deriv, "sub-01")

    again = run(*base, "--participant-label", "01", "-thr", "0.2")  # new masks for sub-01, no --metrics
    assert again.exit_code == 0, again.output
    now = _measured(deriv, "sub-01")
    assert now != _areas(before, "sub-01"), "the new threshold must change the mask for this test to mean anything"
    after = _rows(deriv / "morphometry.csv")
    assert _areas(after, "sub-01") == now  # the table describes the mask that is there
    assert [r for r in after if r["subject"] == "sub-02"] == [r for r in before if r["subject"] == "sub-02"]
    assert "morphometry.csv: the 1 image segmented by this run was measured into it too" in again.stderr
    assert again.stderr.count("warning:") == 1


def test_a_metrics_table_elsewhere_updates_the_derivatives_own_table_too(dataset, tiny_model, tmp_path):
    model = tiny_model()
    deriv = dataset / "derivatives" / "sct-gm"
    base = ["segment", "--bids", str(dataset), "-m", model, "--device", "cpu", "-q"]
    assert run(*base, "--metrics").exit_code == 0
    other = tmp_path / "areas.csv"
    assert run(*base, "--participant-label", "01", "-thr", "0.2", "--metrics", str(other)).exit_code == 0
    assert _areas(_rows(other), "sub-01") == _areas(_rows(deriv / "morphometry.csv"), "sub-01") \
        == _measured(deriv, "sub-01")


def test_without_a_morphometry_table_a_run_without_metrics_writes_none(dataset, tiny_model):
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    deriv = dataset / "derivatives" / "sct-gm"
    assert (deriv / "summary.tsv").is_file() and not (deriv / "morphometry.csv").exists()


def test_a_table_of_sct_gm_metrics_saved_under_the_name_is_left_alone(dataset, tiny_model):
    """Found in review: a compare-mode table of `sct-gm metrics` saved as the derivative's
    morphometry.csv was rewritten by a plain run with only the batch's rows (all of its own lost)."""
    model = tiny_model()
    deriv = dataset / "derivatives" / "sct-gm"
    assert run("segment", "--bids", str(dataset), "-m", model, "--device", "cpu", "-q").exit_code == 0
    gm = deriv / "sub-01" / "anat" / "sub-01_T2star_label-GM_seg.nii.gz"
    own = deriv / "morphometry.csv"
    assert run("metrics", "-i", str(gm), "-r", str(gm), "-o", str(own), "-q").exit_code == 0
    kept = own.read_bytes()
    res = run("segment", "--bids", str(dataset), "-m", model, "--device", "cpu", "-thr", "0.2", "-q")
    assert res.exit_code == 0, res.output
    assert own.read_bytes() == kept


# --------------------------------------------------------------------- 2. nothing into the raw dataset

@pytest.mark.parametrize("where", ["summary-root", "summary-overwrite", "metrics-root", "metrics-subject",
                                   "metrics-dotdot", "metrics-link"])
def test_tables_inside_the_raw_dataset_are_refused_before_any_work(dataset, tiny_model, tmp_path, where):
    link = tmp_path / "link"
    link.symlink_to(dataset)
    option, path, extra = {
        "summary-root": ("--summary", dataset / "notes.tsv", []),
        "summary-overwrite": ("--summary", dataset / "participants.tsv", ["--overwrite"]),
        "metrics-root": ("--metrics", dataset / "notes.txt", []),
        "metrics-subject": ("--metrics", dataset / "sub-01" / "anat" / "areas.csv", []),
        "metrics-dotdot": ("--metrics", f"{dataset}/derivatives/../areas.csv", []),
        "metrics-link": ("--metrics", link / "areas.csv", []),
    }[where]
    (dataset / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    before = _tree(dataset)
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q", option, str(path),
              *extra)
    assert res.exit_code == 3, res.output
    assert res.stderr.count("\n") == 1 and "must not be written into the raw data" in res.stderr
    assert "Traceback" not in res.output
    assert _tree(dataset) == before  # nothing written: not the table, not the derivatives


def test_tables_under_the_datasets_derivatives_are_allowed(dataset, tiny_model):
    deriv = dataset / "derivatives"
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q",
              "--summary", str(deriv / "runs" / "s.tsv"), "--metrics", str(deriv / "areas.csv"))
    assert res.exit_code == 0, res.output
    assert (deriv / "runs" / "s.tsv").is_file() and (deriv / "areas.csv").is_file()


# ------------------------------------------------------------------------------- 3. nothing left behind

def test_an_unknown_model_creates_nothing(dataset):
    before = _tree(dataset)
    res = run("segment", "--bids", str(dataset), "-m", "lareg", "--participant-label", "01", "-q")
    assert res.exit_code == 4 and "unknown model 'lareg'" in res.stderr and res.stderr.count("\n") == 1
    assert _tree(dataset) == before  # no derivatives/sct-gm, no dataset_description.json


def test_an_interruption_removes_the_empty_folders_it_made_and_nothing_else(dataset, tiny_model, monkeypatch):
    import sctgm.batch.jobs as jobs

    deriv = dataset / "derivatives" / "sct-gm"
    mine = deriv / "sub-02" / "anat"
    mine.mkdir(parents=True)  # empty before the run: not the run's to remove

    def interrupt(*a, **k):  # after the job made its output folder, before it wrote a file
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "segment_and_write", interrupt)
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q")
    assert res.exit_code == 130 and "0 images finished" in res.stderr  # interrupted on the first image
    assert not (deriv / "sub-01").exists()  # made by the run, empty: removed
    assert mine.is_dir()  # there before: kept, empty as it is
    assert (deriv / "dataset_description.json").is_file()


def test_a_failed_image_leaves_no_empty_folder(dataset, tiny_model, monkeypatch):
    import sctgm.batch.jobs as jobs
    from sctgm.exceptions import OutputError

    real = jobs.segment_and_write

    def fail_sub01(segmenter, image, outputs, **k):
        if "sub-01" in str(outputs["gm"]):
            raise OutputError("disk full")
        return real(segmenter, image, outputs, **k)

    monkeypatch.setattr(jobs, "segment_and_write", fail_sub01)
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-q")
    deriv = dataset / "derivatives" / "sct-gm"
    assert res.exit_code == 1, res.output
    assert not (deriv / "sub-01").exists() and (deriv / "sub-02" / "anat").is_dir()


def test_a_table_named_like_an_images_output_is_refused_before_any_work(dataset, tiny_model):
    sidecar = dataset / "derivatives" / "sct-gm" / "sub-01" / "anat" / "sub-01_T2star_label-GM_seg.json"
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "--metrics", str(sidecar))
    assert res.exit_code == 3 and "would replace an image's input or output" in res.stderr, res.output
    assert not (dataset / "derivatives").exists()


def test_a_batch_says_where_the_qc_report_is(dataset, tiny_model, tmp_path):
    qc = tmp_path / "qc"
    res = run("segment", "--bids", str(dataset), "-m", tiny_model(), "--device", "cpu", "-qc", str(qc))
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[-1] == f"sct-gm: QC report: {(qc / 'index.html').resolve().as_uri()}"
