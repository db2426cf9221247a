"""Batch conversion: `medload convert` beside dcm2niix on the same folders, in one run.

Inputs: eight synthetic 256-slice 512x512 CT series (``fixtures.synthetic.ct_series``, written
once into a temp folder) plus ``../shared/data`` when present. Rows:

- dcm2niix (pip binary) converting every source folder to NIfTI (``-z n``), the anchor;
- ``medload convert`` (CT preset ct-abdomen, other modalities as read: no N4, no denoising;
  the default store) with 1 and with 2 workers, without ``--size`` (the same work as
  dcm2niix, which does not resize: the rows the goals are read on) and with ``--size 256``
  (what a training store usually asks for: the resize costs on top);
- peak memory of ``medload convert --workers 1 --size 256`` over 1, 2, 4 and 8 synthetic
  series (resident memory of the whole process tree, sampled every 100 ms): it must not grow
  with the number of series.

Every command runs as its own process (cold start included, as a user would run it), one
after another. medload's bytecode is compiled first (``compileall``, as ``pip install`` does):
where ``PYTHONDONTWRITEBYTECODE`` is set and no ``__pycache__`` exists (this project's
machines), every process would otherwise compile medload's modules from source, about 0.2 CPU s
each (the main process, the fork server and every worker), which an installed medload never does. Wall time, so the machine's other load shows: the table prints the load
average. The CPU column (user + system seconds of the whole process tree, sampled with the
memory: a process's last 100 ms can be missed) moves less with other load than wall time
does; its ratio is the steadier one on a shared machine.

Run: ``python bench/convert.py`` (``--quick`` for a small smoke run, ``--keep DIR`` to keep
the synthetic series between runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


class Run(NamedTuple):
    """One command's wall seconds, CPU seconds and peak resident MB (its whole process tree)."""

    wall: float
    cpu: float
    peak_mb: float


