"""What deciding slices and frames costs at scan (medload/io/positions.py, medload/io/frameorder.py).

Run: ``python bench/frame_order.py [--repeats 5]``.

Rows, CPU seconds (steadier than wall time on a shared machine; the load average is printed):
``arrange`` (sorting.py: positions, frame order, steps) of one 4D series of 200 frames x 50
slices (10,000 images, frames told apart by TemporalPositionIdentifier, in shuffled order),
beside the anchor: reading the 10,000 headers (``read_fast`` of one file, times 10,000), which
scan does anyway. Run it on a checkout before and after a change to compare (``PYTHONPATH``).
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
from medload.io.frame import Frame
from medload.io.headers import _wanted
from medload.io.sorting import arrange


def best_cpu(call, repeats: int) -> float:
    """Best CPU seconds of ``call`` over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return best


def series_4d(n_frames: int, n_slices: int) -> list[Frame]:
    frames = [
        Frame(
            f"/d/{t}_{z}",
            -1,
            -1,
            (0.0, 0.0, 3.0 * z),
            (1, 0, 0, 0, 1, 0),
            (0.5, 0.5),
            1.0,
            0.0,
            (float(t * n_slices + z + 1), 36000.0 + t),
            (),
            f"{t}.{z}",
            volume_id=(t + 1, None, None),
        )
        for t in range(n_frames)
        for z in range(n_slices)
    ]
    np.random.default_rng(0).shuffle(frames)  # type: ignore[arg-type]
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    frames = series_4d(200, 50)
    cost = best_cpu(lambda: arrange(frames), args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        path = write_dicom_series(Path(folder), shape=(1, 64, 64), return_array=False)["files"][0]
        per_file = best_cpu(lambda: [read_fast(str(path), _wanted()) for _ in range(200)], args.repeats) / 200
    anchor = per_file * len(frames)
    print(
        f"arrange, {len(frames)} images: {cost * 1e3:.0f} ms; reading their headers (anchor) {anchor * 1e3:.0f} ms; ratio {cost / anchor:.3f}"
    )


if __name__ == "__main__":
    main()
