"""File-level entry point: segment a NIfTI file and write the outputs beside it (or where asked).

A notebook calls :func:`segment_file` (or :meth:`Segmenter.from_name` for many files with one model
load); the CLI is a thin shell over the same calls.
"""

from __future__ import annotations

import os
from typing import Any

from ..engines import ProgressCallback
from ..exceptions import InvalidOptionError
from ..io import load_image, load_mask_image
from ..naming import output_kinds, sct_outputs
from .outputs import EntryWriter, SegmentFileResult, check_outputs, segment_and_write
from .pipeline import Segmenter, SegmentOptions


def segment_file(input_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                 model: str | None = None, cord_mask: str | os.PathLike[str] | None = None,
                 options: SegmentOptions = SegmentOptions(), prob: bool = False, wm: bool = False,
                 device: str = "auto", engine: str = "auto", threads: int | None = None, precision: str | None = None,
                 segmenter: Segmenter | None = None, entry: EntryWriter | None = None, overwrite: bool = False,
                 progress: ProgressCallback | None = None, download_progress: Any = None) -> SegmentFileResult:
    """Segment the GM of one NIfTI file and write the mask (uint8 0/1 on exactly the input's grid),
    its JSON sidecar, and optionally the probability map (``prob``) and, with a cord mask, the WM
    mask (``wm``). The outputs are written as a set (:mod:`sctgm.segment.outputs`): all of them or
    none, nothing partial. ``entry``: written with them, e.g. a QC entry
    (``sctgm.qc.QcEntryWriter("qc")``); ``overwrite``: replace existing files that sct-gm did not
    write (an input of the command is never replaced).

    What can be checked before the network runs (outputs writable and not inputs, the QC folder,
    input and cord mask readable, model available) is checked first. A sagittal or coronal image is
    only warned about (a batch refuses it).
    """
    outputs = sct_outputs(input_path, output, kinds=output_kinds(prob=prob, wm=wm))
    if wm and cord_mask is None:
        raise InvalidOptionError("the WM mask is cord minus GM and needs a cord mask", parameter="cord_mask")
    check_outputs(outputs, [input_path] + ([cord_mask] if cord_mask is not None else []), overwrite=overwrite)
    if entry is not None:
        entry.check()
    image = load_image(input_path)
    cord = load_mask_image(cord_mask, what="cord mask") if cord_mask is not None else None
    seg = segmenter or Segmenter.from_name(model, device=device, engine=engine, threads=threads,
                                           download_progress=download_progress, precision=precision)
    return segment_and_write(seg, image, outputs, cord=cord, options=options, entry=entry, overwrite=overwrite,
                             progress=progress)
