"""Special objects read as dcm2niix reads them, or refused (issue 13): mosaics without the CSA
header, RT Dose, Modality LUT, radiograph spacing, 32-bit RGB. Files are written in code
(``fixtures/special.py``) to reproduce each header pattern of real exports."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pytest

from fixtures.special import siemens_mosaic
from medload.errors import ReadError
from medload.io import load, scan
from tests.test_io_reference import DCM2NIIX, match


@pytest.mark.parametrize("count_tag, slices, source", [
    ("acquisition_matrix", 16, "AcquisitionMatrix"),
    ("number_of_images", 14, "(0019,100A)"),
    ("ref_acq_times", 12, "(0019,1029)"),
])
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
        subprocess.run([DCM2NIIX, "-z", "n", "-f", "ref", "-o", str(tmp_path), str(tmp_path / "in")],
                       check=True, capture_output=True, timeout=120)
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
