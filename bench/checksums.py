"""What the stored slices' checksums cost: CPU time of reads with and without them, in one process.

Run: ``python bench/checksums.py [--slices 300] [--size 512] [--rounds 5]``

Writes one default store (uint8 + LZ4) of a ``slices x size x size`` windowed CT volume
(bench/loader.py's slices), then times, taking turns, the best of ``rounds``:

* ``read_volume`` as it is (the whole volume checked against its slice checksums) beside the
  same reads with the check skipped (the reader told the volume has no checksum);
* ``verify()`` (every slice read in blocks of 32 and checked) beside the same block reads
  unchecked;
* ``VolumeDataset`` items (a whole volume, and a 64 x 128 x 128 patch), which check every slice
  they read always, beside the same items with the check skipped;
* ``zlib.crc32`` of one slice alone.

For the slice loader (``verify_slices``) see bench/loader_cpu.py ``--verify-slices``. CPU time
(``time.process_time``) is printed with the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def best_ms(run, rounds: int) -> float:
    """The least CPU milliseconds of ``rounds`` calls of ``run`` (one warm-up first)."""
    run()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        run()
        best = min(best, (time.process_time() - t0) * 1e3)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import loader

    import medload

    slices, source = loader.ct_slices(args.slices, args.size)
    path = Path(tempfile.mkdtemp(prefix="medload-crc-")) / "ct.h5"
    with medload.Store.create(path) as store:
        store.add(medload.Volume(slices, np.diag([2.5, 0.7, 0.7, 1.0]), modality="CT", meta={"series_key": "ct"}))
    checked, unchecked = medload.open(path), medload.open(path)
    unchecked._checksums.kind = lambda rec: "none"  # the same reads, the comparison skipped
    unchecked._checksums.of_slices = lambda rec, name: None
    from medload.datasets import VolumeDataset

    volumes = {name: VolumeDataset(reader) for name, reader in (("checked", checked), ("unchecked", unchecked))}
    patches = {
        name: VolumeDataset(reader, patch_size=(min(64, args.slices), 128, 128))
        for name, reader in (("checked", checked), ("unchecked", unchecked))
    }

    def blocks(reader) -> None:
        for z0 in range(0, args.slices, 32):
            reader.read_slices(0, z0, min(args.slices, z0 + 32), raw=True)

    one = np.ascontiguousarray(np.rint(slices[0] * 255).astype(np.uint8))
    rows = {}
    for _ in range(2):  # taking turns
        rows["read_volume"] = min(rows.get("read_volume", 1e9), best_ms(lambda: checked.read_volume(0), args.rounds))
        rows["read_volume unchecked"] = min(
            rows.get("read_volume unchecked", 1e9), best_ms(lambda: unchecked.read_volume(0), args.rounds)
        )
        rows["verify"] = min(rows.get("verify", 1e9), best_ms(checked.verify, args.rounds))
        rows["blocks unchecked"] = min(rows.get("blocks unchecked", 1e9), best_ms(lambda: blocks(unchecked), args.rounds))
        for kind in ("checked", "unchecked"):
            rows[f"volume {kind}"] = min(rows.get(f"volume {kind}", 1e9), best_ms(lambda k=kind: volumes[k][0], args.rounds))
            rows[f"patch {kind}"] = min(rows.get(f"patch {kind}", 1e9), best_ms(lambda k=kind: patches[k][0], args.rounds))
    crc_us = best_ms(lambda: [zlib.crc32(one.data) for _ in range(200)], args.rounds) * 1e3 / 200
    mb = args.slices * args.size * args.size / 1e6
    print(f"{args.slices} x {args.size} x {args.size} uint8 + LZ4 ({mb:.0f} MB stored values; {source})")
    print(
        "CPU ms: read_volume {read_volume:.1f} (checked) vs {read_volume unchecked:.1f} (unchecked), "
        "verify {verify:.1f} vs the same block reads {blocks unchecked:.1f}".format(**rows)
    )
    print(
        "CPU ms: VolumeDataset whole volume {volume checked:.1f} vs {volume unchecked:.1f}, patch {patch checked:.1f} "
        "vs {patch unchecked:.1f} (checked vs unchecked)".format(**rows)
    )
    print(
        f"ratios: VolumeDataset volume {rows['volume checked'] / rows['volume unchecked']:.2f}, "
        f"patch {rows['patch checked'] / rows['patch unchecked']:.2f}"
    )
    print(
        f"ratios: read_volume {rows['read_volume'] / rows['read_volume unchecked']:.2f}, "
        f"verify {rows['verify'] / rows['blocks unchecked']:.2f}; zlib.crc32 of one {args.size}x{args.size} uint8 "
        f"slice {crc_us:.0f} us ({one.nbytes / crc_us / 1e3:.2f} GB/s); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
