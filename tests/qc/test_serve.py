"""The review server (sct-gm qc --serve) over HTTP: what it serves, what it refuses, what it writes."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from sctgm.exceptions import InvalidOptionError, QcError
from sctgm.filesystem import file_sha256
from sctgm.naming import split_nifti_name
from sctgm.qc import corrections
from sctgm.qc.render import to_display
from sctgm.qc.serve import start_server

from . import editing


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.endswith(".lock")}


def slice_of(run, entry_id: str, k: int) -> dict:
    r = requests.get(f"{run.base}api/entries/{entry_id}/slices/{k}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def post(run, entry_id: str, k: int, body: bytes, *, base: str | None = None, ctype="application/octet-stream"):
    return requests.post(f"{base or run.base}api/entries/{entry_id}/slices/{k}", data=body,
                         headers={"Content-Type": ctype}, timeout=10)


def mask_of(view: dict, key: str = "mask") -> np.ndarray:
    return np.frombuffer(base64.b64decode(view[key]), np.uint8).reshape(view["rows"], view["cols"]).copy()


@pytest.mark.parametrize("sub,codes", [("sub-01", "RPI"), ("sub-02", "LAS")])
def test_a_saved_slice_lands_on_the_image_grid_exactly(site, sub, codes):
    run, paths, _ = site
    eid = paths[sub]["entry"].name
    image_sha = file_sha256(paths[sub]["image"])
    view = slice_of(run, eid, 4)
    img = nib.load(str(paths[sub]["image"]))
    # the image the editor shows is the file's slice, in display orientation
    shown = np.frombuffer(base64.b64decode(view["image"]), "<f4").reshape(view["rows"], view["cols"])
    expected = np.zeros_like(shown)
    for r in range(view["rows"]):
        for c in range(view["cols"]):
            expected[r, c] = np.asarray(img.dataobj)[editing.file_voxel(codes, r, c, 4)]
    np.testing.assert_array_equal(shown, expected)
    m = mask_of(view)
    painted = [(3, 4), (3, 5), (20, 30)]
    for r, c in painted:
        m[r, c] = 1
    erased = [tuple(v) for v in np.argwhere(m == 1)[:2] if tuple(v) not in painted]
    for r, c in erased:
        m[r, c] = 0
    res = post(run, eid, 4, m.tobytes())
    assert res.status_code == 200, res.text
    assert res.json()["saved_slices"] == [4]
    label = nib.load(str(paths[sub]["label"]))
    auto = np.asarray(nib.load(str(paths[sub]["auto"])).dataobj)
    got = np.asarray(label.dataobj)
    want = {editing.file_voxel(codes, r, c, 4) for r, c in painted + erased}
    assert {tuple(v) for v in np.argwhere(got != auto)} == want
    assert np.allclose(label.affine, img.affine) and nib.aff2axcodes(label.affine) == tuple(codes)
    assert label.header.get_data_dtype() == np.uint8
    side = json.loads(paths[sub]["label"].with_name(paths[sub]["label"].name.replace(".nii.gz", ".json")).read_text())
    assert side["LabelledSlices"] == [4] and side["SliceAxis"] == 2
    assert side["GeneratedBy"][0]["StartedFrom"]["SHA256"] == file_sha256(paths[sub]["auto"])
    assert side["Corrections"][0]["Slice"] == 4
    # the image and the automatic mask are untouched; the report lists the slice
    assert np.array_equal(np.asarray(nib.load(str(paths[sub]["auto"])).dataobj), auto)
    assert file_sha256(paths[sub]["image"]) == image_sha
    assert '"corrected_slices":[4]' in (paths[sub]["entry"].parents[1] / "index.js").read_text()


def test_saving_again_keeps_earlier_slices_and_the_editor_reopens_them(site):
    run, paths, _ = site
    eid = paths["sub-02"]["entry"].name
    m = mask_of(slice_of(run, eid, 1))
    m[0, 0] = 1
    assert post(run, eid, 1, m.tobytes()).status_code == 200
    m2 = mask_of(slice_of(run, eid, 3))
    assert post(run, eid, 3, m2.tobytes()).status_code == 200  # saved unchanged: reviewed as right
    view = slice_of(run, eid, 1)
    assert view["saved"] and view["saved_slices"] == [1, 3] and mask_of(view)[0, 0] == 1
    assert mask_of(view, "automatic")[0, 0] == 0


def test_concurrent_saves_of_one_file_are_serialised(site):
    run, paths, _ = site
    eid = paths["sub-01"]["entry"].name
    bodies = {}
    for k in range(6):
        m = mask_of(slice_of(run, eid, k))
        m[k, k] = 1
        bodies[k] = m.tobytes()
    threads = [threading.Thread(target=post, args=(run, eid, k, bodies[k])) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.asarray(nib.load(str(paths["sub-01"]["label"])).dataobj)
    auto = np.asarray(nib.load(str(paths["sub-01"]["auto"])).dataobj)
    assert {tuple(v) for v in np.argwhere(got != auto)} == {editing.file_voxel("RPI", k, k, k) for k in range(6)}
    assert corrections.labels.labelled_slices_of(paths["sub-01"]["label"]) == tuple(range(6))
    assert not [p for p in paths["sub-01"]["label"].parent.iterdir() if ".part" in p.name]



def test_two_editors_of_one_image_keep_each_others_slices(tmp_path):
    """Two review servers (here two opened entries, as two processes hold them) show the same image:
    one saves slice 0, then the other, opened before that save, saves slice 2. Both corrections are
    in the file and the sidecar, instead of the second writing the automatic slice 0 back over the
    first reviewer's while its sidecar still calls slice 0 manually labelled."""
    from sctgm.qc import report

    paths = editing.build(tmp_path, {"sub-01": "RPI"}, prob=False)
    entry = report.read_entries(tmp_path / "qc")[0]
    first, second = corrections.open_entry(entry), corrections.open_entry(entry)
    for vol, k in ((first, 0), (second, 2)):
        m = to_display(vol.current[:, :, vol.canonical_index(k)]).copy()
        m[k, k] = 1 - m[k, k]
        corrections.save_slice(vol, k, m)
    got = np.asarray(nib.load(str(paths["sub-01"]["label"])).dataobj)
    auto = np.asarray(nib.load(str(paths["sub-01"]["auto"])).dataobj)
    assert {tuple(v) for v in np.argwhere(got != auto)} == {editing.file_voxel("RPI", k, k, k) for k in (0, 2)}
    assert corrections.labels.labelled_slices_of(paths["sub-01"]["label"]) == (0, 2)
    assert second.saved == [0, 2]


