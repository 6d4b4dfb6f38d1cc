"""Dice against the manual masks for several network-resolution thresholds (default
post-processing), on the labelled data in ../shared. Prints a Markdown table (docs/segment.md)."""

from __future__ import annotations


import nibabel as nib
import numpy as np

from cases import LABELLED, MODELS_DIR, dice
from sctgm.io import load_image
from sctgm.segment.pipeline import Segmenter, SegmentOptions

THRESHOLDS = (0.5, 0.9, 0.99, 0.999, 0.9999)


def main() -> None:
    print("| model | case | " + " | ".join(f"thr {t}" for t in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    allrows = []
    for model in ("challenge", "large"):
        seg = Segmenter.from_name(model, device="cpu", mirror=str(MODELS_DIR))
        for case, (img, manual, _) in LABELLED.items():
            image, ref = load_image(img), np.asanyarray(nib.load(str(manual)).dataobj)
            ds = [dice(seg.segment_image(image, options=SegmentOptions(threshold=t)).gm, ref) for t in THRESHOLDS]
            allrows.append(ds)
            print(f"| {model} | {case} | " + " | ".join(f"{d:.4f}" for d in ds) + " |", flush=True)
    print("| mean | all 6 | " + " | ".join(f"**{d:.4f}**" for d in np.mean(allrows, axis=0)) + " |")


if __name__ == "__main__":
    main()
