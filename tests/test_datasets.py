"""SliceDataset / VolumeDataset over real (small) stores: the contract model code relies on.

Every voxel of the test stores says where it came from:
``image[z, y, x] = code * 100000 + z * 1024 + y * 32 + x`` (exact in float32) and
``mask[z, y, x] = (code + z) % 5``, so an item can be checked against its volume and slice.
"""

from __future__ import annotations

import inspect
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import medload  # noqa: E402
from medload.datasets import SliceDataset, VolumeDataset, split  # noqa: E402
from medload.datasets import MaskWarning  # noqa: E402
from medload.errors import MedloadError, StoreError  # noqa: E402

SIZE = 32


def expected_slice(code: int, z: int) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    return (code * 100000 + z * 1024 + y * 32 + x).astype(np.float32)


def build_store(
    path: Path,
    *,
    patients: int = 4,
    studies: int = 2,
    depths: tuple[int, ...] = (5, 7, 6),
    masks: bool = True,
    labels: bool = True,
    channels: list[str] | None = None,
    dtype: str = "float32",
    compression: str = "none",
) -> dict[str, dict]:
    """A store of ``patients * studies`` volumes; returns key -> {code, depth, patient, label}."""
    info = {}
    code = 0
    with medload.Store.create(path, dtype=dtype, compression=compression) as store:
        for p in range(patients):
            for s in range(studies):
                depth = depths[code % len(depths)]
                image = np.stack([expected_slice(code, z) for z in range(depth)])
                meta = {
                    "patient_key": f"pat-{p:03d}",
                    "study_key": f"st-{p:03d}-{s}",
                    "series_key": f"se-{code:03d}",
                    "source_hash": f"hash-{code}",
                    "intensity": "test code",
                }
                if channels:
                    image = np.stack([image + 0.25 * c for c in range(len(channels))])
                    meta["channels"] = list(channels)
                vol = medload.Volume(image, np.diag([2.0, 0.5, 0.5, 1.0]), modality="CT", meta=meta)
                mask = ((code + np.arange(depth)[:, None, None]) % 5 * np.ones((1, SIZE, SIZE))).astype(np.uint8)
                label = p % 2 if labels else None
                key = store.add(vol, mask=mask if masks else None, label=label)
                info[key] = {"code": code, "depth": depth, "patient": f"pat-{p:03d}", "label": label}
                code += 1
    return info


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("ds") / "store.h5"
    info = build_store(path)
    return path, info


def _check_item(item: dict, info: dict) -> None:
    code = info[item["key"]]["code"]
    z = item["slice"]
    np.testing.assert_array_equal(item["image"][0].numpy(), expected_slice(code, z))
    assert (item["mask"] == (code + z) % 5).all()


# --- 3. contract: same slice, dtypes and shapes ------------------------------------------------
def test_items_follow_the_documented_contract_and_masks_match_their_slice(store_path):
    path, info = store_path
    ds = SliceDataset(path)
    assert len(ds) == sum(v["depth"] for v in info.values()) == 48
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (1, SIZE, SIZE)
        assert item["mask"].dtype == torch.int64 and tuple(item["mask"].shape) == (1, SIZE, SIZE)
        assert item["spacing"].tolist() == [2.0, 0.5, 0.5]  # (slice, row, column) mm of build_store's affine
        assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
        assert int(item["label"]) == info[item["key"]]["label"]
        assert ds.volume_keys[item["volume"]] == item["key"]
        _check_item(item, info)
    assert ds[-1]["slice"] == ds[len(ds) - 1]["slice"]
    with pytest.raises(IndexError, match="out of range for 48 slices"):
        ds[48]


