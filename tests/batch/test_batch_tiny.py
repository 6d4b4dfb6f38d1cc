"""Batches, resume and the one write path on the tiny random model: seconds, no ../shared."""

from __future__ import annotations

import json
import os
import signal

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sctgm.batch import BatchSettings, segment_files
from sctgm.segment.files import segment_file
from sctgm.segment.pipeline import SegmentOptions

from ..conftest import cord_phantom_volume


@pytest.fixture
def images(make_nifti, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return [make_nifti(cord_phantom_volume(seed=s), name=f"in/sub-0{s}_T2star.nii.gz") for s in (1, 2)]


def test_batch_resumes_and_redoes_only_what_changed(tiny_model, images):
    settings = BatchSettings(model=tiny_model(), device="cpu", prob=True)
    first = segment_files([str(p) for p in images], settings)
    assert [r.status for r in first.records] == ["ok", "ok"]
    gm = images[0].with_name("sub-01_T2star_gmseg.nii.gz")
    before = {p.name: p.read_bytes() for p in images[0].parent.iterdir() if p.suffix != ".json"}
    again = segment_files([str(p) for p in images], settings)
    assert [r.status for r in again.records] == ["skipped", "skipped"]
    gm.write_bytes(gm.read_bytes()[:100])  # truncated
    third = segment_files([str(p) for p in images], settings)
    assert [r.status for r in third.records] == ["ok", "skipped"]
    after = {p.name: p.read_bytes() for p in images[0].parent.iterdir() if p.suffix != ".json"}
    assert after == before  # redone to the same bytes
    other = segment_files([str(p) for p in images],
                          BatchSettings(model="tiny", device="cpu", prob=True, options=SegmentOptions(tta=True)))
    assert [r.status for r in other.records] == ["ok", "ok"]  # other parameters: redone
    denoised = BatchSettings(model="tiny", device="cpu", prob=True, options=SegmentOptions(tta=True, denoise="nlm"))
    assert [r.status for r in segment_files([str(p) for p in images], denoised).records] == ["ok", "ok"]
    assert [r.status for r in segment_files([str(p) for p in images], denoised).records] == ["skipped", "skipped"]
    clahe = BatchSettings(model="tiny", device="cpu", prob=True, options=SegmentOptions(tta=True, denoise="nlm",
                                                                                          clahe=True))
    assert [r.status for r in segment_files([str(p) for p in images], clahe).records] == ["ok", "ok"]


def test_single_file_and_batch_write_the_same_files_and_sidecar(tiny_model, images, tmp_path):
    name = tiny_model()
    single = segment_file(images[0], tmp_path / "one_gmseg.nii.gz", model=name, device="cpu", prob=True)
    segment_files([str(images[0])], BatchSettings(model=name, device="cpu", prob=True))
    batch_gm = images[0].with_name("sub-01_T2star_gmseg.nii.gz")
    for a, b in ((single.gm, batch_gm), (single.prob, images[0].with_name("sub-01_T2star_gmseg_prob.nii.gz"))):
        np.testing.assert_array_equal(np.asanyarray(nib.load(str(a)).dataobj), np.asanyarray(nib.load(str(b)).dataobj))
    one = json.loads(single.sidecar.read_text())
    many = json.loads(batch_gm.with_suffix("").with_suffix(".json").read_text())
    assert one == many  # one schema: same model, parameters, sources, result


def test_bids_sidecars_add_only_the_spatial_reference(tiny_model, tmp_path, make_nifti):
    from sctgm.batch import segment_bids

    ds = tmp_path / "ds"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    src = make_nifti(cord_phantom_volume(seed=1), name="ds/sub-01/anat/sub-01_T2star.nii.gz")
    res = segment_bids(ds, BatchSettings(model=tiny_model(), device="cpu"))
    assert res.count("ok") == 1
    bids_meta = json.loads((res.derivatives / "sub-01/anat/sub-01_T2star_label-GM_seg.json").read_text())
    single = segment_file(src, tmp_path / "x_gmseg.nii.gz", model="tiny", device="cpu")
    sct_meta = json.loads(single.sidecar.read_text())
    assert set(bids_meta) - set(sct_meta) == {"SpatialReference"} and set(sct_meta) <= set(bids_meta)
    assert bids_meta["GeneratedBy"] == sct_meta["GeneratedBy"]
    assert bids_meta["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2star.nii.gz"]


def _broken_sform_copy(src, dst):
    """``src`` saved uncompressed with a valid qform and an all-zero sform (sform_code kept): sct-gm
    uses the qform (docs/inputs.md); nibabel alone would give an all-zero affine."""
    img = nib.load(str(src))
    img.set_qform(img.affine, code=1)
    nib.save(img, str(dst))
    raw = bytearray(dst.read_bytes())
    raw[280:328] = bytes(48)  # srow_x, srow_y, srow_z
    dst.write_bytes(bytes(raw))
    return dst


def test_resume_reads_the_input_as_the_segmentation_does(tiny_model, images, tmp_path, capfd):
    src = _broken_sform_copy(images[0], images[0].parent / "sub-03_T2star.nii")
    settings = BatchSettings(model=tiny_model(), device="cpu")
    first = segment_files([str(src)], settings)
    assert [r.status for r in first.records] == ["ok"] and "the qform is used instead" in first.records[0].message
    capfd.readouterr()
    again = segment_files([str(src)], settings)
    assert [r.status for r in again.records] == ["skipped"]  # was redone on every run: nibabel's affine is zeros
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing printed by nibabel while checking


def test_a_crash_between_qc_and_sidecar_leaves_one_qc_entry(tiny_model, images, tmp_path):
    qc = tmp_path / "qc"
    settings = BatchSettings(model=tiny_model(), device="cpu", qc_dir=qc)
    segment_files([str(images[0])], settings)
    for name in ("sub-01_T2star_gmseg.json", "sub-01_T2star_gmseg.nii.gz"):
        images[0].with_name(name).unlink()  # as if killed after the QC entry, before the outputs were renamed
    again = segment_files([str(images[0])], settings)
    assert [r.status for r in again.records] == ["ok"]
    entries = [p for p in (qc / "entries").iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    index = (qc / "index.js").read_text()
    assert index.count('"image_name":"sub-01_T2star.nii.gz"') == 1


def test_a_failure_names_its_input_once(tiny_model, images, make_nifti):
    rgb = images[0].parent / "rgb.nii.gz"
    data = np.zeros((8, 8, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(rgb))
    res = segment_files([str(rgb), str(images[0])], BatchSettings(model=tiny_model(), device="cpu"))
    failed = res.records[0]
    assert failed.status == "failed" and failed.input == str(rgb)
    assert failed.message.startswith("is an RGB colour image") and "rgb.nii.gz" not in failed.message
    assert res.records[1].status == "ok"


# A worker that dies: the pool pickles `_run_in_worker` by name, so the test swaps in this module-level
# function (the spawned workers import it from here). It kills its own process for inputs named crash*,
# and for once* inputs only the first time (a marker file beside the input remembers it).
from sctgm.batch.executors import local as _local  # noqa: E402

_real_run_in_worker = _local._run_in_worker


def _dying_run_in_worker(job, settings, threads):
    marker = job.input.with_name(job.input.name + ".died")
    if job.input.name.startswith("crash") or (job.input.name.startswith("once") and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_run_in_worker(job, settings, threads)


def _idle_death_run_in_worker(job, settings, threads):
    """Segments, then (for inputs named idle*) dies half a second later, idle, its pid in a file."""
    record = _real_run_in_worker(job, settings, threads)
    if job.input.name.startswith("idle"):
        import threading

        job.input.with_name("worker.pid").write_text(str(os.getpid()))
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return record


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the dead worker is watched through /proc")
def test_a_worker_that_dies_idle_is_replaced(tiny_model, images, make_nifti, monkeypatch):
    """A worker killed between two images (out of memory while it held its model) leaves a pool that
    takes no more jobs: the next image goes to a fresh pool instead of the batch crashing."""
    import time

    idle = make_nifti(cord_phantom_volume(seed=5), name="in/idle.nii.gz")
    monkeypatch.setattr(_local, "_run_in_worker", _idle_death_run_in_worker)
    pid_file = idle.with_name("worker.pid")

    def on_record(i, record):
        if i == 0:  # hold the parent until its only worker is dead: the next submit meets a broken pool
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    stat = Path(f"/proc/{pid_file.read_text()}/stat").read_text()
                except OSError:
                    break
                if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
                    break
                time.sleep(0.05)
            time.sleep(0.5)  # the pool's manager thread marks it broken

    settings = BatchSettings(model=tiny_model(), device="cpu")
    from sctgm.batch import plan_files

    jobs = plan_files([str(idle), str(images[0]), str(images[1])], settings)
    records = _local.run_processes(jobs, settings, 1, on_record=on_record)
    assert [r.status for r in records] == ["ok", "ok", "ok"]
    assert pid_file.is_file()


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_a_killed_worker_is_replaced_and_only_its_image_fails(tiny_model, images, make_nifti, monkeypatch):
    crash = make_nifti(cord_phantom_volume(seed=3), name="in/crash.nii.gz")
    once = make_nifti(cord_phantom_volume(seed=4), name="in/once.nii.gz")
    monkeypatch.setattr(_local, "_run_in_worker", _dying_run_in_worker)
    paths = [str(crash), str(images[0]), str(once), str(images[1])]
    res = segment_files(paths, BatchSettings(model=tiny_model(), device="cpu"), n_jobs=2)
    status = {r.input: r.status for r in res.records}
    assert status == {paths[0]: "failed", paths[1]: "ok", paths[2]: "ok", paths[3]: "ok"}
    failed = res.records[0]
    assert failed.error_type == "WorkerDiedError" and "died 2 times while it ran alone" in failed.message
    assert not list(crash.parent.glob("crash_gmseg*"))  # nothing written for it
    assert once.with_name("once_gmseg.nii.gz").is_file() and once.with_name("once.nii.gz.died").is_file()


def test_a_model_whose_rule_back_to_the_native_grid_changed_is_redone(tiny_model, images):
    """Same weights, same options, but the model's rule back to the native grid went from linear to
    area (as the default's did): the masks can differ, so a resumed batch redoes them, and the sidecar
    records the rule (sidecars before it, which have none, read as linear)."""
    tiny_model("tiny")
    files = [str(p) for p in images]
    assert [r.status for r in segment_files(files, BatchSettings(model="tiny", device="cpu")).records] == ["ok", "ok"]
    sidecar = images[0].with_name("sub-01_T2star_gmseg.json")
    assert json.loads(sidecar.read_text())["GeneratedBy"][0]["Parameters"]["to_native"] == "linear"
    old = json.loads(sidecar.read_text())
    del old["GeneratedBy"][0]["Parameters"]["to_native"]  # as sct-gm wrote it before the rule existed
    sidecar.write_text(json.dumps(old))
    assert [r.status for r in segment_files(files, BatchSettings(model="tiny", device="cpu")).records] \
        == ["skipped", "skipped"]
    tiny_model("tiny", to_native="area")
    redone = segment_files(files, BatchSettings(model="tiny", device="cpu")).records
    assert [r.status for r in redone] == ["ok", "ok"]
    assert json.loads(sidecar.read_text())["GeneratedBy"][0]["Parameters"]["to_native"] == "area"
    assert [r.status for r in segment_files(files, BatchSettings(model="tiny", device="cpu")).records] \
        == ["skipped", "skipped"]


def test_a_resumed_batch_is_not_stopped_by_what_lies_under_a_sidecars_name(tiny_model, images):
    """Resume reads each output's sidecar: a FIFO there is not waited on (the batch went on forever),
    and a sidecar whose `Sources` is not a list is redone, not an internal error."""
    import json
    import os
    import threading

    settings = BatchSettings(model=tiny_model(), device="cpu")
    assert [r.status for r in segment_files([str(p) for p in images], settings).records] == ["ok", "ok"]
    fifo = images[0].with_name("sub-01_T2star_gmseg.json")
    fifo.unlink()
    os.mkfifo(fifo)
    odd = images[1].with_name("sub-02_T2star_gmseg.json")
    side = json.loads(odd.read_text())
    side["Sources"] = 5
    odd.write_text(json.dumps(side))
    done = []
    t = threading.Thread(target=lambda: done.append(segment_files([str(p) for p in images], settings)), daemon=True)
    t.start()
    t.join(120)
    assert done, "the batch waited on the FIFO"
    fifo_record, odd_record = done[0].records
    assert odd_record.status == "ok"  # redone: its sources are not this job's
    # its outputs are no longer described by a sidecar sct-gm wrote: refused in one line, nothing replaced
    assert fifo_record.status == "failed" and "is not a regular file" in fifo_record.message and fifo.is_fifo()


@pytest.mark.skipif(os.name != "posix", reason="a signal sent to this process")
def test_ctrl_c_in_the_pools_bookkeeping_waits_for_the_record(tiny_model, images):
    """A Ctrl-C that lands while the pool records a finished image (or submits the next) is raised once
    that is done: the image on disk is the image counted, never one of them without the other."""
    from sctgm.batch import plan_files

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a suite started with SIGINT ignored
    try:
        settings = BatchSettings(model=tiny_model(), device="cpu")
        jobs = plan_files([str(p) for p in images], settings)
        seen: list[str] = []

        def on_record(i, record):
            seen.append(f"{i} begun")
            if len(seen) == 1:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the first finished image is recorded
            seen.append(f"{i} {record.status}")

        with pytest.raises(KeyboardInterrupt):
            _local.run_processes(jobs, settings, 2, on_record=on_record)
        assert seen[:2] in (["0 begun", "0 ok"], ["1 begun", "1 ok"])  # the record ran to its end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(os.name != "posix", reason="a signal sent to this process")
def test_a_held_ctrl_c_stops_the_block_at_its_end_and_a_second_one_at_once():
    import time

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        reached = []
        with pytest.raises(KeyboardInterrupt):
            with _local.sigint_deferred() as held:
                os.kill(os.getpid(), signal.SIGINT)
                deadline = time.monotonic() + 10
                while not held and time.monotonic() < deadline:
                    time.sleep(0.001)
                reached.append(len(held))  # held, not raised: the block goes on
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
                reached.append("after the second")
        assert reached == [1]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_one_name_with_two_extensions_never_shares_a_sidecar(tiny_model, make_nifti, tmp_path):
    """x.nii and x.nii.gz name their outputs alike (x_gmseg.nii, x_gmseg.nii.gz) and share x_gmseg.json:
    a batch of both is refused before anything is written; a run of one after the other refuses to
    take the first one's sidecar (unless allowed), which would leave its mask without one."""
    from sctgm.exceptions import DatasetError, OutputError

    (tmp_path / "in").mkdir()
    gz = make_nifti(cord_phantom_volume(seed=1), name="in/x.nii.gz")
    plain = gz.with_name("x.nii")
    nib.save(nib.load(gz), plain)
    name = tiny_model()
    settings = BatchSettings(model=name, device="cpu")
    with pytest.raises(DatasetError, match="both would write .*x_gmseg.json"):
        segment_files([str(gz), str(plain)], settings)
    assert sorted(p.name for p in gz.parent.iterdir()) == ["x.nii", "x.nii.gz"]

    segment_file(gz, model=name, device="cpu")
    sidecar = json.loads(gz.with_name("x_gmseg.json").read_text())
    with pytest.raises(OutputError, match=r"x_gmseg.json: is the sidecar of .*x_gmseg.nii.gz"):
        segment_file(plain, model=name, device="cpu")
    assert json.loads(gz.with_name("x_gmseg.json").read_text()) == sidecar
    assert not plain.with_name("x_gmseg.nii").exists()
    assert [r.status for r in segment_files([str(gz)], settings).records] == ["skipped"]  # still x.nii.gz's
    segment_file(plain, model=name, device="cpu", overwrite=True)  # allowed: the sidecar is now x.nii's
    assert json.loads(gz.with_name("x_gmseg.json").read_text())["Sources"] == [str(plain)]


def test_an_empty_mask_is_said_with_its_file_in_the_record(tiny_model, images, monkeypatch, caplog):
    """Whatever the reason (a field of view without the cord, noise, a cord mask caught by a glob), an
    empty GM mask is a warning naming the file, so the batch summary shows it beside the 0 volume; the
    in-memory API says it too."""
    import logging

    import sctgm
    from sctgm.segment.pipeline import Segmenter

    monkeypatch.setattr(Segmenter, "_predict", lambda self, raw, *a, **k: np.zeros(raw.shape, np.float32))
    name = tiny_model()
    records = segment_files([str(images[0])], BatchSettings(model=name, device="cpu")).records
    assert records[0].status == "ok" and records[0].gm_volume_mm3 == 0.0
    assert "no gray matter was found, the GM mask is empty" in records[0].message
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        sctgm.segment_image(images[1], model=name, device="cpu")
    assert f"{images[1]}: no gray matter was found" in caplog.text


def test_files_outside_a_dataset_give_their_subject_and_session(make_nifti, tmp_path):
    """`-i 'data/*/*/anat/*.nii.gz'`: the summary's subject and session, and the QC report's subject,
    come from the BIDS-named folders and file name nearest the file, one rule for both."""
    from sctgm.batch import plan_files
    from sctgm.qc.entry import guess_subject

    (tmp_path / "sub-study/sub-01/ses-02/anat").mkdir(parents=True)
    path = make_nifti(cord_phantom_volume(seed=1), name="sub-study/sub-01/ses-02/anat/t2s.nii.gz")
    [job] = plan_files([str(path)], BatchSettings(model="tiny", device="cpu"))
    assert (job.subject, job.session) == ("sub-01", "ses-02")
    assert guess_subject(path) == "sub-01_ses-02"


def test_one_path_or_name_where_several_may_be_is_one_item(images):
    """A notebook's segment_files("scan.nii.gz", ...) or participants="03": one item, never iterated
    character by character (12 failed records named 's', 'r', ...)."""
    from sctgm.batch import plan_files
    from sctgm.naming import listed

    [job] = plan_files(str(images[0]), BatchSettings(model="tiny", device="cpu"))
    assert job.input == images[0]
    assert listed("03") == ["03"] and listed(images[0]) == [images[0]] and listed(("a", "b")) == ["a", "b"]


@pytest.mark.skipif(os.name != "posix", reason="a signal sent to this process")
def test_a_sigterm_is_held_too_even_where_ctrl_c_is_ignored():
    """A batch started with `&` from a job script ignores Ctrl-C; the CLI's SIGTERM (a scheduler's
    cancel) is held through the bookkeeping all the same, twice sent or not, and ends it at its end."""
    import time

    seen = []

    def cli_handler(signum, frame):  # as sctgm.cli's: record, then end as Ctrl-C would
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, cli_handler)
    try:
        reached = []
        with pytest.raises(KeyboardInterrupt):
            with _local.sigint_deferred() as held:
                for _ in range(2):  # `timeout` signals the command, then its group
                    os.kill(os.getpid(), signal.SIGTERM)
                deadline = time.monotonic() + 10
                while not held and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(0.2)
                reached.append("the block's end")
        assert reached == ["the block's end"] and seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is cli_handler
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_the_summary_and_qc_read_one_subject_through_links_and_relative_paths(make_nifti, tmp_path, monkeypatch):
    """A relative path run inside sub-01/anat, or a link (DataLad's annexed files) into another tree:
    the summary and the QC report name the subject alike, from the path as the user names it."""
    from sctgm.batch import plan_files
    from sctgm.qc.entry import guess_subject

    (tmp_path / "store").mkdir()
    real = make_nifti(cord_phantom_volume(seed=1), name="store/blob.nii.gz")
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    link = tmp_path / "sub-01" / "anat" / "t2s.nii.gz"
    link.symlink_to(real)
    monkeypatch.chdir(link.parent)
    [job] = plan_files(["t2s.nii.gz"], BatchSettings(model="tiny", device="cpu"))
    assert job.subject == "sub-01" == guess_subject(Path("t2s.nii.gz").absolute())
