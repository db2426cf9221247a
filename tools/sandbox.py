"""The worker sandbox of the fuzzing campaigns (``tools/fuzz.py``, ``fuzz_readers.py``, ``fuzz_stores.py``).

Cases run in spawned worker processes, each under an address-space cap (``RLIMIT_AS``) and a
per-case alarm (``SIGALRM``), so that a case that allocates what a header claims ends in
``MemoryError`` and one that loops ends in :class:`Alarm`, not in a stuck or swapping machine.
A worker that dies inside a case (a segfault in a codec, the kernel's OOM killer) is reported
once for that case, and a fresh worker goes on with the cases after it.

The protocol between a worker (:func:`serve`) and the campaign (:func:`supervise`): the worker
sends ``("start", index)`` before each case, ``("done", index, *fields)`` after it, and
``("end",)`` once its list is done; what ``fields`` hold is the campaign's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["Alarm", "Tally", "alarm_after", "confine", "guarded", "serve", "supervise"]


class Alarm(BaseException):
    """Raised by SIGALRM inside a case (a BaseException so that no ``except Exception`` eats it)."""


class Tally:
    """A campaign's outcome counts and findings, with a progress line every ``every`` cases (0: none)."""

    def __init__(self, cases: int, every: int = 0) -> None:
        self.cases, self.every = cases, every
        self.counts: Counter[str] = Counter()
        self.findings: list[dict[str, Any]] = []
        self.done = 0
        self.started = time.time()

    def add(self, outcome: str, finding: dict[str, Any] | None = None) -> None:
        """One case done with ``outcome``; ``finding`` kept when it is one to look at."""
        self.counts[outcome] += 1
        if finding is not None:
            self.findings.append(finding)
        self.done += 1
        if self.every and self.done % self.every == 0:
            print(f"{self.done}/{self.cases} {dict(self.counts)} {self.seconds():.0f}s", file=sys.stderr, flush=True)

    def crash(self, index: int, exitcode: int | None, detail: str = "") -> None:
        """The worker died inside case ``index``."""
        self.add("crash", {"index": index, "outcome": "crash", "detail": f"worker exit {exitcode}{detail}"})

    def seconds(self) -> float:
        return round(time.time() - self.started, 1)


def confine(memory: int, max_volume_bytes: int, *, prepare: Callable[[], Any] | None = None) -> Any:
    """Set up this worker process: the repository on the path, medload's per-volume limit, quiet, the memory cap, the alarm.

    Parameters
    ----------
    memory : int
        Address-space cap of the process in bytes (``RLIMIT_AS``).
    max_volume_bytes : int
        ``MEDLOAD_MAX_VOLUME_BYTES``: what medload refuses to allocate for one volume, below the
        cap so that its own refusal (a MedloadError) is what a header's lie meets first.
    prepare : callable, optional
        Run before the cap is set (a corpus built once, imports such as torch that reserve
        more address space than a case may use); its result is returned.
    """
    import logging
    import resource
    import signal
    import warnings

    sys.path.insert(0, str(ROOT))
    os.environ["MEDLOAD_MAX_VOLUME_BYTES"] = str(max_volume_bytes)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    prepared = prepare() if prepare is not None else None
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def alarm(signum: int, frame: Any) -> None:
        raise Alarm()

    signal.signal(signal.SIGALRM, alarm)
    return prepared


@contextlib.contextmanager
def alarm_after(timeout: int) -> Iterator[None]:
    """Raise :class:`Alarm` in the block after ``timeout`` seconds (in a process set up by :func:`confine`)."""
    import signal

    signal.alarm(timeout)
    try:
        yield
    finally:
        signal.alarm(0)


def guarded(timeout: int, case: Callable[[], tuple[Any, ...]], *pad: Any) -> tuple[Any, ...]:
    """``case()`` under an alarm of ``timeout`` seconds (in a process set up by :func:`confine`).

    Returns
    -------
    tuple
        What ``case`` returns, or ``("hang", "timeout", *pad)`` when the alarm rang and
        ``("memory", "MemoryError", *pad)`` when an allocation passed the cap.
    """
    try:
        with alarm_after(timeout):
            return case()
    except Alarm:
        return ("hang", "timeout", *pad)
    except MemoryError:
        return ("memory", "MemoryError", *pad)


def serve(conn: Any, indices: Sequence[int], run: Callable[[int], tuple[Any, ...]]) -> None:
    """The worker's side of the protocol: ``run(index)`` for each case, its fields sent back."""
    for index in indices:
        conn.send(("start", index))
        conn.send(("done", index, *run(index)))
    conn.send(("end",))


def supervise(
    worker: Callable[..., None],
    chunks: Sequence[list[int]],
    args: tuple[Any, ...],
    *,
    on_done: Callable[[tuple[Any, ...]], None],
    on_crash: Callable[[int, int | None], None],
) -> None:
    """Run ``worker(conn, chunk, *args)`` in a spawned process per chunk until every case is done.

    Parameters
    ----------
    worker : callable
        A module-level function (spawn imports it) that calls :func:`confine` and :func:`serve`.
    chunks : list of lists of int
        The case indices of each worker; an empty one starts none.
    args : tuple
        The worker's other arguments.
    on_done : callable
        Called with ``(index, *fields)`` of each finished case.
    on_crash : callable
        Called with ``(index, exit code)`` of a case during which its worker died; the cases of
        its chunk after that one go on in a fresh worker.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    running: list[list[Any]] = []  # [process, connection, chunk, case in progress]

    def launch(chunk: list[int]) -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, chunk, *args), daemon=True)
        proc.start()
        running.append([proc, parent, chunk, None])

    for chunk in chunks:
        if chunk:
            launch(chunk)
    while running:
        for slot in list(running):
            proc, conn, chunk, current = slot
            gone = False
            if conn.poll(0.2):
                try:
                    msg = conn.recv()
                except EOFError:  # the worker's end of the pipe closed: it is gone
                    gone = True
                else:
                    if msg[0] == "start":
                        slot[3] = msg[1]
                    elif msg[0] == "done":
                        on_done(tuple(msg[1:]))
                        slot[3] = None
                    elif msg[0] == "end":
                        proc.join()
                        running.remove(slot)
                    continue
            if gone or (not proc.is_alive() and not conn.poll(0)):
                # The worker died inside a case: record it, go on after it with a fresh worker.
                # (Waiting for a message from a dead worker looped for ever: its pipe reads as
                # ready, EOF, once the parent's copy of the child's end is closed.)
                proc.join()
                running.remove(slot)
                if current is not None:
                    on_crash(current, proc.exitcode)
                    rest = [i for i in chunk if i > current]
                    if rest:
                        launch(rest)


def report(
    result: dict[str, Any], json_path: str | None, summary: Sequence[str], findings: Sequence[Any], bad: Sequence[str]
) -> int:
    """A campaign's end: ``result`` written to ``json_path`` (if given), its ``summary`` keys and the ``findings`` printed.

    Returns the command's exit status: 1 if any of the ``bad`` outcomes was counted.
    """
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in summary}))
    for finding in findings:
        print(finding)
    return 1 if any(result["counts"].get(k, 0) for k in bad) else 0
