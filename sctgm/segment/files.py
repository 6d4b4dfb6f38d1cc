"""File-level entry point: segment a NIfTI file and write the outputs beside it (or where asked).

A notebook calls :func:`segment_file` (or :meth:`Segmenter.from_name` for many files with one model
load); the CLI is a thin shell over the same calls.
"""

from __future__ import annotations

import os
from typing import Any

from ..engines import ProgressCallback
from ..exceptions import InvalidOptionError
from ..io import check_writable, load_image
from ..naming import sct_outputs
from .outputs import SegmentFileResult, segment_and_write
from .pipeline import Segmenter, SegmentOptions


def segment_file(input_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                 model: str | None = None, cord_mask: str | os.PathLike[str] | None = None,
                 options: SegmentOptions = SegmentOptions(), prob: bool = False, wm: bool = False,
                 device: str = "auto", engine: str = "auto", threads: int | None = None,
                 segmenter: Segmenter | None = None, qc_dir: str | os.PathLike[str] | None = None,
                 qc_subject: str | None = None, qc_dataset: str | None = None, progress: ProgressCallback | None = None,
                 download_progress: Any = None) -> SegmentFileResult:
    """Segment the GM of one NIfTI file and write the mask (uint8 0/1 on exactly the input's grid),
    its JSON sidecar, and optionally the probability map (``prob``) and, with a cord mask, the WM
    mask (``wm``). Outputs are written atomically: nothing partial is ever left behind. With
    ``qc_dir``, an entry is added to the HTML QC report there (:func:`sctgm.qc.add_entry`).

    What can be checked before the network runs (outputs writable, input and cord mask readable,
    model available) is checked first. A sagittal or coronal image is only warned
    about (a batch refuses it).
    """
    paths = sct_outputs(input_path, output, prob=prob, wm=wm)
    if wm and cord_mask is None:
        raise InvalidOptionError("the WM mask is cord minus GM and needs a cord mask", parameter="cord_mask")
    for p in paths.values():
        check_writable(p)
    image = load_image(input_path)
    cord = load_image(cord_mask, what="cord mask", allow_constant=True) if cord_mask is not None else None
    seg = segmenter or Segmenter.from_name(model, device=device, engine=engine, threads=threads,
                                           download_progress=download_progress)
    return segment_and_write(seg, image, paths, cord=cord, options=options, qc_dir=qc_dir, qc_subject=qc_subject,
                             qc_dataset=qc_dataset, progress=progress)
