#!/usr/bin/env python
"""Screenshots of an sct-gm QC report (index page and one entry) with headless Chromium.

    python bench/qc_screenshot.py --out shots/                 # demo report from ../shared data
    python bench/qc_screenshot.py --qc path/to/qc --out shots/ # an existing report

Writes ``index.png`` (list + selected entry) and ``entry.png`` (the entry panel alone). Needs
Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; no network is used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cases import TESTING
from sctgm.qc.screenshot import browser_missing, screenshot

SHARED_T2S = TESTING / "t2s"


def demo_report(qc_dir: Path) -> Path:
    """A small report from the shared t2s data: the manual GM mask (with and without the cord mask)
    and a deliberately damaged copy, so flags show."""
    import nibabel as nib
    import numpy as np

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
