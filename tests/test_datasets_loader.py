"""``SliceDataset.loader``: whole batches read into one tensor equal the per-item DataLoader's batches.

The reference everywhere is torch's own ``DataLoader(ds, batch_size, ...)`` over the items with
``default_collate`` and the same sampler and generator: same keys, dtypes, shapes and bits.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import medload
from medload.datasets import SliceDataset
from medload.datasets._base import standardize_channels
from medload.datasets.decode import decode_batch, standardize_batch
from medload.errors import ConfigError, MedloadError
from tests.test_datasets import build_store, expected_slice


def assert_batches_equal(got, want) -> None:
    """Same structure, and every tensor the same dtype, shape and bits."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for name in want:
            assert_batches_equal(got[name], want[name])
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_batches_equal(g, w)
    else:
        assert type(got) is type(want) and got == want


def per_item_batches(ds, batch_size, **kwargs) -> list:
    return list(torch.utils.data.DataLoader(ds, batch_size=batch_size, **kwargs))


def build_typed_store(path, dtype: str, compression: str, *, channels=None) -> None:
    """Six volumes of 3 patients with values each stored type holds (HU-like integers for int16,
    fractions in [-4, 4] for float16, a different range per volume for uint8's scale and offset)."""
    rng = np.random.default_rng(11)
    with medload.Store.create(path, dtype=dtype, compression=compression) as store:
        for code in range(6):
            depth = (5, 7, 6)[code % 3]
            shape = (depth, 16, 20) if channels is None else (len(channels), depth, 16, 20)
            if dtype == "int16":
                image = rng.integers(-1024, 3000, size=shape).astype(np.float32)
            else:
                image = (rng.normal(0, 1.5, size=shape) * (code + 1) + code).astype(np.float32)
            meta = {
                "patient_key": f"pat-{code // 2}",
                "study_key": f"st-{code}",
                "series_key": f"se-{code}",
                "source_hash": f"h-{code}",
            }
            if channels is not None:
                meta["channels"] = list(channels)
            mask = ((code + np.arange(depth)[:, None, None]) % 5 * np.ones((1, 16, 20))).astype(np.uint8)
            store.add(medload.Volume(image, np.eye(4), modality="CT", meta=meta), mask=mask, label=code % 2)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("loader")
    out = {}
    for dtype, compression in (("float32", "none"), ("uint8", "lz4"), ("float16", "lz4"), ("int16", "none")):
        out[dtype] = folder / f"{dtype}.h5"
        build_typed_store(out[dtype], dtype, compression)
    out["channels"] = folder / "channels.h5"
    build_typed_store(out["channels"], "uint8", "lz4", channels=["brain", "subdural", "bone"])
    out["codes"] = folder / "codes.h5"
    build_store(out["codes"], patients=3)
    return out


