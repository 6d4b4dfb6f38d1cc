"""One exception hierarchy for sct-gm.

Every error a user can cause derives from :class:`SctGmError`. The CLI turns any of them into a
one-line message and a non-zero exit code; library users catch ``SctGmError``. Messages say what was
found, what was expected and, where there is one, the fix.

Exit codes (README, "Exit codes"), each given by exactly one class here: 2 the input or an option
(:class:`SctGmError` itself and every class below that does not say otherwise, like Click's usage
errors), 3 output (:class:`OutputError`), 4 model (:class:`ModelError`), 5 batch executor
(:class:`ExecutorError`). The CLI adds 1 (a batch finished with failed images), 130 (interrupted) and
70 (any other exception: a bug).
"""

from __future__ import annotations


class SctGmError(Exception):
    """Base class of every error sct-gm raises on purpose.

    ``parameter``: the library argument the message is about (e.g. ``"engine"``), or None. Messages
    speak of arguments, never of command-line flags (a notebook has none); the CLI names the flag
    from ``parameter`` (:mod:`sctgm.cli`)."""

    exit_code = 2

    def __init__(self, *args: object, parameter: str | None = None) -> None:
        super().__init__(*args)
        self.parameter = parameter

    def __reduce__(self) -> tuple[object, ...]:  # keep ``parameter`` across processes (pickle)
        return (self.__class__, self.args, self.__dict__)


class InputImageError(SctGmError):
    """An input file is missing, unreadable, not a NIfTI, or not an image sct-gm can segment
    (wrong dimensionality, empty/constant data, degenerate affine)."""


class OrientationError(InputImageError):
    """The image's axes cannot be mapped to anatomical directions (e.g. an oblique affine whose
    axes do not align with any of R-L, A-P, S-I)."""


class NotAxialError(InputImageError):
    """In batch and BIDS mode: the image's slices are thinner than its in-plane pixels (a sagittal or
    coronal acquisition); the network segments axial slices. A single-file run only warns."""


class DatasetError(InputImageError):
    """A batch cannot be planned: a BIDS dataset root that is missing or is not a BIDS dataset, filters
    (suffix, participant, session) that match no image, a glob pattern that matches no file."""


class GridMismatchError(InputImageError):
    """Two images that must share a voxel grid (image and cord mask, segmentation and reference)
    do not."""


class OutputError(SctGmError):
    """An output cannot be written (folder missing or not writable, refusing to overwrite)."""

    exit_code = 3


class ModelError(SctGmError):
    """A model is unknown, missing, corrupt, or cannot be loaded."""

    exit_code = 4


class UnknownModelError(ModelError):
    """The model name is not in the registry and is not a path to model files."""


class ModelIntegrityError(ModelError):
    """An installed model file does not match its registered size or sha256."""


class DownloadError(ModelError):
    """Every source of a model file failed; the message lists each source and why."""


class UnsafeArchiveError(DownloadError):
    """An archive has a member that would be written outside the target folder."""


class ExecutorError(SctGmError):
    """A batch executor cannot run: the optional Dask extra is not installed, or the scheduler cannot
    be reached."""

    exit_code = 5


class InvalidOptionError(SctGmError):
    """A parameter has a value out of its range, names something unknown (threshold, batch size,
    crop size, engine, device), asks for a device this machine lacks, or needs another one (the WM
    mask without a cord mask)."""


class MissingExtraError(InvalidOptionError):
    """A command or option needs an optional extra that is not installed: PyTorch (``pip install
    'sctgm[torch]'``) for ``sct-gm train`` and ``--engine torch``; segmenting on a CPU needs none."""


class WorkerDiedError(ExecutorError):
    """In a batch: the worker process segmenting an image died (killed, out of memory, a crash in native
    code) again when the image was retried alone; recorded for that image, the batch goes on."""


class MetricsError(SctGmError):
    """Metrics cannot be computed on the given masks."""


class QcError(SctGmError):
    """A QC report entry cannot be produced."""
