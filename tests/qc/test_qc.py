"""sctgm.qc: flags, orientation of the mosaic, entries and index on disk, CLI, bad inputs, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sctgm.cli import main
from sctgm.exceptions import GridMismatchError, InputImageError, OutputError
from sctgm.qc import add_entry, build_entry, read_entries
from sctgm.qc import flags as F
from sctgm.qc import render

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "<img src=x onerror=alert(1)>.nii.gz"


def load_index(qc: Path) -> dict:
    text = (qc / "index.js").read_text()
    prefix = "window.SCTGM_QC = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 (or 'dir') for everything under ``folder``; {} when absent."""
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cord_phantom(shape=(40, 40, 6), gm_slices=None, seed=0):
    """Image, cord mask (ellipse) and GM mask (a smaller ellipse inside) in canonical LAS arrays."""
    nx, ny, nz = shape
    x, y = np.mgrid[:nx, :ny]
    cord2d = ((x - nx / 2) / 8) ** 2 + ((y - ny / 2) / 6) ** 2 <= 1
    gm2d = ((x - nx / 2) / 4) ** 2 + ((y - ny / 2) / 3) ** 2 <= 1
    cord = np.repeat(cord2d[:, :, None], nz, axis=2).astype(np.uint8)
    gm = np.zeros(shape, np.uint8)
    for k in (range(nz) if gm_slices is None else gm_slices):
        gm[:, :, k] = gm2d
    img = np.random.default_rng(seed).normal(100, 5, shape).astype(np.float32) + 200 * cord + 100 * gm
    return img, cord, gm


@pytest.fixture
def phantom(make_nifti):
    img, cord, gm = cord_phantom()
    return (make_nifti(img, name="sub-01_T2star.nii.gz"), make_nifti(gm, name="sub-01_T2star_gmseg.nii.gz"),
            make_nifti(cord, name="sub-01_T2star_seg.nii.gz"))


# ---------------------------------------------------------------- flags

def test_flags_empty_gm_with_cord():
    gm = [10, 10, 0, 10, 10, 0]
    cord = [50, 50, 50, 50, 50, 0]
    out = F.slice_flags(gm, cord, [False] * 6)
    assert out[2] == (F.EMPTY_GM,)
    assert out[5] == ()  # no cord, no GM: nothing expected
    assert all(out[k] == () for k in (0, 1, 3, 4))


def test_flags_gap_without_cord_and_outlier_and_edge():
    gm = [0, 10, 11, 0, 10, 30, 11, 10, 0]
    edge = [False] * 9
    edge[7] = True
    out = F.slice_flags(gm, None, edge)
    assert out[0] == () and out[8] == ()  # outside the GM extent
    assert F.EMPTY_GM in out[3]
    assert F.AREA_OUTLIER in out[5]
    assert F.TOUCHES_EDGE in out[7]
    assert F.AREA_OUTLIER not in out[1] and F.AREA_OUTLIER not in out[4]


def test_touches_edge_inside_ring_and_outside_window():
    m = np.zeros((30, 30), bool)
    m[15, 15] = True
    assert not render.touches_edge(m, 10, 10, (11, 11))
    m[10, 12] = True  # on the window's ring
    assert render.touches_edge(m, 10, 10, (11, 11))
    m[10, 12] = False
    m[0, 0] = True  # outside the window
    assert render.touches_edge(m, 10, 10, (11, 11))


# ---------------------------------------------------------------- orientation of the mosaic

def test_display_is_radiological():
    c = np.zeros((5, 7))
    c[0, 6] = 1  # x=0: patient Right; y=6: most Anterior
    d = render.to_display(c)
    assert d.shape == (7, 5) and d[0, 0] == 1  # top-left: viewer's left = patient's right, top = anterior