OPTIONS = [
    {},
    {"context": 2},
    {"channels": "replicate3"},
    {"standardize": True},
    {"with_mask": False, "labels": None},
    {"split": "train"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16", "int16"])
def test_shuffled_batches_equal_the_per_item_dataloaders_bit_for_bit(stores, dtype, options):
    ds = SliceDataset(stores[dtype], **options)
    for shuffle in (True, False):  # single slices, and runs of neighbours read in one call
        want = per_item_batches(ds, 5, shuffle=shuffle, generator=torch.Generator().manual_seed(7))
        loader = ds.loader(5, shuffle=shuffle, generator=torch.Generator().manual_seed(7))
        got = list(loader)
        assert len(got) == len(want) == len(loader) == -(-len(ds) // 5)
        for g, w in zip(got, want):
            assert_batches_equal(g, w)


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16", "int16"])
def test_batches_equal_the_items_read_through_h5py_alone(stores, dtype):
    # The batch path reads chunks itself (os.preadv + cramjam's LZ4 into the batch); the
    # reference is the per-item DataLoader over a reader that only uses h5py.
    ds, ref = SliceDataset(stores[dtype]), SliceDataset(stores[dtype])
    ref.reader._direct = False
    want = per_item_batches(ref, 5, shuffle=True, generator=torch.Generator().manual_seed(3))
    for compact in (False, True):
        loader = ds.loader(5, shuffle=True, generator=torch.Generator().manual_seed(3), compact=compact)
        got = [loader.decode(batch) for batch in loader]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_batches_equal(g, w)
    assert ds.reader._read_paths["direct"] > 0 and ds.reader._read_paths["h5py"] == 0
    assert ref.reader._read_paths["direct"] == 0


def test_stored_channels_selected_and_in_context_equal_the_items(stores):
    for options in ({"channels": ["bone", "brain"]}, {"channels": ["subdural"], "context": 1}, {}):
        ds = SliceDataset(stores["channels"], **options)
        for shuffle in (True, False):
            want = per_item_batches(ds, 4, shuffle=shuffle, generator=torch.Generator().manual_seed(1), drop_last=True)
            got = list(ds.loader(4, shuffle=shuffle, generator=torch.Generator().manual_seed(1), drop_last=True))
            assert len(got) == len(ds) // 4
            for g, w in zip(got, want):
                assert_batches_equal(g, w)


def test_in_order_batches_hold_the_right_slices_and_tuple_mode(stores):
    path = stores["codes"]
    ds = SliceDataset(path)
    codes = {r.key: i for i, r in enumerate(ds.reader.volumes)}
    seen = 0
    for batch in ds.loader(6):  # runs of consecutive slices: one read per run
        for j, key in enumerate(batch["key"]):
            z = int(batch["slice"][j])
            np.testing.assert_array_equal(batch["image"][j, 0].numpy(), expected_slice(codes[key], z))
            assert batch["mask"][j].unique().tolist() == [(codes[key] + z) % 5]
            seen += 1
    assert seen == len(ds)
    tuples = SliceDataset(path, return_tuple=True)
    for got, want in zip(
        tuples.loader(5, shuffle=True, generator=torch.Generator().manual_seed(2)),
        per_item_batches(tuples, 5, shuffle=True, generator=torch.Generator().manual_seed(2)),
    ):
        assert len(got) == 2 and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_two_fork_workers_give_the_batches_of_no_workers_for_two_epochs(stores):
    ds = SliceDataset(stores["uint8"], context=1)
    ds[0]  # the parent's handle is open before the fork
    want = list(ds.loader(7, shuffle=True, generator=torch.Generator().manual_seed(3)))
    loader = ds.loader(7, shuffle=True, num_workers=2, multiprocessing_context="fork", generator=torch.Generator().manual_seed(3))
    first = list(loader)
    for g, w in zip(first, want):
        assert_batches_equal(g, w)
    second = list(loader)  # persistent workers, a new permutation of the same slices
    assert sorted(k for b in second for k in zip(b["key"], b["slice"].tolist())) == sorted(
        k for b in first for k in zip(b["key"], b["slice"].tolist())
    )
    assert [b["slice"].tolist() for b in second] != [b["slice"].tolist() for b in first]


def test_distributed_sampler_batches_equal_the_per_item_path_and_follow_set_epoch(stores):
    ds = SliceDataset(stores["uint8"])
    seen = []
    for rank in range(2):
        reference, ours = (
            torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3) for _ in range(2)
        )
        loader = ds.loader(4, sampler=ours)
        for epoch in (0, 1):
            reference.set_epoch(epoch)
            loader.set_epoch(epoch)
            got = list(loader)
            for g, w in zip(got, per_item_batches(ds, 4, sampler=reference)):
                assert_batches_equal(g, w)
            if epoch == 1:
                seen += [k for b in got for k in zip(b["key"], b["slice"].tolist())]
    assert len(seen) == len(ds) == len(set(seen))
    with pytest.raises(ConfigError, match="either sampler= or shuffle="):
        ds.loader(4, sampler=torch.utils.data.SequentialSampler(ds), shuffle=True)
    with pytest.raises(ConfigError, match="batch_size must be at least 1, found 0"):
        ds.loader(0)


@pytest.mark.parametrize("options", OPTIONS[:4], ids=["default", "context", "replicate3", "standardize"])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "int16"])
def test_compact_batches_are_the_stored_bytes_and_decode_to_the_float_batches(stores, dtype, options):
    ds = SliceDataset(stores[dtype], **options)
    floats = list(ds.loader(6, shuffle=True, generator=torch.Generator().manual_seed(5))) + list(ds.loader(6))
    loader = ds.loader(6, shuffle=True, generator=torch.Generator().manual_seed(5), compact=True)
    for compact, want in zip(list(loader) + list(ds.loader(6, compact=True)), floats):
        image = compact["image"]
        assert image.dtype == {"uint8": torch.uint8, "float16": torch.float16, "int16": torch.int16}[dtype]
        assert image.shape[1] == (1 if options.get("channels") == "replicate3" else want["image"].shape[1])
        assert compact["mask"].dtype == torch.uint8  # masks of labels 0..4 cross as one byte too
        got = loader.decode(compact)
        assert list(got) == list(want)
        if options.get("standardize"):
            torch.testing.assert_close(got["image"], want["image"], rtol=0, atol=2e-6)
            got["image"] = want["image"]
        assert_batches_equal(got, want)
    if dtype == "uint8":
        assert image.element_size() * 4 == want["image"].element_size()


