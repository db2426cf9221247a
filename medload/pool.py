"""Run one task per item on local worker processes (or in this process), collecting every outcome.

The generic local runner under :func:`medload.parallel.run_tasks` (which adds Dask) and
:func:`medload.io.scan` (which reads headers in chunks of files). It knows nothing of DICOM or
HDF5, and stands left of every medload layer: any of them may use it.

The caller gives a picklable *worker factory*, ``factory(slot) -> worker``, where
``worker(task)`` does one task and ``worker.close()`` releases what the worker holds. One worker
per process, kept for the whole run, with a stable slot name (``"0000"``, ``"0001"``, ...).

Every task ends in exactly one :class:`Outcome`: a task that raises, or whose process dies
(segfault in a codec, out-of-memory kill), becomes a failed outcome and the run goes on with a
new process. Ctrl-C (SIGINT) stops feeding new tasks; running ones finish and workers close
cleanly. A second Ctrl-C stops at once.

Processes use the ``forkserver`` start method where available (else ``spawn``): never
``fork``, since a forked h5py/HDF5 library state or thread pool is not safe to reuse. The fork
server imports :data:`PRELOAD` once, so each worker starts with medload's readers already
imported instead of importing them again (measured: a pool of 2 spends 0.39 instead of 0.64
CPU seconds starting, and its first result comes 0.7 s sooner; 0.2 CPU s saved per further worker).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from typing import Any, Protocol, TypeAlias

from medload.errors import MedloadError
from medload.lifetime import InterruptFlag, die_with_parent
from medload.mainguard import unguarded_main_script

__all__ = ["Outcome", "RunSummary", "Worker", "Echo", "run_local", "context", "failed", "failure_of", "warn_unguarded", "PRELOAD"]

#: Modules the fork server imports once, so that its workers do not each import them again:
#: what a scan's worker needs (medload's readers; pydicom's pixel modules stay unimported until
#: a file needs them). Nothing that holds library state unsafe to fork (h5py), nothing heavy
#: (torch, tensorflow): a worker that needs those imports them itself.
PRELOAD = ["medload.io.collect"]


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
        When not ok: the class name of the exception the task raised (``"ReadError"``), or that
        the worker factory raised when no worker could start (its message then begins "no
        worker could start"), or ``"WorkerDied"`` (its process ended while running it: a crash
        in a library, an out-of-memory kill) or ``"WorkerFailed"`` (the task was lost with a
        worker that ended before starting it, or every worker ended while starting). Decide
        by this, never by the text.
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
    """What a run did: outcomes in arrival order, and whether it was interrupted.

    ``not_run`` lists task ids never started (only after an interrupt).
    """

    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    not_run: list[str] = field(default_factory=list)
    backend: str = "local"


#: ``factory(slot) -> worker``, the ``(task id, task)`` pairs, and the callbacks a run takes.
Factory: TypeAlias = Callable[[str], Worker]
Tasks: TypeAlias = list[tuple[str, Any]]
OnOutcome: TypeAlias = Callable[[Outcome], None] | None
OnStart: TypeAlias = Callable[[str, str], None] | None

#: How a failed task travels between processes: ``(error_type, error_message, traceback)``.
Failure: TypeAlias = tuple[str, str, str | None]


def failure_of(exc: BaseException) -> Failure:
    """The typed facts of ``exc``: its class name, its message, and a traceback for a bug."""
    trace = None if isinstance(exc, MedloadError) else traceback.format_exc(limit=8)
    return type(exc).__name__, str(exc), trace


def failed(tid: str, failure: Failure, slot: str) -> Outcome:
    """The failed :class:`Outcome` of task ``tid`` from its :data:`Failure`."""
    error_type, message, trace = failure
    return Outcome(tid, False, None, error_type, message, slot, trace)


def _start_failure(exc: BaseException) -> Failure:
    """A factory that raised: its class stays the type, the message says no worker started."""
    error_type, message, trace = failure_of(exc)
    return error_type, f"no worker could start: {message}", trace


def run_local(
    factory: Factory,
    tasks: Tasks,
    n: int,
    *,
    on_outcome: OnOutcome = None,
    on_start: OnStart = None,
    check_main: bool = True,
) -> RunSummary:
    """Run ``factory(slot)(task)`` for every ``(task_id, task)`` on ``n`` processes (0: here).

    Parameters
    ----------
    factory : callable
        Picklable (a module-level class or function): ``factory(slot) -> worker``.
    tasks : list of (str, object)
        Unique task ids with picklable tasks.
    n : int
        Worker processes; 0 runs in this process and thread.
    on_outcome, on_start : callable, optional
        Called in this process with each :class:`Outcome`, and with ``(task_id, slot)`` when a
        worker starts a task.
    check_main : bool
        Run here (with a warning) when called from a main script's unguarded top level, which
        every new process would run again (:func:`medload.mainguard.unguarded_main_script`).
        Callers that checked already pass False.

    Returns
    -------
    RunSummary

    Examples
    --------
    >>> summary = run_local(Echo, [("a", 1), ("b", 2)], 0)
    >>> sorted((o.task_id, o.value) for o in summary.outcomes)
    [('a', 2), ('b', 4)]
    """
    if check_main and n > 0 and len(tasks) > 1:
        script = unguarded_main_script()
        if script is not None:
            warn_unguarded(script, len(tasks), stacklevel=4)
            n = 0
    with InterruptFlag() as flag:
        if n == 0 or len(tasks) == 0:
            return _run_inline(factory, tasks, on_outcome, on_start, flag)
        return _Pool(factory, tasks, min(n, len(tasks)), on_outcome, on_start, flag).run()


def warn_unguarded(script: str, n_tasks: int, *, stacklevel: int) -> None:
    """Warn that ``script``'s unguarded top level makes ``n_tasks`` tasks run in this process."""
    warnings.warn(
        f'{script} calls medload outside `if __name__ == "__main__":`; worker processes '
        f"would re-run that script, so the {n_tasks} tasks run in this process instead "
        "(workers=0). To use all cores, put the script's work under "
        '`if __name__ == "__main__":`.',
        RuntimeWarning,
        stacklevel=stacklevel,
    )


