"""The QC report in a real headless browser (Debian's chromium + chromium-driver, via Selenium).

Skipped, with the reason, when chromium, chromedriver or selenium is absent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from sctgm.qc import add_entry
from sctgm.qc import screenshot as shot

from .test_qc import cord_phantom

_why = shot.browser_missing()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"no headless browser: {_why}")

HOSTILE = "<img src=x onerror=window.__pwned=1;alert(1)>.nii.gz"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A QC folder with three entries: clean, flagged, and one from a hostile file name."""
    import nibabel as nib

    d = tmp_path_factory.mktemp("qcdata")

    def save(a, name):
        p = d / name
        nib.save(nib.Nifti1Image(np.asarray(a), np.diag([0.5, 0.5, 5.0, 1.0])), str(p))
        return p

    img, cord, gm = cord_phantom(shape=(40, 40, 5))
    qc = d / "qc"
    add_entry(qc, save(img, "sub-01_T2star.nii.gz"), save(gm, "sub-01_T2star_gmseg.nii.gz"),
              cord_path=save(cord, "sub-01_seg.nii.gz"), model="demo")
    time.sleep(0.01)
    _, _, gm_bad = cord_phantom(shape=(40, 40, 5), gm_slices=[0, 1, 3, 4])
    add_entry(qc, save(img, "sub-02_T2star.nii.gz"), save(gm_bad, "sub-02_T2star_gmseg.nii.gz"),
              cord_path=save(cord, "sub-02_seg.nii.gz"), model="demo")
    time.sleep(0.01)
    add_entry(qc, save(img, HOSTILE), save(gm, "hostile_gmseg.nii.gz"), model="demo")
    return qc


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    driver = shot.make_driver(profile, download_dir=downloads)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def open_report(driver, qc: Path, fragment: str = "") -> None:
    driver.get((qc / "index.html").resolve().as_uri() + fragment)
    shot.wait_ready(driver)


