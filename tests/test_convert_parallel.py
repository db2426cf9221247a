"""The generic runner (medload.parallel): every task ends in one outcome, whatever happens."""

from __future__ import annotations

import os
import sys
import threading

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


class ColonError(LookupError):
    """An exception of a class no caller knows, whose message is full of colons."""


class Colons:
    def __init__(self, slot: str) -> None:
        pass

    def __call__(self, task):
        if task == "medload":
            raise MedloadError("TypeError: not the class: a quoted one")
        raise ColonError(f"{task}: key: value: 3")

    def close(self) -> None:
        pass


class BrokenFactory:
    def __call__(self, slot: str):
        raise MedloadError("cannot open the output on purpose")


class Exiter:
    """Calls sys.exit on task 5, as a library's fatal-error path may (SystemExit is no Exception)."""

    def __init__(self, slot: str) -> None:
        pass

    def __call__(self, task):
        if task == 5:
            sys.exit(3)
        return task

    def close(self) -> None:
        pass


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
    assert (got["t3"].error_type, got["t3"].error_message, got["t3"].error_traceback) == (
        "MedloadError",
        "three is broken on purpose",
        None,
    )
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
    assert not got["t5"].ok and got["t5"].error_type == "WorkerDied" and "exit code 7" in got["t5"].error_message
    assert all(got[t].ok for t in ["t1", "t2", "t4", "t6", "t7", "t8"])
    assert got["t8"].value == 64


@pytest.mark.parametrize("workers", [0, 2])
def test_a_factory_that_fails_fails_every_task_with_its_reason(workers):
    summary = run_tasks(BrokenFactory(), [("a", 1), ("b", 2), ("c", 3)], workers=workers)
    got = _by_id(summary.outcomes)
    assert sorted(got) == ["a", "b", "c"]
    # the factory's class and message stay typed facts; the message does not quote the class
    for o in got.values():
        assert (o.error_type, o.error_message) == ("MedloadError", "no worker could start: cannot open the output on purpose")


def test_duplicate_task_ids_and_negative_workers_are_refused():
    with pytest.raises(MedloadError, match="unique"):
        run_tasks(SquarerFactory(), [("a", 1), ("a", 2)], workers=0)
    with pytest.raises(MedloadError, match="workers must be >= 0"):
        run_tasks(SquarerFactory(), [("a", 1)], workers=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_task_carries_its_class_apart_from_a_message_with_colons(workers):
    summary = run_tasks(Colons, [("a", "series a"), ("m", "medload")], workers=workers)
    got = _by_id(summary.outcomes)
    assert (got["a"].error_type, got["a"].error_message) == ("ColonError", "series a: key: value: 3")
    # a bug (not a MedloadError) comes with where it was raised, apart from the message
    assert "ColonError" in got["a"].error_traceback and "raise ColonError" in got["a"].error_traceback
    # a message that begins like another class is still the MedloadError's own text
    assert (got["m"].error_type, got["m"].error_message) == ("MedloadError", "TypeError: not the class: a quoted one")
    assert got["m"].error_traceback is None


# A parallel convert whose workers (which re-import this script as their main module) crash on
# one series and hit a bug outside the series' own error handling on another.
FAILING_CONVERT = """
import os, sys
import medload
from medload.batch import worker

real_names, real_read = worker.Job.names, worker.Worker._read


def names(job, task):
    if any("series_bug" in f for f in task.series.files):
        raise LookupError("lookup: key: 3")
    return real_names(job, task)


def read(self, task, names):
    if any("series_crash" in f for f in task.series.files):
        os._exit(9)  # what a segfault in a codec looks like to the parent
    return real_read(self, task, names)


worker.Job.names, worker.Worker._read = names, read

if __name__ == "__main__":
    report = medload.convert(sys.argv[1], sys.argv[2], workers=2, progress=False)
    print(report.counts)
"""


def test_a_parallel_convert_reports_the_error_class_and_the_reason_apart(tmp_path):
    import json
    import re
    import subprocess
    import sys
    from pathlib import Path

    from fixtures.synthetic import write_dicom_series
    from medload.qc.report import write_qc

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    for k, name in enumerate(["series_a", "series_crash", "series_bug", "series_b"]):
        write_dicom_series(
            src / name, shape=(3, 8, 8), seed=k, series_number=k + 1, series_uid=f"1.2.826.0.1.3680043.8.498.{k + 90}"
        )
    (tmp_path / "failing.py").write_text(FAILING_CONVERT)
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, str(tmp_path / "failing.py"), str(src), str(tmp_path / "out")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["medload_report"] == 2 and report["counts"]["converted"] == 2 and report["counts"]["failed"] == 2
    failed = {e["error"]: e for e in report["series"] if e["status"] == "failed"}
    assert sorted(failed) == ["LookupError", "WorkerDied"]
    assert failed["LookupError"]["reason"] == "lookup: key: 3" and failed["LookupError"]["internal"] is True
    assert "raise LookupError" in failed["LookupError"]["traceback"]
    died = failed["WorkerDied"]
    assert died["stage"] == "worker"
    assert re.match(r"the worker process ended \(exit code 9\) while converting this", died["reason"])
    assert "internal" not in died
    # The QC page shows each class once before its reason.
    page = Path(write_qc(tmp_path / "out", workers=0)["path"]).read_text()
    assert "LookupError: lookup: key: 3" in page and page.count("WorkerDied") == 1
    assert "WorkerDied: the worker process ended (exit code 9)" in page


@pytest.mark.slow
def test_a_failed_dask_task_carries_its_class_apart_from_its_message():
    pytest.importorskip("distributed")
    summary = run_tasks(Colons, [("a", "series a"), ("m", "medload")], workers=1, dask="local")
    got = _by_id(summary.outcomes)
    assert (got["a"].error_type, got["a"].error_message) == ("ColonError", "series a: key: value: 3")
    assert "raise ColonError" in got["a"].error_traceback
    assert (got["m"].error_type, got["m"].error_message, got["m"].error_traceback) == (
        "MedloadError",
        "TypeError: not the class: a quoted one",
        None,
    )


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_a_task_that_calls_sys_exit_fails_alone_and_the_run_ends(workers):
    tasks = [(f"t{i}", i) for i in [1, 5, 2, 4, 6]]
    done: list = []
    runner = threading.Thread(target=lambda: done.append(run_tasks(Exiter, tasks, workers=workers)), daemon=True)
    runner.start()
    runner.join(120)  # before: the worker ended with its task still "running", and the run waited for ever
    assert done, "run_tasks did not end"
    got = _by_id(done[0].outcomes)
    assert sorted(got) == sorted(t for t, _ in tasks)
    assert not got["t5"].ok and got["t5"].error_type == "SystemExit"
    assert {t: o.value for t, o in got.items() if o.ok} == {"t1": 1, "t2": 2, "t4": 4, "t6": 6}
