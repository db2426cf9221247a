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

Local processes use the ``forkserver`` start method where available (else ``spawn``): never
``fork``, since a forked h5py/HDF5 library state or thread pool is not safe to reuse.
dask is imported here alone, and only when asked for.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import wait as wait_any
import os
import queue
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from medload._optional import require
from medload.cores import available_cores, resolve_workers
from medload.errors import ConfigError, MedloadError
from medload.lifetime import InterruptFlag, die_with_parent
from medload.mainguard import unguarded_main_script

__all__ = ["Outcome", "RunSummary", "Worker", "run_tasks", "default_workers", "unguarded_main_script"]


class Worker(Protocol):
    """What a worker factory returns: callable on one task, closed once at the end."""

    def __call__(self, task: Any) -> Any: ...

    def close(self) -> None: ...


@dataclass
class Outcome:
    """How one task ended.

    Attributes
    ----------
    task_id : str
        The id the caller gave the task.
    ok : bool
        True when the worker returned; then ``value`` is what it returned.
    value : Any
        The worker's return value (``None`` when not ok).
    error_type : str or None
        When not ok: the class name of the exception the task raised (``"ReadError"``), or
        ``"WorkerDied"`` (its process ended while running it: a crash in a library, an
        out-of-memory kill) or ``"WorkerFailed"`` (no worker could run it: the factory
        failed, or the task was lost with its worker). Decide by this, never by the text.
    error_message : str or None
        When not ok: the message alone, without the class name.
    slot : str
        Which worker ran it (the local slot, or ``"t-<task id>"`` on Dask).
    error_traceback : str or None
        Where an exception that is not a :class:`~medload.errors.MedloadError` (a bug, ours or
        a library's) was raised; ``None`` otherwise.

    Examples
    --------
    >>> failed = Outcome("a", False, error_type="ReadError", error_message="a.dcm: cut: 12 bytes")
    >>> failed.error_type, failed.error
    ('ReadError', 'ReadError: a.dcm: cut: 12 bytes')
    """

    task_id: str
    ok: bool
    value: Any = None
    error_type: str | None = None
    error_message: str | None = None
    slot: str = ""
    error_traceback: str | None = None

    @property
    def error(self) -> str | None:
        """``"ExceptionType: message"`` (and the traceback, if any) for people; ``None`` when ok."""
        if self.ok:
            return None
        text = f"{self.error_type}: {self.error_message}"
        return f"{text}\n{self.error_traceback}" if self.error_traceback else text


@dataclass
class RunSummary:
    """What :func:`run_tasks` did: outcomes in arrival order, and whether it was interrupted.

    ``not_run`` lists task ids never started (only after an interrupt).
    """

    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    not_run: list[str] = field(default_factory=list)
    backend: str = "local"


#: ``factory(slot) -> worker``, the ``(task id, task)`` pairs, and the callbacks :func:`run_tasks` passes to each backend.
Factory: TypeAlias = Callable[[str], Worker]
Tasks: TypeAlias = list[tuple[str, Any]]
OnOutcome: TypeAlias = Callable[[Outcome], None] | None
OnStart: TypeAlias = Callable[[str, str], None] | None


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
    >>> summary = run_tasks(_Echo, [("a", 1), ("b", 2)], workers=0)
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
            warnings.warn(
                f'{script} calls medload outside `if __name__ == "__main__":`; worker processes '
                f"would re-run that script, so the {len(tasks)} tasks run in this process instead "
                "(workers=0). To use all cores, put the script's work under "
                '`if __name__ == "__main__":`.',
                RuntimeWarning,
                stacklevel=3,
            )
            n, dask = 0, None
    with InterruptFlag() as flag:
        if dask:
            return _run_dask(factory, tasks, dask, max(1, n), on_outcome, flag)
        if n == 0 or len(tasks) == 0:
            return _run_inline(factory, tasks, on_outcome, on_start, flag)
        return _Pool(factory, tasks, min(n, len(tasks)), on_outcome, on_start, flag).run()


class _Echo:
    """Doubles numbers; the tiny worker of the docstring example and the tests."""

    def __init__(self, slot: str) -> None:
        self.slot = slot

    def __call__(self, task: Any) -> Any:
        return task * 2

    def close(self) -> None:
        pass


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


#: How a failed task travels between processes: ``(error_type, error_message, traceback)``.
Failure: TypeAlias = tuple[str, str, str | None]


def _failure(exc: BaseException) -> Failure:
    """The typed facts of ``exc``: its class name, its message, and a traceback for a bug."""
    trace = None if isinstance(exc, MedloadError) else traceback.format_exc(limit=8)
    return type(exc).__name__, str(exc), trace


def _failed(tid: str, failure: Failure, slot: str) -> Outcome:
    error_type, message, trace = failure
    return Outcome(tid, False, None, error_type, message, slot, trace)


