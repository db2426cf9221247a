"""Modules pass facts, not sentences: no decision depends on the wording of a message."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

import medload
from fixtures.synthetic import write_dicom_series


def _dx_monochrome1(folder, description: str) -> None:
    """One 12-bit MONOCHROME1 DX radiograph whose header window is for the stored values."""
    truth = write_dicom_series(folder, modality="MR", shape=(1, 2, 2), bits_stored=12, seed=3, series_description=description)
    ds = pydicom.dcmread(truth["files"][0])
    ds.Modality = "DX"
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = np.array([[0, 1000], [3000, 4095]], np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 1000, 2000
    ds.save_as(truth["files"][0])


def test_dx_whose_description_says_inverted_gives_the_same_image(tmp_path):
    # De-identification hides the description wherever it appears in messages; a description
    # "inverted" once turned the reader's MONOCHROME1 note into "MONOCHROME1 image [description]
    # ...", and RadiographWindow, which searched that note, inverted again with centre 1000.
    stored = {}
    for name, description in (("plain", "chest pa"), ("inverted", "inverted")):
        _dx_monochrome1(tmp_path / name, description)
        report = medload.convert(tmp_path / name, tmp_path / f"{name}.h5", workers=0, progress=False)
        assert report.ok, report.failed
        store = medload.open(tmp_path / f"{name}.h5")
        rec = store.volumes[0]
        stored[name] = (store.read_slices(0, 0, rec.n_slices), rec.history)
        store.close()
    image, history = stored["inverted"]
    np.testing.assert_array_equal(image, stored["plain"][0])
    window = dict(history)["radiograph_window"]
    assert window["center"] == pytest.approx(3095.0) and window["invert"] is False
    # stored 0 is dense (white) in MONOCHROME1: brightest after windowing, stored 4095 darkest
    assert image[0, 0, 0] == image.max() and image[0, 1, 1] == image.min()


def test_on_gap_waives_spacing_errors_by_kind_not_by_wording(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(5, 4, 4), seed=1)
    (tmp_path / truth["files"][2]).unlink()  # the middle slice
    series = medload.scan(tmp_path)[0]
    with pytest.raises(medload.GeometryError, match="missing slices"):
        medload.load(series)
    vol = medload.load(series, on_gap="interpolate")
    assert vol.shape[0] == 5 and any("interpolated" in p for p in vol.meta["problems"])
