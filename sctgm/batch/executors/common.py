"""What every executor shares: the network's threads per job, and one model per worker, loaded once.

Every executor loads the model once per worker (:class:`WorkerSegmenter`), with the network's threads
chosen by :func:`job_threads` (so that every executor computes the same floats), runs
:func:`sctgm.batch.jobs.run_job`, and reports each record as it completes through
``on_record(index, record)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...engines.hardware import available_cores, onnxruntime_available
from ...exceptions import SctGmError
from ..jobs import BatchSettings, Job, JobRecord, failed_record, run_job

if TYPE_CHECKING:
    from ...segment.pipeline import Segmenter

OnRecord = Callable[[int, JobRecord], None]


def torch_may_run_on_cpu(engine: str, device: str) -> bool:
    """Whether these settings may run the PyTorch engine on the CPU, decided without importing torch
    (``engine="torch"`` with ``device="auto"`` counts, since the machine may have no GPU)."""
    if engine == "onnxruntime" or device.startswith("cuda"):
        return False
    return engine == "torch" or not onnxruntime_available()


def job_threads(settings: BatchSettings, n_workers: int | None = None,
                worker_threads: int | None = None) -> int | None:
    """CPU threads for each job's network, when ``settings.threads`` does not say: the threads a
    (Dask) worker was given, else the cores shared by ``n_workers`` local workers (None: all of
    them, for one worker).

    ONNX Runtime (the CPU default) computes bit-identical results with any thread count (checked in
    tests/engines), so it gets the cores. PyTorch's CPU sums depend on the thread count (up to 1e-6
    apart, docs/batch.md): it runs with 1 thread in every executor, so that a sequential run, ``-j N``
    and a Dask cluster write the same bytes. Nothing here imports torch.
    """
    if settings.threads:
        return settings.threads
    if torch_may_run_on_cpu(settings.engine, settings.device):
        return 1
    if worker_threads:
        return worker_threads
    if n_workers is None or n_workers <= 1:
        return None
    return max(1, available_cores() // n_workers)


def load_segmenter(settings: BatchSettings, threads: int | None) -> Segmenter:
    """The batch's model, loaded (and installed first if needed) with ``threads``."""
    from ...segment.pipeline import Segmenter

    return Segmenter.from_name(settings.model, device=settings.device, engine=settings.engine, threads=threads,
                               mirror=settings.mirror, cache_dir=settings.cache_dir, precision=settings.precision)


class WorkerSegmenter:
    """One worker's model, loaded on its first job; a model that cannot be loaded fails each job with
    the reason (the batch goes on, and its summary says why)."""

    def __init__(self, settings: BatchSettings, threads: int | None) -> None:
        self.settings = settings
        self.threads = threads
        self.segmenter: Segmenter | None = None

    def run(self, job: Job) -> JobRecord:
        if self.segmenter is None:
            try:
                self.segmenter = load_segmenter(self.settings, self.threads)
            except SctGmError as exc:
                return failed_record(job, exc)
        return run_job(self.segmenter, job, self.settings)
