"""The third hostile-input round: work bounded by what the header declares, one BitsStored rule
for every codec, and multi-page TIFFs whose later pages differ from the first.

Each test fails on the code before its fix (named in the test): pydicom parsed every item of a
functional group sequence before medload counted them (31 s CPU for 20,000 items), JPEG 2000 and
JPEG-LS values above BitsStored were kept while native and RLE ones were masked, and a TIFF's
page 37 was decoded with page 0's shape, type, samples and orientation.
"""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

import medload
from medload.errors import ReadError
from medload.io import headers

# --- enhanced multi-frame: items counted before pydicom parses them ----------------------------


def _enhanced(tmp_path, damage, *, undefined=True, size=6):
    """fixtures.special's 6-frame enhanced MR (3 slices x 2 frames) with ``damage(ds)`` applied,
    its sequences written with undefined length (as scanners write them; pydicom must then parse
    every item to find the end)."""
    from fixtures.special import enhanced_asl

    made = enhanced_asl(tmp_path / "in", n_slices=3, n_frames=2, size=size)
    path = made["files"][0]
    ds = pydicom.dcmread(path)
    damage(ds)
    if undefined:
        for elem in ds.iterall():
            if elem.VR == "SQ":
                elem.is_undefined_length = True
    ds.save_as(path)
    return path


def _no_pydicom(monkeypatch):
    def refuse(path, specific):
        raise AssertionError(f"pydicom parsed {path}'s header before the item count was checked")

    monkeypatch.setattr(headers, "_read_with_pydicom", refuse)


def _more_items(n):
    def damage(ds):
        per = ds.PerFrameFunctionalGroupsSequence
        for _ in range(n):
            per.append(copy.deepcopy(per[0]))

    return damage


@pytest.mark.parametrize("undefined", [True, False])
def test_per_frame_items_beyond_number_of_frames_are_refused_before_pydicom_parses_them(tmp_path, monkeypatch, undefined):
    # Before: pydicom parsed all 2,006 items (20,000 copies of a Siemens XA10 item: 27 MB, 31 s
    # CPU, 760 MB) and enhanced_frames refused the count afterwards.
    path = _enhanced(tmp_path, _more_items(2000), undefined=undefined)
    _no_pydicom(monkeypatch)
    found = medload.scan(path)
    assert len(found) == 0
    message = found.errors[0].message
    assert "PerFrameFunctionalGroupsSequence (5200,9230) holds more than 6 item(s) but NumberOfFrames is 6" in message
    with pytest.raises(ReadError, match="holds more than 6 item"):
        medload.load(path)


def test_a_frame_count_raised_to_match_the_items_is_refused_by_the_file_size_first(tmp_path, monkeypatch):
    # NumberOfFrames lifted to the 2,006 items: 2,006 frames of 64 x 64 x 16 bits (16 MB) do not
    # fit the file (0.4 MB), refused from the walked header before pydicom reads the items.
    def damage(ds):
        _more_items(2000)(ds)
        ds.NumberOfFrames = 2006

    path = _enhanced(tmp_path, damage, size=64)
    _no_pydicom(monkeypatch)
    found = medload.scan(path)
    assert len(found) == 0 and "the header claims 2006 frame(s) of 64 x 64" in found.errors[0].message


def test_a_shared_group_of_many_items_is_refused_before_pydicom_parses_it(tmp_path, monkeypatch):
    def damage(ds):
        shared = ds.SharedFunctionalGroupsSequence
        for _ in range(500):
            shared.append(copy.deepcopy(shared[0]))

    path = _enhanced(tmp_path, damage)
    _no_pydicom(monkeypatch)
    found = medload.scan(path)
    assert len(found) == 0
    assert "SharedFunctionalGroupsSequence (5200,9229) holds more than 64 item(s) but the standard allows one item" in (
        found.errors[0].message
    )


