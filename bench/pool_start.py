"""What convert's second worker pool costs: one pool scans the headers, a new one converts.

Run: ``python bench/pool_start.py [--series 8 --slices 256 --size 512] [--rounds 5]``;
``python bench/pool_start.py --pools-only --rounds 20 [--tree PATH]`` times the trivial pool
alone, for the code tree at PATH (e.g. a ``git archive`` of an older commit, run in alternation).

``medload convert --workers N`` reads headers on a pool of N processes (``medload.io.scan``,
when there are at least ``PARALLEL_MIN_FILES`` files), which ends; then it starts a second pool
of N processes to convert the series. Reusing the scan's processes for the conversion could
save at most what starting and ending a pool costs once the fork server runs. Rows:

* a pool of N ``Echo`` workers started, given N trivial tasks and ended, after a scan's pool
  in the same process (the fork server already running, as when convert starts its second
  pool): wall seconds and CPU seconds of the whole process tree, best and median of
  ``--rounds``; the upper bound of what reusing the scan's pool saves;
* the same for a convert worker (``medload.batch.job.Job``'s factory: imports h5py, the store,
  the transforms): what a converting pool pays to start whether or not its processes scanned;
* ``medload convert --workers N`` of the synthetic CT series (``fixtures.synthetic.ct_series``,
  bench/convert.py's fixture) as its own process: wall and process-tree CPU seconds, to put
  the pool start in proportion; and, inside one such run, the seconds from the scan pool's
  end to the convert pool's first task (planning included).

CPU time is the steadier figure on a shared machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from convert import _make_series, _run  # noqa: E402


def tree_cpu() -> float:
    """User + system seconds of this process and every descendant, the ended ones included.

    Pool workers are children of the fork server, which reaps them: their time is in its
    ``children_user`` / ``children_system``.
    """
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class _Starter:
    """A convert worker's start alone: the factory builds it (imports and all), the task is trivial."""

    def __init__(self, job, slot: str) -> None:
        # What a convert worker imports before its first series (its Worker itself is lazy).
        from medload.io import load  # noqa: F401
        from medload.store import Store  # noqa: F401
        from medload.transforms import Pipeline  # noqa: F401

        self.worker = job(slot)

    def __call__(self, task):
        return task

    def close(self) -> None:
        pass  # the Job's worker wrote nothing: no shard to finish


def pool_cost(factory, n: int) -> tuple[float, float]:
    """Wall and process-tree CPU seconds of one pool of ``n`` running ``n`` trivial tasks."""
    from medload.pool import run_local

    c0, t0 = tree_cpu(), time.perf_counter()
    summary = run_local(factory, [(str(i), i) for i in range(n)], n, check_main=False)
    wall = time.perf_counter() - t0
    time.sleep(0.2)  # let the fork server reap the workers so their CPU is counted
    cpu = tree_cpu() - c0
    assert all(o.ok for o in summary.outcomes), [o.error for o in summary.outcomes]
    return wall, cpu


def pools_only(n: int, rounds: int) -> None:
    """The trivial pool alone: whole-run and last-result-to-return wall times, and CPU, per round."""
    import medload
    from medload.pool import Echo, run_local

    run_local(Echo, [(str(i), i) for i in range(n)], n, check_main=False)  # the fork server starts
    whole, tail, cpu = [], [], []
    for _ in range(rounds):
        done: list[float] = []
        c0, t0 = tree_cpu(), time.perf_counter()
        run_local(
            Echo,
            [(str(i), i) for i in range(n)],
            n,
            on_outcome=lambda o, done=done: done.append(time.perf_counter()),
            check_main=False,
        )
        t1 = time.perf_counter()
        time.sleep(0.2)  # the fork server reaps the workers: their CPU is counted
        whole.append(t1 - t0)
        tail.append(t1 - done[-1])
        cpu.append(tree_cpu() - c0)
    load = os.getloadavg()
    print(
        f"pool of {n}, {rounds} rounds (tree {Path(medload.__file__).parents[1]}, load {load[0]:.1f}): "
        f"whole run median {statistics.median(whole) * 1e3:.0f} ms, last result -> return median "
        f"{statistics.median(tail) * 1e3:.0f} ms, CPU median {statistics.median(cpu) * 1e3:.0f} ms"
    )


