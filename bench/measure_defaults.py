"""Measure the segmentation defaults on the labelled data in ../shared: 3D Dice against the manual
masks for each post-processing step on/off, and with/without test-time augmentation.

    python bench/measure_defaults.py            # prints a Markdown table (docs/segment.md quotes it)
"""

from __future__ import annotations


import nibabel as nib
import numpy as np

from cases import LABELLED, MODELS_DIR, dice
from sctgm.io import load_image
from sctgm.segment.pipeline import Segmenter, SegmentOptions

VARIANTS = {
    "raw (no post-processing)": SegmentOptions(keep_largest=False, fill_holes=False),
    "largest components only": SegmentOptions(keep_largest=True, fill_holes=False),
    "fill holes only": SegmentOptions(keep_largest=False, fill_holes=True),
    "both (default)": SegmentOptions(),
    "both + TTA": SegmentOptions(tta=True),
}


def main() -> None:
    rows = []
    for model in ("challenge", "large"):
        seg = Segmenter.from_name(model, device="cpu", mirror=str(MODELS_DIR))
        for case, (img, manual, _) in LABELLED.items():
            image = load_image(img)
            ref = np.asanyarray(nib.load(str(manual)).dataobj)
            rows.append((model, case, [dice(seg.segment_image(image, options=o).gm, ref) for o in VARIANTS.values()]))
    print("| model | case | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for model, case, ds in rows:
        print(f"| {model} | {case} | " + " | ".join(f"{d:.4f}" for d in ds) + " |")
    means = np.mean([ds for _, _, ds in rows], axis=0)
    print("| mean | all 6 | " + " | ".join(f"**{d:.4f}**" for d in means) + " |")


if __name__ == "__main__":
    main()