@pytest.mark.parametrize("dtype", ["float16", "uint8", "int16", "float32"])
def test_images_equal_the_stores_own_decoding_for_every_stored_dtype(tmp_path, dtype):
    path = tmp_path / f"{dtype}.h5"
    rng = np.random.default_rng(1)
    array = rng.random((6, SIZE, SIZE), dtype=np.float32) * (1000 if dtype == "int16" else 1)
    if dtype == "int16":
        array = np.round(array) - 500
    with medload.Store.create(path, dtype=dtype, compression=None) as store:
        store.add(medload.Volume(array, np.eye(4), meta={"patient_key": "p", "series_key": "s", "source_hash": "h"}))
    reader = medload.open(path)
    want = reader.read_slices(0, 0, 6)
    ds = SliceDataset(path, context=1)
    got = torch.stack([ds[z]["image"][1] for z in range(6)]).numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # bit-identical to StoreReader.read_slices
    tolerance = {"float16": 1e-3, "uint8": 1 / 255 / 2 + 1e-6, "int16": 0, "float32": 0}[dtype]
    assert np.abs(got - array).max() <= tolerance


def test_batched_fetch_equals_item_by_item_for_runs_and_shuffled_indices(store_path):
    path, _ = store_path
    ds = SliceDataset(path, context=1)
    rng = np.random.default_rng(0)
    for indices in (list(range(3, 20)), rng.permutation(len(ds))[:17].tolist(), [5, 5, 4, 30]):
        batched = ds.__getitems__(indices)
        for i, item in zip(indices, batched):
            single = ds[i]
            assert item["key"] == single["key"] and item["slice"] == single["slice"]
            assert torch.equal(item["image"], single["image"]) and torch.equal(item["mask"], single["mask"])


