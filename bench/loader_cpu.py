"""CPU time per batch of the 0-worker ``ds.loader`` and of its memmap anchors, for one code tree.

Run: ``python bench/loader_cpu.py [--tree PATH] [--workdir DIR]``

On a shared machine wall-clock rates swing with the neighbours' load; CPU time (this process's
user + system, ``time.process_time``) much less. To compare two versions of medload, run this
with ``--tree`` pointing at each (e.g. a ``git archive`` of the older commit) in alternation,
on the same store and memmap (``--workdir`` keeps them between runs): the rows are the same
loaders as ``bench/loader.py`` (batch 64, shuffled, default store, 0 workers).
Prints: compact ms, float32 ms per 64 slices; ds[i] CPU us per item and DataLoader(ds) + collate ms
per batch (the item path); bare memmap ms per 64 slices, memmap DataLoader + collate ms; and
"LZ4 alone": ``cramjam.lz4.decompress_block_into`` of 64 of the store's chunks (bytes already in
memory, shuffled) into the rows of one batch, the floor under the compact row whatever the tree.

``--verify-slices``: the store opened with ``medload.open(path, verify_slices=True)`` (every
slice read checked against its CRC-32; trees without slice checksums do not have the option).
``--loaders-only``: the two ds.loader rows alone (the other rows printed as 0).
``--layers N``: instead, where a compact batch goes, each layer in this process, best of N rounds
taken in turns: the 0-worker ``ds.loader(64, compact=True)`` epoch, its ``SliceBatches`` indexed
with the same batches of indices, ``StoreReader.read_batch`` of them into one reused array, and
LZ4 decoding alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def best_ms(run, count: int, rounds: int = 4) -> float:
    """The least CPU milliseconds of ``rounds`` calls of ``run``, per ``count``."""
    run()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        run()
        best = min(best, (time.process_time() - t0) * 1e3 / count)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]), help="medload source tree to time")
    parser.add_argument("--workdir", default="/tmp/medload-loader-cpu", help="where the store and memmap are kept")
    parser.add_argument("--slices", type=int, default=2048)
    parser.add_argument("--verify-slices", action="store_true", help="check every slice read against its checksum")
    parser.add_argument("--loaders-only", action="store_true", help="time the two ds.loader rows only")
    parser.add_argument("--layers", type=int, default=0, help="time the compact loader's layers, best of this many rounds")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    store, npy = work / "default.h5", work / "slices.npy"
    if not store.exists() or not npy.exists():
        # bench/loader.py's slices and store, made by this tree in another process: this one
        # must import medload from --tree alone.
        make = (
            "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import loader as b; "
            "s, _ = b.ct_slices(int(sys.argv[4])); np.save(sys.argv[3], s); b.build_store(sys.argv[2], s, dtype=None, compression=None)"
        )
        here = Path(__file__).resolve().parent
        subprocess.run([sys.executable, "-c", make, str(here), str(store), str(npy), str(args.slices)], check=True)
    sys.path.insert(0, args.tree)
    import torch

    from medload.datasets import SliceDataset

    torch.set_num_threads(1)
    if args.verify_slices:
        import medload

        ds = SliceDataset(medload.open(store, verify_slices=True), with_mask=False)
    else:
        ds = SliceDataset(store, with_mask=False)
    if args.layers:
        layers(ds, store, args.layers)
        return
    rows = []
    for compact in (True, False):
        loader = ds.loader(64, shuffle=True, compact=compact, generator=torch.Generator().manual_seed(0))

        def epoch(loader=loader) -> None:
            for _ in loader:
                pass

        rows.append(best_ms(epoch, len(loader)))
    lz4_alone = best_ms(lz4_decoding(store), 2048 / 64)
    if args.loaders_only:
        report(rows + [0.0] * 4 + [lz4_alone], args.verify_slices)
        return
    # The item path: ds[i] (what a DataLoader without batched fetch pays per slice), and torch's
    # DataLoader over the items with default_collate.
    item_order = np.random.default_rng(1).permutation(len(ds))[:512]

    def items() -> None:
        for i in item_order:
            ds[int(i)]

    rows.append(best_ms(items, len(item_order)) * 1e3)
    item_loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))

    def item_batches() -> None:
        for _ in item_loader:
            pass

    rows.append(best_ms(item_batches, len(item_loader)))
    mm = np.load(npy, mmap_mode="r")
    order = np.random.default_rng(0).permutation(len(mm))

    def bare() -> None:
        for i in order:
            np.array(mm[i])

    rows.append(best_ms(bare, len(order) / 64))

    class MemmapSlices(torch.utils.data.Dataset):  # bench/loader.py's anchor: one memmap slice per item
        def __len__(self) -> int:
            return len(mm)

        def __getitem__(self, i: int) -> dict:
            return {"image": torch.from_numpy(np.array(mm[i]))[None]}

    per_item = torch.utils.data.DataLoader(
        MemmapSlices(), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )

    def collate() -> None:
        for _ in per_item:
            pass

    rows.append(best_ms(collate, len(per_item)))
    report(rows + [lz4_alone], args.verify_slices)


def layers(ds, store: Path, rounds: int) -> None:
    """Print CPU ms per batch of 64 of each layer under the compact 0-worker loader, best of ``rounds`` in turns."""
    import torch

    loader = ds.loader(64, shuffle=True, compact=True, generator=torch.Generator().manual_seed(0))
    batches = [list(b) for b in loader.sampler]
    out = np.empty((64, 1, *ds.reader.volumes[0].slice_shape[-2:]), ds.reader.volumes[0].dtype)
    reads = [(ds._vol[np.array(b)], ds._slice[np.array(b)]) for b in batches]
    runs = {
        "ds.loader epoch": lambda: [None for _ in loader],
        "SliceBatches[indices]": lambda: [None for b in batches if loader.dataset[b] is None],
        "read_batch into a reused array": lambda: [ds.reader.read_batch(v, s, out, raw=True) for v, s in reads],
        "LZ4 alone": lz4_decoding(store),
    }
    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - t0)
    import medload

    print(
        "CPU ms per batch of 64, compact, 0 workers: "
        + ", ".join(f"{name} {seconds * 1e3 / len(batches):.2f}" for name, seconds in best.items())
        + f"; load average {os.getloadavg()[0]:.1f}; tree {Path(medload.__file__).parents[1]}"
    )


def lz4_decoding(store: Path):
    """A run decoding 2048 of ``store``'s LZ4 chunks (one 16-byte filter header, one block) into batch rows."""
    import cramjam
    import h5py

    blocks = []
    with h5py.File(store, "r") as f:
        for key in f["volumes"]:
            image = f["volumes"][key]["image"]
            blocks += [bytes(image.id.read_direct_chunk((z, 0, 0))[1][16:]) for z in range(image.shape[0])]
            nbytes = int(np.prod(image.shape[1:])) * image.dtype.itemsize
    order = np.random.default_rng(0).permutation(len(blocks))[:2048].tolist()
    batch = np.empty((64, nbytes), np.uint8)
    decode = cramjam.lz4.decompress_block_into

    def run() -> None:
        for i, k in enumerate(order):
            decode(blocks[k], batch[i % 64], output_len=nbytes)

    return run


def report(rows: list[float], verify_slices: bool) -> None:
    """One line: the seven CPU times, the load average and the tree timed."""
    import medload

    print(
        "CPU ms per batch of 64: ds.loader compact {:.2f}, float32 {:.2f}; ds[i] {:.1f} us per item, "
        "DataLoader(ds) + collate {:.2f}; memmap bare {:.2f}, DataLoader + collate {:.2f}; LZ4 alone {:.2f}; "
        "load average {:.1f}; tree {}{}".format(
            *rows, os.getloadavg()[0], Path(medload.__file__).parents[1], " (verify_slices)" if verify_slices else ""
        )
    )


if __name__ == "__main__":
    main()