def _run(cmd: list[str], *, cwd: Path = ROOT) -> Run:
    """Run ``cmd`` and measure it (wall time, CPU time and peak RSS of its process tree)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak = 0
    cpu: dict[int, float] = {}  # pid -> its last seen user + system seconds
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            total = 0
            for p in tree:
                try:
                    with p.oneshot():
                        total += p.memory_info().rss
                        times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.1)  # walking /proc costs CPU; 100 ms is enough for a peak lasting seconds
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 1):
        print(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}", file=sys.stderr)
    return Run(wall, sum(cpu.values()), peak / 2**20)


def _make_series(folder: Path, n: int, n_slices: int, size: int) -> list[Path]:
    from fixtures.synthetic import ct_series

    paths = []
    for i in range(n):
        path = folder / f"ct{i:02d}"
        if not (path.exists() and len(list(path.iterdir())) == n_slices):
            shutil.rmtree(path, ignore_errors=True)
            ct_series(path, n_slices=n_slices, size=size, seed=i)
        paths.append(path)
    return paths


def _link(series: list[Path], folder: Path) -> None:
    for s in series:
        (folder / s.name).mkdir(parents=True)
        for f in s.iterdir():
            os.link(f, folder / s.name / f.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 series of 32 slices 256x256 (smoke run)")
    parser.add_argument("--keep", type=Path, help="folder to keep the synthetic series in between runs")
    parser.add_argument("--no-shared", action="store_true", help="leave ../shared/data out")
    args = parser.parse_args()
    n_series, n_slices, size = (2, 32, 256) if args.quick else (8, 256, 512)

    import compileall

    compileall.compile_dir(ROOT / "medload", quiet=1)  # what pip install does (module doc)
    work = Path(tempfile.mkdtemp(prefix="medload-bench-convert-"))
    synth_root = args.keep or work / "synthetic"
    synth_root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    series = _make_series(synth_root, n_series, n_slices, size)
    print(
        f"synthetic: {n_series} CT series of {n_slices}x{size}x{size} in {synth_root} "
        f"({time.perf_counter() - t0:.0f} s to write)",
        file=sys.stderr,
    )
    # One source folder holding only the synthetic series, so both tools read the same files
    # (hard links: scan, like os.walk, does not follow symlinked folders).
    synth = work / "synthetic-src"
    _link(series, synth)
    sources = [synth] + ([SHARED] if SHARED.is_dir() and not args.no_shared else [])
    n_slices_total = n_series * n_slices

    rows: list[tuple[str, Run]] = []
    anchor = Run(0.0, 0.0, 0.0)
    for i, src in enumerate(sources):
        out = work / f"nifti{i}"
        out.mkdir()
        one = _run(["dcm2niix", "-z", "n", "-b", "n", "-f", "%s_%p_%j", "-o", str(out), str(src)])
        anchor = Run(anchor.wall + one.wall, anchor.cpu + one.cpu, max(anchor.peak_mb, one.peak_mb))
    rows.append(("dcm2niix -> NIfTI (anchor)", anchor))

    medload_cmd = [sys.executable, "-m", "medload", "convert", *map(str, sources), "--quiet"]
    medload_cmd += ["--preset", "CT=ct-abdomen", "--preset", "MR=none"]
    timings = {}
    for size_args in ([], ["--size", "256"]):
        for workers in (1, 2):
            name = f"{workers}-{len(size_args)}"
            run = _run(medload_cmd + size_args + ["-o", str(work / f"store-{name}"), "--workers", str(workers)])
            timings[name] = run
            what = f"medload convert, {workers} worker{'s' if workers > 1 else ''}"
            rows.append((what + (", --size 256" if size_args else " (same work as dcm2niix)"), run))

    memory = []
    for n in [k for k in (1, 2, 4, 8) if k <= n_series]:
        src = work / f"mem-src-{n}"
        _link(series[:n], src)
        cmd = [sys.executable, "-m", "medload", "convert", str(src), "--quiet", "--preset", "ct-abdomen"]
        memory.append((n, _run(cmd + ["--size", "256", "--workers", "1", "-o", str(work / f"mem-store-{n}")])))

    load = os.getloadavg()
    print()
    print(
        f"medload convert vs dcm2niix: {n_series} synthetic CT series {n_slices}x{size}x{size}"
        f"{' + ../shared/data' if len(sources) > 1 else ''}; {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"{'what':48s} {'wall s':>7s} {'CPU s':>7s} {'peak MB':>8s} {'wall / dcm2niix':>16s} {'CPU / dcm2niix':>15s}")
    for what, run in rows:
        print(
            f"{what:48s} {run.wall:7.1f} {run.cpu:7.1f} {run.peak_mb:8.0f} "
            f"{run.wall / anchor.wall:15.2f}x {run.cpu / max(anchor.cpu, 1e-9):14.2f}x"
        )
    for size_args, label in (("0", "same work"), ("2", "--size 256")):
        one, two = timings[f"1-{size_args}"], timings[f"2-{size_args}"]
        print(f"{f'speed-up 2 workers vs 1, {label} (wall)':48s} {one.wall / two.wall:7.2f}x")
    print(f"{'synthetic slices per second, 2 workers, same work':48s} {n_slices_total / timings['2-0'].wall:7.0f}")
    print()
    print(
        f"{'peak memory, --workers 1 --size 256, CT series':48s} {'wall s':>7s} {'CPU s':>7s} {'peak MB':>8s} {'vs 1 series':>16s}"
    )
    for n, run in memory:
        print(
            f"{f'  {n} series ({n * n_slices} slices)':48s} {run.wall:7.1f} {run.cpu:7.1f} {run.peak_mb:8.0f} "
            f"{run.peak_mb / memory[0][1].peak_mb:15.2f}x"
        )
    shutil.rmtree(work, ignore_errors=True)  # the kept synthetic series live outside it


if __name__ == "__main__":
    main()