def test_standardize_batch_matches_the_numpy_items_and_leaves_constant_channels_centred():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(4, 2, 16, 16)).astype(np.float32)
    x[1, 1] = 2.5  # constant channel: centred, not divided by zero
    got = standardize_batch(torch.from_numpy(x)).numpy()
    for i in range(4):
        np.testing.assert_allclose(got[i], standardize_channels(x[i]), rtol=0, atol=1e-6)
    assert np.all(got[1, 1] == 0)


def test_decode_moves_float_batches_and_tuples_unchanged():
    batch = {"image": torch.ones(2, 1, 3, 3), "label": torch.tensor([0, 1]), "key": ["a", "b"]}
    out = decode_batch(batch, device="cpu")
    assert out["key"] == ["a", "b"] and torch.equal(out["image"], batch["image"])
    image, label = decode_batch((batch["image"], batch["label"]))
    assert torch.equal(image, batch["image"]) and torch.equal(label, batch["label"])


def test_transform_datasets_are_batched_item_by_item_and_compact_is_refused(stores):
    def flip(item):
        item["image"] = item["image"].flip(-1)
        return item

    ds = SliceDataset(stores["uint8"], transform=flip)
    for g, w in zip(
        ds.loader(5, shuffle=True, generator=torch.Generator().manual_seed(0)),
        per_item_batches(ds, 5, shuffle=True, generator=torch.Generator().manual_seed(0)),
    ):
        assert_batches_equal(g, w)
    with pytest.raises(MedloadError, match="per-item transform"):
        ds.loader(5, compact=True)


def test_volumes_of_different_slice_sizes_are_refused_naming_both_sizes(tmp_path):
    path = tmp_path / "mixed.h5"
    with medload.Store.create(path) as store:
        for i, size in enumerate((8, 12)):
            meta = {"patient_key": f"p{i}", "series_key": f"s{i}", "source_hash": f"h{i}"}
            store.add(medload.Volume(np.zeros((3, size, size), np.float32), np.eye(4), meta=meta))
    with pytest.raises(MedloadError, match=r"slices of 2 sizes \(8x8, 12x12\).*--size"):
        SliceDataset(path)  # refused when made, unless mixed sizes are asked for
    with pytest.raises(MedloadError, match=r"different sizes \(\(8, 8\) and \(12, 12\)"):
        SliceDataset(path, mixed_sizes=True).loader(2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device; none here")
def test_pin_memory_gives_pinned_batches_that_decode_on_the_gpu(stores):  # pragma: no cover - GPU machines
    ds = SliceDataset(stores["uint8"])
    loader = ds.loader(8, pin_memory=True, compact=True)
    batch = next(iter(loader))
    assert batch["image"].is_pinned()
    got = loader.decode(batch, "cuda")
    assert got["image"].is_cuda
    assert torch.equal(got["image"].cpu(), next(iter(ds.loader(8)))["image"])
