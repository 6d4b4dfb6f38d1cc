"""Where the jobs of a batch run: :func:`run_jobs` dispatches to this process or N local worker
processes (:mod:`.local`), or a Dask cluster (:mod:`.dask`, the optional ``dask`` extra, imported only
when a scheduler is given; a missing extra is reported then). The executors depend on this dispatcher's
shared pieces (:mod:`.common`), never the reverse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..jobs import BatchSettings, Job, JobRecord
from .common import OnRecord, job_threads

__all__ = ["OnRecord", "job_threads", "run_jobs"]


def run_jobs(jobs: Sequence[Job], settings: BatchSettings, *, n_jobs: int = 1, scheduler: Any = None,
             on_record: OnRecord | None = None) -> list[JobRecord]:
    """Run ``jobs`` sequentially (``n_jobs`` 1), in ``n_jobs`` local processes, or on the Dask
    scheduler ``scheduler`` (an address ``tcp://host:port``, a scheduler JSON file, or a
    ``distributed.Client``); records come back in job order."""
    if not jobs:
        return []
    if scheduler is not None:
        from .dask import run_dask

        return run_dask(jobs, settings, scheduler, on_record)
    from .local import run_processes, run_sequential

    if n_jobs > 1 and len(jobs) > 1:
        return run_processes(jobs, settings, n_jobs, on_record)
    return run_sequential(jobs, settings, on_record)
