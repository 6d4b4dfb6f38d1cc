"""Run a batch on a Dask distributed cluster (the optional ``dask`` extra: ``pip install sctgm[dask]``).

The scheduler is reached by address (``tcp://host:port``) or through its scheduler file (what
``dask scheduler --scheduler-file`` writes, and what SLURM/PBS/SGE set-ups share on a common file
system); dask-jobqueue clusters are used through their ``Client``. Each worker process keeps one
loaded model in a :class:`~.dask_plugin.SegmenterPlugin` (registered once, set up on every worker,
including workers that join later) and runs one job at a time, its network using the threads the worker was
given (``dask worker --nthreads``; see :func:`sctgm.batch.executors.common.job_threads`). Workers
need sct-gm installed, the model reachable (a shared cache, ``SCTGM_HOME`` or ``SCTGM_MIRROR``), and
the dataset on a file system they share with the client.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...exceptions import ExecutorError
from ..jobs import BatchSettings, Job, JobRecord, failed_record
from .common import OnRecord

if TYPE_CHECKING:
    from distributed import Client


#: Seconds given to a Dask client beyond Dask's own connect timeout before sct-gm gives up on it
#: (:func:`connect`: a listener that never answers the handshake).
HANDSHAKE_MARGIN_S = 10.0


def _distributed() -> Any:
    """The ``distributed`` package, or :class:`ExecutorError` saying how to install the extra."""
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorError(f"running on a Dask cluster needs the optional Dask extra: "
                            f"pip install 'sctgm[dask]' ({exc})", parameter="scheduler") from None
    return distributed


def connect(scheduler: str | os.PathLike[str]) -> Client:
    """A client for ``tcp://host:port`` (or any Dask address) or a scheduler JSON file (waited for: a
    scheduler started beside the client may not have written it yet). Gives up after Dask's connect
    timeout (``distributed.comm.timeouts.connect``, 30 s unless configured), plus
    :data:`HANDSHAKE_MARGIN_S` for a listener that never answers the handshake."""
    client_class = _distributed().Client
    target = os.fspath(scheduler)
    try:
        if "://" not in target and (target.endswith(".json") or os.sep in target or Path(target).exists()):
            _wait_for_file(Path(target))
            _check_scheduler_file(Path(target))
            return _within_deadline(lambda: client_class(scheduler_file=target), target)
        return _within_deadline(lambda: client_class(target), target)
    except ExecutorError:
        raise
    except (OSError, TimeoutError, ValueError) as exc:
        raise ExecutorError(f"cannot reach the Dask scheduler {target} ({type(exc).__name__}: {exc})") from None


def _within_deadline(make_client: Callable[[], Client], target: str) -> Client:
    """``make_client()``, given up after Dask's connect timeout and a margin: a listener that is not a
    Dask scheduler (a dashboard's or a web server's port) accepts the connection and never answers the
    handshake, and distributed 2026.8 then waits forever, whatever its ``timeout`` (measured: over
    5 min). The client is made in a daemon thread, left behind when it hangs."""
    import threading

    import dask
    from dask.utils import parse_timedelta

    wait_s = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")) + HANDSHAKE_MARGIN_S
    box: dict[str, Any] = {}
    lock = threading.Lock()

    def make() -> None:
        try:
            client = make_client()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
            return
        with lock:
            if box.get("abandoned"):  # it answered after the caller gave up: nobody will close it
                client.close()
            else:
                box["client"] = client

    thread = threading.Thread(target=make, name="sctgm-dask-connect", daemon=True)
    thread.start()
    try:
        thread.join(wait_s)
    finally:  # given up, or interrupted (Ctrl-C): a client made later is closed by its thread
        with lock:
            if "client" not in box and "error" not in box:
                box["abandoned"] = True
    if "error" in box:
        raise box["error"]
    if "client" not in box:
        raise ExecutorError(f"cannot reach the Dask scheduler {target}: it accepted the connection but gave no "
                            f"Dask handshake in {wait_s:.0f} s (is it a scheduler's address? a dashboard's, "
                            f"8787 by default, is not)")
    return box["client"]


def _check_scheduler_file(path: Path) -> None:
    """A scheduler file is JSON with the scheduler's ``address`` (Dask fails on anything else with a bare
    assertion or a JSON error)."""
    import json

    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        info = exc
    if not isinstance(info, dict) or "address" not in info:
        raise ExecutorError(f"{path}: not a Dask scheduler file (expected the JSON file, with the scheduler's "
                            f"address, that `dask scheduler --scheduler-file` writes)")


def _wait_for_file(path: Path) -> None:
    """A scheduler started in the same job script may not have written its file yet: wait for it up
    to Dask's connect timeout."""
    import dask
    from dask.utils import parse_timedelta

    deadline = time.monotonic() + parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
    while not path.is_file():
        if time.monotonic() > deadline:
            raise ExecutorError(f"{path}: no such scheduler file (expected tcp://host:port or the JSON file that "
                                f"`dask scheduler --scheduler-file` writes)")
        time.sleep(0.2)


def run_dask(jobs: Sequence[Job], settings: BatchSettings, scheduler: Any,
             on_record: OnRecord | None = None) -> list[JobRecord]:
    """Run ``jobs`` on the cluster of ``scheduler`` (an address, a scheduler file or a ``Client``,
    which is left open); records come back in job order."""
    distributed = _distributed()
    own = not isinstance(scheduler, distributed.Client)
    client = connect(scheduler) if own else scheduler
    records: list[JobRecord | None] = [None] * len(jobs)
    futures: list[Any] = []
    try:
        from .dask_plugin import SegmenterPlugin, run_on_worker

        plugin = SegmenterPlugin(settings)
        register = getattr(client, "register_plugin", None) or client.register_worker_plugin
        register(plugin, name=plugin.name)
        futures = client.map(run_on_worker, list(jobs), plugin_name=plugin.name, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in distributed.as_completed(futures):
            i = index[fut.key]
            try:
                records[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: recorded, the batch goes on
                records[i] = failed_record(jobs[i], exc)
            if on_record:
                on_record(i, records[i])  # type: ignore[arg-type]
    except BaseException:
        if futures:
            client.cancel(futures)
        raise
    finally:
        if own:
            client.close()
    return records  # type: ignore[return-value]
