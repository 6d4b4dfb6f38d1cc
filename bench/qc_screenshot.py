#!/usr/bin/env python
"""Screenshots of an sct-gm QC report (index page and one entry) with headless Chromium.

    python bench/qc_screenshot.py --out shots/                 # demo report from ../shared data
    python bench/qc_screenshot.py --qc path/to/qc --out shots/ # an existing report

Writes ``index.png`` (list + selected entry) and ``entry.png`` (the entry panel alone). Needs
Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; no network is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_T2S = REPO.parent / "shared" / "data" / "sct_testing_data" / "t2s"
CHROMIUM = os.environ.get("SCTGM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SCTGM_CHROMEDRIVER", "/usr/bin/chromedriver")


def browser_missing() -> str | None:
    """Why no headless browser can run here (None when one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install selenium)"
    for p in (CHROMIUM, CHROMEDRIVER):
        if not Path(p).exists():
            return f"{p} is absent (apt-get install -y chromium chromium-driver)"
    return None


def make_driver(profile_dir: str | os.PathLike[str], download_dir: str | os.PathLike[str] | None = None,
                size: tuple[int, int] = (1500, 1000)):
    """A headless Chromium (Debian's binary and driver, no download, no network) driven by Selenium."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars",
                 f"--user-data-dir={profile_dir}", f"--window-size={size[0]},{size[1]}"):
        opts.add_argument(flag)
    if download_dir is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                               "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return driver


def wait_ready(driver, timeout_s: float = 10.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout_s).until(
        lambda d: d.execute_script("return document.body && document.body.getAttribute('data-ready') === '1'"
                                   " && Array.from(document.images).every(i => i.complete)"))


def demo_report(qc_dir: Path) -> Path:
    """A small report from the shared t2s data: the manual GM mask (with and without the cord mask)
    and a deliberately damaged copy, so flags show."""
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(REPO))
    from sctgm.qc import add_entry

    img, gm, cord = SHARED_T2S / "t2s.nii.gz", SHARED_T2S / "t2s_gmseg_manual.nii.gz", SHARED_T2S / "t2s_seg.nii.gz"
    if not img.exists():
        raise SystemExit(f"{img} is absent: give --qc with an existing report")
    add_entry(qc_dir, img, gm, model="manual", subject="t2s-manual-no-cord")
    work = Path(tempfile.mkdtemp(prefix="sctgm-qc-demo-"))
    src = nib.load(str(gm))
    bad = np.asarray(src.dataobj).astype(np.uint8)
    bad[:, :, 3] = 0                                   # empty GM on a slice with cord
    bad[0:6, 0:6, 5] = 1                              # a leak far from the cord
    bad_path = work / "t2s_damaged_gmseg.nii.gz"
    nib.save(nib.Nifti1Image(bad, src.affine, src.header), str(bad_path))
    add_entry(qc_dir, img, bad_path, cord_path=cord, model="damaged-demo", subject="t2s-damaged")
    add_entry(qc_dir, img, gm, cord_path=cord, model="manual", subject="t2s")
    return qc_dir


def screenshot(qc_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    from selenium.webdriver.common.by import By

    out_dir.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="sctgm-qc-chromium-")
    driver = make_driver(profile)
    try:
        driver.get((qc_dir / "index.html").resolve().as_uri())
        wait_ready(driver)
        flagged = driver.execute_script(
            "var e = window.SCTGM_QC.entries.filter(x => x.n_flagged > 0)[0]; return e ? e.id : null;")
        if flagged:
            driver.execute_script("window.sctgmQc.select(arguments[0]);", flagged)
            wait_ready(driver)
        index_png, entry_png = out_dir / "index.png", out_dir / "entry.png"
        driver.save_screenshot(str(index_png))
        height = driver.execute_script("return document.getElementById('viewer').scrollHeight + 200;")
        driver.set_window_size(1500, max(1000, int(height)))
        driver.find_element(By.ID, "viewer").screenshot(str(entry_png))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return index_png, entry_png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qc", type=Path, help="existing QC folder (default: build a demo one from ../shared)")
    ap.add_argument("--out", type=Path, default=Path("qc_screenshots"), help="folder for index.png and entry.png")
    args = ap.parse_args(argv)
    why = browser_missing()
    if why:
        print(f"qc_screenshot: cannot run: {why}", file=sys.stderr)
        return 2
    qc_dir = args.qc or demo_report(Path(tempfile.mkdtemp(prefix="sctgm-qc-")) / "qc")
    for p in screenshot(qc_dir, args.out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
