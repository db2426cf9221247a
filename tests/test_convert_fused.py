"""A final CT window into a uint8 store as one lookup-table pass: the same bytes as window then quantize.

``medload.batch.fused.run_for_store`` composes ``Window.table`` with the store's encoding; the
reference is the plain way, ``pipe(volume)`` then ``Store.add``, which computes the float32
windowed volume and quantizes it.
"""

from __future__ import annotations

import numpy as np
import pytest

import medload
from medload.batch.fused import run_for_store
from medload.transforms import (
    HUClip,
    MultiWindow,
    Pipeline,
    Reorient,
    ResizeSlices,
    Window,
)


def ct_volume(dtype: str, seed: int, shape=(5, 24, 20)) -> medload.Volume:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    low, high = max(info.min, -1024), min(info.max, 3071)
    array = rng.integers(low, high + 1, size=shape).astype(dtype)
    meta = {"series_key": f"s-{dtype}-{seed}", "patient_key": "p", "source_hash": f"h-{dtype}-{seed}"}
    return medload.Volume(array, np.diag([2.0, 0.7, 0.7, 1.0]), modality="CT", meta=meta)


def stored(path) -> tuple[np.ndarray, medload.store.VolumeRecord]:
    reader = medload.open(path)
    record = reader.volumes[0]
    return reader.read_slices(0, 0, record.n_slices, raw=True), record


def write_both(tmp_path, pipe, volume, mask=None, **store_options):
    """The stored bytes and record of the fused and of the plain way, and the fused ``encoded``."""
    fused_path, plain_path = tmp_path / "fused.h5", tmp_path / "plain.h5"
    with medload.Store.create(fused_path, overwrite=True, **store_options) as store:
        out, out_mask, encoded = run_for_store(pipe, volume, mask, store)
        store.add(out, mask=out_mask, encoded=encoded)
    with medload.Store.create(plain_path, overwrite=True, **store_options) as store:
        if mask is None:
            store.add(pipe(volume))
        else:
            store.add(*pipe(volume, mask=mask)[:1], mask=pipe(volume, mask=mask)[1])
    return stored(fused_path), stored(plain_path), encoded


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int8", "uint8"])
@pytest.mark.parametrize("window", ["abdomen", "brain", "bone", "lung"])
def test_lookup_table_gives_the_bytes_scale_and_record_of_window_then_quantize(tmp_path, dtype, window):
    volume = ct_volume(dtype, seed=len(window))
    (fused, fused_rec), (plain, plain_rec), encoded = write_both(tmp_path, Pipeline([Window(window)]), volume)
    assert encoded is not None  # the fused path was taken
    assert fused.dtype == plain.dtype == np.uint8 and np.array_equal(fused, plain)
    assert (fused_rec.scale, fused_rec.offset) == (plain_rec.scale, plain_rec.offset) == encoded
    assert fused_rec.history == plain_rec.history and fused_rec.intensity == plain_rec.intensity
    # and the stored values decode to the float window within half a quantization step
    windowed = Window(window)(volume).array
    assert (
        np.abs(fused * np.float32(fused_rec.scale) + np.float32(fused_rec.offset) - windowed).max() <= fused_rec.scale / 2 + 1e-6
    )


@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_multiwindow_channels_are_looked_up_to_the_bytes_of_the_float_channels(tmp_path, dtype):
    volume = ct_volume(dtype, seed=9)
    pipe = Pipeline([MultiWindow(("brain", "subdural", "bone"))])
    (fused, rec), (plain, plain_rec), encoded = write_both(tmp_path, pipe, volume)
    assert encoded is not None and fused.shape == plain.shape == (5, 3, 24, 20)
    assert np.array_equal(fused, plain) and (rec.scale, rec.offset) == (plain_rec.scale, plain_rec.offset)
    assert rec.channels == plain_rec.channels == ("brain", "subdural", "bone") and rec.intensity == plain_rec.intensity


def test_fixed_value_range_earlier_steps_and_masks_follow_the_plain_way(tmp_path):
    volume = ct_volume("int16", seed=3)
    mask = medload.Volume((volume.array > 0).astype(np.uint8), volume.affine, modality="CT")
    pipe = Pipeline([Reorient(("I", "P", "L")), Window("abdomen")])  # a step that keeps int16 first
    (fused, rec), (plain, plain_rec), encoded = write_both(tmp_path, pipe, volume, mask=mask, value_range=(0, 1))
    assert encoded == (1 / 255, 0.0) and np.array_equal(fused, plain)
    assert rec.history == plain_rec.history and [name for name, _ in rec.history][-2:] == ["reorient", "window"]
    moved_mask = pipe(volume, mask=mask)[1].array
    assert not np.array_equal(moved_mask, mask.array)  # the reorientation moved it
    assert np.array_equal(medload.open(tmp_path / "fused.h5").read_mask(0, 0, len(moved_mask)), moved_mask)
    # a float step before the window (HUClip gives float32): the plain way, the same bytes
    (fused, _), (plain, _), encoded = write_both(tmp_path, Pipeline([HUClip(-200, 400), Window("abdomen")]), volume)
    assert encoded is None and np.array_equal(fused, plain)


