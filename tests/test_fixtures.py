"""The synthetic generators tell the truth: checked against pydicom and nibabel directly.

Other tests compare medload's readers to what these generators return, so the generators'
truth is checked here independently of medload (DICOM PS3.3 C.7.6.2.1.1 gives the world
position of pixel (r, c) as IPP + c * dx * row_cosine + r * dy * column_cosine, in LPS).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fixtures.make_export import EXPORT, make_export
from fixtures.synthetic import ct_phantom, ct_series, write_dicom_series, write_nifti

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
def test_dicom_truth_matches_the_standard_pixel_positions(tmp_path, orientation):
    truth = write_dicom_series(tmp_path, orientation=orientation, shape=(4, 6, 5), spacing=(3.0, 0.8, 0.6), shuffle=True)
    affine = truth["affine"]
    by_position = []
    for name in truth["files"]:
        ds = pydicom.dcmread(name)
        ipp = np.array(ds.ImagePositionPatient, dtype=float)
        iop = np.array(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        normal = np.cross(iop[0], iop[1])
        by_position.append((float(ipp @ normal), ds, ipp, iop, dy, dx))
    by_position.sort(key=lambda item: item[0])
    assert [Path(p).name for p in truth["files"]] == [Path(item[1].filename).name for item in by_position]
    for z, (_, ds, ipp, iop, dy, dx) in enumerate(by_position):
        pixels = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(truth["array"][z], pixels)
        for r, c in [(0, 0), (5, 0), (0, 4), (3, 2)]:
            world_lps = ipp + c * dx * iop[0] + r * dy * iop[1]
            np.testing.assert_allclose(affine @ [z, r, c, 1], [*(LPS_TO_RAS @ world_lps), 1], atol=1e-6)
    # Slices are 3 mm apart along the normal, the slice axis is axis 0.
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [3.0, 0.8, 0.6])
    np.testing.assert_allclose(affine[:3, 0] / 3.0, truth["slice_normal"], atol=1e-9)


def test_shuffle_hides_the_order_in_names_and_instance_numbers(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(8, 4, 4), shuffle=True)
    names = [Path(p).name for p in truth["files"]]
    assert all("." not in n for n in names)
    assert names != sorted(names)
    numbers = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in truth["files"]]
    assert sorted(numbers) == list(range(1, 9)) and numbers != sorted(numbers)


def test_two_series_in_one_folder_and_settable_phi(tmp_path):
    a = write_dicom_series(tmp_path, shape=(3, 4, 4), seed=1, patient_name="Roe^Richard", patient_id="PID-A")
    b = write_dicom_series(tmp_path, shape=(5, 4, 4), orientation="coronal", modality="MR", seed=2)
    assert a["series_uid"] != b["series_uid"]
    assert len(list(tmp_path.iterdir())) == 8
    ds = pydicom.dcmread(a["files"][0])
    assert str(ds.PatientName) == "Roe^Richard" == a["phi"]["PatientName"] and ds.PatientID == "PID-A"
    assert ds.InstitutionName == a["phi"]["InstitutionName"] and ds.SeriesInstanceUID == a["phi"]["SeriesInstanceUID"]
    mr = pydicom.dcmread(b["files"][0])
    assert mr.Modality == "MR" and mr.pixel_array.dtype == np.uint16 and "RescaleSlope" not in mr
    assert b["array"].min() >= 0


def test_extra_tags_and_implicit_syntax(tmp_path):
    truth = write_dicom_series(
        tmp_path,
        shape=(2, 4, 4),
        transfer_syntax="1.2.840.10008.1.2",
        rescale=(0.5, -10.0),
        extra_tags={"PatientName": "Other^Name", "BodyPartExamined": "HEAD"},
    )
    ds = pydicom.dcmread(truth["files"][1])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert str(ds.PatientName) == "Other^Name" == truth["phi"]["PatientName"]
    np.testing.assert_array_equal(truth["array"][1], ds.pixel_array * 0.5 - 10.0)


@pytest.mark.parametrize("four_d", [False, True])
def test_nifti_truth_matches_nibabel(tmp_path, four_d):
    truth = write_nifti(tmp_path / "a.nii.gz", shape=(4, 5, 6), four_d=four_d, scl_slope=0.5, scl_inter=2.0)
    image = nib.load(truth["path"])
    data = image.get_fdata()
    assert image.shape == tuple(reversed(truth["array"].shape))
    for k, j, i in [(0, 0, 0), (3, 4, 5), (2, 1, 3)]:
        np.testing.assert_allclose(truth["affine"] @ [k, j, i, 1], image.affine @ [i, j, k, 1])
        want = truth["array"][(1, k, j, i) if four_d else (k, j, i)]
        assert data[(i, j, k, 1) if four_d else (i, j, k)] == pytest.approx(float(want))
    assert (tmp_path / "a.nii.gz").read_bytes()[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0: reproducible


def test_ct_phantom_has_realistic_hounsfield_units(tmp_path):
    hu = ct_phantom(16, 64)
    assert hu.dtype == np.int16
    assert (hu == -1000).mean() > 0.2  # air around the body
    body = hu[:, 32, 20:44]
    assert abs(float(np.median(body)) - 40) < 30  # soft tissue
    assert (hu[-1] < -700).sum() > 50 and (hu[0] < -700).sum() < (hu[-1] < -700).sum()  # lungs higher up
    assert (hu > 500).any()  # spine
    truth = ct_series(tmp_path, n_slices=3, size=32)
    ds = pydicom.dcmread(truth["files"][0])
    assert float(ds.RescaleIntercept) == -1024 and ds.pixel_array.dtype == np.uint16 and ds.BitsStored == 12
    hu_back = pydicom.dcmread(truth["files"][1]).pixel_array.astype(np.int32) - 1024
    assert int(hu_back.min()) == -1000 and int(hu_back.max()) > 300  # HU survive the 12-bit storage


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_committed_export_is_what_make_export_writes(tmp_path):
    truth = make_export(tmp_path / "export")
    fresh = _digest(tmp_path / "export")
    assert fresh == _digest(EXPORT), "fixtures/export is stale: run python fixtures/make_export.py"
    assert sum(p.stat().st_size for p in EXPORT.rglob("*") if p.is_file()) < 2_000_000
    # The mask lies on the CT's grid.
    mask = nib.load(truth["labels"]["path"])
    assert mask.shape == tuple(reversed(truth["ct"]["shape"]))
    np.testing.assert_allclose(mask.affine[:, [2, 1, 0, 3]], truth["ct"]["affine"], atol=1e-6)
    assert set(np.unique(np.asanyarray(mask.dataobj))) == {0, 1, 2, 3}
