"""What a training run is asked: the labelled data (:class:`TrainSources`) and how to train
(:class:`TrainOptions`), the two values :func:`sctgm.train` takes. Every default is a constant of
:mod:`sctgm.training.defaults` (the one source; docs/train.md has the measurements)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from .defaults import DEFAULT_BATCH_SIZE, DEFAULT_INIT, DEFAULT_PATIENCE, DEFAULT_VAL_FRACTION

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class TrainSources:
    """Labelled images, from any mix of: ``images`` with their GM ``masks`` (one each, same grid), a
    BIDS dataset ``bids`` (GM labels in derivatives/labels; ``suffixes``, ``participants`` select), a
    folder ``gmchallenge`` in the GM challenge's layout (majority vote of its raters)."""

    images: Sequence[PathLike] = ()
    masks: Sequence[PathLike] = ()
    bids: PathLike | None = None
    suffixes: Sequence[str] | None = None
    participants: Sequence[str] = ()
    gmchallenge: PathLike | None = None


@dataclass(frozen=True)
class TrainOptions:
    """How to train (docs/train.md, one paragraph per option).

    ``init``: a registered model, a model folder or weight file, or ``"none"`` (random weights of
    ``arch``, a network's ``--arch`` name, with ``filters``; None: its module's default sizes).
    ``val``: validation subjects, else ``val_fraction`` of the subjects (one subject: a block of its
    slices). ``max_steps`` or ``epochs`` (None, None: the default steps); ``lr`` None: the fine-tuning
    or from-scratch default; ``bn`` None: the default for fine-tuning, 'train' from scratch;
    ``augment``: a preset name ('standard', 'robust', 'none') or an AugmentConfig (None: standard).
    """

    init: str = DEFAULT_INIT
    arch: str | None = None
    filters: int | None = None
    val: Sequence[str] = ()
    val_fraction: float = DEFAULT_VAL_FRACTION
    max_steps: int | None = None
    epochs: float | None = None
    lr: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    bn: str | None = None
    patience: int = DEFAULT_PATIENCE
    augment: Any = None
