"""Whether a store of several shard files feeds tf.data, Keras and numpy batches as fast as one file.

Run: ``python bench/tf_shards.py [--slices 2048] [--shards 4] [--rounds 3]``

The same 256x256 CT slices (bench/loader.py's ``ct_slices``, default store: uint8 + LZ4)
written once as one file and once as a folder of ``--shards`` shard files, as a parallel
``medload convert`` leaves them (``shard-0000.h5``, ...; each shard holds whole volumes, in
order). Read in turn, round after round, best round kept (bench/loader.py's ``best_rates``):

* ``tf_dataset`` batch 64, shuffled and in order, with ``num_parallel_calls=1`` (one batch at
  a time) and ``AUTOTUNE`` (tf.data picks how many batches are read at once). In order, the
  batches read at once lie in one shard: the case an interleave over shards would change;
* ``NumpyBatches`` (what ``KerasBatches`` and JAX loops use) iterated in the main thread, and
  ``KerasBatches`` through Keras' own ``PyDataset`` adapter with 2 worker threads;
* the anchor: a numpy memmap of all slices, one slice copied per sample in the same shuffled
  order (bench/loader.py's "the limit").

Each row gives slices/s, the ratio to the memmap anchor, and the process CPU time per batch
(all threads, ``time.process_time``), which a loaded machine disturbs much less than wall time.
The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import medload  # noqa: E402
from loader import build_store, ct_slices  # noqa: E402

BATCH = 64


def build_sharded(folder: Path, slices: np.ndarray, shards: int, per_volume: int) -> None:
    """``shards`` shard files holding consecutive volumes, as parallel convert writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    n_vol = -(-len(slices) // per_volume)
    per_shard = -(-n_vol // shards)
    for s in range(shards):
        lo, hi = s * per_shard * per_volume, min((s + 1) * per_shard * per_volume, len(slices))
        if lo >= hi:
            break
        build_store(
            folder / f"shard-{s:04d}.h5", slices[lo:hi], dtype=None, compression=None, per_volume=per_volume, prefix=f"{s:02d}-"
        )


def timed(runners: list[tuple[str, object, int]], rounds: int) -> dict[str, tuple[float, float]]:
    """``name -> (best slices/s, CPU seconds per batch of that best round)``; runners take turns."""
    best: dict[str, tuple[float, float]] = {name: (0.0, 0.0) for name, _, _ in runners}
    for _, run, _ in runners:
        run()  # warm-up: files opened, chunk tables built, tf graphs traced
    for _ in range(rounds):
        for name, run, count in runners:
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rate = count / wall
            if rate > best[name][0]:
                best[name] = (rate, cpu / (count / BATCH))
    return best


def tf_runners(label: str, path: Path, n: int) -> list[tuple[str, object, int]]:
    from medload.datasets import tf_dataset

    runners = []
    for shuffle in (True, False):
        for calls, calls_name in ((1, "1 call"), (None, "AUTOTUNE")):
            ds = tf_dataset(path, batch_size=BATCH, shuffle=shuffle, num_parallel_calls=calls, channels_last=False)

            def epoch(ds=ds):
                for _ in ds:
                    pass

            order = "shuffled" if shuffle else "in order"
            runners.append((f"tf_dataset {order}, {calls_name}: {label}", epoch, n))
    return runners


def numpy_keras_runners(label: str, path: Path, n: int) -> list[tuple[str, object, int]]:
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from medload.datasets import KerasBatches, NumpyBatches

    batches = NumpyBatches(path, batch_size=BATCH, shuffle=True)

    def numpy_epoch():
        for _ in batches:
            pass

    keras_ds = KerasBatches(path, batch_size=BATCH, shuffle=True, workers=2)

    def keras_epoch():
        adapter = PyDatasetAdapter(keras_ds, shuffle=False)
        for _ in adapter.get_numpy_iterator():
            pass
        adapter.on_epoch_end()

    return [(f"NumpyBatches shuffled: {label}", numpy_epoch, n), (f"KerasBatches 2 threads: {label}", keras_epoch, n)]


def memmap_runner(folder: Path, slices: np.ndarray, order: np.ndarray) -> tuple[str, object, int]:
    path = folder / "slices.npy"
    np.save(path, slices)
    mm = np.load(path, mmap_mode="r")

    def run():
        for i in order:
            np.array(mm[i])

    return ("numpy memmap, one slice per sample (anchor)", run, len(order))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=2048)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per-volume", type=int, default=128, help="slices per volume")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-keras", action="store_true", help="tf_dataset rows only")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        slices, source = ct_slices(args.slices)
        one = folder / "one.h5"
        build_store(one, slices, dtype=None, compression=None, per_volume=args.per_volume)
        sharded = folder / "sharded"
        build_sharded(sharded, slices, args.shards, args.per_volume)
        assert len(medload.open(sharded).shards) == args.shards
        order = np.random.default_rng(0).permutation(args.slices)
        n = args.slices
        runners = [memmap_runner(folder, slices, order)]
        for label, path in (("one file", one), (f"{args.shards} shards", sharded)):
            runners += tf_runners(label, path, n)
            if not args.skip_keras:
                runners += numpy_keras_runners(label, path, n)
        # Rows of one kind side by side: one file, then the shards.
        best = timed(runners, args.rounds)
        anchor = best[runners[0][0]][0]
        print(f"\n{n} slices of {source}, batch {BATCH}, default store; best of {args.rounds} rounds")
        print(f"{'method':<58} {'slices/s':>9} {'x memmap':>9} {'CPU ms/batch':>13}")
        for name, _, _ in sorted(runners[1:], key=lambda r: r[0].split(":")[0]):
            rate, cpu = best[name]
            print(f"{name:<58} {rate:>9.0f} {rate / anchor:>9.2f} {cpu * 1e3:>13.1f}")
        print(f"{runners[0][0]:<58} {anchor:>9.0f} {1.0:>9.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
