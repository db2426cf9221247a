"""How fast and lean medload reads a CT series, beside the tools people use today.

Run: ``python bench/read.py [--slices 256] [--size 512] [--repeat 3] [--scan-files 2000]``

One run, one table. It writes a 256-slice 512x512 CT series (int16, rescale intercept -1024,
body phantom, shuffled file names; ``fixtures.synthetic.ct_series``) into a temporary folder,
then times each reader as a whole separate process (interpreter start and imports included,
as a user's script pays them), best of ``--repeat``, warm page cache:

* ``medload.load(folder)``;
* SimpleITK ``ImageSeriesReader`` (GDCM's file sort) + ``GetArrayFromImage``;
* ``dcm2niix -z n -b n`` (the reference converter; writes a NIfTI);
* the plain pydicom loop a notebook writes: ``dcmread`` each file, sort by
  ImagePositionPatient z, ``np.stack``, ``* slope + intercept``.

Peak memory is each child's own maximum resident set (``os.wait4`` rusage); ``cpu s`` its
user + system CPU time, which other users' load on a shared machine disturbs much less than
wall time. The ``read s`` column is the time inside the child from its first import to the
array in hand (imports included, interpreter start excluded). Then header scanning:
``medload.scan`` files/s on the CT folder and on ``--scan-files`` small files (several
series), beside a plain ``dcmread(stop_before_pixels=True)`` loop.

Goals (issue 2): medload no slower than SimpleITK; peak memory <= 1.3 x output array + 150 MB;
scan >= 2,000 files/s.
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

ROOT = Path(__file__).resolve().parents[1]

# The data are made in a child process: this process stays small (no numpy), because a
# child's peak RSS as the kernel reports it starts from its parent's RSS at fork time.
GENERATE = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from fixtures.synthetic import ct_series, write_dicom_series
tmp, slices, size, n_many = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ct_series(tmp / "ct", n_slices=slices, size=size)
per_series = 200
for k in range(max(1, n_many // per_series)):
    write_dicom_series(tmp / "many" / f"s{k:02d}", shape=(per_series, 16, 16), seed=k,
                       series_description=f"series {k}", return_array=False)
"""

# Each child prints one JSON line: {"read_s", "nbytes", "shape", "dtype"}.
CHILD = {
    "medload": """
import sys, time, json
t0 = time.perf_counter()
import medload
vol = medload.load(sys.argv[1])
a = vol.array
t = time.perf_counter() - t0
print(json.dumps({"read_s": t, "nbytes": a.nbytes, "shape": a.shape, "dtype": str(a.dtype)}))
""",
    "SimpleITK": """
import sys, time, json
t0 = time.perf_counter()
import SimpleITK as sitk
reader = sitk.ImageSeriesReader()
reader.SetFileNames(reader.GetGDCMSeriesFileNames(sys.argv[1]))
a = sitk.GetArrayFromImage(reader.Execute())
t = time.perf_counter() - t0
print(json.dumps({"read_s": t, "nbytes": a.nbytes, "shape": a.shape, "dtype": str(a.dtype)}))
""",
    "pydicom loop": """
import sys, os, time, json
t0 = time.perf_counter()
import numpy as np, pydicom
folder = sys.argv[1]
slices = [pydicom.dcmread(os.path.join(folder, f)) for f in os.listdir(folder)]
slices.sort(key=lambda s: float(s.ImagePositionPatient[2]))
a = np.stack([s.pixel_array for s in slices])
a = a * float(slices[0].RescaleSlope) + float(slices[0].RescaleIntercept)
t = time.perf_counter() - t0
print(json.dumps({"read_s": t, "nbytes": a.nbytes, "shape": a.shape, "dtype": str(a.dtype)}))
""",
}

SCAN_CHILD = """
import sys, time, json, os
import medload, pydicom
folder, repeat = sys.argv[1], int(sys.argv[2])
files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
best_m = best_p = cpu_m = cpu_p = float("inf")
for _ in range(repeat):
    t0, c0 = time.perf_counter(), time.process_time()
    found = medload.scan(folder)
    best_m, cpu_m = min(best_m, time.perf_counter() - t0), min(cpu_m, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        pydicom.dcmread(f, stop_before_pixels=True)
    best_p, cpu_p = min(best_p, time.perf_counter() - t0), min(cpu_p, time.process_time() - c0)
print(json.dumps({"files": len(files), "series": len(found), "medload_s": best_m, "pydicom_s": best_p,
                  "medload_cpu": cpu_m, "pydicom_cpu": cpu_p}))
"""


