"""Batch conversion: `medload convert` beside dcm2niix on the same folders, in one run.

Inputs: eight synthetic 256-slice 512x512 CT series (``fixtures.synthetic.ct_series``, written
once into a temp folder) plus ``../shared/data`` when present. Rows:

- dcm2niix (pip binary) converting every source folder to NIfTI (``-z n``), the anchor;
- ``medload convert`` (CT preset ct-abdomen, other modalities as read: no N4, no denoising;
  ``--size 256``; the default store) with 1 worker and with 2 workers, and once more with 2
  workers without ``--size`` to show what the resize step costs;
- peak memory of ``medload convert --workers 1`` over 1, 2, 4 and 8 synthetic series
  (resident memory of the whole process tree, sampled every 100 ms): it must not grow with
  the number of series.

Every command runs as its own process (cold start included, as a user would run it), one
after another. Wall time, so the machine's other load shows: the table prints the load average.

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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def _run(cmd: list[str], *, cwd: Path = ROOT) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS MB of its whole process tree, exit status)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            total = 0
            for p in tree:
                try:
                    total += p.memory_info().rss
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
    return wall, peak / 2**20, proc.returncode


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

    rows = []
    dcm_wall = dcm_mem = 0.0
    for i, src in enumerate(sources):
        out = work / f"nifti{i}"
        out.mkdir()
        wall, mem, _ = _run(["dcm2niix", "-z", "n", "-b", "n", "-f", "%s_%p_%j", "-o", str(out), str(src)])
        dcm_wall += wall
        dcm_mem = max(dcm_mem, mem)
    rows.append(("dcm2niix -> NIfTI (anchor)", dcm_wall, dcm_mem))

    medload_cmd = [
        sys.executable,
        "-m",
        "medload",
        "convert",
        *map(str, sources),
        "--quiet",
        "--preset",
        "CT=ct-abdomen",
        "--preset",
        "MR=none",
        "--size",
        "256",
    ]
    timings = {}
    for workers in (1, 2):
        wall, mem, code = _run(medload_cmd + ["-o", str(work / f"store-w{workers}"), "--workers", str(workers)])
        timings[workers] = wall
        rows.append((f"medload convert, {workers} worker{'s' if workers > 1 else ''}", wall, mem))

    # Where the time goes: the same run without --size (no ResizeSlices step).
    wall, mem, _ = _run(
        [c for c in medload_cmd if c not in ("--size", "256")] + ["-o", str(work / "store-nosize"), "--workers", "2"]
    )
    rows.append(("medload convert, 2 workers, without --size", wall, mem))

    memory = []
    for n in [k for k in (1, 2, 4, 8) if k <= n_series]:
        src = work / f"mem-src-{n}"
        _link(series[:n], src)
        wall, mem, _ = _run(
            [
                sys.executable,
                "-m",
                "medload",
                "convert",
                str(src),
                "--quiet",
                "--preset",
                "ct-abdomen",
                "--size",
                "256",
                "--workers",
                "1",
                "-o",
                str(work / f"mem-store-{n}"),
            ]
        )
        memory.append((n, wall, mem))

    load = os.getloadavg()
    print()
    print(
        f"medload convert vs dcm2niix: {n_series} synthetic CT series {n_slices}x{size}x{size}"
        f"{' + ../shared/data' if len(sources) > 1 else ''}; {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"{'what':44s} {'wall s':>8s} {'peak MB':>8s} {'time / dcm2niix':>16s}")
    for what, wall, mem in rows:
        print(f"{what:44s} {wall:8.1f} {mem:8.0f} {wall / dcm_wall:15.2f}x")
    print(f"{'speed-up 2 workers vs 1 (goal >= 1.7x)':44s} {timings[1] / timings[2]:8.2f}x")
    print(f"{'synthetic slices per second, 2 workers':44s} {n_slices_total / timings[2]:8.0f}")
    print()
    print(f"{'peak memory, --workers 1, CT series':44s} {'wall s':>8s} {'peak MB':>8s} {'vs 1 series':>16s}")
    for n, wall, mem in memory:
        print(f"{f'  {n} series ({n * n_slices} slices)':44s} {wall:8.1f} {mem:8.0f} {mem / memory[0][2]:15.2f}x")
    shutil.rmtree(work, ignore_errors=True)  # the kept synthetic series live outside it


if __name__ == "__main__":
    main()
