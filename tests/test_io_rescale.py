"""Issue 11 (silently wrong): one CT slice whose RescaleIntercept is missing or renamed into a
private group was read with intercept 0, 1024 HU off, still labelled HU, with no problem."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.special import CT_STORAGE, write_image
from medload.errors import ReadError
from medload.io import load, scan

PIXELS = np.full((3, 8, 8), 1064, np.uint16)  # 40 HU with intercept -1024


def _ct_series(folder, hide_in: int | None = None, private_tag: int | None = None):
    for z in range(3):
        tags = {
            "InstanceNumber": z + 1,
            "ImagePositionPatient": [0, 0, 2.0 * z],
            "Modality": "CT",
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
            "PixelSpacing": [1, 1],
            "RescaleSlope": 1,
            "RescaleIntercept": -1024,
        }
        private = ()
        if z == hide_in:
            del tags["RescaleIntercept"], tags["RescaleSlope"]
            if private_tag is not None:  # the element is there, under a tag nobody reads
                private = ((private_tag, "DS", "-1024"),)
        write_image(folder / f"s{z}.dcm", PIXELS[z], tags, sop_class=CT_STORAGE, private=private)
    return folder


def test_a_sound_ct_series_loads_in_hu(tmp_path):
    vol = load(_ct_series(tmp_path))
    np.testing.assert_array_equal(vol.array, 40)


@pytest.mark.parametrize("private_tag", [None, 0x00431052])
def test_a_slice_without_rescale_among_slices_with_it_is_refused_naming_it(tmp_path, private_tag):
    folder = _ct_series(tmp_path, hide_in=1, private_tag=private_tag)
    (series,) = scan(folder)
    with pytest.raises(ReadError, match=r"s1\.dcm states no RescaleSlope/RescaleIntercept while 2 other"):
        load(series)


def test_a_series_that_states_no_rescale_anywhere_loads_unscaled(tmp_path):
    for z in range(3):
        write_image(
            tmp_path / f"s{z}.dcm",
            PIXELS[z],
            {
                "InstanceNumber": z + 1,
                "ImagePositionPatient": [0, 0, 2.0 * z],
                "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                "PixelSpacing": [1, 1],
            },
        )
    np.testing.assert_array_equal(load(tmp_path).array, 1064)


@pytest.mark.parametrize(
    ("image_dtype", "out_dtype", "intercept"),
    [
        ("uint16", "int16", -1024.0),  # CT as Siemens writes it
        ("uint16", "int16", -32768.0),
        ("int16", "int16", 1000.0),
        ("uint16", "uint16", 0.0),
        ("uint8", "uint8", 3.0),
        ("uint8", "int16", -1024.0),  # wider output: through int32, as before
        ("uint16", "int32", -1024.0),
        (">u2", "int16", -1024.0),  # big-endian pixels (pydicom's array of a big-endian file)
        (">i2", "int16", 0.0),
    ],
)
def test_the_intercept_is_added_as_through_int32(image_dtype, out_dtype, intercept):
    # add_intercept adds same-width pixels in the output's own type (one pass). Every stored
    # value, in the output's range or not, must come out as through int32 with an unsafe cast
    # (the way every slice was rescaled before): both wrap modulo 2**bits.
    from medload.io.codecs import add_intercept

    info = np.iinfo(image_dtype)
    image = np.arange(info.min, info.max + 1, dtype=np.int64).astype(image_dtype).reshape(-1, 256)
    expected = np.empty(image.shape, out_dtype)
    np.add(image, np.int32(intercept), out=expected, casting="unsafe")
    got = np.empty(image.shape, out_dtype)
    add_intercept(image, intercept, got)
    assert np.array_equal(got, expected)
    strided = np.empty((image.shape[0], 512), out_dtype)[:, ::2]  # a mosaic tile, a view: same
    add_intercept(image, intercept, strided)
    assert np.array_equal(strided, expected)
