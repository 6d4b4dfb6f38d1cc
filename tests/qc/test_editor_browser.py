"""The slice editor in a real headless Chromium against `sct-gm qc --serve`: mouse strokes land on the
right voxels of RPI- and LAS-stored images, undo restores, the sidecar lists the slice, train uses it.

Skipped, with the reason, when chromium, chromedriver or selenium is absent.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import sctgm
from sctgm import labels
from sctgm.qc import screenshot as shot

from . import editing

_why = shot.browser_missing()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"no headless browser: {_why}")

SLICE = 3


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = shot.make_driver(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def wait(driver, js: str, timeout_s: float = shot.WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(lambda d: d.execute_script(js))


def open_editor(driver, run, entry_id: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver.get(run.base + "index.html#" + entry_id)
    shot.wait_ready(driver)
    wait(driver, "return document.body.getAttribute('data-editor') === 'on' && !!document.getElementById('open-editor')")
    ActionChains(driver).send_keys("e").perform()  # keyboard first: e opens the editor
    wait(driver, "var s = window.sctgmEditor.state(); return s && s.current;")
    driver.execute_async_script("var done = arguments[arguments.length - 1];"
                                "window.sctgmEditor.open(arguments[0], arguments[1]).then(function () { done(); });",
                                entry_id, SLICE)
    wait(driver, f"return window.sctgmEditor.state().slice === {SLICE}")


def stroke(driver, voxels: list[tuple[int, int]]) -> None:
    """Press the mouse on the first display voxel (row, col), drag through the others, release."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "editor-canvas")
    geo = driver.execute_script(
        "var c = document.getElementById('editor-canvas').getBoundingClientRect(), s = window.sctgmEditor.state().current;"
        "var v = window.sctgmEditor.prefs.full ? {col0: 0, row0: 0, cols: s.d.cols, rows: s.d.rows} : s.d.view;"
        "return [c.width, c.height, v.col0, v.row0, v.cols, v.rows];")
    w, h, col0, row0, cols, rows = geo

    def offset(r: int, c: int) -> tuple[int, int]:
        return round((c - col0 + 0.5) * w / cols - w / 2), round((r - row0 + 0.5) * h / rows - h / 2)

    chain = ActionChains(driver).move_to_element_with_offset(canvas, *offset(*voxels[0])).click_and_hold()
    for r, c in voxels[1:]:
        chain = chain.move_to_element_with_offset(canvas, *offset(r, c))
    chain.release().perform()


def press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def save_and_wait(driver, n_saves: int) -> None:
    press(driver, "s")
    wait(driver, "return /^Saved slice/.test(document.getElementById('editor-status').textContent) && "
                 "window.sctgmEditor.state().current.dirty === false")


def display_auto(paths: dict, codes: str) -> np.ndarray:
    auto = np.asarray(nib.load(str(paths["auto"])).dataobj)
    rows, cols = editing.SHAPE[1], editing.SHAPE[0]
    return np.array([[auto[editing.file_voxel(codes, r, c, SLICE)] for c in range(cols)] for r in range(rows)])


