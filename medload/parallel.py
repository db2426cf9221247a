"""Run one task per item on a local process pool or a Dask cluster, collecting every outcome.

The runner is generic: it knows nothing of DICOM or HDF5. The caller gives a picklable
*worker factory*, ``factory(slot) -> worker``, where ``worker(task)`` does one task and
``worker.close()`` releases what the worker holds (the converter's worker holds one shard
writer). Where the work runs decides how long a worker lives:

- local pool (default): one worker per process, kept for the whole run, with a stable slot
  name (``"0000"``, ``"0001"``, ...) so a re-run finds and resumes the same shard files;
- Dask (``dask="local"`` or a scheduler address): one worker per task (slot ``"t-<task id>"``),
  so each task writes its own shard and a task retried on another machine starts clean.

Every task ends in exactly one :class:`Outcome`, passed to ``on_outcome`` as it arrives: a
task that raises, or whose process dies (segfault in a codec, out-of-memory kill), becomes a
failed outcome and the run goes on. Ctrl-C (SIGINT) stops feeding new tasks; running ones
finish and workers close cleanly, so nothing already written is lost. A second Ctrl-C stops
at once (the store's ``complete`` flag makes that safe too).

The local pool is :mod:`medload.pool` (which :func:`medload.io.scan` uses too): the
``forkserver`` start method where available (else ``spawn``), never ``fork``, since a forked
h5py/HDF5 library state or thread pool is not safe to reuse. dask is imported here alone, and
only when asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from medload._optional import require
from medload.cores import available_cores, resolve_workers
from medload.errors import ConfigError, MedloadError
from medload.lifetime import InterruptFlag
from medload.mainguard import unguarded_main_script
from medload.pool import Failure, Outcome, RunSummary, Worker, Echo, failed, failure_of, run_local, warn_unguarded

__all__ = ["Outcome", "RunSummary", "Worker", "Echo", "run_tasks", "default_workers", "unguarded_main_script"]


#: ``factory(slot) -> worker`` and the ``(task id, task)`` pairs :func:`run_tasks` takes.
Factory: TypeAlias = Callable[[str], Worker]
Tasks: TypeAlias = list[tuple[str, Any]]
OnOutcome: TypeAlias = Callable[[Outcome], None] | None


def default_workers() -> int:
    """Number of cores this process may use (:func:`medload.cores.available_cores`).

    Examples
    --------
    >>> default_workers() >= 1
    True
    """
    return available_cores()


def run_tasks(
    factory: Callable[[str], Worker],
    tasks: Iterable[tuple[str, Any]],
    *,
    workers: int | None = None,
    dask: str | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_start: Callable[[str, str], None] | None = None,
) -> RunSummary:
    """Run ``factory(slot)(task)`` for every ``(task_id, task)`` and collect the outcomes.

    Parameters
    ----------
    factory : callable
        Picklable (a module-level class or function): ``factory(slot) -> worker``.
    tasks : iterable of (str, object)
        Unique task ids with picklable tasks.
    workers : int, optional
        Local processes (default: all cores, see :func:`default_workers`); for
        ``dask="local"`` the number of LocalCluster workers. ``workers=0`` runs in this
        process (no pool; handy for debugging and profiling).
    dask : str, optional
        ``"local"`` to start a ``distributed.LocalCluster``, or a scheduler address
        (``"tcp://host:8786"``) to use a running cluster. Workers must see the same paths.
    on_outcome : callable, optional
        Called in this process with each :class:`Outcome` as it arrives (progress bars).
    on_start : callable, optional
        Called with ``(task_id, slot)`` when a local worker starts a task.

    Returns
    -------
    RunSummary

    Examples
    --------
    >>> from medload.parallel import run_tasks
    >>> summary = run_tasks(Echo, [("a", 1), ("b", 2)], workers=0)
    >>> sorted((o.task_id, o.value) for o in summary.outcomes)
    [('a', 2), ('b', 4)]
    """
    tasks = list(tasks)
    ids = [tid for tid, _ in tasks]
    if len(set(ids)) != len(ids):
        raise ConfigError("run_tasks: task ids must be unique; found duplicates.")
    n = resolve_workers(workers)
    if n > 0 and len(tasks) > 1 and (not dask or dask == "local"):
        script = unguarded_main_script()
        if script is not None:
            # A new process (forkserver/spawn, and Dask's local nannies) re-runs the main
            # script's top level to find it, which would start this run again in every worker,
            # for ever. Running here is slower but finishes.
            warn_unguarded(script, len(tasks), stacklevel=4)
            n, dask = 0, None
    if dask:
        with InterruptFlag() as flag:
            return _run_dask(factory, tasks, dask, max(1, n), on_outcome, flag)
    return run_local(factory, tasks, n, on_outcome=on_outcome, on_start=on_start, check_main=False)


# --- Dask ----------------------------------------------------------------------------------------
def _dask_call(factory: Factory, slot: str, task: Any) -> tuple[bool, Any, Failure | None]:
    # Errors come back as values: an exception object from a library may not unpickle on
    # the client, and one task's failure must not look like a cluster failure.
    worker = None
    try:
        worker = factory(slot)
        return True, worker(task), None
    except Exception as exc:
        return False, None, failure_of(exc)
    finally:
        if worker is not None:
            worker.close()


def _run_dask(factory: Factory, tasks: Tasks, address: str, n: int, on_outcome: OnOutcome, flag: InterruptFlag) -> RunSummary:
    distributed = require("distributed", "--dask (running on a Dask cluster)")
    from medload.deid import sanitize_key

    cluster = None
    summary = RunSummary(backend=f"dask {address}")
    try:
        if address == "local":
            cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, preload=["medload.dask_worker"]
            )
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(address, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(
                    f"could not reach the Dask scheduler at {address!r} ({exc}); check the address "
                    "(tcp://host:8786) and that the scheduler runs, or use --dask local"
                ) from exc
    except MedloadError:
        raise
    except Exception as exc:
        raise ConfigError(f"could not start Dask ({address!r}): {exc} ({type(exc).__name__})") from exc

    by_future: dict[Any, str] = {}
    finished: set[str] = set()
    try:
        futures = []
        for tid, task in tasks:
            slot = "t-" + sanitize_key(tid)
            fut = client.submit(_dask_call, factory, slot, task, key=f"medload-{slot}-{time.time_ns()}", pure=False)
            by_future[fut] = tid
            futures.append(fut)
        iterator = distributed.as_completed(futures)
        while True:
            if flag and not summary.interrupted:
                summary.interrupted = True
                client.cancel([f for f in futures if not f.done()])
            try:
                fut = next(iterator)
            except StopIteration:
                break
            tid = by_future[fut]
            if fut.cancelled() or fut.status == "cancelled":
                continue
            slot = "t-" + sanitize_key(tid)
            if fut.status == "error":  # Dask failed the task itself (KilledWorker: its workers died)
                failed_by = fut.exception()
                outcome = failed(tid, (type(failed_by).__name__, str(failed_by), None), slot)
            else:
                ok, value, failure = fut.result()
                outcome = Outcome(tid, True, value, slot=slot) if ok else failed(tid, failure, slot)
            finished.add(tid)
            summary.outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    summary.not_run = [tid for tid, _ in tasks if tid not in finished]
    return summary