def test_float_voxels_other_pipelines_and_stores_take_the_plain_way(tmp_path):
    volume = ct_volume("int16", seed=4)
    floats = volume.with_array(volume.array.astype(np.float32) + 0.5)
    for pipe, vol, options in (
        (Pipeline([Window("brain")]), floats, {}),
        (Pipeline([Window("brain"), ResizeSlices(12)]), volume, {}),
        (Pipeline([Window("brain")]), volume, {"dtype": "float16"}),
    ):
        with medload.Store.create(tmp_path / "s.h5", overwrite=True, **options) as store:
            out, _, encoded = run_for_store(pipe, vol, None, store)
        assert encoded is None
        np.testing.assert_array_equal(out.array, pipe(vol).array)


def test_convert_of_a_ct_series_stores_what_window_then_quantize_stores(tmp_path):
    from fixtures.synthetic import ct_series

    ct_series(tmp_path / "ct", n_slices=6, size=64, seed=1)
    medload.convert(tmp_path / "ct", tmp_path / "out.h5", pipeline="ct-abdomen", workers=1, progress=False)
    got, record = stored(tmp_path / "out.h5")
    volume = medload.load(tmp_path / "ct")
    assert volume.array.dtype == np.int16  # HU as read: the fused path applies
    with medload.Store.create(tmp_path / "plain.h5") as store:
        store.add(medload.preset("ct-abdomen")(volume))
    want, want_record = stored(tmp_path / "plain.h5")
    assert np.array_equal(got, want) and (record.scale, record.offset) == (want_record.scale, want_record.offset)


# --- a window then ResizeSlices(mode="resize"): each slice looked up just before it is resized ---


def same_volume(got: medload.Volume, want: medload.Volume) -> None:
    """What a user compares: voxels bit for bit, world grid, history, intensity and channels."""
    assert got.array.dtype == want.array.dtype and got.shape == want.shape
    assert np.array_equal(got.array, want.array)
    assert np.array_equal(got.affine, want.affine) and got.history == want.history
    assert got.meta == want.meta and got.modality == want.modality


@pytest.fixture
def lookups(monkeypatch):
    """Counts the resizes made slice by slice from a lookup table (the fused path)."""
    calls = []
    original = ResizeSlices.apply_lookup

    def spy(self, volume, lookup):
        calls.append(volume.array.dtype)
        return original(self, volume, lookup)

    monkeypatch.setattr(ResizeSlices, "apply_lookup", spy)
    return calls


@pytest.mark.parametrize("dtype", ["int16", "uint16", "uint8"])
@pytest.mark.parametrize(("size", "order"), [((12, 10), 1), ((40, 33), 1), ((12, 10), 3), ((7, 9), 0)])
def test_window_then_resize_gives_the_array_of_the_float_way(tmp_path, lookups, dtype, size, order):
    volume = ct_volume(dtype, seed=order + size[0])
    pipe = Pipeline([Window("abdomen"), ResizeSlices(size, mode="resize", order=order)])
    with medload.Store.create(tmp_path / "s.h5") as store:
        out, _, encoded = run_for_store(pipe, volume, None, store)
    assert encoded is None  # the resized floats go to the store's own encoding, as in the plain way
    assert len(lookups) == 1 and lookups[0].kind == "u"  # resized from the codes, never a float volume
    plain = pipe(volume)
    same_volume(out, plain)
    assert out.shape == (5, *size) and 0.0 <= out.array.min() and out.array.max() <= 1.0
    (fused, rec), (want, want_rec), _ = write_both(tmp_path, pipe, volume)
    assert np.array_equal(fused, want) and (rec.scale, rec.offset) == (want_rec.scale, want_rec.offset)


def test_multiwindow_then_resize_with_a_mask_and_a_float32_store(tmp_path, lookups):
    volume = ct_volume("int16", seed=11, shape=(4, 30, 26))
    mask = medload.Volume((volume.array > 500).astype(np.uint8), volume.affine, modality="CT")
    pipe = Pipeline([Reorient(("I", "P", "L")), MultiWindow(("brain", "bone")), ResizeSlices(16, mode="resize")])
    with medload.Store.create(tmp_path / "s.h5", dtype="float32") as store:
        out, out_mask, encoded = run_for_store(pipe, volume, mask, store)
    plain, plain_mask = pipe(volume, mask=mask)
    assert encoded is None and out.shape[0] == 2 and out.shape[-2:] == (16, 16) and len(lookups) == 1
    same_volume(out, plain)
    same_volume(out_mask, plain_mask)
    assert out_mask.array.any()  # the nearest-neighbour resize kept labels
    (fused, rec), (want, _), _ = write_both(tmp_path, pipe, volume, mask=mask, dtype="float32")
    assert np.array_equal(fused, want) and rec.channels == ("brain", "bone")


