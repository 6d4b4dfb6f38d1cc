"""Where the jobs of a batch run: in this process, in N local worker processes, or on a Dask cluster.

Every executor loads the model once per worker, with the network's threads chosen by
:func:`job_threads` (so that every executor computes the same floats), runs :func:`sctgm.jobs.run_job`,
and reports each record as it completes through ``on_record(index, record)``. They return the
records in job order.

Ctrl-C: the sequential executor stops at once (atomic writes leave no partial file); the process pool
keeps one job per worker in flight, submits no more and lets the running ones finish their image
(workers ignore SIGINT, so a terminal's Ctrl-C never kills one in the middle of a write); the Dask
engine cancels its futures.
The Dask executor lives in :mod:`sctgm.dask_executor`, imported only when a scheduler is given.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from itertools import islice
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from .exceptions import SctGmError
from .jobs import BatchSettings, Job, JobRecord, failed_record, run_job

if TYPE_CHECKING:
    from .pipeline import Segmenter

log = logging.getLogger(__name__)

OnRecord = Callable[[int, JobRecord], None]


def job_threads(settings: BatchSettings, n_workers: int | None = None,
                worker_threads: int | None = None) -> int | None:
    """CPU threads for each job's network, when ``settings.threads`` does not say: the threads a
    (Dask) worker was given, else the cores shared by ``n_workers`` local workers (None: all of
    them, for one worker).

    ONNX Runtime (the CPU default) computes bit-identical results with any thread count (checked in
    tests/test_engines.py), so it gets the cores. PyTorch's CPU sums depend on the thread count (up to
    1e-6 apart, docs/batch.md): it runs with 1 thread in every batch engine, so that a sequential
    run, ``-j N`` and a Dask cluster write the same bytes.
    """
    from .engine_onnx import available_cores
    from .inference import choose_engine

    if settings.threads:
        return settings.threads
    engine, device = choose_engine(settings.engine, settings.device)
    if engine == "torch" and device == "cpu":
        return 1
    if worker_threads:
        return worker_threads
    if n_workers is None or n_workers <= 1:
        return None
    return max(1, available_cores() // n_workers)


def load_segmenter(settings: BatchSettings, threads: int | None) -> Segmenter:
    from .pipeline import Segmenter

    return Segmenter(settings.model, device=settings.device, engine=settings.engine, threads=threads,
                     mirror=settings.mirror, cache_dir=settings.cache_dir)


def run_sequential(jobs: Sequence[Job], settings: BatchSettings, on_record: OnRecord | None = None,
                   segmenter: Segmenter | None = None) -> list[JobRecord]:
    """Run the jobs one after the other in this process (one model load)."""
    records: list[JobRecord] = []
    seg = segmenter or load_segmenter(settings, job_threads(settings, None))
    for i, job in enumerate(jobs):
        records.append(run_job(seg, job, settings))
        if on_record:
            on_record(i, records[-1])
    return records


# ------------------------------------------------------------------------- local process pool
# Inside a pool worker process only: the model it loaded (one per process, keyed by settings).
_worker_models: dict[BatchSettings, Any] = {}


def _init_worker(settings: BatchSettings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    logging.getLogger("sctgm").addHandler(logging.NullHandler())


def _run_in_worker(job: Job, settings: BatchSettings, threads: int | None) -> JobRecord:
    try:
        seg = _worker_models.get(settings)
        if seg is None:
            seg = _worker_models[settings] = load_segmenter(settings, threads)
    except SctGmError as exc:
        return failed_record(job, exc)
    return run_job(seg, job, settings)


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


def run_jobs(jobs: Sequence[Job], settings: BatchSettings, *, n_jobs: int = 1, scheduler: Any = None,
             on_record: OnRecord | None = None) -> list[JobRecord]:
    """Run ``jobs`` sequentially (``n_jobs`` 1), in ``n_jobs`` local processes, or on the Dask
    scheduler ``scheduler`` (an address ``tcp://host:port``, a scheduler JSON file, or a
    ``distributed.Client``)."""
    if not jobs:
        return []
    if scheduler is not None:
        from .dask_executor import run_dask

        return run_dask(jobs, settings, scheduler, on_record)
    if n_jobs > 1 and len(jobs) > 1:
        return run_processes(jobs, settings, n_jobs, on_record)
    return run_sequential(jobs, settings, on_record)
