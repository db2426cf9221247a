"""The generic runner (medload.parallel): every task ends in one outcome, whatever happens."""

from __future__ import annotations

import os

import pytest

from medload.errors import MedloadError
from medload.parallel import Outcome, run_tasks


class Squarer:
    """Squares numbers; fails on 3 (an error), dies on 5 (a crash); counts its tasks in a file."""

    def __init__(self, slot: str, log_dir: str | None = None) -> None:
        self.slot = slot
        self.log_dir = log_dir
        self.done = 0

    def __call__(self, task):
        if task == 3:
            raise MedloadError("three is broken on purpose")
        if task == 5:
            os._exit(7)  # a segfault in a codec looks like this to the parent
        self.done += 1
        return task * task

    def close(self) -> None:
        if self.log_dir:
            with open(os.path.join(self.log_dir, f"closed-{self.slot}-{os.getpid()}"), "w") as fh:
                fh.write(str(self.done))


class SquarerFactory:
    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir

    def __call__(self, slot: str) -> Squarer:
        return Squarer(slot, self.log_dir)


class BrokenFactory:
    def __call__(self, slot: str):
        raise MedloadError("cannot open the output on purpose")


def _by_id(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.task_id: o for o in outcomes}


@pytest.mark.parametrize("workers", [0, 2])
def test_every_task_has_one_outcome_errors_do_not_stop_the_batch(tmp_path, workers):
    tasks = [(f"t{i}", i) for i in [1, 2, 3, 4, 6, 7]]
    summary = run_tasks(SquarerFactory(str(tmp_path)), tasks, workers=workers)
    got = _by_id(summary.outcomes)
    assert sorted(got) == sorted(t for t, _ in tasks)
    assert {t: o.value for t, o in got.items() if o.ok} == {"t1": 1, "t2": 4, "t4": 16, "t6": 36, "t7": 49}
    assert got["t3"].ok is False and got["t3"].error == "MedloadError: three is broken on purpose"
    assert not summary.interrupted and summary.not_run == []
    # every worker closed (its shard finalized) and together they did the 5 good tasks
    closed = list(tmp_path.glob("closed-*"))
    assert 1 <= len(closed) <= max(1, workers)
    assert sum(int(p.read_text()) for p in closed) == 5


def test_a_crashing_worker_fails_its_task_only_and_is_replaced(tmp_path):
    tasks = [(f"t{i}", i) for i in [1, 5, 2, 4, 6, 7, 8]]
    summary = run_tasks(SquarerFactory(str(tmp_path)), tasks, workers=2)
    got = _by_id(summary.outcomes)
    assert len(got) == 7
    assert not got["t5"].ok and "WorkerDied" in got["t5"].error and "exit code 7" in got["t5"].error
    assert all(got[t].ok for t in ["t1", "t2", "t4", "t6", "t7", "t8"])
    assert got["t8"].value == 64


def test_a_factory_that_fails_fails_every_task_with_its_reason():
    summary = run_tasks(BrokenFactory(), [("a", 1), ("b", 2), ("c", 3)], workers=2)
    got = _by_id(summary.outcomes)
    assert sorted(got) == ["a", "b", "c"]
    assert all("cannot open the output on purpose" in o.error for o in got.values())


def test_duplicate_task_ids_and_negative_workers_are_refused():
    with pytest.raises(MedloadError, match="unique"):
        run_tasks(SquarerFactory(), [("a", 1), ("a", 2)], workers=0)
    with pytest.raises(MedloadError, match="workers must be >= 0"):
        run_tasks(SquarerFactory(), [("a", 1)], workers=-1)