def test_a_save_waits_for_another_process_saving_into_the_folder(tmp_path, monkeypatch):
    """While another save holds the labels folder (another review server, here the lock taken by the
    test), a save waits, then lands; past the timeout it is refused in one line, nothing written.
    The lock leaves no file behind in the labels folder."""
    import time

    from sctgm.qc import report

    paths = editing.build(tmp_path, {"sub-01": "LAS"}, prob=False)
    vol = corrections.open_entry(report.read_entries(tmp_path / "qc")[0])
    m = to_display(vol.current[:, :, vol.canonical_index(1)]).copy()
    m[1, 1] = 1 - m[1, 1]
    label = paths["sub-01"]["label"]
    before = sorted(p.name for p in label.parent.iterdir()) if label.parent.exists() else []
    with corrections.save_lock(vol.target):
        saver = threading.Thread(target=corrections.save_slice, args=(vol, 1, m))
        saver.start()
        time.sleep(0.5)
        assert saver.is_alive() and not label.exists()  # waiting
    saver.join(timeout=30)
    assert not saver.is_alive() and corrections.labels.labelled_slices_of(label) == (1,)
    assert sorted(p.name for p in label.parent.iterdir()) == sorted(before + [label.name, corrections.labels.sidecar_of(label).name])
    monkeypatch.setattr(corrections, "SAVE_LOCK_TIMEOUT_S", 0.2)
    written = label.read_bytes()
    with corrections.save_lock(vol.target):
        with pytest.raises(QcError, match="another save into .* not saved"):
            corrections.save_slice(vol, 2, m)
    assert label.read_bytes() == written