# --- in this process -------------------------------------------------------------------------
def _run_inline(factory: Factory, tasks: Tasks, on_outcome: OnOutcome, on_start: OnStart, flag: InterruptFlag) -> RunSummary:
    summary = RunSummary(backend="inline")
    worker = None
    try:
        for index, (tid, task) in enumerate(tasks):
            if flag:
                summary.interrupted = True
                summary.not_run = [t for t, _ in tasks[index:]]
                break
            if worker is None:
                worker = factory("0000")
            if on_start:
                on_start(tid, "0000")
            try:
                outcome = Outcome(tid, True, worker(task), slot="0000")
            except Exception as exc:  # one task never stops the batch
                outcome = _failed(tid, _failure(exc), "0000")
            summary.outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    finally:
        if worker is not None:
            worker.close()
    return summary


# --- local process pool ------------------------------------------------------------------------
def _context() -> mp.context.ForkServerContext | mp.context.SpawnContext:
    if "forkserver" in mp.get_all_start_methods():
        return mp.get_context("forkserver")
    return mp.get_context("spawn")


def _pool_main(
    factory: Factory, slot: str, task_q: mp.queues.Queue[Any], result_q: mp.queues.SimpleQueue[Any], parent_pid: int | None = None
) -> None:
    # The parent decides when to stop; a terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        die_with_parent(parent_pid)
    worker = None
    try:
        worker = factory(slot)
        while True:
            item = task_q.get()
            if item is None:
                break
            tid, task = item
            result_q.put(("start", slot, tid))
            try:
                result_q.put(("done", slot, tid, True, worker(task), None))
            except Exception as exc:
                result_q.put(("done", slot, tid, False, None, _failure(exc)))
    except BaseException as exc:  # factory failed: say so once, the parent fails our tasks
        result_q.put(("broken", slot, _describe(exc)))
    finally:
        if worker is not None:
            try:
                worker.close()
            except Exception as exc:
                result_q.put(("broken", slot, f"closing the worker failed: {_describe(exc)}"))
        result_q.put(("exit", slot))