@pytest.mark.parametrize("axcodes", ["LAS", "RPI", "ASL", "PIR"])
def test_mosaic_orientation_independent_of_file_layout(make_nifti, axcodes):
    """A GM blob in the patient's right-anterior quadrant appears top-left in the first tile,
    whatever the file's voxel order."""
    img, cord, gm = cord_phantom(shape=(40, 40, 3))
    gm[:] = 0
    gm[12:16, 24:28, :] = 1  # canonical LAS: low x = Right, high y = Anterior
    from nibabel import orientations as o

    t = o.ornt_transform(o.axcodes2ornt(("L", "A", "S")), o.axcodes2ornt(tuple(axcodes)))

    def to_file(a):
        return o.apply_orientation(a, t)

    # make_nifti's axcodes describe the array; build LAS data then reorder it to that layout.
    ip = make_nifti(to_file(img), axcodes=axcodes, zooms_mm=(0.5, 0.5, 5.0), name=f"i_{axcodes}.nii.gz")
    gp = make_nifti(to_file(gm), axcodes=axcodes, zooms_mm=(0.5, 0.5, 5.0), name=f"g_{axcodes}.nii.gz")
    cp = make_nifti(to_file(cord), axcodes=axcodes, zooms_mm=(0.5, 0.5, 5.0), name=f"c_{axcodes}.nii.gz")
    assert nib.aff2axcodes(nib.load(str(ip)).affine) == tuple(axcodes)
    entry, files = build_entry(ip, gp, cord_path=cp)
    ov = np.asarray(Image.open(__import__("io").BytesIO(files["overlay.png"])))
    tile = entry["mosaic"]["tiles"][0]
    sub = ov[tile["y"]: tile["y"] + tile["h"], tile["x"]: tile["x"] + tile["w"]]
    red = (sub[..., 0] > 200) & (sub[..., 1] < 100) & (sub[..., 3] > 0)
    ys, xs = np.nonzero(red)
    assert red.any()
    assert xs.mean() < tile["w"] / 2 and ys.mean() < tile["h"] / 2, (axcodes, xs.mean(), ys.mean())
    assert entry["n_flagged"] == 0
    # Tiles run inferior -> superior, labelled with the file's own voxel index along its S-I axis.
    expected = [2, 1, 0] if "I" in axcodes else [0, 1, 2]
    assert entry["slices"]["index"] == expected
    assert [t["slice"] for t in entry["mosaic"]["tiles"]] == expected


# ---------------------------------------------------------------- entries and index

def test_add_entry_writes_entry_and_index(tmp_path, phantom):
    image, gm, cord = phantom
    qc = tmp_path / "qc"
    e1 = add_entry(qc, image, gm, cord_path=cord, model="m1", model_sha256="ab" * 32, extra={"run": 1})
    time.sleep(0.01)
    gm2 = gm.with_name("other_gmseg.nii.gz")  # another mask of the same image: a second entry
    gm2.write_bytes(gm.read_bytes())
    e2 = add_entry(qc, image, gm2, model="m2")
    for e in (e1, e2):
        assert {p.name for p in e.iterdir()} == {"entry.json", "image.png", "overlay.png"}
    assert (qc / "index.html").is_file() and (qc / "_assets" / "qc.js").is_file() and (qc / "_assets" / "qc.css").is_file()
    data = load_index(qc)
    ids = [x["id"] for x in data["entries"]]
    assert ids == [e2.name, e1.name]  # newest first
    first = data["entries"][1]
    assert first["subject"] == "sub-01" and first["model"] == "m1" and first["extra"] == {"run": 1}
    assert first["image"] == str(image.resolve()) and first["gmseg"] == str(gm.resolve())
    assert first["n_flagged"] == 0 and first["slices"]["wm_mm2"] is not None
    # GM: ellipse area on each of the 6 slices, 0.5 x 0.5 mm pixels, 5 mm slices.
    n_vox = int(np.asarray(nib.load(str(gm)).dataobj).sum())
    assert first["gm_volume_mm3"] == pytest.approx(n_vox * 0.25 * 5.0, rel=1e-6)
    assert data["entries"][0]["slices"]["wm_mm2"] is None
    assert read_entries(qc)[0]["id"] == e2.name
    assert "http" not in (qc / "index.html").read_text().replace("http-equiv", "")
    assert "http" not in (qc / "_assets" / "qc.js").read_text().replace("http://www.w3.org/2000/svg", "")


