"""What judging slice positions by their written precision costs (medload/io/rounding.py).

Run: ``python bench/rounded_positions.py [--repeats 5]``.

Rows, CPU seconds (steadier than wall time on a shared machine; the load average is printed):

* per file at scan: keeping ImagePositionPatient's text (``Frame.position_text``) beside the
  anchor, reading the file's header (``read_fast``, which scan does for every file);
* per series, only where a step is off by more than the tolerance: the even-grid check
  (``grid_within_rounding``, quadratic in the slices) for 500, 2,000 and 5,000 slices of
  0.075 mm written with 2 decimals.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from fixtures.synthetic import write_dicom_series
from medload.io.fastheader import read_fast
from medload.io.frame import position_text
from medload.io.headers import _wanted
from medload.io.rounding import grid_within_rounding


def cpu_per_call(call, n: int, repeats: int) -> float:
    """Best CPU seconds per call over ``repeats`` runs of ``n`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            call()
        best = min(best, (time.process_time() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        path = write_dicom_series(Path(folder), shape=(1, 512, 512), return_array=False)["files"][0]
        header = read_fast(str(path), _wanted())
        text = cpu_per_call(lambda: position_text(header), 20000, args.repeats)
        anchor = cpu_per_call(lambda: read_fast(str(path), _wanted()), 400, args.repeats)
    print(f"per file: position_text {text * 1e6:.1f} us, read_fast (anchor) {anchor * 1e6:.0f} us, ratio {text / anchor:.3f}")
    for n in (500, 2000, 5000):
        distances = np.round(np.arange(n) * 0.075, 2)
        cost = cpu_per_call(lambda d=distances: grid_within_rounding(d, 0.075, 0.005), 1, args.repeats)
        print(f"per series: grid_within_rounding, {n} slices: {cost * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
