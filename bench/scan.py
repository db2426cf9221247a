"""Header scan of a big export: ``medload.scan`` serial and on 2 workers, beside a pydicom loop.

Input: a tree of ~20k small DICOM files (200 CT series of 100 slices of 16x16; a template from
``fixtures.synthetic.write_dicom_series``, copied with pydicom under new UIDs and positions),
written once into a temp folder (``--keep DIR`` keeps it between runs). Rows:

- ``pydicom.dcmread(f, stop_before_pixels=True)`` over every file, one process: the anchor (it
  reads headers and nothing more: no grouping, no series, no pseudonyms);
- ``medload.scan(tree, workers=0)``: every header read in this process;
- ``medload.scan(tree, workers=2)``: headers read on 2 worker processes, in chunks;
- the same without the fork server's preload (``medload.pool.PRELOAD = []``): what importing
  numpy, pydicom and medload again in every worker costs.

Every row runs in its own process (cold start, as a user would run it); ``op s`` is the call
alone (timed inside that process), ``CPU s`` the user + system seconds of the whole process
tree (workers included, sampled every 100 ms, so a process's last moments can be missed). Wall
time moves with the machine's other load: the table prints the load average. The files are
read once before the rows, so every row finds them in the page cache.

Run: ``python bench/scan.py`` (``--quick`` for 2k files, ``--keep DIR`` to keep the tree).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Run(NamedTuple):
    """One row: the call's own seconds, the process's wall seconds, CPU seconds of its tree."""

    op: float
    wall: float
    cpu: float


def _write_tree(folder: Path, n_series: int, n_slices: int) -> int:
    """``n_series`` series of ``n_slices`` files under ``folder`` (kept when already whole)."""
    import pydicom
    from pydicom.uid import generate_uid

    from fixtures.synthetic import write_dicom_series

    marker = folder / f".complete-{n_series}x{n_slices}"
    if marker.exists():
        return n_series * n_slices
    shutil.rmtree(folder, ignore_errors=True)
    template_dir = folder / ".template"
    write_dicom_series(template_dir, shape=(1, 16, 16), return_array=False)
    template = pydicom.dcmread(next(template_dir.iterdir()))
    for s in range(n_series):
        series = folder / f"patient{s // 4:03d}" / f"series{s:03d}"
        series.mkdir(parents=True)
        template.PatientID = f"BENCH-{s // 4:03d}"
        template.SeriesInstanceUID = generate_uid()
        template.StudyInstanceUID = generate_uid() if s % 4 == 0 else template.StudyInstanceUID
        template.SeriesNumber = s + 1
        for i in range(n_slices):
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            template.InstanceNumber = i + 1
            template.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
            template.SliceLocation = 2.0 * i
            template.save_as(series / f"IM{i:05d}.dcm", enforce_file_format=True)
    shutil.rmtree(template_dir)
    marker.touch()
    return n_series * n_slices


CHILD = r"""
import json, os, sys, time


def main(tree, what):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs if not f.startswith("."))
    if what == "pydicom":
        import pydicom

        start = time.perf_counter()
        for f in files:
            pydicom.dcmread(f, stop_before_pixels=True)
        return time.perf_counter() - start, len(files)
    import medload.pool

    if what == "no-preload":
        medload.pool.PRELOAD = []
    from medload.io import scan

    start = time.perf_counter()
    found = scan(tree, workers=0 if what == "serial" else 2)
    return time.perf_counter() - start, len(found)


if __name__ == "__main__":
    op, found = main(sys.argv[1], sys.argv[2])
    print(json.dumps({"op": op, "found": found}))
"""


def _run(tree: Path, what: str, script: Path) -> Run:
    """Run one row in its own process; measure it and its workers."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tree), what],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        try:
            for p in [root] + root.children(recursive=True):
                try:
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{err.decode(errors='replace')[-2000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return Run(result["op"], wall, sum(cpu.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 series of 100 files (a smoke run)")
    parser.add_argument("--keep", type=Path, help="folder to keep the tree in between runs")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row (the fastest is shown)")
    args = parser.parse_args()
    n_series, n_slices = (20, 100) if args.quick else (200, 100)

    work = Path(tempfile.mkdtemp(prefix="medload-bench-scan-"))
    tree = args.keep or work / "tree"
    t0 = time.perf_counter()
    n_files = _write_tree(tree, n_series, n_slices)
    print(f"tree: {n_files} DICOM files in {tree} ({time.perf_counter() - t0:.0f} s to write)", file=sys.stderr)
    script = work / "scan_child.py"
    script.write_text(CHILD)

    _run(tree, "pydicom", script)  # the page cache: every row reads warm files
    rows = [
        ("pydicom.dcmread(stop_before_pixels) loop (anchor)", "pydicom"),
        ("medload.scan, workers=0 (this process)", "serial"),
        ("medload.scan, workers=2", "parallel"),
        ("medload.scan, workers=2, no fork-server preload", "no-preload"),
    ]
    runs = {}
    for _, what in rows:
        runs[what] = min((_run(tree, what, script) for _ in range(args.repeat)), key=lambda r: r.op)

    load = os.getloadavg()
    anchor = runs["pydicom"]
    print()
    print(
        f"header scan of {n_files} DICOM files ({n_series} series); {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"{'what':52s} {'op s':>6s} {'wall s':>7s} {'CPU s':>6s} {'files/s':>8s} {'op / anchor':>12s} {'CPU / anchor':>13s}")
    for name, what in rows:
        r = runs[what]
        print(
            f"{name:52s} {r.op:6.2f} {r.wall:7.2f} {r.cpu:6.2f} {n_files / r.op:8.0f} "
            f"{r.op / anchor.op:11.2f}x {r.cpu / anchor.cpu:12.2f}x"
        )
    serial, parallel = runs["serial"], runs["parallel"]
    print(f"{'speed-up of workers=2 over workers=0 (op)':52s} {serial.op / parallel.op:6.2f}x")
    print(f"{'CPU s saved per pool by the preload':52s} {runs['no-preload'].cpu - parallel.cpu:6.2f}")
    shutil.rmtree(work, ignore_errors=True)  # a kept tree lives outside it


if __name__ == "__main__":
    main()