@pytest.mark.parametrize("k", [1, 2])
def test_25d_context_repeats_the_edge_slice_at_both_ends(store_path, k):
    path, info = store_path
    ds = SliceDataset(path, context=k, with_mask=False)
    first_key = ds[0]["key"]
    depth, code = info[first_key]["depth"], info[first_key]["code"]
    for z in range(depth):
        item = ds[z]
        assert item["key"] == first_key and item["slice"] == z
        assert tuple(item["image"].shape) == (2 * k + 1, SIZE, SIZE)
        want = [min(max(z + o, 0), depth - 1) for o in range(-k, k + 1)]
        got = [int((item["image"][c, 0, 0].item() - code * 100000) // 1024) for c in range(2 * k + 1)]
        assert got == want, (z, got, want)
    # The first slice of the next volume never borrows from the previous volume.
    nxt = ds[depth]
    assert nxt["key"] != first_key and nxt["slice"] == 0
    assert {int(v) // 100000 for v in nxt["image"][:, 0, 0].tolist()} == {info[nxt["key"]]["code"]}


def test_channels_select_stored_windows_and_replicate3(tmp_path):
    info = build_store(tmp_path / "mc.h5", patients=2, studies=1, channels=["brain", "subdural", "bone"])
    ds = SliceDataset(tmp_path / "mc.h5")
    item = ds[0]
    code = info[item["key"]]["code"]
    assert tuple(item["image"].shape) == (3, SIZE, SIZE)
    np.testing.assert_allclose(item["image"][:, 0, 0].numpy(), code * 100000 + np.array([0, 0.25, 0.5]))
    bone = SliceDataset(tmp_path / "mc.h5", channels=["bone", "brain"])[0]["image"]
    np.testing.assert_allclose(bone[:, 0, 0].numpy(), code * 100000 + np.array([0.5, 0.0]))
    ctx = SliceDataset(tmp_path / "mc.h5", context=1)[0]["image"]
    assert tuple(ctx.shape) == (9, SIZE, SIZE)
    with pytest.raises(MedloadError, match=r"channels \['lung'\] are not stored.*brain"):
        SliceDataset(tmp_path / "mc.h5", channels=["lung"])
    with pytest.raises(MedloadError, match="has 3 channels"):
        SliceDataset(tmp_path / "mc.h5", channels="replicate3")


def test_unnamed_frames_count_as_channels_and_cannot_be_replicated_or_mixed(tmp_path):
    # A 4D volume without meta["channels"] (fMRI frames, DWI) has T channels per slice, not one.
    path = tmp_path / "frames.h5"
    with medload.Store.create(path, dtype="float32", compression="none") as store:
        for code, frames in ((0, 5), (1, 4)):
            image = np.stack([np.stack([expected_slice(code, z) + 0.25 * t for z in range(3)]) for t in range(frames)])
            store.add(medload.Volume(image, np.eye(4), meta={"patient_key": f"pat-{code}", "series_key": f"se-{code}"}))
    one = SliceDataset(path, splits={"a": ["pat-0"]}, split="a")
    assert one.stored_channels == one.channels_out == 5 and "channels=5" in repr(one)
    np.testing.assert_array_equal(one[1]["image"][:, 0, 0].numpy(), 1024 + 0.25 * np.arange(5))
    with pytest.raises(MedloadError, match="'se-0' has 5 channels;"):
        SliceDataset(path, channels="replicate3")
    with pytest.raises(MedloadError, match=r"different channel counts \[4, 5\]"):
        SliceDataset(path)
    with pytest.raises(MedloadError, match="it has 5 unnamed channels"):
        SliceDataset(path, channels=["bold"])


def test_replicate3_standardize_and_tuple_mode(store_path):
    path, info = store_path
    ds = SliceDataset(path, channels="replicate3", standardize=True, return_tuple=True)
    image, label = ds[3]
    assert tuple(image.shape) == (3, SIZE, SIZE) and torch.equal(image[0], image[2])
    assert abs(float(image[1].mean())) < 1e-5 and abs(float(image[1].std(unbiased=False)) - 1) < 1e-4
    assert label.dtype == torch.int64 and int(label) in (0, 1)
    with pytest.raises(MedloadError, match="no selected volume .* has a label"):
        SliceDataset(build_and_path(path.parent / "nolabels.h5", labels=False), return_tuple=True)
    # Masks asked for are never dropped silently: (image, label) has no place for them.
    with pytest.raises(MedloadError, match=r"would drop the masks asked for"):
        SliceDataset(path, with_mask=True, return_tuple=True)


def build_and_path(path: Path, **kwargs) -> Path:
    build_store(path, **kwargs)
    return path


# --- 2. splits by patient ----------------------------------------------------------------------
def test_split_datasets_hold_disjoint_patients_covering_the_store(tmp_path):
    path = build_and_path(tmp_path / "many.h5", patients=20, studies=3, depths=(1, 2), masks=False)
    reader = medload.open(path)
    parts = split(reader, seed=1)
    patients_of = {}
    total = 0
    for name in ("train", "val", "test"):
        ds = SliceDataset(path, name, seed=1)
        keys = {reader.volumes[v].patient_key for v in ds.volume_ids}
        assert keys == set(parts[name])
        patients_of[name] = keys
        total += len(ds)
    assert not (patients_of["train"] & patients_of["val"]) and not (patients_of["train"] & patients_of["test"])
    assert not (patients_of["val"] & patients_of["test"])
    assert total == len(reader)
    # All studies of a patient follow it.
    ds = SliceDataset(path, "val", seed=1)
    per_patient = {}
    for v in ds.volume_ids:
        per_patient.setdefault(reader.volumes[v].patient_key, set()).add(reader.volumes[v].study_key)
    assert all(len(studies) == 3 for studies in per_patient.values())


def test_patient_split_stable_when_patients_are_added_to_the_store(tmp_path):
    small = build_and_path(tmp_path / "small.h5", patients=12, studies=2, depths=(1,), masks=False)
    big = build_and_path(tmp_path / "big.h5", patients=24, studies=2, depths=(1,), masks=False)
    before, after = split(small, seed=5), split(big, seed=5)
    for name in before:
        assert set(before[name]) <= set(after[name])


def test_missing_split_name_is_a_clear_error(store_path):
    path, _ = store_path
    with pytest.raises(MedloadError, match=r"split 'tets' is not one of \['test', 'train', 'val'\]"):
        SliceDataset(path, "tets")
    with pytest.raises(MedloadError, match="selects no volume"):
        SliceDataset(path, "train", splits={"train": ["pat-999"]})
    # A split the default fractions left empty (few patients) says so, not "made for other patients".
    with pytest.raises(MedloadError, match=r"split 'val' holds no patient: .* were split \{'train': 3, 'val': 0"):
        SliceDataset(path, "val", splits={"train": ["pat-000", "pat-001", "pat-002"], "val": []})


# --- 5. clear errors ----------------------------------------------------------------------------
def test_store_of_another_schema_version_is_refused_with_the_version(tmp_path):
    import h5py

    path = build_and_path(tmp_path / "v2.h5", patients=1, studies=1)
    with h5py.File(path, "r+") as f:
        f.attrs["medload_schema"] = 99
    with pytest.raises(StoreError, match="99"):
        SliceDataset(path)


def test_label_csv_naming_unknown_keys_is_refused_naming_them(store_path, tmp_path):
    path, info = store_path
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("patient_key,label\npat-000,tumor\npat-042,normal\n")
    with pytest.raises(MedloadError, match=r"'pat-042' \(line 3\)"):
        SliceDataset(path, labels=csv_path)
    csv_path.write_text("patient_key,label\npat-000,tumor\npat-001,normal\npat-002,normal\npat-003,tumor\n")
    ds = SliceDataset(path, labels=csv_path)
    assert ds.classes == ["normal", "tumor"]
    assert {int(ds[i]["label"]) for i in range(len(ds))} == {0, 1}
    item = ds[0]
    assert int(item["label"]) == (1 if info[item["key"]]["patient"] in ("pat-000", "pat-003") else 0)


def _mixed_mask_store(path):
    with medload.Store.create(path, dtype="float32", compression="none") as store:
        for i in range(2):
            vol = medload.Volume(
                np.full((3, 8, 8), i, np.float32),
                np.eye(4),
                meta={"patient_key": f"p{i}", "series_key": f"s{i}", "source_hash": f"h{i}"},
            )
            store.add(vol, mask=np.full((3, 8, 8), 2, np.uint8) if i == 0 else None)
    return path


def test_masks_by_default_only_when_every_volume_has_one(tmp_path):
    # What converting a typical export gives: masks for some series only.
    path = _mixed_mask_store(tmp_path / "mixed.h5")
    with pytest.warns(UserWarning, match=r"1 of 2 selected volumes .* have a mask, so items carry no mask"):
        ds = SliceDataset(path)  # with_mask=None
    assert ds.with_mask is False and len(ds) == 6
    assert all("mask" not in ds[i] for i in range(6))
    # Over volumes that all have a mask (a split holding only p0), the default returns them.
    only_masked = SliceDataset(path, split="a", splits={"a": ["p0"]})
    assert only_masked.with_mask is True and len(only_masked) == 3
    assert int(only_masked[1]["mask"].sum()) == 2 * 8 * 8
    with pytest.warns(UserWarning, match="carry no mask"):
        assert VolumeDataset(path).with_mask is False


def _warned_at(make) -> tuple[str, int]:
    with pytest.warns(MaskWarning) as record:
        make()
    [warning] = [w for w in record if issubclass(w.category, MaskWarning)]
    return warning.filename, warning.lineno


def test_mask_warning_points_at_the_users_own_line(tmp_path):
    # What a user sees is "file:line: MaskWarning: ..."; it must be the line that built the dataset.
    from medload.datasets import NumpyBatches

    path = _mixed_mask_store(tmp_path / "mixed.h5")

    class MyDataset(SliceDataset):  # a user's subclass: its own __init__ line is the user's code
        call_line = inspect.currentframe().f_lineno + 3

        def __init__(self, store):
            super().__init__(store)

    makers = {
        "SliceDataset": (lambda: SliceDataset(path), inspect.currentframe().f_lineno),
        "VolumeDataset": (lambda: VolumeDataset(path), inspect.currentframe().f_lineno),
        "NumpyBatches": (lambda: NumpyBatches(path, batch_size=2), inspect.currentframe().f_lineno),
        "subclass": (lambda: MyDataset(path), MyDataset.call_line),
    }
    for name, (make, line) in makers.items():
        assert _warned_at(make) == (__file__, line), name


def test_with_mask_true_refuses_volumes_without_masks(tmp_path):
    path = _mixed_mask_store(tmp_path / "mixed.h5")
    with pytest.raises(MedloadError, match=r"with_mask=True but volume 's1' .* has no mask \(1 of 2"):
        SliceDataset(path, with_mask=True)
    with pytest.raises(MedloadError, match="has no mask"):
        SliceDataset(path, split="b", splits={"b": ["p1"]}, with_mask=True)
    assert int(SliceDataset(path, split="a", splits={"a": ["p0"]}, with_mask=True)[0]["mask"].max()) == 2


def test_with_mask_false_never_returns_masks(tmp_path):
    path = _mixed_mask_store(tmp_path / "mixed.h5")
    ds = SliceDataset(path, with_mask=False)
    assert len(ds) == 6 and "mask" not in ds[0] and "label" not in ds[0]
    ds = SliceDataset(path, split="a", splits={"a": ["p0"]}, with_mask=False)
    assert "mask" not in ds[0]


def test_folder_of_shards_and_imagefolder_style_labels(tmp_path):
    from medload.datasets import label_from

    folder = tmp_path / "shards"
    folder.mkdir()
    for shard, classes in enumerate((["tumor", "normal"], ["normal"])):
        # keep_phi: the caller's own meta key "folder" is stored as given (default: the allow-list only).
        with medload.Store.create(folder / f"shard-{shard:04d}.h5", dtype="float32", compression="none", keep_phi=True) as store:
            for j, name in enumerate(classes):
                code = 10 * shard + j
                vol = medload.Volume(
                    np.stack([expected_slice(code, z) for z in range(3)]),
                    np.eye(4),
                    meta={
                        "patient_key": f"p{code}",
                        "series_key": f"se{code}",
                        "source_hash": f"h{code}",
                        "folder": f"{name}/case{code}",
                    },
                )
                store.add(vol)
    ds = SliceDataset(folder, labels=label_from("folder", pattern=r"^([^/]+)/"), return_tuple=True)
    assert len(ds) == 9 and ds.classes == ["normal", "tumor"]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork")
    images, labels = zip(*loader)
    images, labels = torch.cat(images), torch.cat(labels)
    codes = (images[:, 0, 0, 0] // 100000).long().tolist()
    name_of = {0: "tumor", 1: "normal", 10: "normal"}
    assert [ds.classes[int(lab)] for lab in labels] == [name_of[c] for c in codes]
    assert sorted(set(codes)) == [0, 1, 10]


def test_not_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(MedloadError, match="needs a store"):
        SliceDataset(42)
    with pytest.raises(MedloadError, match=r"absent\.h5 does not exist; expected a medload store"):
        SliceDataset(tmp_path / "absent.h5")


# --- 1. workers ---------------------------------------------------------------------------------
def _collect(loader) -> dict[str, list]:
    out = {"image": [], "mask": [], "label": [], "key": [], "slice": []}
    for batch in loader:
        out["image"].append(batch["image"])
        out["mask"].append(batch["mask"])
        out["label"].append(batch["label"])
        out["key"] += list(batch["key"])
        out["slice"] += batch["slice"].tolist()
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a["key"] == b["key"] and a["slice"] == b["slice"]
    for name in ("image", "mask", "label"):
        assert torch.equal(torch.cat(a[name]), torch.cat(b[name])), name


def test_two_fork_workers_yield_exactly_the_items_of_no_workers_in_order(store_path):
    path, _ = store_path
    ds = SliceDataset(path, context=1)
    ds[0]  # the parent has used its own handle before forking: children must not reuse it
    reference = _collect(torch.utils.data.DataLoader(ds, batch_size=5, num_workers=0))
    forked = torch.utils.data.DataLoader(
        ds, batch_size=5, num_workers=2, multiprocessing_context="fork", persistent_workers=True, pin_memory=False
    )
    for _ in range(2):  # persistent workers: the second epoch is the same again
        _assert_same(reference, _collect(forked))


@pytest.mark.slow
def test_two_spawn_workers_yield_exactly_the_items_of_no_workers_in_order(store_path):
    path, _ = store_path
    ds = SliceDataset(path, context=1)
    reference = _collect(torch.utils.data.DataLoader(ds, batch_size=7, num_workers=0))
    spawned = _collect(torch.utils.data.DataLoader(ds, batch_size=7, num_workers=2, multiprocessing_context="spawn"))
    _assert_same(reference, spawned)


class AddTorchNoise:
    """A random transform drawing from torch's generator (seeded per worker by the DataLoader)."""

    def __call__(self, item):
        item["image"] = item["image"] + torch.rand(())
        return item


def test_random_transforms_repeat_with_a_seeded_loader_and_the_lazy_top_level_names(store_path):
    path, _ = store_path
    assert medload.SliceDataset is SliceDataset and medload.VolumeDataset is VolumeDataset and medload.split is split
    ds = SliceDataset(path, transform=AddTorchNoise(), with_mask=False)

    def run():
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=8,
            shuffle=True,
            num_workers=2,
            multiprocessing_context="fork",
            generator=torch.Generator().manual_seed(4),
        )
        return torch.cat([b["image"][:, 0, 0, 0] for b in loader])

    first, second = run(), run()
    assert torch.equal(first, second) and first.unique().numel() == len(ds)


def test_pickles_small_and_reads_the_same_after(store_path):
    path, _ = store_path
    ds = SliceDataset(path)
    ds[0]  # h5py handles are open in this process now; the pickle must not carry them
    blob = pickle.dumps(ds)
    assert len(blob) < 200_000 and b"h5py" not in blob
    clone = pickle.loads(blob)
    assert torch.equal(clone[11]["image"], ds[11]["image"]) and clone[11]["key"] == ds[11]["key"]


def test_distributed_sampler_ranks_share_the_slices_without_overlap(store_path):
    path, info = store_path
    ds = SliceDataset(path)
    seen = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(1)
        loader = torch.utils.data.DataLoader(ds, batch_size=6, sampler=sampler, num_workers=0)
        for batch in loader:
            for j, key in enumerate(batch["key"]):
                seen.append((key, int(batch["slice"][j])))
                code = info[key]["code"]
                np.testing.assert_array_equal(batch["image"][j, 0].numpy(), expected_slice(code, int(batch["slice"][j])))
    assert len(seen) == len(ds) == len(set(seen))


# --- 4. memory stays flat ------------------------------------------------------------------------
def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class ReportsWorkerMemory(torch.utils.data.Dataset):
    """Wraps a dataset; every item carries its worker's pid and resident memory."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        item["pid"] = os.getpid()
        item["rss_kb"] = _rss_kb()
        return item


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_worker_memory_after_epoch_3_within_10_percent_of_epoch_1(tmp_path):
    # 256x256 slices, so that 60 MB of items pass through each worker per epoch: a per-item
    # leak or cache would grow the worker well past 10 % by epoch 3 (checked by hand).
    path = tmp_path / "mem.h5"
    rng = np.random.default_rng(0)
    with medload.Store.create(path) as store:  # the default dtype and filter
        for v in range(6):
            vol = medload.Volume(
                rng.random((16, 256, 256), dtype=np.float32),
                np.eye(4),
                meta={"patient_key": f"p{v}", "series_key": f"s{v}", "source_hash": f"m{v}"},
            )
            store.add(vol, mask=(rng.random((16, 256, 256)) > 0.5).astype(np.uint8), label=v % 2)
    loader = torch.utils.data.DataLoader(
        ReportsWorkerMemory(SliceDataset(path, context=2)),
        batch_size=4,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context="fork",
        generator=torch.Generator().manual_seed(0),
    )
    per_epoch = []
    for _ in range(3):
        last = {}
        for batch in loader:
            for pid, rss in zip(batch["pid"].tolist(), batch["rss_kb"].tolist()):
                last[pid] = rss
        per_epoch.append(last)
    assert len(per_epoch[0]) == 2 and set(per_epoch[0]) == set(per_epoch[2])  # the same two workers
    for pid, rss1 in per_epoch[0].items():
        rss3 = per_epoch[2][pid]
        assert abs(rss3 - rss1) <= 0.10 * rss1, f"worker {pid}: {rss1} kB after epoch 1, {rss3} kB after epoch 3"


# --- VolumeDataset ---------------------------------------------------------------------------------
def test_volume_items_are_whole_volumes_with_their_masks(store_path):
    path, info = store_path
    ds = VolumeDataset(path)
    assert len(ds) == len(info)
    item = ds[2]
    code, depth = info[item["key"]]["code"], info[item["key"]]["depth"]
    assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (1, depth, SIZE, SIZE)
    assert item["mask"].dtype == torch.int64 and tuple(item["mask"].shape) == (1, depth, SIZE, SIZE)
    assert item["spacing"].tolist() == [2.0, 0.5, 0.5]
    np.testing.assert_array_equal(item["image"][0, 4].numpy(), expected_slice(code, 4))
    assert (item["mask"][0, 3] == (code + 3) % 5).all()


def test_volume_patches_are_reproducible_per_epoch_and_cut_where_they_say(store_path):
    path, info = store_path
    ds = VolumeDataset(path, patch_size=(3, 8, 8), samples_per_volume=4, seed=1)
    assert len(ds) == 4 * len(info)
    first = [ds[i] for i in range(len(ds))]
    for item in first:
        z0, y0, x0 = item["origin"].tolist()
        code = info[item["key"]]["code"]
        want = np.stack([expected_slice(code, z)[y0 : y0 + 8, x0 : x0 + 8] for z in range(z0, z0 + 3)])
        np.testing.assert_array_equal(item["image"][0].numpy(), want)
        assert tuple(item["mask"].shape) == (1, 3, 8, 8)
        assert (item["mask"][0] == torch.from_numpy((code + np.arange(z0, z0 + 3)) % 5)[:, None, None]).all()
    again = VolumeDataset(path, patch_size=(3, 8, 8), samples_per_volume=4, seed=1)
    assert [a["origin"].tolist() for a in first] == [again[i]["origin"].tolist() for i in range(len(again))]
    again.set_epoch(1)
    assert [a["origin"].tolist() for a in first] != [again[i]["origin"].tolist() for i in range(len(again))]
    forked = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork", persistent_workers=True)
    origins = torch.cat([b["origin"] for b in forked]).tolist()
    assert origins == [a["origin"].tolist() for a in first]
    ds.set_epoch(1)  # reaches the persistent workers through shared memory
    origins = torch.cat([b["origin"] for b in forked]).tolist()
    assert origins == [again[i]["origin"].tolist() for i in range(len(again))]


def test_foreground_sampling_centres_patches_on_the_mask(tmp_path):
    path = tmp_path / "fg.h5"
    with medload.Store.create(path, dtype="float32", compression="none") as store:
        mask = np.zeros((12, 32, 32), np.uint8)
        mask[9:11, 20:24, 3:6] = 1  # a small lesion: 24 of 12288 voxels
        vol = medload.Volume(
            np.random.default_rng(0).random((12, 32, 32), dtype=np.float32),
            np.eye(4),
            meta={"patient_key": "p", "series_key": "s", "source_hash": "h"},
        )
        store.add(vol, mask=mask)
    uniform = VolumeDataset(path, patch_size=(2, 6, 6), samples_per_volume=50, seed=0)
    guided = VolumeDataset(path, patch_size=(2, 6, 6), samples_per_volume=50, foreground_ratio=1.0, seed=0)
    half = VolumeDataset(path, patch_size=(2, 6, 6), samples_per_volume=200, foreground_ratio=0.5, seed=0)
    hit = lambda ds: np.mean([bool(ds[i]["mask"].any()) for i in range(len(ds))])  # noqa: E731
    assert hit(guided) == 1.0
    assert hit(uniform) < 0.2
    assert 0.35 < hit(half) < 0.75
    with pytest.raises(MedloadError, match="no masks"):
        VolumeDataset(path, patch_size=(2, 6, 6), foreground_ratio=0.5, with_mask=False)


def test_small_volume_patch_is_zero_padded(store_path):
    path, info = store_path
    ds = VolumeDataset(path, patch_size=(10, 8, 8))
    item = ds[0]
    depth = info[item["key"]]["depth"]
    assert tuple(item["image"].shape) == (1, 10, 8, 8) and item["origin"][0] == 0
    assert (item["image"][0, depth:] == 0).all() and (item["image"][0, :depth] > 0).any()


# --- selecting volumes, mixed slice sizes --------------------------------------------------------
def _mixed_store(path):
    with medload.Store.create(path, dtype="float32", compression="none") as store:
        specs = [("CT", 8, None), ("CT", 12, None), ("MR", 8, ["T2", "ADC"]), ("MR", 8, None)]
        for i, (modality, size, channels) in enumerate(specs):
            meta = {"patient_key": f"p{i}", "series_key": f"s{i}", "source_hash": f"h{i}"}
            shape = (3, size, size)
            if channels:
                meta["channels"] = channels
                shape = (len(channels), *shape)
            store.add(
                medload.Volume(np.full(shape, float(i + 1), np.float32), np.eye(4), modality=modality, meta=meta), label=i % 2
            )
    return path


def test_select_serves_the_volumes_asked_for(tmp_path):
    path = _mixed_store(tmp_path / "mixed.h5")
    ct8 = SliceDataset(path, select={"modality": "CT", "shape": (8, 8)})
    assert [ct8.volume_keys[v] for v in ct8.volume_ids] == ["s0"] and len(ct8) == 3
    two = SliceDataset(path, select={"channels": ["T2", "ADC"]})
    assert tuple(two[0]["image"].shape) == (2, 8, 8) and float(two[0]["image"].mean()) == 3.0
    one_channel_8 = SliceDataset(path, select={"channels": 1, "shape": (8, 8), "label": 1})
    assert [one_channel_8.volume_keys[v] for v in one_channel_8.volume_ids] == ["s3"]
    by_predicate = VolumeDataset(path, select=lambda r: r.modality == "MR" and r.channels is None)
    assert len(by_predicate) == 1 and float(by_predicate[0]["image"].mean()) == 4.0
    with pytest.raises(MedloadError, match=r"keeps none of the 4 volumes .*1 x CT 1ch 12x12"):
        SliceDataset(path, select={"modality": "PT"})
    with pytest.raises(MedloadError, match=r"\['size'\] not among"):
        SliceDataset(path, select={"size": 8})
    # Without a selection, the mixed channel counts are refused with the way out.
    with pytest.raises(MedloadError, match=r"different channel counts \[1, 2\].*select=\{'channels': n\}"):
        SliceDataset(path)


def test_mixed_slice_sizes_are_refused_naming_the_sizes_or_padded_on_request(tmp_path):
    path = _mixed_store(tmp_path / "mixed.h5")
    with pytest.raises(MedloadError, match=r"slices of 2 sizes \(8x8, 12x12\).*--size N.*pad_collate"):
        SliceDataset(path, select={"modality": "CT"})
    ds = SliceDataset(path, select={"modality": "CT"}, mixed_sizes=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=6, collate_fn=medload.datasets.pad_collate)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (6, 1, 12, 12)
    sizes = batch["size"].tolist()
    assert sorted(map(tuple, sizes)) == [(8, 8)] * 3 + [(12, 12)] * 3
    small = [i for i, s in enumerate(sizes) if s == [8, 8]][0]
    assert float(batch["image"][small, 0, 8:, :].abs().sum()) == 0.0  # the padding is zeros
    assert float(batch["image"][small, 0, :8, :8].min()) == 1.0 and batch["key"][small] == "s0"