def test_refusals_write_nothing(site):
    run, paths, root = site
    eid = paths["sub-01"]["entry"].name
    before = files_under(root)
    good = mask_of(slice_of(run, eid, 2)).tobytes()
    port = run.port
    bad_token = f"http://127.0.0.1:{port}/{'x' * len(run.server.token)}/"
    assert requests.get(f"http://127.0.0.1:{port}/index.html", timeout=5).status_code == 403  # no token
    assert requests.get(f"{bad_token}index.html", timeout=5).status_code == 403
    assert post(run, eid, 2, good, base=f"http://127.0.0.1:{port}/").status_code == 403
    assert post(run, eid, 2, good, base=bad_token).status_code == 403
    # paths outside the QC folder, or not an entry id
    for rest in ("../ds/dataset_description.json", "..%2F..%2Fds%2Fdataset_description.json", "report.json",
                 "entries/../../ds/sub-01/anat/sub-01_T2star.nii.gz", ".sctgm-qc.lock"):
        assert requests.get(run.base + rest, timeout=5).status_code in (403, 404), rest
    for entry in ("..", "..%2F..%2Fds", ".hidden", "nope"):
        assert post(run, entry, 2, good).status_code in (400, 404), entry
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # raw: no client-side path normalising
    conn.request("POST", f"/{run.server.token}/api/entries/../../ds/slices/2", body=good,
                 headers={"Content-Type": "application/octet-stream"})
    assert conn.getresponse().status == 404
    # malformed masks
    assert post(run, eid, 2, good[:-1]).status_code == 400
    assert post(run, eid, 2, good + b"\x00").status_code == 400
    assert post(run, eid, 2, bytes([2]) + good[1:]).status_code == 400
    assert post(run, eid, 2, bytes([255]) * len(good)).status_code == 400
    assert post(run, eid, 99, good).status_code == 400  # no such slice
    assert post(run, eid, 2, good, ctype="application/x-www-form-urlencoded").status_code == 415
    # another Host (DNS rebinding) or Origin (another site's page)
    assert requests.get(run.base + "index.html", headers={"Host": "evil.example:80"}, timeout=5).status_code == 403
    assert requests.post(f"{run.base}api/entries/{eid}/slices/2", data=good, timeout=5,
                         headers={"Content-Type": "application/octet-stream",
                                  "Origin": "http://evil.example"}).status_code == 403
    assert files_under(root) == before


def test_only_loopback_and_only_qc_folders(tmp_path):
    paths = editing.build(tmp_path, {"sub-01": "LAS"})
    for host in ("0.0.0.0", "192.168.1.2", "::", "example.org"):
        with pytest.raises(InvalidOptionError, match="127.0.0.1 only"):
            start_server(tmp_path / "qc", host=host)
    with pytest.raises(QcError, match="not a QC report"):
        start_server(tmp_path / "ds")
    assert paths["sub-01"]["image"].exists()


def test_a_mask_not_written_by_the_editor_is_never_overwritten(site):
    run, paths, _ = site
    eid = paths["sub-02"]["entry"].name
    label = paths["sub-02"]["label"]
    editing.save(label, editing.phantom()[2], "LAS", np.uint8)  # a hand-made label, no sidecar
    before = label.read_bytes()
    m = mask_of(slice_of(run, eid, 2))
    r = post(run, eid, 2, m.tobytes())
    assert r.status_code == 400 and "not written by sct-gm" in r.json()["error"]
    assert label.read_bytes() == before


def test_display_mapping_is_an_exact_inverse():
    a = np.arange(7 * 5).reshape(7, 5)
    assert np.array_equal(corrections.from_display(to_display(a)), a)


KILLED_WRITER = """
import sys, time, numpy as np, nibabel as nib
import sctgm.io
from sctgm.qc import corrections, report
real = nib.save
def slow_save(img, path):
    real(img, path)
    with open(path, "r+b") as f:
        f.truncate(100)  # half a file, at the temporary name
    open(sys.argv[3], "w").close()
    time.sleep(60)
sctgm.io.nib.save = slow_save
entry = [e for e in report.read_entries(sys.argv[1]) if e["id"] == sys.argv[2]][0]
vol = corrections.open_entry(entry)
m = corrections.render.to_display(vol.current[:, :, 0]).copy()
m[:] = 1
corrections.save_slice(vol, 0, m)
"""


