#!/usr/bin/env python
"""A screenshot of the QC report's slice editor (``sct-gm qc --serve``) on real data, headless Chromium.

    python bench/qc_editor_screenshot.py --out shots/          # t2s from ../shared, segmented here
    python bench/qc_editor_screenshot.py --out shots/ --docs   # also docs/img/qc_editor.png (README)

Builds a one-subject BIDS dataset in a temporary folder from ``../shared``'s t2s image and cord mask,
segments it with ``sct-gm segment --bids ... --prob --qc`` (model ``large``, installed from
``../shared/models/deepseg_gm``; one thread), serves the report, opens the editor on the slice where
the automatic mask differs most from the manual one (among the manually labelled slices), paints a short stroke with the mouse, and saves
``editor.png`` (the editor) and ``entry.png`` (the entry after the save, the corrected slice framed in
green). Nothing is written into ../shared or the repository (except with ``--docs``). Needs Debian's
``chromium`` and ``chromium-driver`` and the ``selenium`` package; no network is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cases import MODELS_DIR as MODELS
from cases import REPO, TESTING
from sctgm.qc.screenshot import browser_missing, make_driver, wait_ready

T2S = TESTING / "t2s"


def demo_dataset(work: Path) -> tuple[Path, Path]:
    """``work/ds`` (BIDS: sub-t2s's T2star and its cord label) segmented into ``work/qc``."""
    ds = work / "ds"
    anat = ds / "sub-t2s" / "anat"
    anat.mkdir(parents=True)
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "sct-gm editor demo", "BIDSVersion": "1.10.0"}))
    shutil.copy(T2S / "t2s.nii.gz", anat / "sub-t2s_T2star.nii.gz")
    labels = ds / "derivatives" / "labels" / "sub-t2s" / "anat"
    labels.mkdir(parents=True)
    shutil.copy(T2S / "t2s_seg.nii.gz", labels / "sub-t2s_T2star_label-SC_seg.nii.gz")
    env = {**os.environ, "SCTGM_MIRROR": str(MODELS), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "sctgm", "segment", "--bids", str(ds), "-m", "large", "--prob",
                    "--qc", str(work / "qc"), "--threads", "1", "-q"], check=True, env=env)
    return ds, work / "qc"


def worst_slice(ds: Path) -> int:
    """The file slice where the automatic mask differs most from ../shared's manual one."""
    import nibabel as nib
    import numpy as np

    auto = np.asarray(nib.load(str(next((ds / "derivatives" / "sct-gm").rglob("*_label-GM_seg.nii.gz")))).dataobj) > 0.5
    manual = np.asarray(nib.load(str(T2S / "t2s_gmseg_manual.nii.gz")).dataobj) > 0.5
    labelled = manual.any(axis=(0, 1))
    return int(np.argmax(np.where(labelled, (auto != manual).sum(axis=(0, 1)), -1)))


def corrections_to_make(ds: Path, file_slice: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Display (row, col) voxels to paint (manual GM the automatic mask misses) and to erase (the
    reverse) on ``file_slice``, so the screenshot shows a real correction towards the manual mask."""
    import nibabel as nib
    import numpy as np

    from sctgm.geometry import file_slice_index, reorientation_for
    from sctgm.qc.render import to_display

    img = nib.load(str(T2S / "t2s.nii.gz"))
    reo = reorientation_for(img.affine, img.shape)
    auto = np.asarray(nib.load(str(next((ds / "derivatives" / "sct-gm").rglob("*_label-GM_seg.nii.gz")))).dataobj) > 0.5
    manual = np.asarray(nib.load(str(T2S / "t2s_gmseg_manual.nii.gz")).dataobj) > 0.5
    k = next(k for k in range(img.shape[2]) if file_slice_index(reo, k) == file_slice)
    a, m = to_display(reo.apply(auto)[:, :, k]), to_display(reo.apply(manual)[:, :, k])
    return [tuple(map(int, v)) for v in np.argwhere(m & ~a)], [tuple(map(int, v)) for v in np.argwhere(a & ~m)]


def click_voxels(driver, voxels: list[tuple[int, int]]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "editor-canvas")
    w, h, col0, row0, cols, rows = driver.execute_script(
        "var c = document.getElementById('editor-canvas').getBoundingClientRect(), v = window.sctgmEditor.state().current.d.view;"
        "return [c.width, c.height, v.col0, v.row0, v.cols, v.rows];")
    chain = ActionChains(driver)
    for r, c in voxels:
        chain = chain.move_to_element_with_offset(canvas, round((c - col0 + 0.5) * w / cols - w / 2),
                                                  round((r - row0 + 0.5) * h / rows - h / 2)).click()
    chain.perform()


def shoot(qc: Path, out: Path, file_slice: int, paint: list[tuple[int, int]],
          erase: list[tuple[int, int]]) -> list[Path]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    from sctgm.qc.serve import start_server

    server = start_server(qc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    profile = tempfile.mkdtemp(prefix="sctgm-editor-chromium-")
    driver = make_driver(profile, size=(1100, 1150))
    try:
        driver.get(server.url)
        wait_ready(driver)
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.getAttribute('data-editor')"))
        entry = driver.execute_script("return window.SCTGM_QC.entries[0].id")
        driver.execute_async_script("var done = arguments[arguments.length - 1];"
                                    "window.sctgmQc.select(arguments[0]);"
                                    "window.sctgmEditor.open(arguments[0], arguments[1]).then(function () { done(); });",
                                    entry, file_slice)
        ActionChains(driver).send_keys("[").perform()  # brush of one voxel
        click_voxels(driver, paint)
        ActionChains(driver).send_keys("x").perform()
        click_voxels(driver, erase)
        ActionChains(driver).send_keys("b").perform()
        time.sleep(0.3)
        out.mkdir(parents=True, exist_ok=True)
        editor_png, entry_png = out / "editor.png", out / "entry.png"
        driver.find_element("css selector", "#editor .editor-panel").screenshot(str(editor_png))
        ActionChains(driver).send_keys("s").perform()
        WebDriverWait(driver, 10).until(lambda d: "Saved" in d.find_element("id", "editor-status").text)
        ActionChains(driver).send_keys("\ue00c").perform()  # Escape
        height = driver.execute_script("return document.getElementById('viewer').scrollHeight + 200;")
        driver.set_window_size(1500, max(1000, int(height)))
        driver.find_element("id", "viewer").screenshot(str(entry_png))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.shutdown()
        server.server_close()
    return [editor_png, entry_png]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("qc_screenshots"), help="folder for editor.png and entry.png")
    ap.add_argument("--docs", action="store_true", help="also write docs/img/qc_editor.png (the README's picture)")
    args = ap.parse_args(argv)
    why = browser_missing()
    if why or not (T2S / "t2s.nii.gz").exists():
        print(f"qc_editor_screenshot: cannot run: {why or T2S / 't2s.nii.gz'} is absent", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sctgm-editor-demo-"))
    try:
        ds, qc = demo_dataset(work)
        k = worst_slice(ds)
        paint, erase = corrections_to_make(ds, k)
        shots = shoot(qc, args.out, k, paint, erase)
        print(f"slice {k} (most voxels differing from the manual mask): painted {len(paint)}, erased {len(erase)} voxels")
        for p in shots:
            print(p)
        if args.docs:
            from PIL import Image

            img = Image.open(shots[0]).convert("P", palette=Image.ADAPTIVE, colors=128)
            dest = REPO / "docs" / "img" / "qc_editor.png"
            dest.parent.mkdir(exist_ok=True)
            img.save(dest, optimize=True)
            print(dest, f"{dest.stat().st_size // 1024} KiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
