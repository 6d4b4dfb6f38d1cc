"""The CLI keeps its word (issue: UX audit): one -i naming one file is one file whatever -j, --summary
or --metrics say; an option that needs another is a usage error without it, never silently ignored;
every subcommand without arguments says one error line; counts agree with their nouns. Tiny model:
seconds."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sctgm.cli import main

from ..conftest import cord_phantom_volume


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _one_usage_error(res, *fragments: str) -> str:
    """The result is exit 2 with exactly one ``sct-gm: error:`` line holding ``fragments``."""
    assert res.exit_code == 2, res.output
    (line,) = _lines(res.stderr)
    assert line.startswith("sct-gm: error: ") and "Traceback" not in res.output, res.output
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture
def image(make_nifti, tmp_path):
    (tmp_path / "in").mkdir()
    return make_nifti(cord_phantom_volume(seed=1), name="in/sub-07_t2s.nii.gz")


def _rows(path: Path, delimiter: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


# ------------------------------------------------------------------------- 1. one file is one file

@pytest.mark.parametrize("extra", ["-j", "--summary", "--metrics", "all"])
def test_one_file_is_segmented_again_on_every_run_whatever_batch_options(tiny_model, image, tmp_path, extra):
    summary, metrics = tmp_path / "all.tsv", tmp_path / "areas.csv"
    flags = {"-j": ["-j", "2"], "--summary": ["--summary", str(summary)], "--metrics": ["--metrics", str(metrics)],
             "all": ["-j", "2", "--summary", str(summary), "--metrics", str(metrics)]}[extra]
    args = ["segment", "-i", str(image), "-m", tiny_model(), "--device", "cpu", *flags]
    gm = image.with_name("sub-07_t2s_gmseg.nii.gz")
    for attempt in range(2):
        res = _run(*args)
        assert res.exit_code == 0, res.output
        # the single-file report: one 'wrote' line, no batch table on stdout, no 'images:' count
        assert res.stdout == "" and "sct-gm: wrote " in res.stderr and "images:" not in res.stderr, res.output
        assert os.stat(gm).st_mtime_ns != 0, f"run {attempt + 1} kept the mask instead of segmenting again"
        os.utime(gm, ns=(0, 0))  # a mask written again gets a new mtime
        if summary in map(Path, flags):
            (row,) = _rows(summary, "\t")
            assert (row["input"], row["status"], row["subject"]) == (str(image), "ok", "sub-07")
            assert float(row["gm_volume_mm3"]) >= 0 and str(summary) in res.stderr
        if metrics in map(Path, flags):
            rows = _rows(metrics, ",")
            assert {r["input"] for r in rows} == {str(image)} and len(rows) == 4  # one row per slice
            assert {r["subject"] for r in rows} == {"sub-07"} and str(metrics) in res.stderr


def test_one_file_tables_merge_with_an_earlier_run_and_keep_its_warnings(tiny_model, make_nifti, tmp_path):
    """Runs one file at a time fill one table, as a batch's runs on subsets do; the row's message
    holds the image's warnings, as a batch row's does (here -q: not on the terminal, still in the row)."""
    a = make_nifti(cord_phantom_volume(seed=1), name="a.nii.gz")
    volume = cord_phantom_volume(seed=2)
    volume[0, 0, 0] = float("nan")
    b = make_nifti(volume, name="b.nii.gz")
    summary = tmp_path / "s.tsv"
    for img in (a, b):
        res = _run("segment", "-i", str(img), "-m", tiny_model(), "--device", "cpu", "--summary", str(summary), "-q")
        assert res.exit_code == 0 and res.output == "", res.output
    rows = {Path(r["input"]).name: r for r in _rows(summary, "\t")}
    assert sorted(rows) == ["a.nii.gz", "b.nii.gz"]
    assert "NaN" in rows["b.nii.gz"]["message"]
    assert "NaN" not in rows["a.nii.gz"]["message"]


def test_a_failed_single_file_is_an_error_and_leaves_the_tables_as_they_were(tiny_model, image, tmp_path):
    summary, metrics = tmp_path / "s.tsv", tmp_path / "m.csv"
    args = ["-m", tiny_model(), "--device", "cpu", "--summary", str(summary), "--metrics", str(metrics), "-q"]
    assert _run("segment", "-i", str(image), *args).exit_code == 0
    before = summary.read_bytes(), metrics.read_bytes()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    res = _run("segment", "-i", str(broken), *args)
    assert res.exit_code == 2, res.output  # the input error's own code, not a batch's 1
    (line,) = _lines(res.stderr)
    assert line.startswith("sct-gm: error: ") and "broken.nii.gz" in line
    assert (summary.read_bytes(), metrics.read_bytes()) == before


def test_one_file_metrics_without_a_path_is_refused_before_any_work(tiny_model, image):
    res = _run("segment", "-i", str(image), "-m", tiny_model(), "--device", "cpu", "--metrics")
    _one_usage_error(res, "--metrics needs the CSV path")
    assert not list(image.parent.glob("*_gmseg*"))


def test_a_glob_pattern_or_a_scheduler_still_makes_a_batch(tiny_model, image):
    """What the docs call a batch stays one: a quoted glob matching one file is resumed (skipped)."""
    args = ["segment", "-i", str(image.parent / "*_t2s.nii.gz"), "-m", tiny_model(), "--device", "cpu"]
    assert _run(*args).exit_code == 0
    res = _run(*args)
    assert res.exit_code == 0 and "skipped" in res.stdout and "1 skipped" in res.stderr, res.output


def test_segment_help_and_batch_docs_say_what_one_file_does():
    text = " ".join(_run("segment", "--help").stdout.split())
    assert "one file is always segmented again" in text
    assert "-j, --jobs" in text and "one file uses one process" in text
    docs = " ".join((Path(__file__).resolve().parents[2] / "docs" / "batch.md").read_text().split())
    assert "One `-i` naming one file is the single-file mode of the README, unchanged" in docs
    assert "`-j`" in docs[docs.index("One `-i` naming one file"):][:600]


# ---------------------------------------------------------- 2. options that need another option

def test_segment_qc_names_without_qc_are_usage_errors(tiny_model, image):
    for flag in ("-qc-subject", "-qc-dataset", "--qc-subject", "--qc-dataset"):
        res = _run("segment", "-i", str(image), "-m", tiny_model(), "--device", "cpu", flag, "x")
        line = _one_usage_error(res, "only apply with -qc FOLDER", flag.lstrip("-").replace("qc-", ""))
        assert "(see sct-gm segment --help)" in line
    assert not list(image.parent.glob("*_gmseg*"))  # refused before any work


def test_segment_bids_options_without_bids_name_what_was_given(image):
    line = _one_usage_error(_run("segment", "-i", str(image), "--participant-label", "01"),
                            "only apply with --bids DATASET", "--participant-label")
    assert "only apply with --bids DATASET" in line and "label only apply" not in line  # grammar: not "X only apply"
    _one_usage_error(_run("segment", "-i", str(image), "--no-cord-labels"), "--bids", "--no-cord-labels")
    _one_usage_error(_run("segment", "-i", str(image), "--cord-labels"), "--bids", "--cord-labels")


def test_qc_serve_options_without_serve_are_usage_errors(image, tmp_path):
    qc = tmp_path / "qc"
    res = _run("qc", "-i", str(image), "-s", str(image), "-o", str(qc), "--port", "8080")
    _one_usage_error(res, "--port", "only apply with --serve QC_DIR")
    assert not qc.exists()  # refused before any work
    res = _run("qc", "-i", str(image), "-s", str(image), "-o", str(qc), "--port", "0")
    _one_usage_error(res, "--port")  # the default value, given: still a serve option


@pytest.mark.parametrize("given", [["-c", "cord.nii.gz"], ["-w", "wm.nii.gz"], ["-qc-subject", "s"],
                                   ["-qc-dataset", "d"], ["--model", "large"]])
def test_qc_entry_options_with_serve_are_usage_errors(tmp_path, given):
    res = _run("qc", "--serve", str(tmp_path), *given)
    _one_usage_error(res, "--serve takes the QC folder alone", given[0])


# ------------------------------------------------------------------- 3. no arguments, one line

@pytest.mark.parametrize("command", ["segment", "qc", "metrics", "train"])
def test_every_subcommand_without_arguments_says_one_error_line(command):
    res = _run(command)
    line = _one_usage_error(res, f"(see sct-gm {command} --help)")
    assert "Usage:" not in res.output
    if command == "metrics":
        assert "-i" in line


def test_a_subcommand_that_shows_its_help_when_bare_says_one_line_instead(monkeypatch):
    """Any subcommand declared with Click's no_args_is_help gets the one line too; the bare group
    keeps its help."""
    import sctgm.cli as cli

    @click.command(no_args_is_help=True)
    @click.option("-x")
    def bare(x):  # pragma: no cover - never runs
        pass

    monkeypatch.setitem(cli.COMMANDS, "bare", f"{__name__}:_BARE")
    monkeypatch.setitem(globals(), "_BARE", bare)
    _one_usage_error(_run("bare"), "(see sct-gm bare --help)")
    res = _run()
    assert "Usage:" in res.output and "Commands" in res.output


# ----------------------------------------------------------------------------- 4. wording

def test_counts_agree_with_their_nouns():
    from sctgm.batch.jobs import JobRecord
    from sctgm.cli import plural
    from sctgm.cli.batch_view import resume_message

    assert (plural(1, "image"), plural(0, "image"), plural(2, "slice")) == ("1 image", "0 images", "2 slices")
    one = JobRecord("a.nii.gz", None, None, "ok")
    assert resume_message([one], 1, False).startswith("1 of 1 image finished (1 segmented)")
    assert resume_message([one], 3, False).startswith("1 of 3 images finished")
    assert resume_message([], None, False).startswith("0 images finished")


def test_ctrl_c_while_one_files_tables_are_written_says_the_outputs_are_there(tiny_model, image, tmp_path,
                                                                           monkeypatch):
    """Found in review: Ctrl-C after the mask was written, while its row went into --summary, said
    "no output was written for the unfinished file"."""
    import sctgm.batch

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sctgm.batch, "write_summary", interrupted)
    res = _run("segment", "-i", str(image), "-m", tiny_model(), "--summary", str(tmp_path / "s.tsv"))
    assert res.exit_code == 130, res.output
    gm = image.with_name("sub-07_t2s_gmseg.nii.gz")
    assert gm.is_file() and _lines(res.stderr)[-1] == (f"sct-gm: interrupted after {gm} was written; --summary / "
                                                       f"--metrics may not list it yet: run the same command again")


def test_a_table_named_like_an_input_or_output_of_the_run_is_refused(tiny_model, image):
    """Found in review: --summary naming the run's own sidecar replaced it with the TSV (a mask without
    its sidecar, refused as not sct-gm's on the next run)."""
    model = tiny_model()
    for option, table in (("--summary", image.with_name("sub-07_t2s_gmseg.json")),
                          ("--metrics", image.with_name("sub-07_t2s_gmseg.json"))):  # NIfTI names: refused as such
        res = _run("segment", "-i", str(image), "-m", model, option, str(table))
        assert res.exit_code == 3, res.output
        (line,) = _lines(res.stderr)
        assert str(table) in line and "would replace an image's input or output" in line
    assert sorted(p.name for p in image.parent.iterdir()) == [image.name]  # nothing written