class _Pool:
    """One local-pool run: its processes, its two queues, and where each task is."""

    def __init__(
        self, factory: Factory, tasks: Tasks, n: int, on_outcome: OnOutcome, on_start: OnStart, flag: InterruptFlag
    ) -> None:
        self.factory, self.tasks, self.n, self.flag = factory, tasks, n, flag
        self.on_outcome, self.on_start = on_outcome, on_start
        self.ctx = _context()
        self.task_q = self.ctx.Queue()
        # SimpleQueue writes each message into the pipe at once (no feeder thread), so a worker
        # that crashes right after "start" has still told us which task killed it.
        self.result_q = self.ctx.SimpleQueue()
        self.summary = RunSummary(backend=f"local pool ({n} processes)")
        self.pending = list(reversed(tasks))  # pop() from the end = submission order
        self.fed: set[str] = set()
        self.finished: set[str] = set()
        self.running: dict[str, str] = {}  # slot -> task id
        self.procs: dict[str, Any] = {}
        self.exited: set[str] = set()
        self.next_slot = 0
        self.broken_message: str | None = None
        self.spoke: set[str] = set()  # slots that sent any message: they got past process start-up
        self.silent_deaths = 0
        self.stopping = False
        self.idle_since: float | None = None

    def run(self) -> RunSummary:
        for _ in range(self.n):
            self._start_worker()
        self._feed(2 * self.n)  # a small lead so no worker waits, without queueing the whole batch
        try:
            self._loop()
        except KeyboardInterrupt:  # second Ctrl-C: stop now
            self.summary.interrupted = True
            for proc in self.procs.values():
                proc.terminate()
        finally:
            self._close()
        self._settle_unfinished()
        return self.summary

    def _start_worker(self) -> None:
        slot = f"{self.next_slot:04d}"
        self.next_slot += 1
        proc = self.ctx.Process(
            target=_pool_main,
            args=(self.factory, slot, self.task_q, self.result_q, os.getpid()),
            daemon=True,
            name=f"medload-worker-{slot}",
        )
        proc.start()
        self.procs[slot] = proc

    def _feed(self, count: int) -> None:
        for _ in range(count):
            if not self.pending or self.flag:
                return
            tid, task = self.pending.pop()
            self.fed.add(tid)
            self.task_q.put((tid, task))

    def _record(self, outcome: Outcome) -> None:
        if outcome.task_id in self.finished:
            return
        self.finished.add(outcome.task_id)
        self.summary.outcomes.append(outcome)
        if self.on_outcome:
            self.on_outcome(outcome)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        self.spoke.add(msg[1])
        if kind == "start":
            self.running[msg[1]] = msg[2]
            if self.on_start:
                self.on_start(msg[2], msg[1])
        elif kind == "done":
            _, slot, tid, ok, value, failure = msg
            self.running.pop(slot, None)
            self._record(Outcome(tid, True, value, slot=slot) if ok else _failed(tid, failure, slot))
            self._feed(1)
        elif kind == "broken":
            self.broken_message = msg[2]
        elif kind == "exit":
            self.exited.add(msg[1])

    def _handle_all(self) -> None:
        while not self.result_q.empty():
            self._handle(self.result_q.get())

    def _stop(self) -> None:
        self.stopping = True
        for _ in self.procs:
            self.task_q.put(None)

    def _loop(self) -> None:
        while True:
            if self.flag and not self.stopping:
                self.summary.interrupted = True
                _drain(self.task_q, self.pending)
                self._stop()
            if not self.stopping and len(self.finished) == len(self.tasks):
                self._stop()
            if not self.result_q.empty():
                self._handle(self.result_q.get())
                self.idle_since = None
                continue
            live = [p.sentinel for s, p in self.procs.items() if s not in self.exited]  # wake on a message or an end,
            wait_any([self.result_q._reader, *live], 0.05)  # type: ignore[attr-defined]  # not after a fixed sleep
            self._fail_vanished()
            alive = [slot for slot, p in self.procs.items() if p.is_alive()]
            self._replace_dead([slot for slot in self.procs if slot not in alive and slot not in self.exited])
            if self.stopping and not alive:
                self._handle_all()  # the last messages of the workers that just ended
                return
            if self.broken_message and not alive:
                return  # the factory fails in every process: no point in starting more

    def _fail_vanished(self) -> None:
        if self.running or self.pending or self.stopping:
            self.idle_since = None
            return
        # Every fed task either finished or vanished with a worker that died before
        # saying "start"; after a grace period the vanished ones are failed.
        self.idle_since = self.idle_since or time.monotonic()
        if time.monotonic() - self.idle_since > 5.0 and self.task_q.empty():
            for tid in sorted(self.fed - self.finished):
                self._record(_failed(tid, ("WorkerFailed", "the task was lost when its worker ended", None), ""))

    def _replace_dead(self, dead: list[str]) -> None:
        if dead:
            # A dead worker wrote everything it said before dying: read it all first, so its last "start" names what killed it.
            self._handle_all()
        for slot in dead:
            proc = self.procs[slot]
            if slot in self.exited:
                continue
            # Died without saying goodbye: a crash or a kill. Its task failed; replace it.
            self.exited.add(slot)
            lost = self.running.pop(slot, "")
            if lost:
                why = (
                    f"the worker process ended (exit code {proc.exitcode}) while converting this; "
                    "see the log for a crash in a library"
                )
                self._record(_failed(lost, ("WorkerDied", why, None), slot))
            if slot not in self.spoke:
                self._count_silent_death(proc.exitcode)
            if not self.stopping and len(self.finished) < len(self.tasks) and not self.broken_message:
                self._start_worker()
                self._feed(1)

    def _count_silent_death(self, exitcode: int | None) -> None:
        self.silent_deaths += 1
        if self.silent_deaths > 2 * self.n + 2 and not self.spoke:
            # Every process dies while starting (e.g. a main script that starts
            # this run again when a worker re-imports it): stop, never loop.
            self.broken_message = (
                f"worker processes end while starting (exit code {exitcode}, {self.silent_deaths} "
                "times); if a script runs this, put its work under "
                '`if __name__ == "__main__":`, or pass workers=0'
            )

    def _close(self) -> None:
        for proc in self.procs.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self.task_q.close()
        self.result_q.close()

    def _settle_unfinished(self) -> None:
        for tid, _task in self.tasks:
            if tid in self.finished:
                continue
            if self.broken_message:
                self._record(_failed(tid, ("WorkerFailed", self.broken_message, None), ""))
            elif tid in self.fed and not self.summary.interrupted:
                self._record(_failed(tid, ("WorkerFailed", "the task was lost when its worker ended", None), ""))
            else:
                self.summary.not_run.append(tid)


def _drain(task_q: mp.queues.Queue[Any], pending: Tasks) -> None:
    """Take back the tasks not yet picked up, so an interrupt leaves them not run."""
    while True:
        try:
            item = task_q.get(timeout=0.05)
        except queue.Empty:
            return
        if item is not None:
            pending.append(item)


# --- Dask ----------------------------------------------------------------------------------------
def _dask_call(factory: Factory, slot: str, task: Any) -> tuple[bool, Any, Failure | None]:
    # Errors come back as values: an exception object from a library may not unpickle on
    # the client, and one task's failure must not look like a cluster failure.
    worker = None
    try:
        worker = factory(slot)
        return True, worker(task), None
    except Exception as exc:
        return False, None, _failure(exc)
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
        raise ConfigError(f"could not start Dask ({address!r}): {_describe(exc)}") from exc

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
                outcome = _failed(tid, (type(failed_by).__name__, str(failed_by), None), slot)
            else:
                ok, value, failure = fut.result()
                outcome = Outcome(tid, True, value, slot=slot) if ok else _failed(tid, failure, slot)
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