def test_flags_reach_the_index(tmp_path, make_nifti):
    img, cord, gm = cord_phantom(gm_slices=[0, 1, 3, 4, 5])
    gm[0:3, 0:3, 4] = 1  # far from the cord
    qc = tmp_path / "qc"
    add_entry(qc, make_nifti(img), make_nifti(gm), cord_path=make_nifti(cord))
    e = load_index(qc)["entries"][0]
    flags = dict(zip(e["slices"]["index"], e["slices"]["flags"]))
    assert flags[2] == ["empty_gm"]
    assert "touches_edge" in flags[4]
    assert e["n_flagged"] == 2 and e["flag_counts"]["empty_gm"] == 1


def test_hostile_name_is_sanitised_on_disk(tmp_path, make_nifti):
    img, cord, gm = cord_phantom()
    ip = make_nifti(img, name=HOSTILE)
    qc = tmp_path / "qc"
    entry = add_entry(qc, ip, make_nifti(gm))
    assert "<" not in entry.name and ">" not in entry.name and " " not in entry.name
    e = load_index(qc)["entries"][0]
    assert e["image_name"] == HOSTILE and e["subject"] == HOSTILE[: -len(".nii.gz")]
    assert all(ord(ch) < 128 for ch in (qc / "index.js").read_text())


@pytest.mark.usefixtures("shared_data")
def test_real_manual_gm_has_no_flags(tmp_path, shared_data):
    d = shared_data / "sct_testing_data" / "t2s"
    qc = tmp_path / "qc"
    add_entry(qc, d / "t2s.nii.gz", d / "t2s_gmseg_manual.nii.gz", cord_path=d / "t2s_seg.nii.gz")
    add_entry(qc, d / "t2s.nii.gz", d / "t2s_gmseg_manual.nii.gz")
    for e in load_index(qc)["entries"]:
        assert e["n_flagged"] == 0, e["slices"]["flags"]
        assert len(e["slices"]["index"]) == 9
        gm = np.asarray(nib.load(str(d / "t2s_gmseg_manual.nii.gz")).dataobj) > 0.5
        assert e["gm_volume_mm3"] == pytest.approx(gm.sum() * 0.5 * 0.5 * 7.5, rel=1e-3)
        assert e["mosaic"]["shown"] == 9


# ---------------------------------------------------------------- CLI and bad inputs

def test_cli_adds_entry(tmp_path, phantom):
    image, gm, cord = phantom
    qc = tmp_path / "qc"
    res = CliRunner().invoke(main, ["qc", "-i", str(image), "-s", str(gm), "-c", str(cord), "-o", str(qc),
                                    "--model", "demo", "--subject", "S1"])
    assert res.exit_code == 0, res.output
    assert "index.html" in res.output
    assert load_index(qc)["entries"][0]["subject"] == "S1"


def _bad_inputs(tmp_path: Path, make_nifti, good_image: Path, good_gm: Path) -> dict[str, list[str]]:
    other_grid = make_nifti(np.zeros((30, 40, 6), np.uint8), name="other_grid.nii.gz")
    shifted = nib.load(str(good_gm))
    aff = shifted.affine.copy()
    aff[0, 3] += 10.0
    shifted_path = tmp_path / "shifted_gm.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(shifted.dataobj), aff), str(shifted_path))
    flat = tmp_path / "flat2d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), str(flat))
    not_nifti = tmp_path / "notes.nii.gz"
    not_nifti.write_text("not an image")
    return {
        "grid shape": ["-i", str(good_image), "-s", str(other_grid)],
        "grid affine": ["-i", str(good_image), "-s", str(shifted_path)],
        "missing image": ["-i", str(tmp_path / "nope.nii.gz"), "-s", str(good_gm)],
        "missing gm": ["-i", str(good_image), "-s", str(tmp_path / "nope_gm.nii.gz")],
        "missing cord": ["-i", str(good_image), "-s", str(good_gm), "-c", str(tmp_path / "nope_seg.nii.gz")],
        "2D image": ["-i", str(flat), "-s", str(good_gm)],
        "2D mask": ["-i", str(good_image), "-s", str(flat)],
        "not nifti": ["-i", str(not_nifti), "-s", str(good_gm)],
    }