def test_a_table_through_a_link_onto_an_output_the_other_table_or_the_qc_folder_is_refused(tiny_model, image,
                                                                                             tmp_path):
    """Found in review: paths were compared without resolving links; two tables on one path, or a
    table in the QC folder, were not compared at all (the summary lost, the report's files replaced)."""
    model = tiny_model()
    link = tmp_path / "link"
    link.symlink_to(image.parent)
    cases = {"through a link": ("--summary", str(link / "sub-07_t2s_gmseg.json")),
             "one path for both": ("--summary", str(tmp_path / "t.csv"), "--metrics", str(tmp_path / "t.csv")),
             "in the QC folder": ("-qc", str(tmp_path / "qc"), "--summary", str(tmp_path / "qc" / "report.json"))}
    for name, extra in cases.items():
        res = _run("segment", "-i", str(image), "-m", model, *extra)
        assert res.exit_code == 3, (name, res.output)
        (line,) = _lines(res.stderr)
        assert "would replace" in line, (name, line)
    assert sorted(p.name for p in image.parent.iterdir()) == [image.name]
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "qc").exists()
    beside = tmp_path / "qc" / "summary.tsv"  # a table beside the report's files is fine
    res = _run("segment", "-i", str(image), "-m", model, "-qc", str(tmp_path / "qc"), "--summary", str(beside))
    assert res.exit_code == 0 and beside.is_file() and (tmp_path / "qc" / "report.json").is_file(), res.output


def test_segment_says_where_the_qc_report_is(tiny_model, image, tmp_path):
    """Found in the user audit: `segment -qc` never said where the report went (`sct-gm qc` does)."""
    qc = tmp_path / "qc"
    res = _run("segment", "-i", str(image), "-m", tiny_model(), "-qc", str(qc))
    assert res.exit_code == 0, res.output
    assert _lines(res.stderr)[-1].endswith(f"; QC report: {(qc / 'index.html').resolve().as_uri()}")
    assert (qc / "index.html").is_file()
