"""medload.pool's local runner: a run that fails in this process ends its workers with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from medload.pool import run_local


class PidSleeper:
    """A worker that writes its process id into the task's file, then sleeps the task's seconds."""

    def __init__(self, slot: str) -> None:
        self.slot = slot

    def __call__(self, task: tuple[str, float]) -> int:
        pid_file, seconds = task
        Path(pid_file).write_text(str(os.getpid()))
        time.sleep(seconds)
        return os.getpid()

    def close(self) -> None:
        pass


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_on_outcome_callback_that_raises_ends_the_run_without_waiting_for_its_workers(tmp_path):
    # convert's progress callback failing (a closed terminal: BrokenPipeError) must surface as
    # it is. Before, the pool's cleanup joined each worker for 30 s first: the idle one waited
    # on an empty task queue, the busy one on its hour-long task; a 16-worker run sat 8 minutes.
    def fail(outcome):
        raise RuntimeError(f"the callback failed on {outcome.task_id}")

    tasks = [("quick", (str(tmp_path / "quick"), 0.0)), ("long", (str(tmp_path / "long"), 3600.0))]
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the callback failed on quick"):
        run_local(PidSleeper, tasks, 2, on_outcome=fail, check_main=False)
    elapsed = time.monotonic() - started
    # A hang check, not a timing: the old cleanup needed at least 2 x 30 s here (63 s measured).
    assert elapsed < 45, f"the failed run took {elapsed:.0f} s to end"
    pids = [int((tmp_path / name).read_text()) for name in ("quick", "long") if (tmp_path / name).exists()]
    assert pids, "no worker started a task"
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids), "a worker process outlived the failed run"


class LimitReader:
    """A worker that answers with the per-volume limit its process sees."""

    def __init__(self, slot: str) -> None:
        self.slot = slot

    def __call__(self, task: int) -> int:
        from medload.limits import max_volume_bytes

        return max_volume_bytes()


def test_a_limit_raised_after_a_first_parallel_run_reaches_the_workers(monkeypatch):
    # A LimitError says to raise MEDLOAD_MAX_VOLUME_BYTES; in a notebook that is os.environ. The
    # workers are forked by the fork server, which kept the environment of its own start: the
    # second run's workers still refused the volume (a serial run took it).
    monkeypatch.delenv("MEDLOAD_MAX_VOLUME_BYTES", raising=False)
    first = run_local(LimitReader, [("a", 0), ("b", 1)], 2, check_main=False)
    assert {o.value for o in first.outcomes} == {16 * 1024**3}  # the default; the fork server runs now
    monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "64G")
    second = run_local(LimitReader, [("a", 0), ("b", 1)], 2, check_main=False)
    assert [o.ok for o in second.outcomes] == [True, True]
    assert {o.value for o in second.outcomes} == {64 * 1024**3}
