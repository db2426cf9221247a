"""Crash consistency: a writer SIGKILLed at 20 points leaves no store or one that opens, and a
re-run completes it to the same per-slice checksums as a run never interrupted (issue 3, point 2).

The writer runs in a forked child that counts every write it makes (dataset writes, attribute
writes, flushes, the final rename) and SIGKILLs itself at the chosen count, so the kill points
cover every stage deterministically: inside a volume's pixels, between its attributes and its
``complete`` flag, before and after the rename, while appending to a finished store.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import h5py
import numpy as np
import pytest

import medload
import medload.store.writer as writer_module
from fixtures.stores import slice_checksums, synthetic_mask, synthetic_volume
from medload.problems import ProblemKind

SEEDS_FIRST, SEEDS_SECOND = (0, 1), (2, 3)


def _write(path, seeds) -> None:
    with medload.Store.create(path, compression="zstd:1") as store:
        for seed in seeds:
            volume = synthetic_volume(seed, shape=(5, 16, 16))
            store.add(volume, mask=synthetic_mask(volume), label=seed)


def _workload(path) -> None:
    """Two sessions: write a store, then append to the finished store."""
    _write(path, SEEDS_FIRST)
    _write(path, SEEDS_FIRST + SEEDS_SECOND)


def _child(path, kill_at: int, counter_file) -> None:
    count = [0]

    def tick():
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def counted(original):
        def wrapper(*args, **kwargs):
            tick()
            return original(*args, **kwargs)

        return wrapper

    h5py.Dataset.__setitem__ = counted(h5py.Dataset.__setitem__)
    h5py.AttributeManager.__setitem__ = counted(h5py.AttributeManager.__setitem__)
    h5py.File.flush = counted(h5py.File.flush)
    writer_module.os.replace = counted(os.replace)
    writer_module.shutil.copyfile = counted(writer_module.shutil.copyfile)
    writer_module.BLOCK_SLICES = 2  # several writes per volume: kills land inside the pixels
    _workload(path)
    with open(counter_file, "w") as handle:
        handle.write(str(count[0]))
    os._exit(0)


def _run_child(path, kill_at: int, tmp_path) -> int:
    counter = tmp_path / "count.txt"
    process = multiprocessing.get_context("fork").Process(target=_child, args=(path, kill_at, counter))
    process.start()
    process.join(60)
    return process.exitcode


def _finished_content(path):
    with medload.open(path) as reader:
        sums = slice_checksums(reader)
        labels = {r.key: r.label for r in reader.volumes}
        histories = {r.key: r.history for r in reader.volumes}
    return sums, labels, histories


@pytest.mark.slow
def test_sigkill_at_20_points_then_rerun_gives_the_same_store(tmp_path):
    reference = tmp_path / "reference.h5"
    assert _run_child(reference, kill_at=-1, tmp_path=tmp_path) == 0
    total_ops = int((tmp_path / "count.txt").read_text())
    expected = _finished_content(reference)
    assert len(expected[0]) == 4 * 5 and total_ops > 40

    kill_points = sorted(set(np.linspace(1, total_ops, 20).round().astype(int)))
    assert len(kill_points) == 20
    outcomes = {"no store": 0, "store opens": 0}
    for n, kill_at in enumerate(kill_points):
        path = tmp_path / f"run{n:02d}" / "out.h5"
        path.parent.mkdir()
        assert _run_child(path, kill_at, tmp_path) == -signal.SIGKILL, f"kill point {kill_at} not reached"
        if path.exists():
            outcomes["store opens"] += 1
            sums, labels, _ = _finished_content(path)  # opens cleanly, every slice readable
            assert set(labels) in ({"ser-0000", "ser-0001"}, set(expected[1]))
            assert all(sums[k] == expected[0][k] for k in sums)
        else:
            outcomes["no store"] += 1
        if n % 7 == 3:
            # a second crash while resuming the first
            assert _run_child(path, 3, tmp_path) == -signal.SIGKILL
        _workload(path)  # the re-run
        assert _finished_content(path) == expected, f"kill point {kill_at}"
        assert sorted(p.name for p in path.parent.iterdir()) == ["out.h5"]
    assert outcomes["no store"] > 0 and outcomes["store opens"] > 0


def test_unreadable_partial_starts_over(tmp_path):
    path = tmp_path / "out.h5"
    path.with_name("out.h5.partial").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with medload.Store.create(path) as store:
        assert any(p.kind is ProblemKind.STORE_STARTED_OVER and "did not open" in p.message for p in store.problems)
        store.add(synthetic_volume(0))
    assert [r.key for r in medload.open(path).volumes] == ["ser-0000"]


def test_unreadable_partial_beside_a_finished_store_says_the_finished_store_goes_on(tmp_path):
    # An append to a finished store killed while copying it: the copy is deleted, the finished
    # store (not an empty one) is what the run continues, and the note says so.
    path = tmp_path / "out.h5"
    _write(path, SEEDS_FIRST)
    path.with_name("out.h5.partial").write_bytes(path.read_bytes()[:300])
    with medload.Store.create(path, compression="zstd:1", resume=True) as store:
        (note,) = store.problems
        assert note.kind is ProblemKind.STORE_STARTED_OVER
        assert "started over" not in note.message and "the finished out.h5 is kept" in note.message
        assert store.keys == ["ser-0000", "ser-0001"]
        store.add(synthetic_volume(2, shape=(5, 16, 16)))
    assert [r.key for r in medload.open(path).volumes] == ["ser-0000", "ser-0001", "ser-0002"]


def test_damaged_volume_in_partial_is_dropped_and_rewritten(tmp_path):
    path = tmp_path / "out.h5"
    store = medload.Store.create(path, dtype="float32", compression="none")
    for seed in (0, 1):
        store.add(synthetic_volume(seed))
    store.abandon()
    partial = path.with_name("out.h5.partial")
    with h5py.File(partial, "r+") as f:  # pixels changed after `complete` was set: CRC mismatch
        f["volumes/ser-0001/image"][0, 0, 0] = 42.0
    with medload.Store.create(path, dtype="float32", compression="none") as store:
        assert any(
            p.kind is ProblemKind.STORE_RESUMED and "dropped 1" in p.message and "ser-0001" in p.message for p in store.problems
        )
        assert store.has("hash-0000-(6, 16, 16)-None-float32")
        assert not store.has("hash-0001-(6, 16, 16)-None-float32")
        store.add(synthetic_volume(1))
    np.testing.assert_array_equal(medload.open(path).read_slices(1, 0, 6), synthetic_volume(1).array)
