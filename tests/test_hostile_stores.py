"""Each class of escape the store campaign (``tools/fuzz_stores.py``) found, as one store changed in code.

A store a user receives from someone else (or a damaged copy) must be refused with a
StoreError naming the file, the volume and what is wrong, never read as other pixels than
the stored ones, never with a library's exception, never with an allocation the file chose.
Every test here fails on the code before its fix: a catalog that lied about a shape or dtype
was believed (wrong-shaped or misread slices, an IndexError from the chunk table), NaN or
infinite scale/offset decoded every voxel to NaN/inf, deep JSON raised RecursionError, a label
of 2**62 with a class name asked ``classes`` for a list of 2**62 names, external storage read
another file's bytes as an image, an LZ4 chunk claiming 2**62 bytes was handed to HDF5's
filter (which allocates what it claims), and nnU-Net dataset.json fields of the wrong type
raised ValueError/AttributeError.
"""

from __future__ import annotations

import json
import struct

import h5py
import numpy as np
import pytest

import medload
from fixtures.stores import build_store, synthetic_volume
from medload.errors import ReadError, StoreError
from medload.io.nnunet import read_dataset_json


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.h5"
    build_store(path, seeds=[0, 1])
    return path


def _edit_catalog(path, index: int, change) -> None:
    with h5py.File(path, "r+") as f:
        entries = json.loads(f["catalog"][()])
        change(entries[index])
        del f["catalog"]
        f.create_dataset("catalog", data=json.dumps(entries), dtype=h5py.string_dtype())


def _replace_image(path, key: str, make) -> None:
    with h5py.File(path, "r+") as f:
        group = f["volumes"][key]
        values = group["image"][()]
        del group["image"]
        make(group, values)


# --- the catalog (or the groups' attributes) says one thing, the dataset is another ----------


@pytest.mark.parametrize(
    "make, found",
    [
        (
            lambda g, v: g.create_dataset("image", data=np.pad(v, ((0, 0), (0, 0), (0, 2))), chunks=(1, 16, 18)),
            r"uint8 \(6, 16, 18\)",
        ),
        (lambda g, v: g.create_dataset("image", data=v[:-1], chunks=(1, 16, 16)), r"uint8 \(5, 16, 16\)"),
        (lambda g, v: g.create_dataset("image", data=v.astype(">u2"), chunks=(1, 16, 16)), r">u2 \(6, 16, 16\)"),
        (lambda g, v: g.create_dataset("image", data=v.astype(np.float64), chunks=(1, 16, 16)), r"float64 \(6, 16, 16\)"),
        (lambda g, v: g.create_dataset("image", data=np.full(v.shape, b"ab", "S2")), r"\|S2 \(6, 16, 16\)"),
    ],
    ids=["wider", "fewer-slices", "big-endian", "float64", "strings"],
)
def test_an_image_dataset_that_is_not_what_the_catalog_says_is_refused(store, make, found):
    # Before: the slices came back in the dataset's shape or dtype (not the record's), or the
    # chunk table read the record's number of bytes from a chunk of another size.
    key = medload.open(store).volumes[0].key
    _replace_image(store, key, make)
    reader = medload.open(store)
    with pytest.raises(StoreError, match=rf"s.h5: volume {key}'s image is {found}, its catalog says uint8 \(6, 16, 16\)"):
        reader.read_slices(0, 0, 1)
    with pytest.raises(StoreError, match="its catalog says"):
        reader.read_batch([0], [0], np.empty((1, 16, 16), np.uint8), raw=True)
    assert reader.read_slices(1, 0, 6, raw=True).shape == (6, 16, 16)  # the other volume still reads


