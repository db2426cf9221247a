"""CT series looked up from their stored codes, slice by slice, straight to the store's bytes.

``medload.io.load_stored`` reads a native grey-scale DICOM series file by file and looks each
slice up in a table (``StoredTables``: the window's stored bytes) composed with the slice's
RescaleSlope/Intercept. The reference is the plain way: ``load`` (int16 HU), the pipeline, then
``Store.add``. Bytes, scale, offset, history and meta must be equal.
"""

from __future__ import annotations

import h5py
import numpy as np
import pydicom
import pytest

import medload
from fixtures.synthetic import write_dicom_series
from medload.batch.fused import StoredTables, run_for_store
from medload.io import load_stored
from medload.io.stored import LookedUp
from medload.transforms import CanonicalSlices, MultiWindow, Pipeline, Reorient, ResizeSlices, Window


def series_of(folder) -> medload.io.Series:
    (series,) = medload.scan(folder)
    return series


def ct_folder(tmp_path, name: str, *, signed: bool, bits_stored: int, rescales=None, codes=None, seed=0, orientation="axial"):
    """A CT series; ``rescales`` gives each slice (in slice order) its own (slope, intercept)."""
    shape = (6, 20, 16)
    folder = tmp_path / name
    truth = write_dicom_series(
        folder, shape=shape, signed=signed, bits_stored=bits_stored, pixel_array=codes, seed=seed, orientation=orientation
    )
    if rescales is not None:
        for path, (slope, intercept) in zip(truth["files"], rescales):
            ds = pydicom.dcmread(path)
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
            ds.save_as(path)
    return folder


def plain_store(path, pipe, volume, **options):
    with medload.Store.create(path, overwrite=True, **options) as store:
        store.add(pipe(volume))


def stored_store(path, pipe, series, **options):
    """Store ``series`` looked up from its codes (or, where the reader gives a Volume, the plain way)."""
    with medload.Store.create(path, overwrite=True, **options) as store:
        tables = StoredTables.of(pipe, store.dtype, store.value_range)
        loaded = load_stored(series, tables) if tables is not None else medload.load(series)
        out, mask, encoded = run_for_store(pipe, loaded, None, store)
        assert mask is None
        store.add(out, encoded=encoded)
    return loaded, encoded


def identity(shell, value_range):
    """Every value of the rescaled type itself: the rescaled volume, looked up."""
    dtype = shell.array.dtype
    return np.arange(1 << (8 * dtype.itemsize), dtype=f"u{dtype.itemsize}").view(dtype)


def _value(value):
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype.kind == "O" else value.tobytes()
    return value


def contents(path) -> dict:
    """Every dataset's values and every attribute of an HDF5 store, by name (creation time left out)."""
    found = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items() if k != "created"}
            data = _value(obj[()]) if isinstance(obj, h5py.Dataset) else None
            dtype = str(obj.dtype) if isinstance(obj, h5py.Dataset) else None
            found[name] = (attrs, data, dtype)

        visit("/", f)
        f.visititems(visit)
    return found


CASES = {
    # Siemens: unsigned words, 12 bits stored, intercept -1024; codes with garbage in the 4 high bits
    "unsigned-12": dict(signed=False, bits_stored=12, high_bits=True),
    # GE: signed 16 bits, intercept -1024, padding -2000 HU outside the field of view
    "signed-16": dict(signed=True, bits_stored=16, padding=-976),
    # signed 12 bits stored (sign-extended from bit 11)
    "signed-12": dict(signed=True, bits_stored=12),
    # unsigned 16 bits stored: the header allows 64,511 HU, the slices hold less (int16 still)
    "unsigned-16": dict(signed=False, bits_stored=16),
    # every slice its own slope and intercept
    "per-slice": dict(
        signed=False, bits_stored=12, rescales=[(1, -1024), (2, -2048), (1, -1000), (1, -1024), (3, -3000), (1, 0)]
    ),
}