def test_bad_inputs_leave_qc_folder_unchanged(tmp_path, make_nifti, phantom):
    image, gm, cord = phantom
    qc = tmp_path / "qc"
    add_entry(qc, image, gm)
    fresh = tmp_path / "fresh_qc"
    before = snapshot(qc)
    for what, args in _bad_inputs(tmp_path, make_nifti, image, gm).items():
        for folder in (qc, fresh):
            res = CliRunner().invoke(main, ["qc", *args, "-o", str(folder)])
            assert res.exit_code != 0, (what, res.output)
            assert res.output.startswith("sct-gm: error: ") and res.output.count("\n") == 1, (what, res.output)
            assert "Traceback" not in res.output
        assert snapshot(qc) == before, what
        assert not fresh.exists(), what


def test_library_raises_typed_errors(tmp_path, make_nifti, phantom):
    image, gm, _ = phantom
    with pytest.raises(GridMismatchError):
        add_entry(tmp_path / "qc", image, make_nifti(np.zeros((30, 40, 6), np.uint8)))
    with pytest.raises(InputImageError):
        add_entry(tmp_path / "qc", tmp_path / "missing.nii.gz", gm)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(OutputError):
        add_entry(a_file, image, gm)
    assert not (tmp_path / "qc").exists()


def test_qc_dir_is_a_file_exit_code(tmp_path, phantom):
    image, gm, _ = phantom
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    res = CliRunner().invoke(main, ["qc", "-i", str(image), "-s", str(gm), "-o", str(a_file)])
    assert res.exit_code != 0 and "not a folder" in res.output
    assert a_file.read_text() == "x"


# ---------------------------------------------------------------- concurrency

def test_eight_concurrent_writers(tmp_path, make_nifti):
    img, cord, gm = cord_phantom(shape=(40, 40, 4))
    paths = [(make_nifti(img, name=f"sub-{i:02d}_T2star.nii.gz"), make_nifti(gm, name=f"sub-{i:02d}_gm.nii.gz"))
             for i in range(8)]
    qc = tmp_path / "qc"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "sctgm", "qc", "-i", str(i), "-s", str(g), "-o", str(qc), "-q"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i, g in paths]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    data = load_index(qc)
    assert len(data["entries"]) == 8
    assert sorted(e["subject"] for e in data["entries"]) == [f"sub-{i:02d}" for i in range(8)]
    entry_dirs = list((qc / "entries").iterdir())
    assert len(entry_dirs) == 8 and not any(d.name.startswith(".") for d in entry_dirs)
    for d in entry_dirs:
        assert {p.name for p in d.iterdir()} == {"entry.json", "image.png", "overlay.png"}
        Image.open(d / "image.png").verify()
    assert not [p for p in qc.rglob("*.part*")]
    assert len({json.loads((qc / "report.json").read_text())["report_id"]}) == 1


def test_help_is_fast_and_lists_options():
    res = CliRunner().invoke(main, ["qc", "--help"])
    assert res.exit_code == 0
    for opt in ("--image", "--gmseg", "--qc-dir", "--cord", "--wmseg"):
        assert opt in res.output


# ---------------------------------------------------------------- killed writers, reruns

_KILLED_WRITER = """
import os, shutil, signal, sys
from pathlib import Path
from sctgm.qc import report
qc, point = sys.argv[1], sys.argv[2]
def die():
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-entry, as by the OOM killer or a scheduler
if point == "mkdir":  # the part folder made, nothing in it yet
    first_mkdir = Path.mkdir
    def mkdir_then_die(self, *a, **k):
        first_mkdir(self, *a, **k)
        if self.name.endswith(".part"):
            die()
    Path.mkdir = mkdir_then_die
elif point == "write":  # one file written
    first_write = Path.write_bytes
    def write_then_die(self, data):
        first_write(self, data)
        die()
    Path.write_bytes = write_then_die
elif point == "remove":  # the entry it replaces renamed to a part, its files removed, not yet the folder
    report.write_entry(qc, {"id": "first", "timestamp": 0, "image": "a", "gmseg": "b"}, {"image.png": b"png"})
    def rmtree_files_then_die(path, *a, **k):
        for f in Path(path).iterdir():
            f.unlink()
        die()
    shutil.rmtree = rmtree_files_then_die
report.write_entry(qc, {"id": "killed", "timestamp": 0, "image": "a", "gmseg": "b"}, {"image.png": b"png"})
"""