def press(driver, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def active_id(driver) -> str:
    return driver.execute_script("var r = document.querySelector('#entries tbody tr.active');"
                                 "return r ? r.getAttribute('data-id') : null;")


def no_alert(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert.dismiss()
    except NoAlertPresentException:
        return True
    return False


def test_entries_render_offline(browser, report):
    open_report(browser, report)
    rows = browser.find_elements("css selector", "#entries tbody tr")
    assert len(rows) == 3
    subjects = [r.find_elements("tag name", "td")[2].text for r in rows]
    assert subjects[0].startswith("<img") and subjects[1:] == ["sub-02", "sub-01"]  # newest first
    flags = [r.find_elements("tag name", "td")[1].text for r in rows]
    assert flags == ["0", "1", "0"]
    ok = browser.execute_script(
        "return Array.from(document.querySelectorAll('#mosaic img')).map(i => i.complete && i.naturalWidth > 0);")
    assert ok == [True, True]
    urls = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src], link[href]')).map(e => e.src || e.href);")
    assert len(urls) >= 5 and all(u.startswith("file://") for u in urls), urls
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_keyboard_navigation_and_overlay_toggle(browser, report):
    open_report(browser, report)
    ids = browser.execute_script("return window.sctgmQc.state.rows.map(e => e.id);")
    assert active_id(browser) == ids[0]
    press(browser, "j")
    assert active_id(browser) == ids[1]
    assert "sub-02" in browser.find_element("id", "viewer").text
    assert "slice 2: no GM on a slice with cord" in browser.find_element("id", "viewer").text
    from selenium.webdriver.common.keys import Keys

    press(browser, Keys.ARROW_DOWN)
    assert active_id(browser) == ids[2]
    press(browser, "k", Keys.ARROW_UP)
    assert active_id(browser) == ids[0]

    overlay = browser.find_element("css selector", "#mosaic img.overlay")
    assert overlay.is_displayed()
    press(browser, Keys.ARROW_RIGHT)
    overlay = browser.find_element("css selector", "#mosaic img.overlay")
    assert not overlay.is_displayed()
    assert browser.find_element("id", "toggle-overlay").text == "Overlay: off"
    press(browser, Keys.ARROW_RIGHT)
    assert browser.find_element("css selector", "#mosaic img.overlay").is_displayed()
    browser.find_element("id", "toggle-overlay").click()
    assert not browser.find_element("css selector", "#mosaic img.overlay").is_displayed()


def test_rating_persists_and_exports(browser, report):
    open_report(browser, report)
    browser.execute_script("localStorage.clear();")
    open_report(browser, report)
    ids = browser.execute_script("return window.sctgmQc.state.rows.map(e => e.id);")
    press(browser, "j")  # sub-02
    press(browser, "f")
    assert browser.execute_script("return window.sctgmQc.ratingOf(arguments[0]);", ids[1]) == "pass"
    press(browser, "f")
    assert browser.execute_script("return window.sctgmQc.ratingOf(arguments[0]);", ids[1]) == "fail"
    press(browser, "j", "f", "f", "f")  # sub-01: artifact
    browser.refresh()
    shot.wait_ready(browser)
    ratings = [r.find_elements("tag name", "td")[0].text
               for r in browser.find_elements("css selector", "#entries tbody tr")]
    assert ratings == ["\u2013", "fail", "artifact"]

    fail_yml = browser.execute_script("return window.sctgmQc.exportText('fail');")
    e = json.loads((report / "index.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))["entries"]
    by_id = {x["id"]: x for x in e}
    assert fail_yml == f"FILES_GMSEG:\n- {json.dumps(by_id[ids[1]]['image'])}\n"
    art_yml = browser.execute_script("return window.sctgmQc.exportText('artifact');")
    assert art_yml.startswith("FILES_GMSEG:\n- ") and "sub-01_T2star.nii.gz" in art_yml

    # Real downloads through the buttons.
    for button, name in (("export-csv", "qc_ratings.csv"), ("export-fail", "qc_fail.yml"),
                         ("export-json", "qc_ratings.json")):
        browser.find_element("id", button).click()
        target = browser.downloads / name
        deadline = time.time() + shot.WAIT_S
        while not target.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert target.exists(), f"{name} was not downloaded"
    time.sleep(0.3)
    csv = (browser.downloads / "qc_ratings.csv").read_text()
    assert csv.splitlines()[0].startswith("id,subject,")
    assert any(line.startswith(ids[1]) and line.endswith(",fail") for line in csv.splitlines())
    assert (browser.downloads / "qc_fail.yml").read_text() == fail_yml
    try:
        import yaml  # optional: the same parser SCT's manual-correction uses
    except ImportError:
        yaml = None
    if yaml is not None:
        assert yaml.safe_load(fail_yml) == {"FILES_GMSEG": [by_id[ids[1]]["image"]]}
    exported = json.loads((browser.downloads / "qc_ratings.json").read_text())
    assert {r["id"]: r["rating"] for r in exported["ratings"]}[ids[2]] == "artifact"

    # Re-import: clear, then import the JSON through the file input; then the fail list.
    browser.execute_script("localStorage.clear(); location.reload();")
    shot.wait_ready(browser)
    assert browser.execute_script("return window.sctgmQc.ratingOf(arguments[0]);", ids[1]) == "unrated"
    browser.execute_script("document.getElementById('import-file').hidden = false;")
    browser.find_element("id", "import-file").send_keys(str(browser.downloads / "qc_ratings.json"))
    deadline = time.time() + shot.WAIT_S
    while "Imported" not in browser.find_element("id", "status").text and time.time() < deadline:
        time.sleep(0.05)
    assert browser.execute_script("return window.sctgmQc.ratingOf(arguments[0]);", ids[1]) == "fail"
    assert browser.execute_script("return window.sctgmQc.ratingOf(arguments[0]);", ids[2]) == "artifact"
    browser.execute_script("localStorage.clear();")
    n = browser.execute_script("return window.sctgmQc.importText(arguments[0], 'qc_artifact.yml');", art_yml)
    assert n == 1 and browser.execute_script("return window.sctgmQc.ratingOf(arguments[0]);", ids[2]) == "artifact"
    browser.execute_script("localStorage.clear();")


def test_hostile_file_name_renders_as_text(browser, report):
    open_report(browser, report)
    assert no_alert(browser)
    row = browser.find_elements("css selector", "#entries tbody tr")[0]
    assert row.find_elements("tag name", "td")[3].text == HOSTILE
    assert HOSTILE in browser.find_element("css selector", "#viewer h2").text
    assert browser.execute_script("return window.__pwned === undefined;")
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length;") == 0
    # Filtering and exporting with the hostile name do not execute it either.
    browser.find_element("id", "filter").send_keys("onerror")
    assert len(browser.find_elements("css selector", "#entries tbody tr")) == 1
    browser.execute_script("window.sctgmQc.exportText('csv'); window.sctgmQc.exportText('json');")
    assert no_alert(browser) and browser.execute_script("return window.__pwned === undefined;")


def test_screenshot_writes_both_pngs(tmp_path, report):
    """What bench/qc_screenshot.py (the README's command) runs produces both PNGs of a real report."""
    from PIL import Image

    out = tmp_path / "shots"
    index_png, entry_png = shot.screenshot(report, out)
    assert (index_png.name, entry_png.name) == ("index.png", "entry.png")
    for name in ("index.png", "entry.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 400 and im.size[1] > 300


def _image_and_two_masks(tmp_path, subject):
    """A phantom image and two copies of its GM mask (entries are keyed by image and mask, so one mask
    would give one entry): {"img", "gm", "gm2"} -> path."""
    import nibabel as nib

    img, cord, gm = cord_phantom(shape=(40, 40, 5))
    paths = {}
    for name, a in (("img", img), ("gm", gm), ("gm2", gm)):
        paths[name] = tmp_path / f"{subject}_{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(a), np.diag([0.5, 0.5, 5.0, 1.0])), str(paths[name]))
    return paths


def test_noisy_scans_stand_out(browser, tmp_path):
    """The noise column, the NOISY badge only above the auto threshold, sorting by noise, the details."""
    paths = _image_and_two_masks(tmp_path, "sub-03")
    qc = tmp_path / "qc"

    def noise(rel):
        return {"noise_sigma": rel * 100, "noise_sigma_rel_p99": rel, "noise_sigma_rel_p99_per_slice": [rel] * 5,
                "noise_auto_threshold_rel_p99": 0.035, "noise_above_auto_threshold": rel > 0.035,
                "denoised_with": "nlm" if rel > 0.035 else "off",
                "enhancement_steps": ["denoise:nlm"] if rel > 0.035 else []}

    add_entry(qc, paths["img"], paths["gm"], model="noisy", noise=noise(0.052))
    time.sleep(0.01)
    add_entry(qc, paths["img"], paths["gm2"], model="clean", noise=noise(0.021))
    open_report(browser, qc)
    browser.find_element("css selector", "#entries th[data-key='noise_pct']").click()  # noisiest first
    rows = browser.find_elements("css selector", "#entries tbody tr")
    cells = [r.find_element("css selector", "td.noise").text for r in rows]
    assert cells == ["5.2 !", "2.1"], cells
    badges = [len(r.find_elements("css selector", "td.noise .badge.noisy")) for r in rows]
    assert badges == [1, 0]
    assert "1 noisy" in browser.find_element("id", "summary").text
    rows[0].click()
    viewer = browser.find_element("id", "viewer").text
    assert "5.20 % of the 99th percentile" in viewer and "NOISY" in viewer and "denoised: nlm" in viewer
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_a_volume_left_to_one_network_says_so_in_the_details(browser, tmp_path):
    """A combination whose networks disagreed on most slices: the entry's details name the network
    whose mask stood for the whole volume (the text is escaped, as every field); an entry without it
    has no such line."""
    paths = _image_and_two_masks(tmp_path, "sub-04")
    qc = tmp_path / "qc"
    doubts = [{"slice": k, "reasons": ["networks_disagree"], "action": "second_network", "networks_dice": 0.3,
               "network": "<b>robust</b>"} for k in (0, 1, 3)]
    add_entry(qc, paths["img"], paths["gm"], model="pair", doubtful=doubts, whole_volume="<b>robust</b>")
    time.sleep(0.01)
    add_entry(qc, paths["img"], paths["gm2"], model="pair")
    open_report(browser, qc)
    rows = browser.find_elements("css selector", "#entries tbody tr")  # newest first
    rows[1].click()
    viewer = browser.find_element("id", "viewer").text
    assert "<b>robust</b>'s mask stood for the whole volume" in viewer
    assert "3 flagged slice(s)" in viewer
    rows[0].click()
    assert "stood for the whole volume" not in browser.find_element("id", "viewer").text
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


@pytest.mark.parametrize("width", [1280, 1440, 1600])
def test_the_index_shows_every_column_without_horizontal_scroll(report, browser, width):
    """At 1280-1600 px the index shows the Noise and Version columns (no scroll inside the list)."""
    browser.set_window_size(width, 900)
    try:
        open_report(browser, report)
        box = browser.execute_script(
            "var l = document.getElementById('list'), r = l.getBoundingClientRect();"
            "var cols = Array.from(document.querySelectorAll('#entries thead th')).map(function (th) {"
            "  var b = th.getBoundingClientRect(); return [th.textContent, b.right]; });"
            "return {scroll: l.scrollWidth, client: l.clientWidth, right: r.right, cols: cols};")
        assert box["scroll"] <= box["client"], box
        assert {"Noise", "Version"} <= {name for name, _ in box["cols"]}
        assert all(right <= box["right"] + 0.5 for _, right in box["cols"]), box
    finally:
        browser.set_window_size(1500, 1000)


@pytest.fixture(scope="module")
def same_names(tmp_path_factory):
    """A QC folder with three entries whose images share one file name, in data/A, data/B and data/BA:
    (qc folder, {folder: image path as the report records it})."""
    import nibabel as nib

    root = tmp_path_factory.mktemp("samenames")
    img, _, gm = cord_phantom(shape=(40, 40, 5))
    images = {}
    for folder in ("A", "B", "BA"):
        d = root / "data" / folder
        d.mkdir(parents=True)
        for name, a in (("t2s.nii.gz", img), ("t2s_gmseg.nii.gz", gm)):
            nib.save(nib.Nifti1Image(np.asarray(a), np.diag([0.5, 0.5, 5.0, 1.0])), str(d / name))
        add_entry(root / "qc", d / "t2s.nii.gz", d / "t2s_gmseg.nii.gz", model="demo")
        images[folder] = str((d / "t2s.nii.gz").resolve())
    return root / "qc", images


def _import(driver, qc, images, content, filename):
    """Imports content into a report with no rating: (count returned, status line, {folder: rating})."""
    open_report(driver, qc)
    driver.execute_script("localStorage.clear(); location.reload();")
    shot.wait_ready(driver)
    n = driver.execute_script("return window.sctgmQc.importText(arguments[0], arguments[1]);", content, filename)
    status = driver.find_element("id", "status").text
    ids = driver.execute_script("return window.sctgmQc.state.rows.map(e => [e.image, e.id]);")
    by_image = dict(ids)
    rated = {folder: driver.execute_script("return window.sctgmQc.ratingOf(arguments[0]);", by_image[image])
             for folder, image in images.items()}
    driver.execute_script("localStorage.clear();")
    return n, status, rated


def test_import_matches_a_listed_path_by_whole_trailing_components(browser, same_names):
    """qc_fail.yml lists A/t2s.nii.gz: only data/A's entry is rated, not data/B's nor data/BA's (whose
    image ends with the same characters but not the same components)."""
    qc, images = same_names
    n, status, rated = _import(browser, qc, images, "FILES_GMSEG:\n- A/t2s.nii.gz\n", "qc_fail.yml")
    assert (n, rated) == (1, {"A": "fail", "B": "unrated", "BA": "unrated"}), status
    assert status == "Imported 1 rating(s) from qc_fail.yml"
    n, _, rated = _import(browser, qc, images, "FILES_GMSEG:\n- 'data/BA/t2s.nii.gz'\n- ./B/t2s.nii.gz\n",
                          "qc_artifact.yml")
    assert (n, rated) == (2, {"A": "unrated", "B": "artifact", "BA": "artifact"})


def test_import_rates_none_of_the_entries_a_listed_path_matches_equally(browser, same_names):
    """A bare file name shared by several entries names none of them, and the status line says so;
    the other listed paths are still imported, and one that names no entry is reported too."""
    qc, images = same_names
    content = "FILES_GMSEG:\n- t2s.nii.gz\n- B/t2s.nii.gz\n- C/other.nii.gz\n"
    n, status, rated = _import(browser, qc, images, content, "qc_fail.yml")
    assert (n, rated) == (1, {"A": "unrated", "B": "fail", "BA": "unrated"}), status
    assert "1 path matched several entries; not imported: t2s.nii.gz" in status
    assert "1 path matched no entry: C/other.nii.gz" in status
    # The same in a CSV or JSON whose ids are not this report's (matched by their image column).
    csv = "id,image,rating\r\nother-1,t2s.nii.gz,pass\r\nother-2,A/t2s.nii.gz,artifact\r\n"
    n, status, rated = _import(browser, qc, images, csv, "qc_ratings.csv")
    assert (n, rated) == (1, {"A": "artifact", "B": "unrated", "BA": "unrated"}), status
    assert "1 path matched several entries; not imported: t2s.nii.gz" in status
    js = json.dumps({"ratings": [{"id": "x", "image": "t2s.nii.gz", "rating": "fail"},
                                 {"id": "y", "image": "data/B/t2s.nii.gz", "rating": "pass"}]})
    n, status, rated = _import(browser, qc, images, js, "qc_ratings.json")
    assert (n, rated) == (1, {"A": "unrated", "B": "pass", "BA": "unrated"}), status


def test_import_of_exact_paths_and_own_exports_still_works(browser, same_names):
    """Exact absolute paths (as the page's qc_fail.yml writes them) and the JSON/CSV exports by id."""
    qc, images = same_names
    content = f"FILES_GMSEG:\n- {json.dumps(images['B'])}\n- {images['BA']}\n"
    n, _, rated = _import(browser, qc, images, content, "qc_fail.yml")
    assert (n, rated) == (2, {"A": "unrated", "B": "fail", "BA": "fail"})

    open_report(browser, qc)
    browser.execute_script("localStorage.clear(); location.reload();")
    shot.wait_ready(browser)
    by_image = dict(browser.execute_script("return window.sctgmQc.state.rows.map(e => [e.image, e.id]);"))
    for folder, r in (("A", "fail"), ("B", "artifact"), ("BA", "pass")):
        browser.execute_script("localStorage.setItem(window.sctgmQc.storeKey, JSON.stringify("
                               "Object.assign(JSON.parse(localStorage.getItem(window.sctgmQc.storeKey) || '{}'),"
                               " {[arguments[0]]: arguments[1]})));", by_image[images[folder]], r)
    browser.refresh()
    shot.wait_ready(browser)
    exports = {k: browser.execute_script("return window.sctgmQc.exportText(arguments[0]);", k)
               for k in ("json", "csv", "fail", "artifact")}
    want = {"A": "fail", "B": "artifact", "BA": "pass"}
    for kind, filename in (("json", "qc_ratings.json"), ("csv", "qc_ratings.csv")):
        n, status, rated = _import(browser, qc, images, exports[kind], filename)
        assert (n, rated) == (3, want), (kind, status)
    n, _, rated = _import(browser, qc, images, exports["fail"], "qc_fail.yml")
    assert (n, rated) == (1, {"A": "fail", "B": "unrated", "BA": "unrated"})
    n, _, rated = _import(browser, qc, images, exports["artifact"], "qc_artifact.yml")
    assert (n, rated) == (1, {"A": "unrated", "B": "artifact", "BA": "unrated"})


def test_match_image_is_a_pure_function_of_the_listed_path_and_the_images(browser, report):
    """window.sctgmQc.matchImage(path, images) -> {how, indices}: exact first, then the most whole trailing
    components in common (either separator); several image files tied -> "ambiguous" (their indices),
    not even the file name -> "none"."""
    open_report(browser, report)

    def match(path, imgs):
        return browser.execute_script("return window.sctgmQc.matchImage(arguments[0], arguments[1]);", path, imgs)

    imgs = ["/x/data/A/t2s.nii.gz", "/x/data/B/t2s.nii.gz", "/x/data/BA/t2s.nii.gz", "/x/data/A/t2s.nii.gz"]
    assert match("/x/data/A/t2s.nii.gz", imgs) == {"how": "exact", "indices": [0, 3]}  # one image, two masks
    assert match("A/t2s.nii.gz", imgs) == {"how": "suffix", "indices": [0, 3]}
    assert match("data\\BA\\t2s.nii.gz", imgs) == {"how": "suffix", "indices": [2]}
    assert match("../data/B//t2s.nii.gz", imgs) == {"how": "suffix", "indices": [1]}
    assert match("t2s.nii.gz", imgs) == {"how": "ambiguous", "indices": [0, 1, 2, 3]}
    assert match("data/t2s.nii.gz", imgs) == {"how": "ambiguous", "indices": [0, 1, 2, 3]}  # only the name
    assert match("/home/me/study/data/A/t2s.nii.gz", imgs) == {"how": "suffix", "indices": [0, 3]}  # another root
    assert match("C/t2s.nii.gz", imgs[:1]) == {"how": "suffix", "indices": [0]}  # a unique name, as before
    assert match("2s.nii.gz", imgs) == {"how": "none", "indices": []}
    assert match("", imgs) == {"how": "none", "indices": []}
    assert match("t2s.nii.gz", ["/x/data/A/t2s.nii.gz", "/y/t2s_other.nii.gz"]) == {"how": "suffix", "indices": [0]}
    # An entry whose whole path is the listed path's components wins over longer ones ending with them.
    assert match("C:\\x\\A\\t2s.nii.gz", ["C:/x/A/t2s.nii.gz", "/y/C:/x/A/t2s.nii.gz"]) == {"how": "suffix",
                                                                                       "indices": [0]}