def test_a_catalog_shape_and_dtype_lie_about_an_intact_dataset_is_refused(store):
    _edit_catalog(store, 0, lambda e: e.update(shape=[6, 16, 14]))
    with pytest.raises(StoreError, match=r"image is uint8 \(6, 16, 16\), its catalog says uint8 \(6, 16, 14\)"):
        medload.open(store).read_slices(0, 0, 6)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dtype", "float64", r"dtype is 'float64', expected one of"),
        ("dtype", "bool", r"dtype is 'bool'"),
        ("shape", [2**31, 16, 16], r"shape is 2147483648, expected a whole number in \[1, 2147483647\]"),
        ("shape", [3, 16], r"shape is \[3, 16\], expected \(Z, H, W\)"),
        ("offset", float("nan"), r"offset is nan, expected a finite number"),
        ("scale", float("inf"), r"scale is inf"),
        ("scale", -1.0, r"scale must be > 0"),
        ("offset", 1e308, r"do not decode uint8 values to finite float32"),
        ("has_mask", "yes", r"has_mask is 'yes'"),
        ("key", "/catalog", r"the key '/catalog' is not a volume name"),
    ],
)
def test_catalog_fields_medload_never_writes_are_refused_when_the_store_opens(store, field, value, message):
    # Before: NaN/inf offsets decoded every voxel to NaN/inf, an absolute key read another
    # object of the file, a huge shape sized the reads' allocations.
    _edit_catalog(store, 0, lambda e: e.update({field: value}))
    with pytest.raises(StoreError, match=rf"s.h5: volume .*{message}.*Convert the sources again"):
        medload.open(store)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("meta", "[]", "meta is a list, expected a JSON object"),
        ("meta", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "meta is JSON nested too deeply"),
        ("history", "[1]", r"history is '\[1\]', expected a list of \[name, parameters\] pairs"),
        ("channels", '["a", "b"]', "channels is .* expected one name per channel"),
        ("label", 10**30, r"label is 1000000000000000000000000000000, expected a whole number"),
        ("label", "x", r"label is 'x'"),
        ("affine", [[1.0]], r"affine is \[\[1.0\]\], expected 4x4 finite numbers"),
        ("affine", [[1e308] * 4] * 4, r"affine gives voxel sizes \[1\.73.*e\+308.* mm, expected 1e-06 to 100000 mm each"),
        ("affine", [[1.0, 1, 0, 0], [0, 1e-9, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], r"affine has \(nearly\) parallel axes"),
        ("spacing", [0, 0, 0], r"spacing gives voxel sizes \[0.0, 0.0, 0.0\] mm"),
        ("spacing", [float("nan")] * 3, "spacing is .* expected 3 finite numbers"),
    ],
)
def test_volume_attributes_of_the_wrong_kind_are_refused_when_the_store_opens(store, field, value, message):
    # Before: RecursionError (deep JSON), OverflowError (label), AttributeError in `classes`
    # (meta a list), ValueError from numpy (affine) escaped, or the datasets broke later.
    _edit_catalog(store, 1, lambda e: e["attrs"].update({field: value}))
    with pytest.raises(StoreError, match=rf"s.h5: volume 'ser-0001': {message}"):
        medload.open(store)


def test_the_group_attributes_are_checked_as_the_catalog_is(store):
    # A store without /catalog (older, or the catalog dropped) is read from each group's attributes.
    with h5py.File(store, "r+") as f:
        del f["catalog"]
        f["volumes"]["ser-0000"]["image"].attrs["offset"] = np.inf
    with pytest.raises(StoreError, match=r"volume 'ser-0000': offset is inf"):
        medload.open(store)


def test_a_catalog_listing_one_volume_twice_is_refused(store):
    with h5py.File(store, "r+") as f:
        entries = json.loads(f["catalog"][()])
        del f["catalog"]
        f.create_dataset("catalog", data=json.dumps(entries + entries[:1]), dtype=h5py.string_dtype())
        f.attrs["n_volumes"] = 3
    with pytest.raises(StoreError, match="volume 'ser-0000' is listed twice"):
        medload.open(store)


@pytest.mark.parametrize("value", ["x", 1.5, "1"])
def test_a_schema_attribute_that_is_not_a_number_is_refused(store, value):
    with h5py.File(store, "r+") as f:
        f.attrs["medload_schema"] = value
    with pytest.raises(StoreError, match=r"s.h5: medload_schema is .*, expected a whole number \(1\)"):
        medload.open(store)


def test_a_pipeline_attribute_that_is_not_json_is_a_store_error(store):
    with h5py.File(store, "r+") as f:
        f.attrs["pipeline"] = "{"
    with pytest.raises(StoreError, match="its 'pipeline' attribute is not JSON"):
        _ = medload.open(store).pipeline


def test_a_named_label_beyond_any_class_list_is_refused_not_listed(store):
    # Before: classes built a list of 2**62 names (MemoryError, or a hang without a memory cap).
    _edit_catalog(store, 0, lambda e: e["attrs"].update(label=2**62, meta=json.dumps({"class_name": "tumor"})))
    reader = medload.open(store)
    with pytest.raises(StoreError, match=r"volume 'ser-0000' has label 4611686018427387904 named 'tumor'; .* at most 1,000,000"):
        _ = reader.classes
    with pytest.raises(StoreError, match="at most 1,000,000"):
        medload.SliceDataset(store)


