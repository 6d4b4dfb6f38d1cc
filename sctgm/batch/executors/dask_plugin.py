"""The Dask worker side of :mod:`.dask`: imported only where ``distributed`` is installed (:mod:`.dask`
checks that first and says how to install the extra)."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from distributed import WorkerPlugin, get_worker

from ..jobs import BatchSettings, Job, JobRecord
from .common import WorkerSegmenter, job_threads


class SegmenterPlugin(WorkerPlugin):
    """A Dask worker plugin that holds one model per worker (:class:`~.common.WorkerSegmenter`) and a
    lock, so that a worker runs one segmentation at a time, with all the threads the worker has."""

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        self.name = "sctgm-segmenter-" + hashlib.sha1(repr(settings).encode()).hexdigest()[:12]
        self.worker: WorkerSegmenter | None = None

    def setup(self, worker: Any) -> None:
        self.lock = threading.Lock()
        nthreads = int(getattr(getattr(worker, "state", worker), "nthreads", 1) or 1)
        self.worker = WorkerSegmenter(self.settings, job_threads(self.settings, worker_threads=nthreads))

    def run(self, job: Job) -> JobRecord:
        with self.lock:
            assert self.worker is not None  # set up by Dask before any task runs
            return self.worker.run(job)


def run_on_worker(job: Job, plugin_name: str) -> JobRecord:
    """The task Dask runs: ``job`` on this worker's model."""
    return get_worker().plugins[plugin_name].run(job)
