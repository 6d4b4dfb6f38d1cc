"""Local executors: the jobs of a batch in this process, or in N local worker processes. They return
the records in job order (see :mod:`.common` for what every executor shares).

Ctrl-C: the sequential executor stops at once (atomic writes leave no partial file); the process pool
keeps one job per worker in flight, submits no more and lets the running ones finish their image
(workers ignore SIGINT, so a terminal's Ctrl-C never kills one in the middle of a write); the Dask
executor cancels its futures (:mod:`.dask`).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Sequence
from itertools import islice
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from ..jobs import BatchSettings, Job, JobRecord, failed_record
from .common import OnRecord, WorkerSegmenter, job_threads, load_segmenter

if TYPE_CHECKING:
    from ...segment.pipeline import Segmenter

log = logging.getLogger(__name__)


def run_sequential(jobs: Sequence[Job], settings: BatchSettings, on_record: OnRecord | None = None,
                   segmenter: Segmenter | None = None) -> list[JobRecord]:
    """Run the jobs one after the other in this process (one model load; a model that cannot be
    loaded raises here, before any job)."""
    records: list[JobRecord] = []
    worker = WorkerSegmenter(settings, job_threads(settings, None))
    worker.segmenter = segmenter or load_segmenter(settings, worker.threads)
    for i, job in enumerate(jobs):
        records.append(worker.run(job))
        if on_record:
            on_record(i, records[-1])
    return records


# ------------------------------------------------------------------------- local process pool
# Inside a pool worker process only: its model (one per process and settings), loaded on first use.
_worker_models: dict[BatchSettings, WorkerSegmenter] = {}


def _init_worker(settings: BatchSettings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    logging.getLogger("sctgm").addHandler(logging.NullHandler())


def _run_in_worker(job: Job, settings: BatchSettings, threads: int | None) -> JobRecord:
    worker = _worker_models.setdefault(settings, WorkerSegmenter(settings, threads))
    return worker.run(job)


def run_processes(jobs: Sequence[Job], settings: BatchSettings, n_workers: int,
                  on_record: OnRecord | None = None) -> list[JobRecord]:
    """Run the jobs in ``n_workers`` local processes (spawned, each loads the model once)."""
    n_workers = max(1, min(n_workers, len(jobs)))
    records: list[JobRecord | None] = [None] * len(jobs)
    ctx = multiprocessing.get_context("spawn")  # never fork a process that has started torch threads
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_worker, initargs=(settings,))
    threads = job_threads(settings, n_workers)
    pending = iter(enumerate(jobs))
    running: dict[Future[JobRecord], int] = {}
    try:
        while True:
            # at most one job per worker in flight: on Ctrl-C only the images being segmented finish
            for i, job in islice(pending, n_workers - len(running)):
                running[pool.submit(_run_in_worker, job, settings, threads)] = i
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = running.pop(fut)
                try:
                    records[i] = fut.result()
                except BrokenProcessPool as exc:
                    records[i] = failed_record(jobs[i], RuntimeError(f"a worker process died ({exc or 'killed'})"))
                if on_record:
                    on_record(i, records[i])  # type: ignore[arg-type]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return records  # type: ignore[return-value]
