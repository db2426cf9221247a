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