@pytest.mark.parametrize("sub,codes", [("sub-01", "RPI"), ("sub-02", "LAS")])
def test_paint_erase_save_undo_and_train(browser, site, sub, codes):
    run, paths, root = site
    p = paths[sub]
    open_editor(browser, run, p["entry"].name)
    press(browser, "[")  # brush size 2 -> 1: one voxel per position
    assert browser.execute_script("return window.sctgmEditor.prefs.size") == 1
    disp = display_auto(p, codes)
    gm_rows = sorted({int(r) for r in np.argwhere(disp)[:, 0]})
    paint = [(4, c) for c in range(14, 20)]  # background, above the cord
    assert not any(disp[v] for v in paint)
    stroke(browser, [paint[0], paint[-1]])  # a drag: every voxel between is painted
    press(browser, "x")
    mid = gm_rows[len(gm_rows) // 2]
    gm_cols = [int(c) for c in np.flatnonzero(disp[mid])]
    erase = [(mid, c) for c in gm_cols[:3]]
    stroke(browser, erase)
    save_and_wait(browser, 1)

    got = np.asarray(nib.load(str(p["label"])).dataobj)
    auto = np.asarray(nib.load(str(p["auto"])).dataobj)
    want = {editing.file_voxel(codes, r, c, SLICE) for r, c in paint + erase}
    assert {tuple(map(int, v)) for v in np.argwhere(got != auto)} == want
    assert all(got[v] == 1 for v in (editing.file_voxel(codes, r, c, SLICE) for r, c in paint))
    img = nib.load(str(p["image"]))
    label = nib.load(str(p["label"]))
    assert np.array_equal(label.affine, img.affine) and nib.aff2axcodes(label.affine) == tuple(codes)
    assert labels.labelled_slices_of(p["label"]) == (SLICE,)
    # the report marks the slice as corrected
    assert browser.execute_script(f"return document.querySelectorAll('#mosaic .corr-frame[data-slice=\"{SLICE}\"]').length") == 1

    press(browser, "z", "z")  # undo both strokes, then save: back to the automatic mask
    assert browser.execute_script("return window.sctgmEditor.state().current.dirty")
    save_and_wait(browser, 2)
    assert np.array_equal(np.asarray(nib.load(str(p["label"])).dataobj), auto)
    side = json.loads(labels.sidecar_of(p["label"]).read_text())
    assert side["LabelledSlices"] == [SLICE] and [c["Slice"] for c in side["Corrections"]] == [SLICE, SLICE]
    assert [c["VoxelsChangedFromAutomatic"] for c in side["Corrections"]] == [len(want), 0]

    press(browser, "y")  # redo one stroke: the paint stroke comes back
    n = browser.execute_script("var s = window.sctgmEditor.state().current; var n = 0;"
                               "for (var i = 0; i < s.mask.length; i++) { n += s.mask[i] !== s.auto[i]; } return n;")
    assert n == len(paint)
    press(browser, "Escape")

    if codes == "RPI":  # train on the dataset: exactly the corrected slice (canonical index of file slice 3)
        result = sctgm.train(sctgm.TrainSources(bids=root / "ds", participants=[sub[4:]]), root / "m",
                             sctgm.TrainOptions(init="none", arch="unet", filters=4, max_steps=1, val_fraction=0.0,
                                                device="cpu", threads=1))
        data = json.loads(result.model_json.read_text())["models"]["m"]["training"]["data"]
        assert data[0]["train_slices"] == [editing.SHAPE[2] - 1 - SLICE]


def test_fill_next_slice_and_hint(browser, site):
    run, paths, _ = site
    p = paths["sub-02"]
    open_editor(browser, run, p["entry"].name)
    disp = display_auto(p, "LAS")
    # erase a hole inside the GM, then fill it: the outline is closed, so the hole fills again
    r, c = (int(v) for v in np.argwhere(disp)[len(np.argwhere(disp)) // 2])
    press(browser, "[", "x")
    stroke(browser, [(r, c)])
    assert browser.execute_script(f"return window.sctgmEditor.state().current.mask[{r} * {disp.shape[1]} + {c}]") == 0
    press(browser, "g")
    stroke(browser, [(r, c)])
    assert browser.execute_script(f"return window.sctgmEditor.state().current.mask[{r} * {disp.shape[1]} + {c}]") == 1
    stroke(browser, [(1, 1)])  # outside every outline: refused, nothing filled
    assert "Not a closed outline" in browser.find_element("id", "editor-status").text
    press(browser, "n")
    wait(browser, f"return window.sctgmEditor.state().slice === {SLICE + 1}")
    press(browser, "p", "p")
    wait(browser, f"return window.sctgmEditor.state().slice === {SLICE - 1}")
    assert browser.execute_script("return !!window.sctgmEditor.state().current.prob")  # the soft map is there
    assert browser.execute_script("return document.getElementById('editor-hint').getAttribute('aria-pressed')") == "true"
    press(browser, "h")
    assert browser.execute_script("return document.getElementById('editor-hint').getAttribute('aria-pressed')") == "false"
    # the report's own keys are off while editing: j does not change the entry
    current = browser.execute_script("return window.sctgmQc.state.current")
    press(browser, "j")
    assert browser.execute_script("return window.sctgmQc.state.current") == current
    assert not p["label"].exists()  # nothing saved without s
    # another entry: one editor panel, its own slices; back to the first, its unsaved edit is still there
    other = paths["sub-01"]["entry"].name
    browser.execute_async_script("var done = arguments[arguments.length - 1];"
                                 "window.sctgmEditor.open(arguments[0], 2).then(function () { done(); });", other)
    assert browser.execute_script("return document.querySelectorAll('#editor, #editor-canvas').length") == 2
    assert browser.execute_script("return window.sctgmEditor.state().entry") == other
    browser.execute_async_script("var done = arguments[arguments.length - 1];"
                                 "window.sctgmEditor.open(arguments[0], arguments[1]).then(function () { done(); });",
                                 p["entry"].name, SLICE)
    assert browser.execute_script("return window.sctgmEditor.state().current.dirty") is True


def test_the_static_report_shows_corrections_without_the_editor(browser, site):
    run, paths, _ = site
    p = paths["sub-01"]
    open_editor(browser, run, p["entry"].name)
    stroke(browser, [(2, 2)])
    save_and_wait(browser, 1)
    browser.get((p["entry"].parents[1] / "index.html").resolve().as_uri() + "#" + p["entry"].name)
    shot.wait_ready(browser)
    wait(browser, "return document.body.getAttribute('data-editor') === 'static'")
    assert browser.find_element("id", "corrected-slices").text.startswith("Corrected by a reviewer")
    assert browser.execute_script("return document.getElementById('open-editor')") is None


def test_a_manual_mask_made_elsewhere_opens_read_only_with_the_reason(browser, site):
    run, paths, tmp_path = site
    manual = paths["sub-02"]["label"].with_name("sub-02_T2star_gmseg-manual.nii.gz")  # spine-generic's name
    editing.save(manual, editing.phantom()[2], "LAS", np.uint8)
    before = manual.read_bytes()
    open_editor(browser, run, paths["sub-02"]["entry"].name)
    mask = browser.execute_script("return Array.from(window.sctgmEditor.state().current.mask);")
    stroke(browser, [(3, 4), (3, 8)])  # a stroke does nothing on a read-only mask
    assert browser.execute_script("return Array.from(window.sctgmEditor.state().current.mask);") == mask
    status = browser.find_element("id", "editor-status").text
    assert status.startswith("Read-only:") and "not written by sct-gm" in status and manual.name in status
    assert "read-only" in browser.find_element("id", "editor-title").text
    browser.execute_async_script("var done = arguments[arguments.length - 1];"
                                 "window.sctgmEditor.save().then(done, function () { done(); });")
    assert browser.find_element("id", "editor-status").text.startswith("Not saved:")
    assert manual.read_bytes() == before and not paths["sub-02"]["label"].exists()
