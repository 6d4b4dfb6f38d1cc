"""Local executors: the jobs of a batch in this process, or in N local worker processes. They return
the records in job order (see :mod:`.common` for what every executor shares).

Ctrl-C: the sequential executor stops at once (atomic writes leave no partial file); the process pool
keeps one job per worker in flight, submits no more and lets the running ones finish their image
(workers ignore SIGINT, so a terminal's Ctrl-C never kills one in the middle of a write); the Dask
executor cancels its futures (:mod:`.dask`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from ...exceptions import WorkerDiedError
from ...writing import remove_leftover_parts
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


def _init_worker(settings: BatchSettings, parent_pid: int) -> None:
    # the parent handles Ctrl-C. Not SIGTERM: a broken pool ends its other workers with it, and one that
    # ignored it finished its image first (or hung, its result pipe closed); a scheduler's cancel that
    # reaches the whole group ends the workers, whose images are redone on resume (atomic writes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("sctgm").addHandler(logging.NullHandler())
    _die_with_parent(parent_pid)


#: Seconds between two looks of a worker's watchdog at its parent.
PARENT_POLL_S = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the batch process that started it is gone (kill -9 included: no
    handler runs there), so that no orphan goes on segmenting and writing outputs. On Linux the kernel
    sends SIGKILL (prctl PR_SET_PDEATHSIG); everywhere, a daemon thread watches the parent's pid (a
    dead parent's children are re-parented, so ``os.getppid()`` changes)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # no prctl: the watchdog below does it

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before the kernel was told
        os._exit(1)
    threading.Thread(target=watch, name="sctgm-parent-watchdog", daemon=True).start()


def _run_in_worker(job: Job, settings: BatchSettings, threads: int | None) -> JobRecord:
    worker = _worker_models.setdefault(settings, WorkerSegmenter(settings, threads))
    return worker.run(job)


#: A job whose worker process died this many times while it was the only job in flight is recorded as failed.
MAX_WORKER_DEATHS = 2


def run_processes(jobs: Sequence[Job], settings: BatchSettings, n_workers: int,
                  on_record: OnRecord | None = None) -> list[JobRecord]:
    """Run the jobs in ``n_workers`` local processes (spawned, each loads the model once).

    A worker that dies (SIGKILL, out of memory, a segfault) breaks the whole pool, and every job in
    flight fails with it, so the culprit is unknown: the jobs that were in flight go on a fresh pool,
    one at a time, and the others after them. A job whose worker dies :data:`MAX_WORKER_DEATHS` times
    while it is the only job in flight is recorded as failed; the batch goes on.
    """
    n_workers = max(1, min(n_workers, len(jobs)))
    records: list[JobRecord | None] = [None] * len(jobs)
    threads = job_threads(settings, n_workers)
    queue = deque(range(len(jobs)))  # jobs not started, in order
    alone: deque[int] = deque()  # jobs in flight when a worker died: retried one at a time
    deaths: Counter[int] = Counter()
    running: dict[Future[JobRecord], int] = {}
    pool = _new_pool(settings, n_workers)

    def done(i: int, record: JobRecord) -> None:
        records[i] = record
        if on_record:
            on_record(i, record)

    try:
        while True:
            # at most one job per worker in flight: on Ctrl-C only the images being segmented finish
            broken = False
            with sigint_deferred() as held:  # a job submitted is in `running` (Ctrl-C then counts it once written)
                source = alone if alone else queue
                try:
                    while source and len(running) < (1 if source is alone else n_workers) and not held:
                        i = source.popleft()
                        running[pool.submit(_run_in_worker, jobs[i], settings, threads)] = i
                except BrokenProcessPool:  # a worker died between two jobs: this pool takes no more
                    source.appendleft(i)
                    broken = True
            if not broken:
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = any(isinstance(f.exception(), BrokenProcessPool) for f in finished)
                if not broken:
                    with sigint_deferred():  # a result taken from `running` is a result recorded
                        for fut in finished:
                            done(running.pop(fut), fut.result())
                    continue
            # a worker died: the pool is broken; keep what completed, retry the rest on a fresh pool
            pool.shutdown(wait=True, cancel_futures=True)
            with sigint_deferred():
                _sort_out(running, jobs, queue, alone, deaths, done)
            pool = _new_pool(settings, n_workers)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        # the images in flight finish (the workers ignore Ctrl-C) and are written: report them, so that
        # what the interruption message counts is what is on disk
        for fut, i in sorted(running.items(), key=lambda item: item[1]):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                done(i, fut.result())
            else:  # its worker ended mid-image (a SIGTERM to the whole group): its temporary files go
                remove_leftover_parts(jobs[i].outputs.values())
        raise
    pool.shutdown(wait=True)
    return records  # type: ignore[return-value]


def _sort_out(running: dict[Future[JobRecord], int], jobs: Sequence[Job], queue: deque[int], alone: deque[int],
              deaths: Counter[int], done: Callable[[int, JobRecord], None]) -> None:
    """After a worker died (the pool is shut down): record the jobs in flight that completed, put back
    the ones never started, and retry the others one at a time (see :func:`run_processes`)."""
    suspects = []
    for fut, i in sorted(running.items(), key=lambda item: item[1]):
        if fut.cancelled():
            queue.appendleft(i)  # never started
        elif isinstance(fut.exception(), BrokenProcessPool):
            suspects.append(i)
        else:
            done(i, fut.result())
    running.clear()
    for i in suspects:
        # only a death with no other job in flight is surely this job's: a bystander of another
        # job's crash (perhaps never even started) is retried without counting against it
        if len(suspects) == 1:
            deaths[i] += 1
        if deaths[i] >= MAX_WORKER_DEATHS:
            log.debug("%s: its worker died %d times; recorded as failed", jobs[i].name, deaths[i])
            done(i, failed_record(jobs[i], WorkerDiedError(
                f"the worker process segmenting it died {MAX_WORKER_DEATHS} times while it ran alone "
                "(killed, out of memory, or a crash in native code); the other images went on")))
        else:
            log.debug("%s: a worker died while it ran; retried on a fresh worker", jobs[i].name)
            alone.append(i)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[list[int]]:
    """Hold a Ctrl-C (or the CLI's SIGTERM, which ends a command as Ctrl-C does) that arrives in the
    block until its end, then end there as that signal would: the pool's bookkeeping (a job submitted
    and stored, a result taken and recorded) is never cut in two, which left an image written by a
    worker but not counted by the interruption message (the SIGINT -j 2 batch test, rarely). Ctrl-C is
    held only where Python's default handler is in place, SIGTERM where a Python handler is (the CLI's),
    both only in the main thread (where signal handlers run); elsewhere the block runs as it is. A
    second Ctrl-C in the block is raised at once; a second SIGTERM (``timeout`` sends two) is not."""
    caught: list[int] = []  # yielded: the block may stop early once a signal is held
    main = threading.current_thread() is threading.main_thread()
    hold_int = main and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    on_term = signal.getsignal(signal.SIGTERM) if main else None
    hold_term = callable(on_term)
    if not (hold_int or hold_term):
        yield caught
        return

    def hold(signum: int, frame: object) -> None:
        if caught and signum == signal.SIGINT:  # a second Ctrl-C: the block itself hangs (a blocked display)
            raise KeyboardInterrupt
        if not caught:
            caught.append(signum)

    on_int = signal.signal(signal.SIGINT, hold) if hold_int else None
    if hold_term:
        signal.signal(signal.SIGTERM, hold)
    try:
        yield caught
    finally:
        if hold_int:
            signal.signal(signal.SIGINT, on_int)
        if hold_term:
            signal.signal(signal.SIGTERM, on_term)
        if caught:
            if caught[0] == signal.SIGTERM and callable(on_term):
                on_term(signal.SIGTERM, None)  # the CLI's: it records the SIGTERM (exit code 143), then ends
            raise KeyboardInterrupt


def _new_pool(settings: BatchSettings, n_workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("spawn")  # never fork a process that has started torch threads
    return ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(settings, os.getpid()))