def run_child(argv: list[str]) -> tuple[float, float, str, float]:
    """Run one process; return (wall seconds, peak RSS in MB, stdout, CPU seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children).
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:2]} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, out, usage.ru_utime + usage.ru_stime


def best_of(argv: list[str], repeat: int) -> dict:
    runs = [run_child(argv) for _ in range(repeat)]
    wall = min(r[0] for r in runs)
    rss = max(r[1] for r in runs)
    cpu = min(r[3] for r in runs)
    info: dict = {}
    for line in runs[0][2].splitlines()[::-1]:
        if line.startswith("{"):
            info = json.loads(line)
            break
    reads = [json.loads(r[2].strip().splitlines()[-1])["read_s"] for r in runs if r[2].strip().startswith("{")]
    return {"wall": wall, "rss": rss, "cpu": cpu, "read": min(reads) if reads else None, **info}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each process; the best wall time is kept")
    parser.add_argument("--scan-files", type=int, default=2000, help="small DICOM files for the header scan")
    parser.add_argument("--only", nargs="*", default=None, help="subset of: medload SimpleITK dcm2niix 'pydicom loop'")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="medload-bench-read-"))
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", GENERATE, str(ROOT), str(tmp), str(args.slices), str(args.size), str(args.scan_files)],
            check=True,
        )
        made = time.perf_counter() - t0
        baseline = run_child([sys.executable, "-c", "pass"])[1]
        print(
            f"CT series: {args.slices} slices of {args.size}x{args.size} (uint16, 12 bits stored, "
            f"intercept -1024) made in {made:.1f} s "
            f"({tmp / 'ct'});\npython {sys.version.split()[0]}, {os.cpu_count()} cores, warm cache; "
            f"an empty python process peaks at {baseline:.0f} MB"
        )

        names = args.only or ["medload", "SimpleITK", "dcm2niix", "pydicom loop"]
        results: dict[str, dict] = {}
        for name in names:
            if name == "dcm2niix":
                exe = shutil.which("dcm2niix")
                if exe is None:
                    print("dcm2niix not on PATH: skipped (pip install dcm2niix)")
                    continue
                out = tmp / "dcm2niix-out"
                out.mkdir(exist_ok=True)
                results[name] = best_of([exe, "-z", "n", "-b", "n", "-o", str(out), str(tmp / "ct")], args.repeat)
            else:
                results[name] = best_of([sys.executable, "-c", CHILD[name], str(tmp / "ct")], args.repeat)

        ours = results.get("medload")
        print()
        print(
            f"{'reader (whole process)':<24}{'wall s':>9}{'cpu s':>8}{'read s':>9}{'peak MB':>10}{'out MB':>8}"
            f"  {'dtype':<8}{'wall / medload':>15}{'cpu / medload':>15}"
        )
        for name, r in results.items():
            ratio = f"{r['wall'] / ours['wall']:.2f}x" if ours else "-"
            cpu_ratio = f"{r['cpu'] / ours['cpu']:.2f}x" if ours else "-"
            read = f"{r['read']:.2f}" if r.get("read") is not None else "-"
            out_mb = f"{r['nbytes'] / 2**20:.0f}" if "nbytes" in r else "-"
            print(
                f"{name:<24}{r['wall']:>9.2f}{r['cpu']:>8.2f}{read:>9}{r['rss']:>10.0f}{out_mb:>8}  "
                f"{r.get('dtype', 'nifti'):<8}{ratio:>15}{cpu_ratio:>15}"
            )

        scan_ct = json.loads(run_child([sys.executable, "-c", SCAN_CHILD, str(tmp / "ct"), str(args.repeat)])[2])
        scan_many = json.loads(run_child([sys.executable, "-c", SCAN_CHILD, str(tmp / "many"), str(args.repeat)])[2])
        print()
        print(
            f"{'header scan (in process)':<34}{'medload files/s':>16}{'pydicom loop files/s':>22}{'ratio':>8}"
            f"{'per CPU s: medload':>20}{'pydicom':>9}"
        )
        for label, s in ((f"CT series, {args.size}x{args.size} files", scan_ct), (f"{s_many_label(scan_many)}", scan_many)):
            m = s["files"] / s["medload_s"]
            p = s["files"] / s["pydicom_s"]
            print(
                f"{label:<34}{m:>16.0f}{p:>22.0f}{m / p:>7.2f}x"
                f"{s['files'] / s['medload_cpu']:>20.0f}{s['files'] / s['pydicom_cpu']:>9.0f}"
            )

        if ours:
            limit = 1.3 * ours["nbytes"] / 2**20 + 150
            sitk = results.get("SimpleITK")
            print()
            print("Goals:")
            if sitk:
                print(
                    f"  medload no slower than SimpleITK: {ours['wall']:.2f} s vs {sitk['wall']:.2f} s -> "
                    f"{'met' if ours['wall'] <= sitk['wall'] else 'NOT met'}"
                )
            print(
                f"  peak memory <= 1.3 x output + 150 MB = {limit:.0f} MB: {ours['rss']:.0f} MB -> "
                f"{'met' if ours['rss'] <= limit else 'NOT met'}"
            )
            rate = min(s["files"] / s["medload_s"] for s in (scan_ct, scan_many))
            print(f"  scan >= 2,000 files/s: {rate:.0f} files/s (slower of the two) -> {'met' if rate >= 2000 else 'NOT met'}")
            print("  (wall times suffer from other users' load on a shared machine; CPU seconds do much less)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def s_many_label(s: dict) -> str:
    return f"{s['files']} small files, {s['series']} series"


if __name__ == "__main__":
    raise SystemExit(main())
