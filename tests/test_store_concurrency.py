"""Four processes read random slices while a fifth writes a new shard (issue 3, point 4).

Every slice of the synthetic volumes is known (``fixtures.stores.expected_slices``), so each
read is compared with what it must be: an error, a wrong slice or a half-written one fails.
The readers use a reader object opened (and used) in the parent before ``fork``, which must
reopen its own HDF5 handles, and reopen the folder as they go to pick up the new shard.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
import traceback

import numpy as np

import medload
from fixtures.stores import expected_slices, synthetic_volume

SHAPE = (8, 32, 32)
OPTIONS = {"dtype": "float32", "compression": "zstd:1"}  # lossless: reads compare exactly


def _write_shard(path, seeds) -> None:
    with medload.Store.create(path, **OPTIONS) as store:
        for seed in seeds:
            store.add(synthetic_volume(seed, shape=SHAPE))


def _writer(path, seeds, queue) -> None:
    try:
        _write_shard(path, seeds)
        queue.put(("writer", "ok", 0, 0))
    except BaseException:  # noqa: BLE001 - report to the parent
        queue.put(("writer", traceback.format_exc(), 0, 0))


def _reader(reader, folder, worker: int, duration_s: float, queue) -> None:
    rng = np.random.default_rng(worker)
    expected = {}
    reads = new_shard_reads = 0
    try:
        start = time.monotonic()

        def more() -> bool:
            elapsed = time.monotonic() - start
            # at least duration_s and 200 reads; then on until the new shard was read (or 60 s)
            return elapsed < duration_s or reads < 200 or (new_shard_reads == 0 and elapsed < 60)

        while more():
            if reads % 50 == 49:
                reader = medload.open(folder)  # may now include the finished new shard
            row = reader.index[rng.integers(len(reader))]
            record = reader.volumes[row["volume"]]
            seed = int(record.key.split("-")[1])
            if seed not in expected:
                expected[seed] = expected_slices(seed, shape=SHAPE)
            got = reader.read_slices(int(row["volume"]), int(row["slice"]), int(row["slice"]) + 1)
            if not np.array_equal(got[0], expected[seed][row["slice"]]):
                raise AssertionError(f"torn or wrong read: {record.key} slice {row['slice']}")
            reads += 1
            new_shard_reads += record.shard.endswith("shard-0003.h5")
        queue.put((f"reader{worker}", "ok", reads, new_shard_reads))
    except BaseException:  # noqa: BLE001
        queue.put((f"reader{worker}", traceback.format_exc(), reads, new_shard_reads))


def test_four_readers_and_a_writer_of_a_new_shard(tmp_path):
    _write_shard(tmp_path / "shard-0001.h5", [0, 1, 2])
    _write_shard(tmp_path / "shard-0002.h5", [3, 4])
    reader = medload.open(tmp_path)
    assert len(reader) == 5 * SHAPE[0]
    np.testing.assert_array_equal(reader.read_slices(4, 2, 3)[0], expected_slices(4, shape=SHAPE)[2])  # handles open in parent

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(reader, tmp_path, w, 3.0, queue)) for w in range(4)]
    writer = ctx.Process(target=_writer, args=(tmp_path / "shard-0003.h5", range(10, 22), queue))
    for process in readers:
        process.start()
    writer.start()
    results = [queue.get(timeout=120) for _ in range(5)]
    for process in [*readers, writer]:
        process.join(30)
    failures = [f"{who}: {status}" for who, status, _, _ in results if status != "ok"]
    assert not failures, "\n".join(failures)
    assert all(process.exitcode == 0 for process in [*readers, writer])
    reads = {who: n for who, _, n, _ in results}
    assert all(reads[f"reader{w}"] >= 200 for w in range(4))
    assert sum(n for _, _, _, n in results) > 0, "no reader saw the new shard once it was finished"
    # the parent's reader still works after its children used their own handles
    np.testing.assert_array_equal(reader.read_slices(0, 0, 8), expected_slices(0, shape=SHAPE))
    final = medload.open(tmp_path)
    assert len(final.volumes) == 5 + 12 and len(final.shards) == 3
    np.testing.assert_array_equal(final.read_slices(16, 7, 8)[0], expected_slices(21, shape=SHAPE)[7])


def _spawned_read(blob: bytes) -> float:
    reader = pickle.loads(blob)
    return float(reader.read_slices(1, 0, 8).sum())


def test_reader_pickles_into_a_spawned_process(tmp_path):
    _write_shard(tmp_path / "s.h5", [0, 1])
    reader = medload.open(tmp_path / "s.h5")
    expected = float(reader.read_slices(1, 0, 8).sum())
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_spawned_read, (pickle.dumps(reader),)) == expected


def test_two_writers_on_one_file_are_refused(tmp_path):
    path = tmp_path / "shard.h5"
    first = medload.Store.create(path)
    first.add(synthetic_volume(0))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=_try_second_writer, args=(path, queue))
    process.start()
    message = queue.get(timeout=60)
    process.join(30)
    first.close()
    assert "being written by another process" in message and "own shard" in message
    assert [r.key for r in medload.open(path).volumes] == ["ser-0000"]


def _try_second_writer(path, queue) -> None:
    try:
        medload.Store.create(path)
        queue.put("opened")
    except Exception as exc:  # noqa: BLE001
        queue.put(str(exc))