# --- datasets that are not plain arrays in this file -------------------------------------------


def test_an_image_kept_in_another_file_is_refused(store, tmp_path):
    # Before: HDF5 read the named file's bytes (any file the user can read) as the image.
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(256)) * 6)
    _replace_image(
        store,
        "ser-0000",
        lambda g, v: g.create_dataset("image", shape=v.shape, dtype=v.dtype, external=[(str(secret), 0, v.nbytes)]),
    )
    reader = medload.open(store)
    with pytest.raises(StoreError, match="image keeps its values in another file \\(external storage\\)"):
        reader.read_slices(0, 0, 1)


def test_an_image_linked_from_another_hdf5_file_is_refused(store, tmp_path):
    # Before: h5py followed the external link and read the other file's dataset as the image.
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_dataset("x", data=np.full((6, 16, 16), 7, np.uint8), chunks=(1, 16, 16))
    _replace_image(store, "ser-0000", lambda g, v: g.__setitem__("image", h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")))
    with pytest.raises(StoreError, match=r"image keeps its values in another file \(a link to .*other.h5\)"):
        medload.open(store).read_slices(0, 0, 1)


@pytest.mark.parametrize(
    "make",
    [lambda g, v: g.create_group("image"), lambda g, v: g.create_dataset("image", data=np.float32(1))],
    ids=["group", "scalar"],
)
def test_an_image_that_is_no_array_of_slices_is_refused(store, make):
    # Before: h5py's TypeError (a group) or ValueError (a scalar) escaped read_slices.
    _replace_image(store, "ser-0000", make)
    with pytest.raises(StoreError, match="ser-0000's image is"):
        medload.open(store).read_volume(0)


def test_a_mask_of_another_shape_than_its_image_is_refused(store):
    # Before: the mask's chunk table had fewer slices than the record (IndexError).
    with h5py.File(store, "r+") as f:
        group = f["volumes"]["ser-0000"]
        mask = group["mask"][()]
        del group["mask"]
        group.create_dataset("mask", data=mask[:-1], chunks=(1, 16, 16))
    reader = medload.open(store)
    with pytest.raises(
        StoreError, match=r"ser-0000's mask is uint8 \(5, 16, 16\), its catalog says native integers \(6, 16, 16\)"
    ):
        reader.read_mask(0, 5, 6)


# --- chunk bytes ---------------------------------------------------------------------------------


def _first_chunk(path, key="ser-0000"):
    with h5py.File(path, "r") as f:
        info = f["volumes"][key]["image"].id.get_chunk_info(0)
        return int(info.byte_offset), int(info.size)


@pytest.mark.parametrize("claimed", [2**62, 2**31, 255])
def test_an_lz4_chunk_claiming_another_size_is_refused_without_hdf5(store, claimed):
    # Before: the direct reader declined it and handed it to HDF5's LZ4 filter, which first
    # allocates the size the chunk claims (2**62 bytes here, chosen by the file).
    offset, _ = _first_chunk(store)
    data = bytearray(store.read_bytes())
    struct.pack_into(">Q", data, offset, claimed)
    store.write_bytes(bytes(data))
    reader = medload.open(store)
    with pytest.raises(
        StoreError,
        match=rf"s.h5: volume ser-0000's image, slice 0: its LZ4 chunk says it holds {claimed} bytes, the slice has 256",
    ):
        reader.read_slices(0, 0, 1)
    with pytest.raises(StoreError, match="slice 0: its LZ4 chunk says"):
        reader.read_batch([0, 0], [1, 0], np.empty((2, 16, 16), np.uint8), raw=True)
    assert reader._read_paths["h5py"] == 0
    np.testing.assert_array_equal(reader.read_slices(0, 1, 6, raw=True), medload.open(store).read_slices(0, 1, 6, raw=True))


# --- nnU-Net dataset.json ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"channel_names": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
        ("[1, 2]", "holds a JSON list"),
        ('{"channel_names": {"0": "CT"}, "labels": [0, 1]}', "'labels' is a list"),
        ('{"channel_names": {"0": "CT"}, "labels": {"background": "zero"}}', "label 'background' is 'zero'"),
        ('{"channel_names": {"0": "CT"}, "labels": {"background": null}}', "label 'background' is 'None'"),
        (
            '{"channel_names": {"0": "CT"}, "labels": {"organ": 100000000000000000000}}',
            r"label 'organ' is 100000000000000000000, expected a value in \[0, 2147483647\]",
        ),
    ],
)
def test_a_dataset_json_of_the_wrong_shape_is_a_read_error(tmp_path, text, message):
    # Before: RecursionError, AttributeError ('list' has no 'items') or ValueError from int().
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(ReadError, match=rf"dataset.json: .*{message}"):
        read_dataset_json(tmp_path)


