"""Worker batches through the ring of shared-memory slots (``medload.datasets.ring``).

What a user checks: the batches of 2 workers (fork or spawn) are those of no worker, bit for bit
(images, masks, labels, keys, compact and float32); a batch kept while the loop goes on is not
overwritten (nor a view of it); breaking out of the loop or dropping the loader leaves no file
in /dev/shm; more batches kept than the ring holds still arrive whole.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from medload.datasets.ring import SHM_DIR, BatchRing, ring_available

torch = pytest.importorskip("torch")

from medload.datasets import SliceDataset  # noqa: E402  (after the torch check, as in test_datasets_loader)
from tests.test_datasets_loader import assert_batches_equal, build_typed_store  # noqa: E402

pytestmark = pytest.mark.skipif(not ring_available(), reason="the ring needs POSIX shared memory under /dev/shm")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("ring") / "uint8.h5"
    build_typed_store(path, "uint8", "lz4")  # 6 volumes, 36 slices 16x20, masks 0..4, labels
    return path


def ring_files() -> list[str]:
    """This process's slot files."""
    return sorted(f for f in os.listdir(SHM_DIR) if f.startswith(f"medload-{os.getpid()}-"))


def no_worker_batches(ds, batch_size, *, compact, seed=4):
    return list(ds.loader(batch_size, shuffle=True, compact=compact, generator=torch.Generator().manual_seed(seed)))


def worker_loader(ds, batch_size, *, compact, context="fork", seed=4, **kwargs):
    return ds.loader(
        batch_size,
        shuffle=True,
        compact=compact,
        num_workers=2,
        multiprocessing_context=context,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "float32"])
def test_two_fork_workers_through_the_ring_give_the_batches_of_no_worker(store, compact):
    ds = SliceDataset(store)
    want = no_worker_batches(ds, 5, compact=compact)
    loader = worker_loader(ds, 5, compact=compact)
    assert loader.ring_buffers
    for epoch in range(2):  # persistent workers, the same ring; each epoch compared as it streams
        count = 0
        for got, w in zip(loader, want if epoch == 0 else no_worker_batches(ds, 5, compact=compact, seed=4)):
            if epoch == 0:
                assert_batches_equal(got, w)
                assert got["mask"].unique().tolist() == w["mask"].unique().tolist()
            count += 1
        assert count == len(want) == 8  # 36 slices, batches of 5
        assert 1 <= len(loader.sampler.ring) <= loader.sampler.ring.capacity == 2 * 2 + 2
    del loader
    gc.collect()
    assert ring_files() == []


def test_spawned_workers_write_the_same_batches(store):
    ds = SliceDataset(store)
    want = no_worker_batches(ds, 6, compact=True, seed=9)
    got = list(worker_loader(ds, 6, compact=True, context="spawn", seed=9, persistent_workers=False))
    assert len(got) == len(want) == 6
    for g, w in zip(got, want):
        assert_batches_equal(g, w)
    gc.collect()
    assert ring_files() == []


def test_a_kept_batch_and_a_kept_view_are_never_overwritten(store):
    ds = SliceDataset(store)
    loader = worker_loader(ds, 4, compact=True)  # 9 batches a pass, 6 slots
    kept, kept_copy, view, view_copy = None, None, None, None
    for epoch in range(3):
        for i, batch in enumerate(loader):
            if epoch == 0 and i == 0:
                kept, kept_copy = batch, {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
            if epoch == 0 and i == 1:
                view = batch["image"][2:, 0]  # a view alone keeps its slot
                view_copy = view.clone()
            if (epoch, i) not in ((0, 0), (0, 1)):
                batch["image"].fill_(255)  # what a loop may do to its batch in place: its own slot only
    for name, value in kept_copy.items():
        assert torch.equal(kept[name], value)
    assert torch.equal(view, view_copy) and (view != 255).any() and (kept["image"] != 255).any()
    assert len(loader.sampler.ring) <= loader.sampler.ring.capacity


def test_more_batches_kept_than_slots_arrive_whole(store):
    ds = SliceDataset(store, channels="replicate3", return_tuple=True)
    loader = worker_loader(ds, 3, compact=False, prefetch_factor=1)  # 12 batches, at most 1 * 2 + 2 slots
    got = list(loader)
    want = no_worker_batches(ds, 3, compact=False)
    assert len(got) == len(want) == 12 and loader.sampler.ring.capacity == 4
    for g, w in zip(got, want):
        assert isinstance(g, tuple) and g[0].shape[1] == 3
        assert_batches_equal(g, w)


@pytest.mark.parametrize("persistent", [True, False])
def test_breaking_out_and_dropping_the_loader_leaves_no_shared_memory_file(store, persistent):
    ds = SliceDataset(store)
    before = ring_files()
    loader = worker_loader(ds, 4, compact=True, persistent_workers=persistent)
    for i, _batch in enumerate(loader):
        assert ring_files() != before  # the slots exist while the loop runs
        if i == 1:
            break
    if persistent:  # the next pass takes back the slots of the abandoned one and runs whole
        got = list(loader)
        order = np.lexsort((torch.cat([b["slice"] for b in got]), torch.cat([b["volume"] for b in got])))
        want = list(ds.loader(len(ds), compact=True))[0]  # every slice in order, no worker
        for name in ("image", "mask", "label", "volume", "slice"):
            assert torch.equal(torch.cat([b[name] for b in got])[order], want[name])
        assert len(loader.sampler.ring) <= loader.sampler.ring.capacity
    del loader, _batch
    gc.collect()
    assert ring_files() == before


def test_distributed_sampler_batches_through_the_ring_equal_the_per_item_path(store):
    ds = SliceDataset(store)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=1, shuffle=True, seed=3)
    reference = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=1, shuffle=True, seed=3)
    loader = ds.loader(4, sampler=sampler, num_workers=2, multiprocessing_context="fork")
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        reference.set_epoch(epoch)
        want = list(torch.utils.data.DataLoader(ds, batch_size=4, sampler=reference))
        got = list(loader)
        assert len(got) == len(want) == 5
        for g, w in zip(got, want):
            assert_batches_equal(g, w)


def test_ring_lends_a_slot_until_the_last_view_is_gone_and_unlinks_on_close():
    ring = BatchRing(1000, capacity=2)
    assert ring.slot_bytes == 1024  # whole cache lines
    a, b, c = ring.ticket([0]), ring.ticket([1]), ring.ticket([2])
    assert (a.slot, b.slot, c.slot) == (0, 1, None) and len(ring_files()) == 2
    token = ring.lend(a.slot)
    view = torch.from_numpy(token[8:16])
    del token
    assert ring.ticket([3]).slot is None  # the view still holds slot 0; slot 1 is in a worker
    del view
    gc.collect()
    assert ring.ticket([4]).slot == 0
    ring.new_epoch()  # a new pass: slots ticketed but never lent are taken back
    assert sorted(t.slot for t in (ring.ticket([5]), ring.ticket([6]))) == [0, 1]
    ring.close()
    assert ring_files() == []
    np.testing.assert_equal(len(ring), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device; none here")
def test_pinned_worker_batches_are_copied_out_of_the_ring(store):  # pragma: no cover - GPU machines
    ds = SliceDataset(store)
    loader = worker_loader(ds, 5, compact=True, pin_memory=True)
    got = list(loader)
    for g, w in zip(got, no_worker_batches(ds, 5, compact=True)):
        assert g["image"].is_pinned() and g["mask"].is_pinned()
        assert_batches_equal(g, w)
        assert torch.equal(loader.decode(g, "cuda")["image"].cpu(), loader.decode(w, "cpu")["image"])
