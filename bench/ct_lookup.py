"""CPU seconds of a converter's CT read + window into uint8, in one process, for one code tree.

Run: ``python bench/ct_lookup.py [--tree PATH] [--series DIR ...]``

What a 1-worker ``medload convert --preset ct-abdomen`` spends per CT series outside the
store write: the series read and windowed (``CanonicalSlices`` then ``Window("abdomen")``) into
the uint8 bytes a store keeps. Trees with ``medload.batch.fused.StoredTables`` look the stored
codes up as each file is read (``medload.io.load_stored``); older trees ``load`` the int16 HU
volume, then look it up. On a shared machine run it with ``--tree`` pointing at each version
(e.g. a ``git archive`` of the older commit) in alternation: CPU time
(``time.process_time``) moves much less with the neighbours' load than wall time. The series
default to those ``python bench/convert.py --keep /tmp/bench/ct`` wrote. Prints the CPU
seconds, the load average and a CRC-32 of every output array and encoding (equal between trees
where the bytes are).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys

CHILD = """
import sys, time, zlib, medload
from medload.batch import fused
from medload.transforms import CanonicalSlices, Pipeline, Window

pipe = Pipeline([CanonicalSlices(), Window("abdomen")])
store = type("Store", (), {"dtype": "uint8", "value_range": None})()
series = [medload.scan(folder)[0] for folder in sys.argv[1:]]
looks_up = hasattr(fused, "StoredTables")
cpu, crc = 0.0, 0
for s in series:
    start = time.process_time()
    if looks_up:
        from medload.io import load_stored

        volume = load_stored(s, fused.StoredTables.of(pipe, "uint8", None))
    else:
        volume = medload.load(s)
    out, _, encoded = fused.run_for_store(pipe, volume, None, store)
    cpu += time.process_time() - start
    crc = zlib.crc32(repr(encoded).encode(), zlib.crc32(out.array.tobytes(), crc))
print(f"{'looked up as read' if looks_up else 'int16 volume, then looked up'}: {cpu:.2f} CPU s for {len(series)} series, crc {crc:08x}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), help="medload tree")
    parser.add_argument("--series", nargs="*", help="series folders (default /tmp/bench/ct/ct*)")
    args = parser.parse_args()
    folders = args.series or sorted(glob.glob("/tmp/bench/ct/ct*"))
    if not folders:
        sys.exit("no series: run python bench/convert.py --keep /tmp/bench/ct once, or pass --series")
    env = dict(os.environ, PYTHONPATH=args.tree)
    load = os.getloadavg()
    out = subprocess.run([sys.executable, "-c", CHILD, *folders], env=env, cwd=args.tree, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-2000:])
    print(f"{args.tree}: {out.stdout.strip()} (load {load[0]:.2f} {load[1]:.2f})")


if __name__ == "__main__":
    main()