def test_window_then_pad_crop_or_float_voxels_take_the_plain_way(tmp_path, lookups):
    volume = ct_volume("int16", seed=12)
    floats = volume.with_array(volume.array.astype(np.float32))
    for pipe, vol in (
        (Pipeline([Window("brain"), ResizeSlices(12, mode="pad-crop")]), volume),
        (Pipeline([Window("brain"), ResizeSlices(12, mode="resize")]), floats),
    ):
        with medload.Store.create(tmp_path / "s.h5", overwrite=True) as store:
            out, _, encoded = run_for_store(pipe, vol, None, store)
        assert encoded is None
        same_volume(out, pipe(vol))
    assert lookups == []


def test_refusals_are_those_of_the_plain_way(tmp_path):
    ct = ct_volume("int16", seed=13)
    mr = medload.Volume(ct.array, ct.affine, modality="MR", meta=ct.meta)
    pipe = Pipeline([Window("brain"), ResizeSlices(8, mode="resize")])
    with medload.Store.create(tmp_path / "s.h5") as store:
        with pytest.raises(medload.errors.TransformError) as fused_error:
            run_for_store(pipe, mr, None, store)
    with pytest.raises(medload.errors.TransformError) as plain_error:
        pipe(mr)
    assert str(fused_error.value) == str(plain_error.value)


# --- radiographs: RadiographWindow as a lookup table ---


def radiograph(dtype: str, meta: dict, seed: int = 0) -> medload.Volume:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    array = rng.integers(max(info.min, -2000), min(info.max, 4095) + 1, size=(1, 60, 50)).astype(dtype)
    return medload.Volume(
        array, np.eye(4), modality="DX", meta={"series_key": f"dx-{seed}", "source_hash": f"h-dx-{seed}", **meta}
    )


RADIOGRAPH_METAS = [
    {"window_center": 2048, "window_width": 4096},  # header window
    {"window_center": [1500, 900], "window_width": [3000, 1000]},  # several: the first
    {},  # 0.5-99.5 percentiles
    {"photometric_interpretation": "MONOCHROME1", "window_center": 1000, "window_width": 2000},  # inverted
    {
        "photometric_interpretation": "MONOCHROME1",
        "monochrome1_mirrored": True,
        "stored_range": [0, 4095],
        "window_center": 1000,
        "window_width": 2000,
    },  # centre mirrored
    {"window_center": 300, "window_width": 1},  # a width of one: a step
]


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8"])
@pytest.mark.parametrize("meta", RADIOGRAPH_METAS)
def test_radiograph_window_table_gives_the_values_and_record_of_apply(dtype, meta):
    from medload.transforms import RadiographWindow
    from medload.transforms.ct import table_codes

    volume = radiograph(dtype, meta, seed=len(meta))
    table, params, changes = RadiographWindow().table(volume)
    plain = RadiographWindow()(volume)
    assert np.array_equal(table[table_codes(volume.array)], plain.array)
    assert ("radiograph_window", params) == plain.history[-1] and changes["meta"] == plain.meta


@pytest.mark.parametrize("meta", RADIOGRAPH_METAS)
def test_radiograph_into_uint8_is_one_lookup_to_the_bytes_of_the_float_way(tmp_path, lookups, meta):
    from medload.transforms import RadiographWindow

    volume = radiograph("uint16", meta, seed=3)
    pipe = Pipeline([RadiographWindow()])
    (fused, rec), (plain, plain_rec), encoded = write_both(tmp_path, pipe, volume)
    assert encoded is not None and np.array_equal(fused, plain)
    assert (rec.scale, rec.offset) == (plain_rec.scale, plain_rec.offset) == encoded
    assert rec.history == plain_rec.history and rec.intensity == plain_rec.intensity
    # decoded, within half a quantization step of the float window
    decoded = fused * np.float32(rec.scale) + np.float32(rec.offset)
    assert np.abs(decoded - pipe(volume).array).max() <= rec.scale / 2 + 1e-6
    # with --size: the resized floats of the plain way
    resized = Pipeline([RadiographWindow(), ResizeSlices(24, mode="resize")])
    with medload.Store.create(tmp_path / "r.h5") as store:
        out, _, encoded = run_for_store(resized, volume, None, store)
    assert encoded is None and len(lookups) == 1
    same_volume(out, resized(volume))


def test_convert_with_size_stores_what_the_plain_pipeline_stores(tmp_path):
    from fixtures.synthetic import ct_series

    ct_series(tmp_path / "ct", n_slices=5, size=64, seed=2)
    medload.convert(tmp_path / "ct", tmp_path / "out.h5", pipeline="ct-abdomen", size=24, workers=1, progress=False)
    got, record = stored(tmp_path / "out.h5")
    volume = medload.load(tmp_path / "ct")
    assert volume.array.dtype == np.int16
    pipe = medload.preset("ct-abdomen") + ResizeSlices(24, mode="resize")
    pipe = Pipeline([medload.transforms.CanonicalSlices(), *pipe])
    with medload.Store.create(tmp_path / "plain.h5") as store:
        store.add(pipe(volume))
    want, want_record = stored(tmp_path / "plain.h5")
    assert got.shape == (5, 24, 24) and np.array_equal(got, want)
    assert (record.scale, record.offset) == (want_record.scale, want_record.offset)
    assert record.history == want_record.history