def make_case(tmp_path, name):
    case = dict(CASES[name])
    rng = np.random.default_rng(len(name))
    signed = case["signed"]
    bits = case["bits_stored"]
    low, high = (max(-(2 ** (bits - 1)), -1000), min(2 ** (bits - 1) - 1, 5000)) if signed else (0, min(2**bits - 1, 5000))
    codes = rng.integers(low, high + 1, size=(6, 20, 16))
    if case.pop("padding", None) is not None:
        codes[:, :2, :] = -976  # -2000 HU after the intercept: a padding value outside the body
    if case.pop("high_bits", False):
        codes = codes | (rng.integers(0, 16, size=codes.shape) << 12)  # the reader must clear these
    return ct_folder(tmp_path, name, codes=codes.astype(np.int16 if signed else np.uint16), **case)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stored_codes_looked_up_in_the_identity_give_the_volume_load_gives(tmp_path, name):
    series = series_of(make_case(tmp_path, name))
    seen = []
    looked = load_stored(series, lambda shell, value_range: seen.append(value_range) or identity(shell, value_range))
    want = medload.load(series)
    assert isinstance(looked, LookedUp) and want.array.dtype == np.int16 == looked.rescaled_dtype
    got = looked.volume
    assert got.array.dtype == want.array.dtype and np.array_equal(got.array, want.array)
    assert np.array_equal(got.affine, want.affine) and got.meta == want.meta and got.modality == want.modality
    assert looked.value_range == (int(want.array.min()), int(want.array.max()))
    assert seen == [None, looked.value_range]  # the guess, then the range found (the same table: one read)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(
    "pipe",
    [
        Pipeline([CanonicalSlices(), Window("abdomen")]),
        Pipeline([Window("lung")]),  # a window the volume does not fill: scale and offset from its extremes
        Pipeline([Reorient(("I", "P", "L")), Window("bone")]),
        Pipeline([CanonicalSlices(), MultiWindow(("brain", "subdural", "bone"))]),
    ],
    ids=["canonical-abdomen", "lung", "reorient-bone", "multiwindow"],
)
def test_lookup_from_stored_codes_stores_the_bytes_of_load_then_pipeline(tmp_path, name, pipe):
    series = series_of(make_case(tmp_path, name))
    looked, encoded = stored_store(tmp_path / "stored.h5", pipe, series)
    plain_store(tmp_path / "plain.h5", pipe, medload.load(series))
    assert isinstance(looked, LookedUp) and encoded is not None  # the lookup from codes was taken
    assert contents(tmp_path / "stored.h5") == contents(tmp_path / "plain.h5")
    # and what a user reads back is the float window within half a quantization step
    reader = medload.open(tmp_path / "stored.h5")
    record = reader.volumes[0]
    decoded = reader.read_slices(0, 0, record.n_slices)
    windowed = pipe(medload.load(series)).array
    if windowed.ndim == 4:  # channels (C, Z, Y, X) are stored slice by slice, (Z, C, Y, X)
        windowed = np.moveaxis(windowed, 0, 1)
    assert np.abs(decoded - windowed).max() <= record.scale / 2 + 1e-6
    reader.close()