def test_a_killed_save_leaves_the_previous_files_whole(site):
    import os
    import signal
    import subprocess
    import sys
    import time

    run, paths, root = site
    eid = paths["sub-02"]["entry"].name
    m = mask_of(slice_of(run, eid, 1))
    m[0, 0] = 1
    assert post(run, eid, 1, m.tobytes()).status_code == 200
    label, sidecar = paths["sub-02"]["label"], corrections.labels.sidecar_of(paths["sub-02"]["label"])
    before = (label.read_bytes(), sidecar.read_bytes())
    marker = root / "writing"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(root / "qc"), eid, str(marker)],
                            env={**os.environ, "PYTHONPATH": str(Path(corrections.__file__).parents[2])})
    try:
        deadline = time.time() + 60
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the writer did not reach the save"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (label.read_bytes(), sidecar.read_bytes()) == before
    assert np.asarray(nib.load(str(label)).dataobj)[0, 31 - 0, 1] == 1  # still readable, still the old save


@pytest.mark.parametrize("stop, code", [("SIGINT", 0), ("SIGTERM", 143)])
def test_cli_serves_until_interrupted(tmp_path, stop, code):
    """Ctrl-C stops the server as its normal end (exit 0); SIGTERM (a scheduler's cancel) with 143."""
    import os
    import signal
    import subprocess
    import sys

    editing.build(tmp_path, {"sub-01": "LAS"}, prob=False)
    # a suite started in the background (`pytest &`, nohup) inherits SIGINT ignored, and so would the
    # server: give it Ctrl-C as a terminal would
    proc = subprocess.Popen([sys.executable, "-m", "sctgm", "qc", "--serve", str(tmp_path / "qc")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(corrections.__file__).parents[2])},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        proc.stdout.readline()
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/index.html")
        assert requests.get(url, timeout=10).status_code == 200
        assert requests.get(url.rsplit("/", 2)[0] + "/index.html", timeout=10).status_code == 403
    finally:
        proc.send_signal(getattr(signal, stop))
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a server behind
            out, err = proc.communicate()
    assert proc.returncode == code and "Stopped." in out, err