def test_enhanced_files_with_their_own_item_counts_still_load(tmp_path):
    path = _enhanced(tmp_path, lambda ds: None)
    vol = medload.load(path)
    assert vol.shape == (2, 3, 6, 6)
    assert [int(vol.array[t, z, 0, 0]) for t in range(2) for z in range(3)] == [0, 1, 2, 100, 101, 102]
    # one frame cut from a SEG, three items kept, no NumberOfFrames: read as before
    liver = pydicom.data.get_testdata_file("liver_1frame.dcm")
    assert len(medload.scan(liver).errors) == 0


# --- BitsStored: one rule for every codec ------------------------------------------------------

_ENCODERS = {
    "native": None,
    "RLE": ("pydicom", "RLE"),
    "JPEG 2000": ("gdcmconv", "--j2k"),
    "JPEG-LS": ("dcmcjpls", None),
    "JPEG lossless": ("gdcmconv", "--jpeg"),
}


def _bits_case(tmp_path, codec, signed):
    """A 128 x 128 image stored with 16 bits, compressed by ``codec``, then labelled BitsStored 12."""
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    values = (np.arange(128 * 128, dtype=np.int64) * 7 % 9000 - (4500 if signed else 0)).reshape(128, 128)
    values[0, :4] = [-3000, 5000, -2048, 2047] if signed else [5000, 60000, 4095, 100]
    array = values.astype(np.int16 if signed else np.uint16)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = int(signed), 16, 15
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = array.tobytes()
    native = tmp_path / "native.dcm"
    ds.save_as(native)
    path = tmp_path / "in" / "a.dcm"
    path.parent.mkdir(exist_ok=True)
    encoder = _ENCODERS[codec]
    if encoder is None:
        shutil.copy(native, path)
    elif encoder[0] == "pydicom":
        ds.compress(RLELossless)
        ds.save_as(path)
    else:
        if shutil.which(encoder[0]) is None:
            pytest.skip(f"{encoder[0]} is not installed")
        args = [encoder[0], *([encoder[1]] if encoder[1] else []), str(native), str(path)]
        subprocess.run(args, check=True, capture_output=True, timeout=60)
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(path)
    return path, array


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("codec", sorted(_ENCODERS))
def test_values_above_bits_stored_read_alike_whatever_the_codec(tmp_path, codec, signed):
    # Before: native, RLE and JPEG lossless masked a sample to its 12 stored bits (5000 -> 904),
    # JPEG 2000 and JPEG-LS kept the codestream's value (5000, and 60000 wrapped to -5536 in
    # the int16 output chosen for 12 bits): the same pixels gave two volumes by codec.
    path, array = _bits_case(tmp_path, codec, signed)
    expected = array.astype(np.int64) & 0xFFF
    if signed:
        expected = np.where(expected >= 2048, expected - 4096, expected)
    got = medload.load(path).array[0].astype(np.int64)
    np.testing.assert_array_equal(got, expected)
    assert got[0, :4].tolist() == ([-3000 & 0xFFF, 5000 - 4096, -2048, 2047] if signed else [904, 60000 & 0xFFF, 4095, 100])


# --- multi-page TIFF: every page against the first ---------------------------------------------


def _tiff_pages(path, n, odd_page, odd, **kw):
    import tifffile

    with tifffile.TiffWriter(path, **kw) as tw:
        for i in range(n):
            page, extra = np.full((8, 6), i, np.uint16), []
            if i == odd_page:
                page = {
                    "shape": np.full((6, 8), i, np.uint16),
                    "dtype": np.full((8, 6), i % 256, np.uint8),
                    "samples": np.full((8, 6, 3), i, np.uint16),
                    "float": np.full((8, 6), i, np.float32),
                }.get(odd, page)
                extra = [(274, 3, 1, 3, False)] if odd == "orientation" else []
            tw.write(page, metadata=None, contiguous=False, extratags=extra)
    return path


