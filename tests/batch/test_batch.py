"""Batches on real data: a synthetic BIDS dataset built from ../shared images (several subjects and
sessions, three storage orientations, a manual cord mask in derivatives/labels, a truncated file, a
sagittal image), segmented once sequentially (the reference), then compared byte for byte with a
rerun, a run interrupted and resumed, ``-j 2`` and a Dask ``LocalCluster``."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from nibabel import orientations as ornt

from sctgm.cli import main

from ..conftest import LABELLED, MODELS_DIR, REPO, dice
from .test_bids import assert_entity_order

pytestmark = pytest.mark.slow

CHALLENGE_SHA256 = "9b44228ad2fd360930b9d7fc6957a4eb7acbfa8cf6a091d13a932f8e8815dd9e"
FLAGS = ["-m", "challenge", "--wm", "--prob"]
T2S, T2S_GM, T2S_CORD = LABELLED["t2s"]
MT1 = LABELLED["mt1"][0]
#: The raw images the batch must find (T2star), in processing order, and how each must end.
EXPECTED = {
    "sub-01/ses-01/anat/sub-01_ses-01_T2star.nii.gz": "ok",
    "sub-01/ses-02/anat/sub-01_ses-02_acq-cspine_run-1_T2star.nii.gz": "ok",
    "sub-02/anat/sub-02_T2star.nii.gz": "ok",
    "sub-03/anat/sub-03_T2star.nii.gz": "failed",  # truncated
    "sub-04/anat/sub-04_T2star.nii.gz": "failed",  # sagittal
}


def _reoriented(img: nib.Nifti1Image, axcodes: str) -> nib.Nifti1Image:
    return img.as_reoriented(ornt.ornt_transform(ornt.io_orientation(img.affine), ornt.axcodes2ornt(tuple(axcodes))))


def build_dataset(root: Path) -> Path:
    anat = {k: root / k for k in EXPECTED}
    for p in anat.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.10.0"}))
    t2s = nib.load(str(T2S))
    shutil.copy(T2S, root / "sub-01/ses-01/anat/sub-01_ses-01_T2star.nii.gz")           # LAS, as stored
    nib.save(_reoriented(t2s, "RPI"), str(root / "sub-01/ses-02/anat/sub-01_ses-02_acq-cspine_run-1_T2star.nii.gz"))
    nib.save(_reoriented(nib.load(str(MT1)), "PIR"), str(root / "sub-02/anat/sub-02_T2star.nii.gz"))
    shutil.copy(MT1, root / "sub-02/anat/sub-02_flip-1_mt-on_MTS.nii.gz")                # another suffix: not picked
    raw = T2S.read_bytes()
    (root / "sub-03/anat/sub-03_T2star.nii.gz").write_bytes(raw[: len(raw) // 2])        # truncated
    sagittal = np.ascontiguousarray(t2s.get_fdata(dtype=np.float32).transpose(2, 0, 1))  # 7.5 mm along R-L
    nib.save(nib.Nifti1Image(sagittal, np.diag([7.5, 0.5, 0.5, 1.0])), str(root / "sub-04/anat/sub-04_T2star.nii.gz"))
    labels = root / "derivatives/labels/sub-01/ses-01/anat"
    labels.mkdir(parents=True)
    shutil.copy(T2S_CORD, labels / "sub-01_ses-01_T2star_label-SC_seg.nii.gz")
    (root / "sourcedata/sub-05/anat").mkdir(parents=True)
    shutil.copy(T2S, root / "sourcedata/sub-05/anat/sub-05_T2star.nii.gz")              # never an input
    return root


def _segment(*args: str):
    """The CLI in-process; the 'sctgm' logger is restored after it (module-scoped fixtures run it
    outside the per-test restore of conftest.py)."""
    logger = logging.getLogger("sctgm")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        return CliRunner().invoke(main, ["segment", *args], catch_exceptions=False)
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def dataset_files(deriv: Path) -> dict[str, bytes]:
    """Every file of a derivative dataset except the per-run tables (timings, absolute paths)."""
    return {p.relative_to(deriv).as_posix(): p.read_bytes() for p in sorted(deriv.rglob("*"))
            if p.is_file() and p.name not in ("summary.tsv", "morphometry.csv")}


def read_summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_data, shared_models):
    """A module-wide HOME/cache and model mirror, and PYTHONPATH so that spawned workers import this tree."""
    home = tmp_path_factory.mktemp("batch-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        mp.delenv("SCTGM_HOME", raising=False)
        mp.setenv("SCTGM_MIRROR", str(MODELS_DIR))
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        yield


@pytest.fixture(scope="module")
def dataset(env, tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("bids") / "ds")


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """The sequential run: every engine and every resumed run must reproduce its files exactly."""
    qc = tmp_path_factory.mktemp("qc")
    res = _segment("--bids", str(dataset), *FLAGS, "--metrics", "--qc", str(qc))
    deriv = dataset / "derivatives" / "sct-gm"
    return SimpleNamespace(result=res, deriv=deriv, qc=qc, files=dataset_files(deriv))


@pytest.fixture(scope="module")
def cluster(env):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_bids_batch_writes_bids_named_derivatives_with_sidecars(dataset, reference):
    assert reference.result.exit_code == 1, reference.result.output  # two images failed
    files = set(reference.files)
    expected = {"dataset_description.json"}
    for rel, status in EXPECTED.items():
        if status != "ok":
            continue
        stem = rel[: -len(".nii.gz")]
        kinds = ["GM_seg", "GM_probseg"] + (["WM_seg"] if "ses-01" in rel else [])  # only ses-01 has a cord mask
        expected |= {f"{stem}_label-{k}{ext}" for k in kinds for ext in (".nii.gz", ".json")}
    assert files == expected
    for name in files:
        assert_entity_order(Path(name).name)

    desc = json.loads((reference.deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "sct-gm"
    raw_root = (reference.deriv / desc["DatasetLinks"]["raw"]).resolve()
    assert raw_root == dataset.resolve()
    for name in (n for n in files if n.endswith(".json") and n != "dataset_description.json"):
        meta = json.loads((reference.deriv / name).read_text())
        assert meta["SpatialReference"] == "orig"
        gen = meta["GeneratedBy"][0]
        assert (gen["Name"], gen["Model"]["Name"], gen["Model"]["Sha256"]) == ("sct-gm", "challenge", CHALLENGE_SHA256)
        assert gen["Parameters"]["threshold"] == 0.999 and gen["Parameters"]["keep_largest"] is True
        for uri in meta["Sources"]:  # BIDS URIs resolved through DatasetLinks name existing raw files
            assert uri.startswith("bids:raw:") and (raw_root / uri[len("bids:raw:"):]).is_file(), uri
        assert Path(meta["Sources"][0]).name.replace(".nii.gz", "") in name
    with_cord = json.loads((reference.deriv / "sub-01/ses-01/anat/sub-01_ses-01_T2star_label-GM_seg.json").read_text())
    assert with_cord["Sources"] == [
        "bids:raw:sub-01/ses-01/anat/sub-01_ses-01_T2star.nii.gz",
        "bids:raw:derivatives/labels/sub-01/ses-01/anat/sub-01_ses-01_T2star_label-SC_seg.nii.gz"]

    for rel, status in EXPECTED.items():  # masks: uint8 0/1 on the input's own grid, whatever its orientation
        if status == "ok":
            src = nib.load(str(dataset / rel))
            seg = nib.load(str(reference.deriv / rel.replace(".nii.gz", "_label-GM_seg.nii.gz")))
            assert seg.shape == src.shape and np.array_equal(seg.affine, src.affine)
            assert seg.get_data_dtype() == np.uint8 and set(np.unique(np.asanyarray(seg.dataobj))) == {0, 1}
    rpi = nib.load(str(reference.deriv / "sub-01/ses-02/anat/sub-01_ses-02_acq-cspine_run-1_T2star_label-GM_seg.nii.gz"))
    back = _reoriented(rpi, "".join(nib.aff2axcodes(nib.load(str(T2S_GM)).affine)))
    assert dice(np.asanyarray(back.dataobj), nib.load(str(T2S_GM)).get_fdata()) > 0.85
    assert not (dataset / "derivatives/sct-gm/sub-05").exists() and not list(reference.deriv.rglob("*MTS*"))


def test_bids_batch_records_failures_in_the_summary(dataset, reference):
    rows = read_summary(reference.deriv / "summary.tsv")
    assert list(rows[0]) == ["subject", "session", "input", "status", "message", "gm_volume_mm3", "seconds"]
    assert [(r["input"], r["status"]) for r in rows] == list(EXPECTED.items())
    assert [(r["subject"], r["session"]) for r in rows[:3]] == [("sub-01", "ses-01"), ("sub-01", "ses-02"),
                                                                ("sub-02", "n/a")]
    assert "truncated or corrupt" in rows[3]["message"]
    assert "sagittal or coronal" in rows[4]["message"] and "NotAxial" not in rows[4]["message"]
    for r in rows[:3]:
        assert float(r["gm_volume_mm3"]) > 100 and float(r["seconds"]) >= 0
    assert rows[3]["gm_volume_mm3"] == "n/a"
    assert "no cord mask in derivatives/labels" in rows[1]["message"]
    # the summary also goes to stdout, and the counts to stderr
    assert "sub-04/anat/sub-04_T2star.nii.gz\tfailed" in reference.result.stdout
    assert "5 images: 3 ok, 0 skipped, 2 failed" in reference.result.stderr


def test_bids_batch_metrics_and_qc_cover_every_segmented_image(reference):
    with open(reference.deriv / "morphometry.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:3] == ["subject", "session", "input"]
    by_input: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_input.setdefault(r["input"], []).append(r)
    ok = [k for k, v in EXPECTED.items() if v == "ok"]
    assert list(by_input) == ok
    assert [len(by_input[k]) for k in ok] == [9, 9, 5]  # one row per axial slice
    assert all(r["cord_area_mm2"] for r in by_input[ok[0]]) and not any(r["cord_area_mm2"] for r in by_input[ok[1]])
    assert sum(float(r["gm_area_mm2"]) for r in by_input[ok[2]]) > 0

    from sctgm.qc.report import read_entries

    entries = read_entries(reference.qc)
    assert sorted(e["subject"] for e in entries) == ["sub-01_ses-01", "sub-01_ses-02", "sub-02"]
    assert (reference.qc / "index.html").is_file()


def test_rerun_skips_valid_outputs_and_redoes_damaged_ones(dataset, reference):
    deriv = dataset / "derivatives" / "rerun"
    shutil.copytree(reference.deriv, deriv)
    anat = {k: deriv / Path(k).parent for k in EXPECTED}
    gm_sub02 = deriv / "sub-02/anat/sub-02_T2star_label-GM_seg.nii.gz"
    gm_sub02.write_bytes(gm_sub02.read_bytes()[:-40])  # truncated mask
    sidecar = deriv / "sub-01/ses-02/anat/sub-01_ses-02_acq-cspine_run-1_T2star_label-GM_seg.json"
    meta = json.loads(sidecar.read_text())
    meta["GeneratedBy"][0]["Parameters"]["threshold"] = 0.5  # made with another threshold
    sidecar.write_text(json.dumps(meta))
    stale = anat["sub-02/anat/sub-02_T2star.nii.gz"] / ".sub-02_T2star_label-GM_seg.k3x9.part.nii.gz"
    stale.write_bytes(b"left by a killed run")

    res = _segment("--bids", str(dataset), *FLAGS, "--derivatives", str(deriv), "-q")
    assert res.exit_code == 1
    assert [r["status"] for r in read_summary(deriv / "summary.tsv")] == ["skipped", "ok", "ok", "failed", "failed"]
    assert dataset_files(deriv) == reference.files and not stale.exists()

    res = _segment("--bids", str(dataset), *FLAGS, "--derivatives", str(deriv), "-q", "--overwrite",
                   "--participant-label", "02", "--summary", str(deriv / "again.tsv"))
    assert res.exit_code == 0
    assert [(r["input"], r["status"]) for r in read_summary(deriv / "again.tsv")] == [
        ("sub-02/anat/sub-02_T2star.nii.gz", "ok")]
    files = dataset_files(deriv)
    assert files.pop("again.tsv") and files == reference.files


def _complete(deriv: Path, reference) -> list[str]:
    """The GM sidecars (names as in ``reference.files``) of the images whose outputs are all in ``deriv``:
    sidecars are renamed into place first, so a sidecar alone is an image still being written."""
    sidecars = [r for r in reference.files if r.endswith("_label-GM_seg.json")]
    outputs = {r: [f for f in reference.files if f.startswith(r[:-len("label-GM_seg.json")])] for r in sidecars}
    return [r for r in sidecars if all((deriv / f).exists() for f in outputs[r])]


@pytest.mark.parametrize("sig, extra", [(signal.SIGINT, []), (signal.SIGKILL, []), (signal.SIGINT, ["-j", "2"]),
                                        (signal.SIGTERM, ["-j", "2"])],
                         ids=["SIGINT", "SIGKILL", "SIGINT-j2", "SIGTERM-j2"])
def test_interrupted_batch_resumes_to_the_same_dataset(dataset, reference, sig, extra):
    deriv = dataset / "derivatives" / f"interrupted-{sig.name}{len(extra)}"
    cmd = [sys.executable, "-m", "sctgm", "segment", "--bids", str(dataset), *FLAGS, "--derivatives", str(deriv), "-q",
           *extra]
    # SIGINT back to its default in the child: a suite started in the background by a shell without job
    # control inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not _complete(deriv, reference):  # the first image is complete
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch wrote nothing in 180 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig != signal.SIGKILL:  # SIGTERM (a scheduler's cancel, `timeout`) ends a batch as Ctrl-C does
        assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
        assert "interrupted" in err and "resume" in err and "Traceback" not in err and "resource_tracker" not in err
        assert not [p for p in deriv.rglob("*") if ".part" in p.name]  # Ctrl-C leaves no temporary file
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (deriv / "summary.tsv").exists()  # the batch did not get to its end
    done = _complete(deriv, reference)
    if not extra:  # sequential: the images after the one being segmented were not started
        assert 1 <= len(done) < 3, "the signal must arrive part-way through the batch"
    if sig != signal.SIGKILL:  # the message counts what is on disk (with -j 2: the images in flight too)
        counted = re.search(r"images? finished \((\d+) segmented\)", err)
        # sequential: a signal landing between an image's last rename and its record leaves it uncounted
        assert counted and int(counted.group(1)) in ((len(done),) if extra else (len(done) - 1, len(done))), (err, done)
    for r in done:  # whatever looks complete is complete
        assert (deriv / r.replace(".json", ".nii.gz")).read_bytes() == reference.files[r.replace(".json", ".nii.gz")]

    res = _segment("--bids", str(dataset), *FLAGS, "--derivatives", str(deriv), "-q")
    assert res.exit_code == 1
    statuses = [r["status"] for r in read_summary(deriv / "summary.tsv")]
    assert statuses.count("skipped") == len(done) and statuses.count("failed") == 2
    assert dataset_files(deriv) == reference.files
    assert not [p for p in deriv.rglob("*") if ".part" in p.name]


def test_process_pool_gives_byte_identical_outputs(dataset, reference):
    deriv = dataset / "derivatives" / "jobs2"
    res = _segment("--bids", str(dataset), *FLAGS, "--derivatives", str(deriv), "-j", "2")
    assert res.exit_code == 1, res.output
    assert [r["status"] for r in read_summary(deriv / "summary.tsv")] == list(EXPECTED.values())
    assert dataset_files(deriv) == reference.files  # masks, float32 probability maps and sidecars


def test_dask_local_cluster_gives_byte_identical_outputs(dataset, reference, cluster):
    deriv = dataset / "derivatives" / "dask"
    res = _segment("--bids", str(dataset), *FLAGS, "--derivatives", str(deriv), "--scheduler", cluster.scheduler_address)
    assert res.exit_code == 1, res.output
    rows = read_summary(deriv / "summary.tsv")
    assert [r["status"] for r in rows] == list(EXPECTED.values()) and "sagittal" in rows[4]["message"]
    assert dataset_files(deriv) == reference.files


def test_dask_scheduler_file_and_errors(cluster, tmp_path, monkeypatch):
    import dask

    from sctgm.batch.executors.dask import connect
    from sctgm.exceptions import ExecutorError

    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": cluster.scheduler_address}))
    client = connect(scheduler_file)
    try:
        assert len(client.scheduler_info()["workers"]) == 2
    finally:
        client.close()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ExecutorError, match="absent.json: no such scheduler file"):
        connect(tmp_path / "absent.json")
    inputs = [str(shutil.copy(src, tmp_path / src.name)) for src in (T2S, MT1)]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = _segment("-i", *inputs, "-m", "challenge", "--scheduler", "tcp://127.0.0.1:9")
    assert res.exit_code == 5 and "cannot reach the Dask scheduler tcp://127.0.0.1:9" in res.stderr
    # a listener that is no scheduler (a dashboard's port): it accepts and never answers; distributed
    # alone would wait forever
    import socket

    from sctgm.batch.executors import dask as dask_executor

    monkeypatch.setattr(dask_executor, "HANDSHAKE_MARGIN_S", 1.0)
    with socket.create_server(("127.0.0.1", 0)) as mute, dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = _segment("-i", *inputs, "-m", "challenge", "--scheduler", f"tcp://127.0.0.1:{mute.getsockname()[1]}")
    assert res.exit_code == 5 and "gave no Dask handshake in 2 s" in res.stderr and res.stderr.count("\n") == 1
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    res = _segment("-i", *inputs, "-m", "challenge", "--scheduler", cluster.scheduler_address)
    assert res.exit_code == 5 and "pip install 'sctgm[dask]'" in res.stderr
    assert not list(tmp_path.glob("*_gmseg*"))


def test_file_batch_writes_beside_each_input_and_resumes(tmp_path, shared_data, shared_models):
    for src in (T2S, MT1):
        shutil.copy(src, tmp_path / src.name)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    summary = tmp_path / "summary.tsv"
    res = _segment("-i", str(tmp_path / "*.nii.gz"), "-m", "challenge", "--summary", str(summary),
                   "--metrics", str(tmp_path / "areas.csv"))
    assert res.exit_code == 1
    rows = read_summary(summary)
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [
        ("broken.nii.gz", "failed"), ("mt1.nii.gz", "ok"), ("t2s.nii.gz", "ok")]
    assert (tmp_path / "t2s_gmseg.nii.gz").is_file() and (tmp_path / "mt1_gmseg.json").is_file()
    meta = json.loads((tmp_path / "t2s_gmseg.json").read_text())
    assert meta["GeneratedBy"][0]["Model"]["Sha256"] == CHALLENGE_SHA256
    with open(tmp_path / "areas.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 9 + 5
    before = (tmp_path / "t2s_gmseg.nii.gz").read_bytes()
    # the glob now also matches the masks: they are left out, and valid outputs are kept
    res = _segment("-i", str(tmp_path / "*.nii.gz"), "-m", "challenge", "--summary", str(summary))
    assert [r["status"] for r in read_summary(summary)] == ["failed", "skipped", "skipped"]
    assert "left out 2 inputs that are sct-gm outputs" in res.stderr
    assert (tmp_path / "t2s_gmseg.nii.gz").read_bytes() == before
    res = _segment("-i", str(tmp_path / "t2s.nii.gz"), str(tmp_path / "mt1.nii.gz"), "-o", str(tmp_path / "x.nii.gz"))
    assert res.exit_code == 3 and "one output file name given for 2 inputs" in res.stderr
    assert "(option -o/--output)" in res.stderr


def test_a_client_that_answers_after_the_deadline_is_closed(monkeypatch):
    """A scheduler answering only after sct-gm gave up: the client made then is closed, not left
    connected as the process's default client."""
    import threading

    import dask

    from sctgm.batch.executors import dask as dask_executor
    from sctgm.exceptions import ExecutorError

    answered, closed = threading.Event(), threading.Event()

    class LateClient:
        def close(self) -> None:
            closed.set()

    def make():
        answered.wait(60)  # answers once the caller has given up
        return LateClient()

    monkeypatch.setattr(dask_executor, "HANDSHAKE_MARGIN_S", 0.0)
    with dask.config.set({"distributed.comm.timeouts.connect": "0.2s"}), pytest.raises(ExecutorError):
        dask_executor._within_deadline(make, "tcp://late:8786")
    answered.set()
    assert closed.wait(60)
