"""Dataset-level files merge by key (a subset run keeps the other images' rows) and an interrupted
batch says exactly what running it again does; through the CLI, on the tiny model (seconds)."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from sctgm.cli import main



@pytest.fixture
def dataset(make_dataset):
    return make_dataset(3)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _table(path, delimiter=","):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def test_a_subset_run_updates_its_rows_and_keeps_the_others(dataset, tiny_model):
    model = tiny_model()
    deriv = dataset / "derivatives" / "sct-gm"
    first = run("segment", "--bids", str(dataset), "-m", model, "--device", "cpu", "--metrics", "-q")
    assert first.exit_code == 0, first.output
    before = _table(deriv / "summary.tsv", "\t")
    morph = _table(deriv / "morphometry.csv")
    assert [r["subject"] for r in before] == ["sub-01", "sub-02", "sub-03"]
    subset = run("segment", "--bids", str(dataset), "-m", model, "--device", "cpu", "--metrics", "-q",
                 "--participant-label", "02", "--overwrite", "-thr", "0.3")
    assert subset.exit_code == 0, subset.output
    after = _table(deriv / "summary.tsv", "\t")
    assert [r["subject"] for r in after] == ["sub-01", "sub-02", "sub-03"]
    assert after[0] == before[0] and after[2] == before[2] and after[1]["input"] == before[1]["input"]
    morph_after = _table(deriv / "morphometry.csv")
    assert [r for r in morph_after if r["subject"] != "sub-02"] == [r for r in morph if r["subject"] != "sub-02"]
    assert len([r for r in morph_after if r["subject"] == "sub-02"]) == len([r for r in morph if r["subject"] == "sub-02"])


def test_an_interrupted_overwrite_batch_says_what_a_rerun_does(dataset, tiny_model, monkeypatch):
    import sctgm.batch.jobs as jobs

    model = tiny_model()
    args = ["segment", "--bids", str(dataset), "-m", model, "--device", "cpu", "-q"]
    assert run(*args, "-thr", "0.3").exit_code == 0  # earlier outputs, other settings
    real, calls = jobs.segment_and_write, []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(jobs, "segment_and_write", interrupt_second)
    cut = run(*args, "--overwrite")
    assert cut.exit_code == 130
    assert cut.stderr == ("sct-gm: interrupted; 1 of 3 images finished (1 segmented) and unfinished ones left "
                          "nothing behind: the same command (with --overwrite) segments every image again; without "
                          "--overwrite it resumes: the 1 segmented now are kept, and of the others only those whose "
                          "outputs are missing, invalid or made with other settings or another model are segmented "
                          "again\n")
    monkeypatch.setattr(jobs, "segment_and_write", real)
    again = run(*args)
    assert again.exit_code == 0
    summary = _table(dataset / "derivatives" / "sct-gm" / "summary.tsv", "\t")
    assert [r["status"] for r in summary] == ["skipped", "ok", "ok"]  # as promised: kept, then redone