class Echo:
    """Doubles numbers; the tiny worker of the docstring examples and the tests."""

    def __init__(self, slot: str) -> None:
        self.slot = slot

    def __call__(self, task: Any) -> Any:
        return task * 2

    def close(self) -> None:
        pass


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
                try:
                    worker = factory("0000")
                except Exception as exc:  # as in the pool: every task fails with the reason
                    broken = _start_failure(exc)
                    for t, _ in tasks[index:]:
                        summary.outcomes.append(failed(t, broken, "0000"))
                        if on_outcome:
                            on_outcome(summary.outcomes[-1])
                    break
            if on_start:
                on_start(tid, "0000")
            try:
                outcome = Outcome(tid, True, worker(task), slot="0000")
            except (Exception, SystemExit) as exc:  # one task never stops the batch (a library's sys.exit neither)
                outcome = failed(tid, failure_of(exc), "0000")
            summary.outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    finally:
        if worker is not None:
            worker.close()
    return summary


# --- local process pool ------------------------------------------------------------------------
_CONTEXT: mp.context.ForkServerContext | mp.context.SpawnContext | None = None


def context() -> mp.context.ForkServerContext | mp.context.SpawnContext:
    """The start method's context: ``forkserver`` (preloading :data:`PRELOAD`), else ``spawn``."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            # The fork server imports these once; each worker it forks starts with them loaded.
            # A module that fails to import there is only skipped (multiprocessing's rule).
            ctx.set_forkserver_preload(list(PRELOAD))
            _CONTEXT = ctx
        else:
            _CONTEXT = mp.get_context("spawn")
    return _CONTEXT


def _pool_main(
    factory: Factory,
    slot: str,
    task_q: mp.queues.Queue[Any],
    out: Connection,
    parent_pid: int | None = None,
    environ: dict[str, str] | None = None,
) -> None:
    # The parent decides when to stop; a terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if environ is not None:
        # A fork server's children inherit the environment of the moment it started, not the
        # parent's of now (spawn's children get the latter): MEDLOAD_MAX_VOLUME_BYTES raised in
        # a notebook after a first parallel run, as a LimitError says to, reached no worker.
        os.environ.clear()
        os.environ.update(environ)
    if parent_pid is not None:
        die_with_parent(parent_pid)
    worker = None
    try:
        try:
            worker = factory(slot)
        except BaseException as exc:  # factory failed: say so once, the parent fails our tasks
            out.send(("broken", slot, _start_failure(exc)))
            return
        while True:
            item = task_q.get()
            if item is None:
                break
            tid, task = item
            # Connection.send writes into the pipe at once (no feeder thread), so a worker that
            # crashes right after "start" has still told the parent which task killed it.
            out.send(("start", slot, tid))
            try:
                out.send(("done", slot, tid, True, worker(task), None))
            except (Exception, SystemExit) as exc:  # a library's sys.exit fails its task, not the worker
                out.send(("done", slot, tid, False, None, failure_of(exc)))
    finally:
        if worker is not None:
            try:
                worker.close()
            except Exception as exc:
                error_type, message, trace = failure_of(exc)
                out.send(("broken", slot, (error_type, f"closing the worker failed: {message}", trace)))
        out.send(("exit", slot))
        out.close()


class _Pool:
    """One local-pool run: its processes, the task queue, one result pipe per worker, and where each task is."""

    def __init__(
        self, factory: Factory, tasks: Tasks, n: int, on_outcome: OnOutcome, on_start: OnStart, flag: InterruptFlag
    ) -> None:
        self.factory, self.tasks, self.n, self.flag = factory, tasks, n, flag
        self.on_outcome, self.on_start = on_outcome, on_start
        self.ctx = context()
        self.task_q = self.ctx.Queue()
        self.results: dict[str, Connection] = {}  # slot -> the reading end of its worker's pipe, until EOF
        self.summary = RunSummary(backend=f"local pool ({n} processes)")
        self.pending = list(reversed(tasks))  # pop() from the end = submission order
        self.fed: set[str] = set()
        self.finished: set[str] = set()
        self.running: dict[str, str] = {}  # slot -> task id
        self.procs: dict[str, Any] = {}
        self.exited: set[str] = set()
        self.next_slot = 0
        self.broken: Failure | None = None
        self.spoke: set[str] = set()  # slots that sent any message: they got past process start-up
        self.silent_deaths = 0
        self.stopping = False
        self.idle_since: float | None = None

    def run(self) -> RunSummary:
        try:
            for _ in range(self.n):
                self._start_worker()
            self._feed(2 * self.n)  # a small lead so no worker waits, without queueing the whole batch
            self._loop()
        except KeyboardInterrupt:  # second Ctrl-C: stop now
            self.summary.interrupted = True
            for proc in self.procs.values():
                proc.terminate()
        except BaseException:
            # The run fails here (on_outcome raised, a worker could not be started, a result did
            # not unpickle): no one will collect the tasks still running, so end their workers
            # now. Before, _close waited 30 s for each (idle ones blocked on the empty queue).
            for proc in self.procs.values():
                proc.terminate()
            raise
        finally:
            self._close()
        self._settle_unfinished()
        return self.summary

    def _start_worker(self) -> None:
        slot = f"{self.next_slot:04d}"
        self.next_slot += 1
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_pool_main,
            args=(self.factory, slot, self.task_q, writer, os.getpid(), dict(os.environ)),
            daemon=True,
            name=f"medload-worker-{slot}",
        )
        proc.start()
        writer.close()  # the worker holds the only writing end: its end is our EOF
        self.procs[slot] = proc
        self.results[slot] = reader

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
            self._record(Outcome(tid, True, value, slot=slot) if ok else failed(tid, failure, slot))
            self._feed(1)
        elif kind == "broken":
            self.broken = msg[2]
        elif kind == "exit":
            self.exited.add(msg[1])

    def _read(self, slot: str) -> bool:
        """Handle everything waiting in ``slot``'s pipe; False once it reached its end."""
        conn = self.results[slot]
        try:
            while conn.poll():
                self._handle(conn.recv())
        except (EOFError, OSError):  # the worker ended and everything it wrote was read
            conn.close()
            del self.results[slot]
            return False
        return True

    def _handle_all(self) -> None:
        for slot in list(self.results):
            self._read(slot)

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
            # Wake on a message or on a process's end, not after a fixed sleep.
            slot_of = {conn: slot for slot, conn in self.results.items()}
            # Once stopping, also the processes that said "exit" but have not ended yet: their end
            # wakes the loop at once instead of after the timeout (~50 ms of each pool's end).
            live = [p.sentinel for s, p in self.procs.items() if s not in self.exited or (self.stopping and p.is_alive())]
            ready = wait_any([*slot_of, *live], 0.05)
            got = [slot_of[c] for c in ready if c in slot_of]
            for slot in got:
                self._read(slot)
            if got:
                self.idle_since = None
                continue
            self._fail_vanished()
            alive = [slot for slot, p in self.procs.items() if p.is_alive()]
            self._replace_dead([slot for slot in self.procs if slot not in alive and slot not in self.exited])
            if self.stopping and not alive:
                self._handle_all()  # the last messages of the workers that just ended
                return
            if self.broken and not alive:
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
                self._record(failed(tid, ("WorkerFailed", "the task was lost when its worker ended", None), ""))

    def _replace_dead(self, dead: list[str]) -> None:
        for slot in dead:
            # A dead worker wrote everything it said before dying: read it all first, so its last "start" names what killed it.
            if slot in self.results:
                self._read(slot)
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
                self._record(failed(lost, ("WorkerDied", why, None), slot))
            if slot not in self.spoke:
                self._count_silent_death(proc.exitcode)
            if not self.stopping and len(self.finished) < len(self.tasks) and not self.broken:
                self._start_worker()
                self._feed(1)

    def _count_silent_death(self, exitcode: int | None) -> None:
        self.silent_deaths += 1
        if self.silent_deaths > 2 * self.n + 2 and not self.spoke:
            # Every process dies while starting (e.g. a main script that starts
            # this run again when a worker re-imports it): stop, never loop.
            message = (
                f"worker processes end while starting (exit code {exitcode}, {self.silent_deaths} "
                "times); if a script runs this, put its work under "
                '`if __name__ == "__main__":`, or pass workers=0'
            )
            self.broken = ("WorkerFailed", message, None)

    def _close(self) -> None:
        for proc in self.procs.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._handle_all()
        for conn in self.results.values():
            conn.close()
        self.task_q.close()

    def _settle_unfinished(self) -> None:
        for tid, _task in self.tasks:
            if tid in self.finished:
                continue
            if self.broken:
                self._record(failed(tid, self.broken, ""))
            elif tid in self.fed and not self.summary.interrupted:
                self._record(failed(tid, ("WorkerFailed", "the task was lost when its worker ended", None), ""))
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