@pytest.fixture
def live_pid():
    """The pid of a process of this host that runs (a writer still at work), not this one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _part(entries: Path, entry_id: str, pid: int, host: str | None = None) -> Path:
    """A part folder named as the writer ``pid`` of ``host`` (this one by default) names it."""
    from sctgm.qc import report

    part = entries / f".{entry_id}.{report._host_token(host)}-{pid}.part"
    part.mkdir(parents=True)
    return part


@pytest.mark.skipif(os.name != "posix", reason="the pid probe is POSIX")
def test_which_part_folders_the_next_writer_removes(tmp_path, live_pid, monkeypatch):
    from sctgm.qc import report

    entries, hours_ago = tmp_path / "entries", time.time() - 2 * report.STALE_PART_S
    kept = [_part(entries, "running", live_pid), _part(entries, "far", 1, host="elsewhere"),
            entries / ".bare.part"]  # recent: its writer runs, another host's, an older version's with no record
    kept[2].mkdir()
    removed = [_part(entries, "own", os.getpid()),  # this process holds the lock and has no part yet
               _part(entries, "stuck", live_pid),  # hours old: its pid reused by a live process (a reboot)
               _part(entries, "far-old", 1, host="elsewhere")]
    for p in removed[1:]:
        os.utime(p, (hours_ago, hours_ago))
    assert sorted(report.remove_stale_parts(entries)) == sorted(removed)
    assert all(p.is_dir() for p in kept) and not any(p.exists() for p in removed)

    # a removal killed before its files went leaves a part named for the remover, removed at once next time
    legacy = entries / ".legacy.part"
    legacy.mkdir()
    (legacy / "image.png").write_bytes(b"png")
    (legacy / report.WRITER_FILE).write_text("elsewhere 1\n")  # another host's: judged by age
    os.utime(legacy, (hours_ago, hours_ago))
    monkeypatch.setattr(report.shutil, "rmtree", lambda *a, **k: None)
    assert report.remove_stale_parts(entries) == []
    assert not legacy.exists() and (entries / report.part_name("legacy") / "image.png").is_file()
    monkeypatch.undo()
    assert report.remove_stale_parts(entries) == [entries / report.part_name("legacy")]


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and the pid probe are POSIX")
@pytest.mark.parametrize("point", ["mkdir", "write", "remove"])
def test_a_writer_killed_at_any_point_leaves_a_part_the_next_writer_removes(tmp_path, phantom, point, live_pid):
    """However early or late a writer dies, its part folder names its writer (no record inside it to
    lose: a kill right after the mkdir, or part-way through removing a replaced entry), and the next
    writer removes it."""
    from sctgm.qc import report

    qc = tmp_path / "qc"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(qc), point], env=env, capture_output=True,
                         timeout=120)
    assert res.returncode == -9, res.stderr.decode()
    parts = [p for p in (qc / "entries").iterdir() if p.name.endswith(".part")]
    assert len(parts) == 1, parts
    assert parts[0].name.startswith(".first." if point == "remove" else ".killed.")
    # a part folder whose writer still runs is left alone, so is a recent one without a writer record
    alive = _part(qc / "entries", "alive", live_pid)
    legacy_alive = qc / "entries" / ".legacy-alive.part"  # an earlier version's: the writer recorded inside
    legacy_alive.mkdir()
    (legacy_alive / report.WRITER_FILE).write_text(f"{socket.gethostname()} {live_pid}\n")
    recent = qc / "entries" / ".recent.part"
    recent.mkdir()
    old = qc / "entries" / ".old.part"  # no writer record, hours old
    old.mkdir()
    os.utime(old, (time.time() - 2 * report.STALE_PART_S,) * 2)

    image, gm, _ = phantom
    add_entry(qc, image, gm)
    assert not parts[0].exists() and not old.exists()
    assert alive.is_dir() and legacy_alive.is_dir() and recent.is_dir()
    assert len(load_index(qc)["entries"]) == (2 if point == "remove" else 1)  # "killed" published, "first" gone


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="zombies are told apart through /proc")
def test_a_part_whose_writer_is_a_zombie_is_removed(tmp_path, live_pid):
    """A killed batch worker can stay a zombie (a process that exists but runs no more) when no init
    reaps it: its part folder is removed all the same."""
    from sctgm.qc import report

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; not reaped until wait()
    try:
        deadline = time.monotonic() + 60
        while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        entries = tmp_path / "entries"
        part, alive = _part(entries, "x", zombie.pid), _part(entries, "y", live_pid)
        assert report.remove_stale_parts(entries) == [part]
        assert not part.exists() and alive.is_dir()
    finally:
        zombie.wait()


def test_the_same_image_and_mask_replace_their_entry(tmp_path, phantom):
    image, gm, cord = phantom
    qc = tmp_path / "qc"
    first = add_entry(qc, image, gm, model="m1")
    second = add_entry(qc, image, gm, cord_path=cord, model="m1")  # e.g. a batch resumed after a crash
    entries = load_index(qc)["entries"]
    assert [e["id"] for e in entries] == [second.name] and entries[0]["cord"] == str(cord.resolve())
    assert not first.exists() and sorted(p.name for p in (qc / "entries").iterdir()) == [second.name]
    other = add_entry(qc, cord, gm)  # another image: added beside it
    assert {e["id"] for e in load_index(qc)["entries"]} == {second.name, other.name}


# ---------------------------------------------------------------- masks stored in another orientation

@pytest.mark.parametrize("mask_codes", ["RPI", "PIR"])
def test_masks_stored_in_another_orientation_give_the_same_entry_and_editor_view(tmp_path, mask_codes):
    """A GM / cord / WM mask or soft map holding the image's grid in another storage orientation (a
    tool that reorients its outputs) is read in the canonical layout, exactly: the entry, its
    pictures and the editor's arrays equal those of the same masks stored like the image."""
    from nibabel import orientations as ornt

    from sctgm.qc.corrections import open_entry

    from . import editing

    img, cord, gm = editing.phantom()
    gm[:, :, 2] = 0  # one slice without GM, so a misplaced slice would show
    wm = cord & ~gm
    image = editing.save(tmp_path / "image.nii.gz", img, "LAS")
    affine = nib.load(str(image)).affine
    t = ornt.ornt_transform(ornt.axcodes2ornt(("L", "A", "S")), ornt.axcodes2ornt(tuple(mask_codes)))
    same, other = {}, {}
    for codes, out in (("LAS", same), (mask_codes, other)):
        (tmp_path / codes).mkdir()
        for name, data, dtype in (("gm", gm, np.uint8), ("cord", cord, np.uint8), ("wm", wm, np.uint8),
                                  ("prob", gm * 0.75, np.float32)):
            las = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
            out[name] = tmp_path / codes / f"image_{name}.nii.gz"
            nib.save(las if codes == "LAS" else las.as_reoriented(t), str(out[name]))
    assert nib.aff2axcodes(nib.load(str(other["gm"])).affine) == tuple(mask_codes)
    built = [build_entry(image, m["gm"], cord_path=m["cord"], wmseg_path=m["wm"], subject="s") for m in (same, other)]
    (e1, f1), (e2, f2) = built
    drop = {"gmseg", "cord", "wmseg", "id", "timestamp", "date"}
    assert {k: v for k, v in e1.items() if k not in drop} == {k: v for k, v in e2.items() if k not in drop}
    area = dict(zip(e1["slices"]["index"], e1["slices"]["gm_mm2"]))
    assert f1 == f2 and area[2] == 0 and area[3] > 0
    views = []
    for m in (same, other):
        m["prob"].rename(m["gm"].with_name("image_gmseg_prob.nii.gz"))
        m["gm"].rename(m["gm"].with_name("image_gmseg.nii.gz"))
        views.append(open_entry({"id": "x", "image": str(image), "gmseg": str(m["gm"].with_name("image_gmseg.nii.gz")),
                                 "cord": str(m["cord"])}))
    v1, v2 = views
    assert v2.prob is not None and np.array_equal(v1.prob, v2.prob)
    assert np.array_equal(v1.automatic, v2.automatic) and np.array_equal(v1.current, v2.current)
    assert np.array_equal(v1.automatic, gm.astype(np.uint8)) and v1.plan.size_vox == v2.plan.size_vox
    assert np.array_equal(v1.plan.centers_vox, v2.plan.centers_vox)