@pytest.mark.parametrize(
    "odd, said",
    [
        ("dtype", "BitsPerSample 8, page 0 has 16"),
        ("samples", "PhotometricInterpretation 2, page 0 has 1"),
        ("float", "BitsPerSample 32, page 0 has 16"),
        ("orientation", "Orientation 3, page 0 has 1"),
        ("shape", "ImageWidth 8, page 0 has 6"),
    ],
)
@pytest.mark.parametrize("bigtiff", [False, True])
def test_a_tiff_page_unlike_the_first_is_refused_not_read_with_the_first_pages_layout(tmp_path, odd, said, bigtiff):
    # Before: tifffile sampled pages 1, 7 and 99, found them like page 0 and decoded page 37
    # with page 0's layout: its uint8 bytes as uint16 (9509 for 37), its float bits as integers,
    # the first third of its RGB samples as grey, its Orientation ignored. (A page of another
    # shape was refused, by Pillow's path after tifffile's RuntimeError.)
    path = _tiff_pages(tmp_path / "stack.tif", 100, 37, odd, bigtiff=bigtiff)
    with pytest.raises(medload.errors.UnsupportedError, match=rf"stack.tif: TIFF page 37 \(of 100\) has {said}"):
        medload.load(path)
    found = medload.scan(tmp_path)
    assert len(found) == 0 and "TIFF page 37" in found.errors[0].message


def test_a_page_unlike_the_first_is_found_past_the_sorting_limit(tmp_path):
    # 2,100 pages (over MAX_TIFF_PAGES, where only tifffile's sample of four pages told a stack)
    path = _tiff_pages(tmp_path / "long.tif", 2100, 1500, "dtype")
    with pytest.raises(medload.errors.UnsupportedError, match=r"TIFF page 1500 \(of 2100\) has BitsPerSample 8"):
        medload.load(path)


def test_a_tiff_whose_pages_agree_still_loads_every_page_oriented(tmp_path):
    import tifffile

    path = tmp_path / "turned.tif"
    with tifffile.TiffWriter(path) as tw:
        for i in range(40):
            tw.write(np.arange(48, dtype=np.uint16).reshape(8, 6) + 100 * i, metadata=None, extratags=[(274, 3, 1, 3, False)])
    vol = medload.load(path)
    assert vol.shape == (40, 8, 6)
    expected = np.arange(48, dtype=np.uint16).reshape(8, 6)[::-1, ::-1]  # Orientation 3: a half turn
    np.testing.assert_array_equal(vol.array[37], expected + 3700)
    np.testing.assert_array_equal(medload.load(_tiff_pages(tmp_path / "plain.tif", 100, -1, "")).array[:, 0, 0], np.arange(100))


# --- found by this round's new mutators (huge_vm) ----------------------------------------------


def _ct(tmp_path, name, value):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    setattr(ds, name, value)
    path = tmp_path / "in" / "ct.dcm"
    path.parent.mkdir(exist_ok=True)
    ds.save_as(path)
    return path


@pytest.mark.parametrize("name, value", [("RescaleIntercept", ["-1024", "5"]), ("RescaleSlope", ["2", "3"])])
def test_a_rescale_value_of_several_values_is_refused_not_read_as_absent(tmp_path, name, value):
    # Before: float() of the two values failed and the default was used: RescaleIntercept
    # "-1024\5" loaded CT_small with intercept 0, every voxel 1024 HU off and labelled HU.
    path = _ct(tmp_path, name, value)
    found = medload.scan(path)
    assert len(found) == 0
    assert f"ct.dcm: {name} (0028,105{3 if name == 'RescaleSlope' else 2}) is [" in found.errors[0].message
    assert "expected one number" in found.errors[0].message


def test_a_window_centre_of_nan_is_dropped_from_meta_and_the_image_loads(tmp_path):
    # Before: the NaN went into meta, the Volume refused meta that is not JSON, and load raised
    # a GeometryError telling to fix ImageOrientationPatient, PixelSpacing and positions.
    path = _ct(tmp_path, "WindowCenter", ["nan", "40"])
    vol = medload.load(path)
    reference = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")).pixel_array.astype(np.int64) - 1024
    np.testing.assert_array_equal(vol.array[0], reference)
    assert "window_center" not in vol.meta