def test_fixed_value_range_and_a_guess_of_the_range_that_was_wrong(tmp_path):
    series = series_of(make_case(tmp_path, "per-slice"))
    pipe = Pipeline([CanonicalSlices(), Window("brain")])
    looked, encoded = stored_store(tmp_path / "a.h5", pipe, series, value_range=(0, 1))
    assert isinstance(looked, LookedUp) and encoded == (1 / 255, 0.0)
    plain_store(tmp_path / "b.h5", pipe, medload.load(series), value_range=(0, 1))
    assert contents(tmp_path / "a.h5") == contents(tmp_path / "b.h5")
    # a volume inside the window: its bytes span its own range, not the window's; the first
    # table (a volume filling the window) was wrong, the files are read a second time
    codes = np.random.default_rng(7).integers(1040, 1100, size=(6, 20, 16)).astype(np.uint16)  # 16..76 HU
    inside = series_of(ct_folder(tmp_path, "inside", signed=False, bits_stored=12, codes=codes))
    reads = []
    original = medload.io.dicom._read_native

    def counting(*args, **kwargs):
        reads.append(args[0].path)
        return original(*args, **kwargs)

    medload.io.dicom._read_native = counting
    try:
        looked, encoded = stored_store(tmp_path / "c.h5", pipe, inside)
    finally:
        medload.io.dicom._read_native = original
    assert isinstance(looked, LookedUp) and len(reads) == 2 * 6
    plain_store(tmp_path / "d.h5", pipe, medload.load(inside))
    assert contents(tmp_path / "c.h5") == contents(tmp_path / "d.h5")
    assert encoded[0] < 1 / 255 and medload.open(tmp_path / "c.h5").read_slices(0, 0, 6, raw=True).max() == 255


def test_pipelines_and_stores_the_lookup_does_not_serve(tmp_path):
    series = series_of(make_case(tmp_path, "signed-16"))
    pipe = Pipeline([CanonicalSlices(), Window("brain")])
    for options, steps in (({"dtype": "float32"}, pipe), ({}, pipe + ResizeSlices(8))):
        assert StoredTables.of(steps, options.get("dtype", "uint8"), None) is None
        looked, encoded = stored_store(tmp_path / "c.h5", steps, series, **options)
        assert isinstance(looked, medload.Volume) and encoded is None
        plain_store(tmp_path / "d.h5", steps, medload.load(series), **options)
        assert contents(tmp_path / "c.h5") == contents(tmp_path / "d.h5")


def test_series_the_lookup_cannot_serve_load_as_volumes(tmp_path):
    # a slice whose rescaled values leave int16 (16 bits stored, intercept -1024, codes above 33,791)
    codes = np.full((6, 20, 16), 40000, np.uint16)
    series = series_of(ct_folder(tmp_path, "wide", signed=False, bits_stored=16, codes=codes))
    got = load_stored(series, identity)
    assert isinstance(got, medload.Volume) and got.array.dtype == np.uint16 and int(got.array.max()) == 40000 - 1024
    # MR: the window refuses it, so no table: the plain Volume, and the plain way's error
    mr = tmp_path / "mr"
    write_dicom_series(mr, modality="MR", shape=(3, 8, 8), seed=4)
    pipe = Pipeline([Window("brain")])
    got = load_stored(series_of(mr), StoredTables.of(pipe, "uint8", None))
    assert isinstance(got, medload.Volume)
    assert np.array_equal(got.array, medload.load(series_of(mr)).array)


def test_convert_stores_the_same_file_as_the_plain_path(tmp_path, monkeypatch):
    """A whole convert (CT with per-slice rescale and MR beside it) against one with the lookup from codes switched off."""
    make_case(tmp_path / "in", "per-slice")
    write_dicom_series(tmp_path / "in" / "mr", modality="MR", shape=(4, 10, 12), seed=5)
    taken = []
    original = StoredTables.finish

    def spy(self, looked):
        taken.append(looked.volume.shape)
        return original(self, looked)

    monkeypatch.setattr(StoredTables, "finish", spy)
    options = dict(pipeline={"CT": "ct-abdomen", "MR": "none"}, workers=0, progress=False)
    assert medload.convert(tmp_path / "in", tmp_path / "fused.h5", **options).ok
    assert taken == [(6, 20, 16)]  # the CT, looked up from its codes; the MR as read
    monkeypatch.setattr("medload.batch.worker.StoredTables.of", lambda *args: None)
    assert medload.convert(tmp_path / "in", tmp_path / "plain.h5", **options).ok
    assert taken == [(6, 20, 16)]
    fused, plain = contents(tmp_path / "fused.h5"), contents(tmp_path / "plain.h5")
    assert len(fused) > 10 and fused == plain
