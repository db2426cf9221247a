"""The HDF5 store: round trips, resume and the stale-cache guard, bad files, reader API."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest

import medload
from fixtures.stores import build_store, expected_slices, synthetic_mask, synthetic_volume
from medload.errors import MedloadError, StoreError
from medload.store import DTYPES, FILTERS

COMPRESSIONS = [f if f != "blosc2-zstd" else "blosc2-zstd:1" for f in FILTERS]


def _tolerance(dtype: str, record) -> float:
    # Documented quantization: uint8 error <= scale/2; float16 relative error <= 2**-11.
    return {"float32": 0.0, "int16": 0.0, "uint8": record.scale / 2 + 1e-6, "float16": 2.0**-11}[dtype]


# ------------------------------------------------------------------ 1. round trip
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype_and_filter(tmp_path, dtype, compression):
    path = tmp_path / "rt.h5"
    volumes = [synthetic_volume(s, dtype="int16" if dtype == "int16" else "float32") for s in range(2)]
    with medload.Store.create(path, dtype=dtype, compression=compression) as store:
        for i, vol in enumerate(volumes):
            store.add(vol, mask=synthetic_mask(vol) if i == 0 else None, label=7 if i == 0 else None)
    reader = medload.open(path)
    assert len(reader) == 12 and [r.key for r in reader.volumes] == ["ser-0000", "ser-0001"]
    assert reader.attrs["dtype"] == dtype and reader.attrs["compression"].split(":")[0] == compression.split(":")[0]
    for v, vol in enumerate(volumes):
        record = reader.volumes[v]
        got = reader.read_slices(v, 0, record.n_slices)
        assert got.dtype == np.float32 and got.shape == vol.shape
        assert np.abs(got - vol.array).max() <= _tolerance(dtype, record) * (1 if dtype != "float16" else np.abs(vol.array).max())
        assert reader.read_slices(v, 2, 4, raw=True).dtype == np.dtype(dtype)
        np.testing.assert_array_equal(record.affine, vol.affine)
        assert record.spacing == vol.spacing == (2.5, 0.75, 0.7)
        assert record.history == vol.history
        assert record.modality == "CT" and record.intensity == vol.meta["intensity"]
        assert record.patient_key == vol.meta["patient_key"] and record.source_hash == vol.meta["source_hash"]
        # A description (it can be a patient's name) is not stored by default: docs/deidentification.md.
        assert record.meta["kvp"] == 120.0 and "description" in vol.meta and "description" not in record.meta
    assert reader.volumes[0].label == 7 and reader.volumes[1].label is None
    assert reader.volumes[0].has_mask and not reader.volumes[1].has_mask
    np.testing.assert_array_equal(reader.read_mask(0, 0, 6), synthetic_mask(volumes[0]))
    assert list(reader.index["label"]) == [7] * 6 + [-1] * 6


def test_uint8_quantization_is_recorded_and_bounded(tmp_path):
    vol = synthetic_volume(0)
    path = tmp_path / "u8.h5"
    with medload.Store.create(path, dtype="uint8", compression="none", value_range=(0, 1)) as store:
        store.add(vol)
    with h5py.File(path) as f:
        image = f["volumes/ser-0000/image"]
        assert image.attrs["scale"] == pytest.approx(1 / 255) and image.attrs["offset"] == 0.0
    got = medload.open(path).read_slices(0, 0, 6)
    # 0.002 on [0, 1]: 0.8 HU of a 400 HU window
    assert np.abs(got - vol.array).max() <= 0.5 / 255 + 1e-6


def test_read_volume_and_four_d_channels(tmp_path):
    vol = synthetic_volume(4, channels=("brain", "subdural", "bone"))
    mask = synthetic_mask(vol)
    path = tmp_path / "mw.h5"
    with medload.Store.create(path, dtype="float32", compression="zstd") as store:
        key = store.add(vol, mask=mask, label=1)
    with h5py.File(path) as f:
        image = f[f"volumes/{key}/image"]
        assert image.shape == (6, 3, 16, 16) and image.chunks == (1, 3, 16, 16)
        assert json.loads(f[f"volumes/{key}"].attrs["channels"]) == ["brain", "subdural", "bone"]
    reader = medload.open(path)
    assert reader.volumes[0].channels == ("brain", "subdural", "bone")
    np.testing.assert_array_equal(reader.read_slices(0, 1, 3), expected_slices(4, channels=("brain", "subdural", "bone"))[1:3])
    image, mask_volume = reader.read_volume(0, mask=True)
    np.testing.assert_array_equal(image.array, vol.array)
    np.testing.assert_array_equal(image.affine, vol.affine)
    np.testing.assert_array_equal(mask_volume.array, mask)
    assert image.meta["channels"] == ["brain", "subdural", "bone"] and image.history == vol.history
    assert image.meta["series_key"] == "ser-0004" and image.meta["kvp"] == 120.0


def test_index_patients_keys_and_pickle(tmp_path):
    path = tmp_path / "s.h5"
    with medload.Store.create(path) as store:
        for seed, patient in [(0, 5), (1, 5), (2, 3)]:
            store.add(synthetic_volume(seed, patient=patient, shape=(3 + seed, 8, 8)), label=seed)
        # same series key twice (a different source): made unique, not overwritten
        other = synthetic_volume(0, patient=5, shape=(2, 8, 8))
        assert store.add(other, key="../ser-0000") == "ser-0000-2"
    reader = medload.open(path)
    assert reader.patient_keys == ["pat-0003", "pat-0005"]
    assert [r.key for r in reader.volumes] == ["ser-0000", "ser-0000-2", "ser-0001", "ser-0002"]
    index = reader.index
    assert len(index) == len(reader) == 3 + 2 + 4 + 5
    assert list(index["volume"][:6]) == [0, 0, 0, 1, 1, 2] and list(index["slice"][:6]) == [0, 1, 2, 0, 1, 0]
    assert set(index["patient"][index["volume"] == 3]) == {0}
    with h5py.File(path) as f:  # the stored /index agrees with the reader's
        stored = f["index"][()]
        assert [k.decode() for k in f["volume_keys"][()]] == [r.key for r in reader.volumes]
        np.testing.assert_array_equal(stored["slice"], index["slice"])
        np.testing.assert_array_equal(stored["label"], index["label"])
    reader.read_slices(3, 0, 1)  # an open h5py handle must not be pickled
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read_slices(3, 1, 4), reader.read_slices(3, 1, 4))
    assert len(pickle.dumps(reader)) < 20_000


def test_add_skips_complete_volumes_and_resume_appends(tmp_path):
    path = tmp_path / "s.h5"
    assert build_store(path, seeds=[0, 1]) == ["ser-0000", "ser-0001"]
    before = path.stat().st_mtime_ns
    with medload.Store.create(path) as store:  # same sources again: nothing written
        assert store.has("hash-0000-(6, 16, 16)-None-float32")
        assert store.add(synthetic_volume(1)) == "ser-0001"
    assert path.stat().st_mtime_ns == before and not path.with_name("s.h5.partial").exists()
    with medload.Store.create(path) as store:  # one more source: appended
        assert store.add(synthetic_volume(2)) == "ser-0002"
    assert [r.key for r in medload.open(path).volumes] == ["ser-0000", "ser-0001", "ser-0002"]


def test_error_inside_with_keeps_partial_and_next_run_completes(tmp_path):
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError):
        with medload.Store.create(path) as store:
            store.add(synthetic_volume(0))
            raise RuntimeError("series 2 failed")
    assert not path.exists() and path.with_name("s.h5.partial").exists()
    with pytest.raises(StoreError, match="not finished"):
        medload.open(path)
    build_store(path, seeds=[0, 1])
    assert [r.key for r in medload.open(path).volumes] == ["ser-0000", "ser-0001"]


# ------------------------------------------------------------------ 3. stale-cache guard
PIPE = {"steps": [["window", {"center": 40, "width": 400}], ["resize", {"size": 256}]]}


def test_changed_pipeline_is_refused_not_mixed(tmp_path):
    path = tmp_path / "s.h5"
    build_store(path, seeds=[0], pipeline=PIPE)
    changed = json.loads(json.dumps(PIPE))
    changed["steps"][0][1]["width"] = 350
    with pytest.raises(StoreError, match="another pipeline.*overwrite=True"):
        medload.Store.create(path, pipeline=changed)
    # key order does not matter; an object with .to_config() works the same
    reordered = {"steps": [["window", {"width": 400, "center": 40}], ["resize", {"size": 256}]]}

    class Pipe:
        def to_config(self):
            return reordered

    with medload.Store.create(path, pipeline=Pipe()) as store:
        assert store.add(synthetic_volume(0)) == "ser-0000"
    assert medload.open(path).pipeline == PIPE
    # a crashed partial store is guarded the same way
    store = medload.Store.create(path, pipeline=PIPE)
    store.add(synthetic_volume(1))
    store.abandon()
    with pytest.raises(StoreError, match="another pipeline"):
        medload.Store.create(path, pipeline=changed)
    with medload.Store.create(path, pipeline=changed, overwrite=True) as store:
        store.add(synthetic_volume(2))
    reader = medload.open(path)
    assert reader.pipeline == changed and [r.key for r in reader.volumes] == ["ser-0002"]


def test_shards_with_different_pipelines_do_not_open_as_one(tmp_path):
    build_store(tmp_path / "shard-0001.h5", seeds=[0], pipeline=PIPE)
    build_store(tmp_path / "shard-0002.h5", seeds=[1], pipeline={"steps": []})
    with pytest.raises(StoreError, match="shard-0002.h5 was written with another pipeline"):
        medload.open(tmp_path)


def test_other_refusals(tmp_path):
    path = tmp_path / "s.h5"
    build_store(path, seeds=[0])
    with pytest.raises(StoreError, match="resume=True"):
        medload.Store.create(path, resume=False)
    with pytest.raises(StoreError, match="dtype"):
        medload.Store.create(path, dtype="float32")
    with medload.Store.create(tmp_path / "t.h5", dtype="uint8") as store:
        bad = synthetic_volume(1).with_array(np.full((6, 16, 16), np.nan, np.float32))
        with pytest.raises(StoreError, match="NaN"):
            store.add(bad)
        for value in (np.nan, np.inf, -np.inf):  # one bad voxel among finite ones, counted in the message
            some = synthetic_volume(1).array.astype(np.float32)
            some[2, 3, 4], some[5, 0, 0] = value, value
            with pytest.raises(StoreError, match=r": 2 voxels are NaN or infinite, which uint8 cannot hold"):
                store.add(synthetic_volume(1).with_array(some))
        with pytest.raises(StoreError, match="mask shape"):
            store.add(synthetic_volume(1), mask=np.zeros((5, 16, 16), np.uint8))
    with medload.Store.create(tmp_path / "r.h5", dtype="uint8", value_range=(0, 0.5)) as store:
        with pytest.raises(StoreError, match="outside value_range"):
            store.add(synthetic_volume(1))
    with medload.Store.create(tmp_path / "i.h5", dtype="int16") as store:
        with pytest.raises(StoreError, match="fractions"):
            store.add(synthetic_volume(1))
    with pytest.raises(medload.ConfigError, match="compression must be one of"):
        medload.Store.create(tmp_path / "c.h5", compression="brotli")
    assert [r.key for r in medload.open(tmp_path / "t.h5").volumes] == []  # failed adds left nothing


# ------------------------------------------------------------------ 5. bad files
def test_not_a_store_errors_say_what_was_found(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["images"] = np.zeros((2, 4, 4))
    text = tmp_path / "notes.h5"
    text.write_text("patient list\n")
    good = tmp_path / "good.h5"
    build_store(good, seeds=range(3))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    newer = tmp_path / "newer.h5"
    newer.write_bytes(good.read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["medload_schema"] = 2
    cases = {
        plain: "HDF5 file but not a medload store.*images",
        text: "not an HDF5 file.*patient list",
        truncated: "truncated HDF5 file",
        newer: "schema 2, newer than this medload",
        tmp_path / "missing.h5": "does not exist",
        tmp_path / "empty": "no store shards",
    }
    (tmp_path / "empty").mkdir()
    for path, message in cases.items():
        with pytest.raises(StoreError, match=message) as info:
            medload.open(path)
        assert isinstance(info.value, MedloadError) and str(path) in str(info.value)
    with pytest.raises(StoreError, match="not a medload store"):
        medload.Store.create(plain)
    with pytest.raises(StoreError, match="volume 9 does not exist"):
        medload.open(good).read_slices(9, 0, 1)
    with pytest.raises(StoreError, match="outside volume"):
        medload.open(good).read_slices(0, 4, 7)


def test_catalog_gives_the_same_records_as_the_group_attributes(tmp_path):
    path = tmp_path / "s.h5"
    build_store(path, seeds=range(3))
    with medload.Store.create(path) as store:  # an append rewrites the catalog
        store.add(synthetic_volume(7, channels=("a", "b")), label=4)
    fast = medload.open(path).volumes
    without = tmp_path / "nocatalog.h5"
    without.write_bytes(path.read_bytes())
    with h5py.File(without, "r+") as f:
        del f["catalog"]
    slow = medload.open(without).volumes
    assert len(fast) == len(slow) == 4 and [r.key for r in fast] == ["ser-0000", "ser-0001", "ser-0002", "ser-0007"]
    for a, b in zip(fast, slow):
        for name in (
            "key",
            "shape",
            "dtype",
            "spacing",
            "label",
            "history",
            "channels",
            "has_mask",
            "meta",
            "scale",
            "offset",
            "patient_key",
        ):
            assert getattr(a, name) == getattr(b, name), name
        np.testing.assert_array_equal(a.affine, b.affine)


def test_channel_names_must_match_the_stored_channels(tmp_path):
    with medload.Store.create(tmp_path / "ch.h5", dtype="float32") as store:
        flat = synthetic_volume(1)
        named = flat.with_array(flat.array, meta={**flat.meta, "channels": ["brain", "subdural", "bone"]})
        with pytest.raises(StoreError, match=r"names 3 channels, the array \(6, 16, 16\) has 1 \(a 3D volume is one channel\)"):
            store.add(named)
        four = synthetic_volume(2, channels=("a", "b"))
        wrong = four.with_array(four.array, meta={**four.meta, "channels": ["a", "b", "c"]})
        with pytest.raises(StoreError, match="names 3 channels, the array .* has 2;"):
            store.add(wrong)
        key = store.add(four)
    record = medload.open(tmp_path / "ch.h5").volumes
    assert [r.key for r in record] == [key] and record[0].channels == ("a", "b") and record[0].shape[1] == 2


def test_an_unwritable_output_path_is_a_store_error_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=r"cannot write the store .*a-file/out\.h5: Not a directory.*writable folder"):
        medload.Store.create(blocker / "out.h5")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("value_range", [(1, 0), (0.5, 0.5), ("low", 1), (0, 1, 2), 3])
def test_a_bad_value_range_is_refused_on_create_before_any_file(tmp_path, value_range):
    with pytest.raises(StoreError, match=r"value_range must be .*found"):
        medload.Store.create(tmp_path / "v.h5", dtype="uint8", value_range=value_range)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_file_that_is_not_hdf5_is_told_by_its_bytes_and_truncation_by_hdf5s_words(tmp_path):
    from medload.store.layout import hdf5_says_truncated

    # An HDF5 file with a 512-byte user block has its signature at 512, not at 0: cut, it is a
    # truncated HDF5 file, not "not an HDF5 file".
    blocked = tmp_path / "blocked.h5"
    with h5py.File(blocked, "w", userblock_size=512) as f:
        f["images"] = np.arange(64 * 64, dtype=np.float64).reshape(64, 64)
    data = blocked.read_bytes()
    assert data[:8] != b"\x89HDF\r\n\x1a\n" and data[512:520] == b"\x89HDF\r\n\x1a\n"
    blocked.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"a truncated HDF5 file \(\d+ bytes"):
        medload.open(blocked)
    # The one text check, against the words of the HDF5 that h5py ships today.
    with pytest.raises(OSError) as cut:
        h5py.File(blocked, "r")
    assert hdf5_says_truncated(cut.value)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"MZ" + bytes(2000))
    with pytest.raises(OSError) as other:
        h5py.File(junk, "r")
    assert not hdf5_says_truncated(other.value)
    with pytest.raises(StoreError, match=r"not an HDF5 file \(it starts with b'MZ\\x00"):
        medload.open(junk)