def test_a_batch_rerun_keeps_the_corrections_and_its_entries_list_them(site, tiny_model):
    from sctgm.batch import BatchSettings, segment_bids

    run, paths, root = site
    eid = paths["sub-02"]["entry"].name
    m = mask_of(slice_of(run, eid, 2))
    m[1, 1] = 1
    assert post(run, eid, 2, m.tobytes()).status_code == 200
    label = paths["sub-02"]["label"]
    before = (label.read_bytes(), labels_sidecar(label).read_bytes())
    for _ in range(2):  # the second run finds valid outputs and skips, or (overwrite) segments again
        res = segment_bids(root / "ds", BatchSettings(model=tiny_model(), device="cpu", qc_dir=root / "qc",
                                                      overwrite=True),
                           derivatives=root / "ds" / "derivatives" / "rerun", suffixes=["T2star"], cord_labels=False)
        assert res.count("ok") == 2
    assert (label.read_bytes(), labels_sidecar(label).read_bytes()) == before
    index = json.loads((root / "qc" / "index.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    rerun = [e for e in index["entries"] if "derivatives/rerun/" in e["gmseg"] and "sub-02" in e["image"]]
    assert len(rerun) == 1, [(e["id"], e["image"], e["gmseg"]) for e in rerun]
    assert rerun[0]["corrected_slices"] == [2] and rerun[0]["correction"] == str(label)
    assert all(e["corrected_slices"] == [] for e in index["entries"] if "sub-01" in e["image"])


def labels_sidecar(mask: Path) -> Path:
    return corrections.labels.sidecar_of(mask)


def test_cli_serve_takes_the_folder_alone(tmp_path):
    from click.testing import CliRunner

    from sctgm.cli import main

    r = CliRunner().invoke(main, ["qc", "--serve", str(tmp_path), "-i", "x.nii.gz"])
    assert r.exit_code == 2 and "--serve takes the QC folder alone" in r.output
    r = CliRunner().invoke(main, ["qc"])
    assert r.exit_code == 2 and "-i/--image" in r.output
    r = CliRunner().invoke(main, ["qc", "--serve", str(tmp_path)])
    assert r.exit_code != 0 and "not a QC report folder" in r.output and not list(tmp_path.iterdir())


def test_outside_bids_the_correction_goes_beside_the_image(tmp_path):
    from sctgm.qc import add_entry
    from sctgm.training.sources import from_pairs

    img, _, gm = editing.phantom()
    image = editing.save(tmp_path / "scans" / "t2s.nii.gz", img, "RPI")
    auto = editing.save(tmp_path / "scans" / "t2s_gmseg.nii.gz", gm, "RPI", np.uint8)
    entry = add_entry(tmp_path / "qc", image, auto)
    image_bytes, auto_bytes = image.read_bytes(), auto.read_bytes()
    run = editing.Running(tmp_path / "qc")
    try:
        view = slice_of(run, entry.name, 5)
        assert view["target"] == str(tmp_path / "scans" / "t2s_gmseg-manual.nii.gz") and view["prob"] is None
        m = mask_of(view)
        m[2, 3] = 1
        assert post(run, entry.name, 5, m.tobytes()).status_code == 200
    finally:
        run.stop()
    manual = tmp_path / "scans" / "t2s_gmseg-manual.nii.gz"
    got, want = np.asarray(nib.load(str(manual)).dataobj), np.asarray(nib.load(str(auto)).dataobj)
    assert {tuple(v) for v in np.argwhere(got != want)} == {editing.file_voxel("RPI", 2, 3, 5)}
    assert (image.read_bytes(), auto.read_bytes()) == (image_bytes, auto_bytes)
    assert sorted(p.name for p in manual.parent.iterdir()) == ["t2s.nii.gz", "t2s_gmseg-manual.json",
                                                               "t2s_gmseg-manual.nii.gz", "t2s_gmseg.nii.gz"]
    assert from_pairs([image], [manual])[0].slices == (5,)
    from sctgm.batch import BatchSettings, plan_files

    jobs = plan_files([str(tmp_path / "scans" / "*.nii.gz")], BatchSettings(model="tiny", device="cpu"))
    assert [j.input.name for j in jobs] == ["t2s.nii.gz"]  # a batch never takes the correction for an image


def test_a_foreign_sidecar_where_the_record_would_go_opens_read_only(site):
    """A sidecar that sct-gm's editor did not write, where the correction's record would go (no mask
    yet): the save would be refused, so the slice view says read-only before any work is drawn."""
    run, paths, tmp_path = site
    eid = paths["sub-02"]["entry"].name
    mine = split_nifti_name(paths["sub-02"]["label"])[0] + ".json"
    Path(mine).write_text('{"note": "mine"}\n')
    before = files_under(tmp_path / "ds")
    view = slice_of(run, eid, 4)
    assert not view["editable"] and Path(mine).name in view["read_only_reason"]
    r = post(run, eid, 4, mask_of(view).tobytes())
    assert r.status_code == 400 and files_under(tmp_path / "ds") == before


@pytest.mark.parametrize("name", ["sub-02_T2star_gmseg-manual.nii.gz", "sub-02_T2star_gmseg-manual.nii",
                                  "sub-02_T2star_label-GM_seg.nii"])
def test_an_existing_manual_mask_opens_read_only_and_training_keeps_every_slice(site, name):
    from sctgm.training.sources import from_bids

    run, paths, tmp_path = site
    eid = paths["sub-02"]["entry"].name
    manual = paths["sub-02"]["label"].with_name(name)  # spine-generic's full manual mask, no sidecar
    editing.save(manual, editing.phantom()[2], "LAS", np.uint8)
    before = files_under(tmp_path / "ds")
    view = slice_of(run, eid, 4)
    assert view["target"] == str(manual) and not view["editable"]
    assert "not written by sct-gm" in view["read_only_reason"] and view["saved_slices"] == []
    r = post(run, eid, 4, mask_of(view).tobytes())
    assert r.status_code == 400 and "not written by sct-gm" in r.json()["error"]
    assert files_under(tmp_path / "ds") == before  # no _label-GM_seg.nii.gz beside it, nothing rewritten
    items = {i.image.name: i for i in from_bids(tmp_path / "ds")}
    assert items["sub-02_T2star.nii.gz"].masks == (manual,) and items["sub-02_T2star.nii.gz"].slices is None
