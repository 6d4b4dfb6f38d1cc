"""sct-gm: spinal cord gray matter segmentation (Perone et al. 2018 dilated network).

Library API (imports torch lazily, on first use)::

    import sctgm
    result = sctgm.segment_file("t2s.nii.gz")                 # writes t2s_gmseg.nii.gz + .json
    seg = sctgm.Segmenter.from_name("large")                  # load a model once ...
    out = seg.segment_image(sctgm.load_image("t2s.nii.gz"))   # ... segment arrays in memory
    res = sctgm.segment_bids("ds", sctgm.BatchSettings(model="large"), n_jobs=4)  # a BIDS dataset
    out = sctgm.train(sctgm.TrainSources(["img.nii.gz"], ["gm.nii.gz"]), "mymodel",   # fine-tune (sct-gm train,
                      sctgm.TrainOptions(init="challenge", max_steps=100))          # needs sctgm[torch])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .exceptions import SctGmError

if TYPE_CHECKING:
    from .batch import segment_bids, segment_files
    from .batch.jobs import BatchSettings
    from .io import load_image
    from .segment.files import segment_file
    from .segment.pipeline import Segmenter, SegmentOptions
    from .training.api import train
    from .training.options import TrainOptions, TrainSources

__all__ = ["__version__", "SctGmError", "segment_file", "segment_image", "load_image", "Segmenter", "SegmentOptions",
           "segment_bids", "segment_files", "BatchSettings", "train", "TrainSources", "TrainOptions"]

_LAZY = {
    "segment_file": "segment.files",
    "segment_bids": "batch",
    "segment_files": "batch",
    "BatchSettings": "batch.jobs",
    "load_image": "io",
    "Segmenter": "segment.pipeline",
    "SegmentOptions": "segment.pipeline",
    "train": "training.api",
    "TrainSources": "training.options",
    "TrainOptions": "training.options",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sctgm' has no attribute {name!r}")


def segment_image(image: Any, *, model: str | None = None, device: str = "auto", **kwargs: Any) -> Any:
    """Segment an in-memory image: a path, a nibabel image or a :class:`~sctgm.io.LoadedImage`.
    Returns a :class:`~sctgm.segment.pipeline.Segmentation` (arrays on the image's grid). Keyword arguments
    go to :meth:`Segmenter.segment_image` (``cord``, ``options``, ``want_prob``, ``progress``)."""
    from pathlib import Path

    import nibabel as nib

    from .io import image_from_nifti, load_image
    from .segment.pipeline import Segmenter, say_if_empty

    if isinstance(image, (str, Path)):
        image = load_image(image)
    elif isinstance(image, nib.spatialimages.SpatialImage):
        image = image_from_nifti(image)
    result = Segmenter.from_name(model, device=device).segment_image(image, **kwargs)
    say_if_empty(result, image.path)
    return result