def convert_gap(src: Path, out: Path, workers: int) -> tuple[float, float, float]:
    """Inside one convert: seconds from the scan pool's end to the convert pool's first task start,
    CPU seconds of the tree over that gap, and the whole convert's wall seconds."""
    import medload
    import medload.io.collect as collect_mod
    import medload.parallel as parallel_mod

    marks: dict[str, float] = {}
    real_run_local = collect_mod.run_local
    real_run_tasks = parallel_mod.run_local

    def scan_run_local(*args, **kwargs):
        summary = real_run_local(*args, **kwargs)
        marks["scan_end"], marks["scan_end_cpu"] = time.perf_counter(), tree_cpu()
        return summary

    def convert_run_local(factory, tasks, n, *, on_outcome=None, on_start=None, check_main=True):
        def started(tid, slot):
            if "first_start" not in marks:
                marks["first_start"], marks["first_start_cpu"] = time.perf_counter(), tree_cpu()
            if on_start:
                on_start(tid, slot)

        return real_run_tasks(factory, tasks, n, on_outcome=on_outcome, on_start=started, check_main=check_main)

    collect_mod.run_local, parallel_mod.run_local = scan_run_local, convert_run_local
    try:
        t0 = time.perf_counter()
        medload.convert([str(src)], str(out), workers=workers, pipeline={"CT": "ct-abdomen"}, progress=False)
        total = time.perf_counter() - t0
    finally:
        collect_mod.run_local, parallel_mod.run_local = real_run_local, real_run_tasks
    if "scan_end" not in marks:
        raise SystemExit(f"the scan did not use a pool ({src} has fewer files than PARALLEL_MIN_FILES?)")
    return marks["first_start"] - marks["scan_end"], marks["first_start_cpu"] - marks["scan_end_cpu"], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="folder to keep the synthetic series in between runs")
    parser.add_argument("--pools-only", action="store_true", help="only the trivial pool, --rounds times")
    parser.add_argument("--tree", help="medload source tree to time (default: this one)")
    args = parser.parse_args()
    n = args.workers
    if args.tree:
        assert "medload" not in sys.modules
        sys.path.insert(0, str(Path(args.tree).resolve()))
    print(f"load average before: {os.getloadavg()}")
    if args.pools_only:
        pools_only(n, args.rounds)
        return
    work = Path(tempfile.mkdtemp(prefix="medload-bench-pool-"))
    root = args.keep or work / "synthetic"
    root.mkdir(parents=True, exist_ok=True)
    series = _make_series(root, args.series, args.slices, args.size)
    src = work / "src"
    for s in series:
        (src / s.name).mkdir(parents=True)
        for f in s.iterdir():
            os.link(f, src / s.name / f.name)

    import medload
    from medload.batch.job import Job
    from medload.pool import Echo

    # Warm the fork server the way convert does: a scan on a pool first.
    medload.scan(src, workers=n)
    job = Job(out=str(work / "starter-store"), single_file=False, pipelines={}, store_options={}, keep_phi=False)
    import functools

    starter = functools.partial(_Starter, job)
    rows: dict[str, list[tuple[float, float]]] = {"echo": [], "convert worker": []}
    for _ in range(args.rounds):
        rows["echo"].append(pool_cost(Echo, n))
        rows["convert worker"].append(pool_cost(starter, n))

    gaps = [convert_gap(src, work / f"gap-store-{i}", n) for i in range(2)]
    whole = [
        _run(
            [sys.executable, "-m", "medload", "convert", str(src), "--quiet", "--preset", "CT=ct-abdomen"]
            + ["-o", str(work / f"store-{i}"), "--workers", str(n)]
        )
        for i in range(2)
    ]
    load = os.getloadavg()
    print(
        f"\n{args.series} synthetic CT series of {args.slices}x{args.size}x{args.size} ({args.series * args.slices} files), "
        f"{n} workers; {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"{'what':62s} {'wall s':>14s} {'CPU s':>14s}")
    for name, label in (
        ("echo", f"a pool of {n} started and ended, trivial workers"),
        ("convert worker", f"a pool of {n} convert workers started and ended"),
    ):
        walls, cpus = [w for w, _ in rows[name]], [c for _, c in rows[name]]
        print(
            f"{label:62s} {min(walls):6.2f} ({statistics.median(walls):5.2f}) {min(cpus):6.2f} ({statistics.median(cpus):5.2f})"
        )
    for i, (gap, gap_cpu, total) in enumerate(gaps):
        print(
            f"{f'in convert #{i + 1}: scan pool end -> first convert task':62s} {gap:14.2f} {gap_cpu:14.2f}   (convert {total:.1f} s)"
        )
    for i, run in enumerate(whole):
        print(f"{f'medload convert --workers {n}, own process #{i + 1}':62s} {run.wall:14.2f} {run.cpu:14.2f}")
    echo_wall = min(w for w, _ in rows["echo"])
    echo_cpu = min(c for _, c in rows["echo"])
    best = min(whole, key=lambda r: r.wall)
    print(
        f"{'what reuse could save, share of a convert':62s} {echo_wall / best.wall:13.1%} {echo_cpu / max(best.cpu, 1e-9):13.1%}"
    )
    print("(best (median) of", args.rounds, "rounds; the median is in brackets)")
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
