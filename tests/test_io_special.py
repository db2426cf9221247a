"""Special objects read as dcm2niix reads them, or refused (issue 13): mosaics without the CSA
header, RT Dose, Modality LUT, radiograph spacing, 32-bit RGB. Files are written in code
(``fixtures/special.py``) to reproduce each header pattern of real exports."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from fixtures.special import (
    modality_lut_image,
    radiograph,
    rgb32_secondary_capture,
    rt_dose,
    siemens_mosaic,
    write_image,
)
from medload.errors import GeometryError, ReadError
from medload.io import load, scan
from tests.test_io_reference import DCM2NIIX, match


@pytest.mark.parametrize(
    "count_tag, slices, source",
    [
        ("acquisition_matrix", 16, "AcquisitionMatrix"),
        ("number_of_images", 14, "(0019,100A)"),
        ("ref_acq_times", 12, "(0019,1029)"),
    ],
)
def test_mosaic_without_csa_header_is_cut_into_its_slices(tmp_path, count_tag, slices, source):
    truth = siemens_mosaic(tmp_path / "in" / "m.dcm", count_tag=count_tag, slices=None if slices == 16 else slices)
    vol = load(truth["file"])
    assert vol.shape == (slices, 8, 8)
    np.testing.assert_array_equal(vol.array, truth["array"])  # tile k is slice k
    assert source in vol.meta["mosaic_tiles_from"] and vol.meta["mosaic_tiles"] == slices
    # first slice's first pixel where the mosaic's shift puts it (LPS -> RAS), 3 mm steps
    np.testing.assert_allclose(vol.affine[:3, 3], truth["first_position_lps"] * [-1, -1, 1])
    np.testing.assert_allclose(vol.spacing, (3.0, 2.0, 2.0))
    if DCM2NIIX is not None:
        subprocess.run(
            [DCM2NIIX, "-z", "n", "-f", "ref", "-o", str(tmp_path), str(tmp_path / "in")],
            check=True,
            capture_output=True,
            timeout=120,
        )
        ok, why = match(nib.load(tmp_path / "ref.nii"), [("medload", vol)])
        assert ok, why


def test_mosaic_whose_slice_count_is_nowhere_is_refused_naming_the_file(tmp_path):
    truth = siemens_mosaic(tmp_path / "m.dcm", count_tag="none")
    found = scan(tmp_path)
    assert len(found) == 0
    (problem,) = found.errors
    assert problem.path == truth["file"] and "MOSAIC" in problem.message and "(0019,100A)" in problem.message
    with pytest.raises(ReadError, match="slice count is not in the file"):
        load(truth["file"])


@pytest.mark.parametrize("absolute", [False, True])
def test_rt_dose_has_its_grid_and_dose_in_gy(tmp_path, absolute):
    truth = rt_dose(tmp_path / "dose.dcm", absolute=absolute)
    vol = load(truth["file"])
    assert vol.shape == (4, 6, 5) and vol.meta["problems"] == []
    np.testing.assert_allclose(vol.array, truth["dose"], rtol=1e-6)  # stored x DoseGridScaling
    assert vol.meta["intensity"] == "dose in Gy (stored values x DoseGridScaling 2.5e-05)"
    # every frame at ImagePositionPatient + its GridFrameOffsetVector offset (LPS -> RAS)
    for z, lps in enumerate(truth["positions_lps"]):
        np.testing.assert_allclose(vol.affine @ [z, 0, 0, 1], [*(lps * [-1, -1, 1]), 1])
    np.testing.assert_allclose(vol.spacing, (3.0, 2.0, 4.0))


def test_pydicom_rt_dose_test_file_is_placed_and_scaled():
    path = get_testdata_file("rtdose.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's rtdose.dcm is not installed")
    vol = load(path)
    ds = pydicom.dcmread(path)
    assert vol.spacing == (5.0, 10.0, 10.0)  # GridFrameOffsetVector 0, 5, ..., 70 (dcm2niix writes 1 mm)
    np.testing.assert_allclose(vol.array, ds.pixel_array * float(ds.DoseGridScaling), rtol=1e-6)
    assert vol.meta["intensity"].startswith("relative dose")


def test_modality_lut_is_applied_and_recorded(tmp_path):
    truth = modality_lut_image(tmp_path / "lut.dcm")
    vol = load(truth["file"])
    np.testing.assert_array_equal(vol.array[0], truth["values"])  # 3 x stored, from the table
    assert vol.meta["intensity"] == "Modality LUT Sequence (0028,3000) applied to the stored values"


@pytest.mark.parametrize("pixel_spacing, why", [("0\\0", "PixelSpacing is [0.0, 0.0]"), (None, "PixelSpacing absent")])
def test_radiograph_spacing_from_imager_pixel_spacing(tmp_path, pixel_spacing, why):
    truth = radiograph(tmp_path / "dx.dcm", pixel_spacing=pixel_spacing)
    vol = load(truth["file"])
    assert vol.spacing[1:] == (0.139, 0.143)
    assert "ImagerPixelSpacing" in vol.meta["pixel_spacing_from"] and why in vol.meta["pixel_spacing_from"]
    np.testing.assert_array_equal(vol.array[0], truth["values"])


def test_zero_pixel_spacing_without_imager_spacing_is_refused_naming_the_file(tmp_path):
    truth = radiograph(tmp_path / "dx.dcm", imager_spacing=None)
    (problem,) = scan(tmp_path).errors
    assert problem.path == truth["file"] and "PixelSpacing is [0.0, 0.0]" in problem.message
    with pytest.raises(ReadError, match=r"dx\.dcm.*PixelSpacing is \[0\.0, 0\.0\]; expected two positive"):
        load(truth["file"])


def test_singular_grid_error_names_the_file(tmp_path):
    # row and column cosines equal: no plane, no affine. The header check refuses it first
    # (ReadError); load's own guard around the Volume (GeometryError) names the file too.
    file = write_image(
        tmp_path / "flat.dcm",
        np.zeros((3, 3), np.uint16),
        {"ImagePositionPatient": [0, 0, 0], "ImageOrientationPatient": [1, 0, 0, 1, 0, 0], "PixelSpacing": [1, 1]},
    )
    with pytest.raises((ReadError, GeometryError), match=r"flat\.dcm.*ImageOrientationPatient"):
        load(file)


def test_32_bit_rgb_secondary_capture_keeps_its_values_and_writes_nifti(tmp_path):
    truth = rgb32_secondary_capture(tmp_path / "sc.dcm")
    vol = load(truth["file"])
    assert vol.array.dtype == np.uint32 and vol.meta["channels"] == ["R", "G", "B"]
    np.testing.assert_array_equal(np.moveaxis(vol.array[:, 0], 0, -1), truth["rgb"])
    image = vol.to_nifti()
    assert image.get_data_dtype() == np.uint32
    np.testing.assert_array_equal(np.asanyarray(image.dataobj)[..., 0, 0].T, truth["rgb"][..., 0])


def test_a_mosaic_with_pixels_left_over_is_refused_where_dcm2niix_shears_its_tiles(tmp_path):
    # nibabel's test mosaic: 48 slices (7x7 tiles) in 256x256 pixels, 36-pixel tiles and 4 rows
    # and 4 columns left over. No cut is defined: nibabel raises; dcm2niix steps its tile rows by
    # 256 * 256 // 7 = 9362 pixels (36 lines and 146 pixels), so slice 7 on starts mid-line.
    # Flooring the tile size would be one more guess, differing from dcm2niix: refused instead.
    import shutil

    path = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "0.dcm"
    with pytest.raises(ReadError, match=r"256x256 pixels are not 7x7 equal tiles \(4 row\(s\) and 4 column\(s\) left over"):
        load(path)
    if DCM2NIIX is None:
        return
    (tmp_path / "in").mkdir()
    shutil.copy(path, tmp_path / "in" / "0.dcm")
    subprocess.run(
        [DCM2NIIX, "-z", "n", "-f", "ref", "-o", str(tmp_path), str(tmp_path / "in")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    theirs = np.asanyarray(nib.load(tmp_path / "ref.nii").dataobj)[:, ::-1].T  # (slice, row, column) as stored
    mosaic = pydicom.dcmread(path).pixel_array
    assert theirs.shape == (48, 36, 36)
    np.testing.assert_array_equal(theirs[1], mosaic[:36, 36:72])  # first tile row: whole lines
    sheared = mosaic.ravel()[9362 : 9362 + 36 * 256].reshape(36, 256)[:, :36]
    np.testing.assert_array_equal(theirs[7], sheared)  # lines 36-71 from column 146 on: across two tiles
    assert not np.array_equal(theirs[7], mosaic[36:72, :36])  # not the floored tile