def test_dataset_json_labels_of_every_documented_form_still_read(tmp_path):
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": "1", "both": [1, 2]}}
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    assert read_dataset_json(tmp_path)["labels"] == {"background": 0, "organ": 1, "both": [1, 2]}
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "tumor"}}))
    assert read_dataset_json(tmp_path)["labels"] == {"background": 0, "tumor": 1}


def test_an_intact_store_reads_as_before(store):
    reader = medload.open(store)
    expected = synthetic_volume(0).array
    np.testing.assert_allclose(reader.read_slices(0, 0, 6), expected, atol=reader.volumes[0].scale / 2 + 1e-6)


def test_medload_info_describes_a_pipeline_of_another_shape_instead_of_failing(store, capsys, monkeypatch):
    # Before: `medload info` exited 3 (internal error) with KeyError: 'name' on a step without a name.
    from medload.cli import main

    with h5py.File(store, "r+") as f:
        f.attrs["pipeline"] = json.dumps({"steps": [{"nome": "window"}, 5], "by_modality": {"CT": {"steps": "x"}}})
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "CT: {'steps': 'x'}" in out and "other: (as read)" in out


def test_a_catalog_listing_more_slices_than_the_file_holds_is_refused(store):
    # A dataset declared with 2**30 slices and never written costs HDF5 nothing; the reader's
    # index (24 bytes a slice) would have been 24 GiB, sized by the file.
    with h5py.File(store, "r+") as f:
        group = f["volumes"]["ser-0000"]
        del group["image"]
        group.create_dataset("image", shape=(2**30, 16, 16), dtype=np.uint8, chunks=(1, 16, 16))
    _edit_catalog(store, 0, lambda e: e.update(shape=[2**30, 16, 16]))
    with pytest.raises(StoreError, match=r"s.h5: its volumes list 1,073,741,830 slices, more than its [\d,]+ bytes can hold"):
        medload.open(store)


# --- BIDS sidecars ----------------------------------------------------------------------------


def _bids(tmp_path, sidecar: str):
    from fixtures.hostile import nifti_bytes

    (tmp_path / "sub-01_T1w.nii").write_bytes(nifti_bytes((12, 10, 4), seed=1))
    (tmp_path / "sub-01_T1w.json").write_text(sidecar)
    return tmp_path / "sub-01_T1w.nii"


@pytest.mark.parametrize(
    "sidecar",
    [
        '{"EchoTime": NaN, "RepetitionTime": Infinity, "FlipAngle": -Infinity, "SliceThickness": 1e400}',
        '{"EchoTime": 1' + "0" * 400 + ', "MagneticFieldStrength": 1' + "0" * 400 + "}",
        '{"EchoTime": 1e308, "InversionTime": "0.9", "RepetitionTime": true}',
        '{"EchoTime": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=["nan-inf", "huge-int", "overflow-string-bool", "deep"],
)
def test_a_sidecar_s_unusable_values_are_dropped_and_the_image_loads(tmp_path, sidecar):
    # Before: NaN/inf made load fail with a ConfigError blaming the caller's meta; an integer
    # beyond float range (OverflowError) or deep nesting (RecursionError) made scan drop the
    # NIfTI as "header cannot be read"; "0.9" (seconds, as text) was kept as an echo time in ms.
    path = _bids(tmp_path, sidecar)
    found = medload.scan(tmp_path)
    assert len(found) == 1 and not found.errors
    volume = medload.load(found[0])
    np.testing.assert_array_equal(volume.array.shape, medload.load(path).array.shape)
    for key in ("echo_time", "repetition_time", "inversion_time", "flip_angle", "magnetic_field_strength", "slice_thickness"):
        assert key not in volume.meta, (key, volume.meta.get(key))


def test_a_sound_sidecar_is_still_read(tmp_path):
    _bids(tmp_path, '{"EchoTime": 0.03, "RepetitionTime": 2, "FlipAngle": 9, "MagneticFieldStrength": 3}')
    meta = medload.load(medload.scan(tmp_path)[0]).meta
    assert (meta["echo_time"], meta["repetition_time"], meta["flip_angle"], meta["magnetic_field_strength"]) == (
        30.0,
        2000.0,
        9,
        3,
    )
