"""Screenshots of a QC report in headless Chromium (a developer tool: bench/qc_screenshot.py and the
browser tests use it). Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium``
package (none is a dependency of sct-gm); no network is used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("SCTGM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SCTGM_CHROMEDRIVER", "/usr/bin/chromedriver")
#: Seconds to wait for a page to load or be ready: generous, as a loaded 2-core machine may need it
#: (each wait ends as soon as its condition holds).
WAIT_S = 30.0


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
                size: tuple[int, int] = (1500, 1000)) -> Any:
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
    driver.set_page_load_timeout(WAIT_S)
    return driver


def wait_ready(driver: Any, timeout_s: float = WAIT_S) -> None:
    """Wait until the report says it is ready and every image has loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout_s).until(
        lambda d: d.execute_script("return document.body && document.body.getAttribute('data-ready') === '1'"
                                   " && Array.from(document.images).every(i => i.complete)"))


def screenshot(qc_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """``index.png`` (list and the first flagged entry) and ``entry.png`` (that entry's panel) of a report."""
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
