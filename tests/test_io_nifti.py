"""NIfTI reader: scaling, frames, sform/qform, sidecar modality, bad files, world coordinates."""

from __future__ import annotations

import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from fixtures.synthetic import write_dicom_series, write_nifti
from medload.errors import MedloadError, ReadError, UnsupportedError
from medload.io.nifti import is_nifti, load_nifti, scan_nifti
from medload.problems import ProblemKind
from tests.conftest import shared_path


# --- scaling and dtypes -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "expected_dtype"),
    [
        ("int16", 0.5, -3.0, np.float32),
        ("int16", 1.0, -1024.0, np.float32),
        ("uint8", 2.0, None, np.float32),
        ("int16", None, None, np.int16),
        ("uint8", None, None, np.uint8),
        ("float32", None, None, np.float32),
    ],
)
def test_scaling_applied_and_dtype(tmp_path, dtype, slope, inter, expected_dtype):
    truth = write_nifti(tmp_path / "x.nii.gz", shape=(4, 5, 6), dtype=dtype, scl_slope=slope, scl_inter=inter)
    vol = load_nifti(truth["path"])
    assert vol.array.dtype == expected_dtype
    np.testing.assert_array_equal(vol.array, truth["array"])
    if slope is not None:
        stored = truth["stored"].astype(np.float64)
        np.testing.assert_allclose(vol.array, stored * slope + (inter or 0.0), rtol=1e-6)
    assert vol.array.flags.c_contiguous


# --- shapes -----------------------------------------------------------------------------
def test_4d_becomes_frames_first(tmp_path):
    truth = write_nifti(tmp_path / "bold.nii.gz", shape=(5, 4, 6, 7), dtype="int16")
    vol = load_nifti(truth["path"])
    assert vol.shape == (5, 4, 6, 7) and vol.n_frames == 5 and vol.spatial_shape == (4, 6, 7)
    raw = np.asanyarray(nib.load(truth["path"]).dataobj)  # (i, j, k, t)
    for t in (0, 4):
        np.testing.assert_array_equal(vol.array[t], raw[..., t].T)
    assert scan_nifti(truth["path"]).shape == vol.shape


def test_single_frame_4d_is_3d_and_2d_gets_a_slice_axis(tmp_path):
    image = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1), np.eye(4))
    nib.save(image, tmp_path / "one.nii")
    vol = load_nifti(tmp_path / "one.nii")
    assert vol.shape == (5, 4, 3) == scan_nifti(tmp_path / "one.nii").shape
    assert vol.array[2, 1, 0] == 0 * 20 + 1 * 5 + 2  # NIfTI voxel (i=0, j=1, k=2)
    nib.save(nib.Nifti1Image(np.arange(12, dtype=np.uint8).reshape(3, 4), np.eye(4)), tmp_path / "flat.nii")
    flat = load_nifti(tmp_path / "flat.nii")
    assert flat.shape == (1, 4, 3) == scan_nifti(tmp_path / "flat.nii").shape
    assert flat.array[0, 3, 2] == 2 * 4 + 3


def test_more_than_four_dimensions_is_refused_naming_the_file(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 2, 3), np.int16), np.eye(4)), tmp_path / "five.nii")
    with pytest.raises(UnsupportedError, match="five.nii"):
        load_nifti(tmp_path / "five.nii")


# --- geometry ---------------------------------------------------------------------------
@pytest.mark.parametrize("four_d", [False, True])
def test_voxels_land_at_the_world_coordinates_nibabel_gives(tmp_path, four_d):
    """Independent check: NIfTI voxel (i, j, k) at img.affine @ (i, j, k) is medload's (k, j, i)."""
    truth = write_nifti(tmp_path / "geo.nii.gz", shape=(6, 7, 8), four_d=four_d, scl_slope=0.25, scl_inter=10.0)
    vol = load_nifti(truth["path"])
    image = nib.load(truth["path"])
    raw = image.get_fdata()
    rng = np.random.default_rng(1)
    for _ in range(20):
        i, j, k = (int(rng.integers(0, n)) for n in image.shape[:3])
        world_nib = image.affine @ [i, j, k, 1]
        world_med = vol.affine @ [k, j, i, 1]
        np.testing.assert_allclose(world_med, world_nib, atol=1e-9)
        if four_d:
            assert vol.array[2, k, j, i] == pytest.approx(raw[i, j, k, 2])
        else:
            assert vol.array[k, j, i] == pytest.approx(raw[i, j, k])
    np.testing.assert_allclose(vol.affine, truth["affine"])
    assert vol.spacing == (2.0, 0.9, 0.7)


def test_sform_wins_over_a_different_qform_and_says_so(tmp_path):
    sform = np.diag([2.0, 1.0, 1.0, 1.0])
    qform = np.diag([2.0, 1.0, 1.0, 1.0])
    qform[:3, 3] = [5.0, 0.0, 0.0]
    truth = write_nifti(tmp_path / "both.nii", affine=sform, qform_affine=qform)
    vol = load_nifti(truth["path"])
    np.testing.assert_allclose(vol.affine, sform)
    assert vol.meta["affine_source"] == "sform"
    assert ProblemKind.SFORM_QFORM_DISAGREE in {p.kind for p in vol.problems}


def test_qform_used_when_sform_code_is_zero(tmp_path):
    qform = np.diag([3.0, 1.5, 1.25, 1.0])
    qform[:3, 3] = [-10.0, 20.0, 30.0]
    truth = write_nifti(tmp_path / "q.nii.gz", affine=np.diag([9.0, 9.0, 9.0, 1.0]), qform_affine=qform, sform_code=0)
    vol = load_nifti(truth["path"])
    np.testing.assert_allclose(vol.affine, qform, atol=1e-5)
    assert vol.meta["affine_source"] == "qform"
    assert vol.meta["problems"] == []


def test_no_sform_no_qform_is_reported(tmp_path):
    truth = write_nifti(tmp_path / "bare.nii", sform_code=0, qform_code=0)
    vol = load_nifti(truth["path"])
    assert vol.meta["affine_source"] == "pixdim"
    assert vol.spacing == (2.0, 0.9, 0.7)
    assert [p.kind for p in vol.problems] == [ProblemKind.NO_WORLD_GEOMETRY]


def test_metre_units_are_converted_to_mm(tmp_path):
    image = nib.Nifti1Image(np.zeros((2, 3, 4), np.int16), np.diag([0.001, 0.001, 0.002, 1.0]))
    image.header.set_xyzt_units("meter")
    nib.save(image, tmp_path / "m.nii")
    vol = load_nifti(tmp_path / "m.nii")
    assert vol.spacing == (2.0, 1.0, 1.0)
    assert any(p.kind is ProblemKind.UNITS_CONVERTED and "meter" in p.message for p in vol.problems)


def test_round_trip_through_to_nifti_is_exact(tmp_path):
    truth = write_nifti(tmp_path / "rt.nii.gz", shape=(3, 5, 6, 7), dtype="int16", scl_slope=0.5)
    vol = load_nifti(truth["path"])
    nib.save(vol.to_nifti(), tmp_path / "back.nii.gz")
    again = load_nifti(tmp_path / "back.nii.gz")
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_allclose(again.affine, vol.affine, atol=1e-6)


def test_nifti2_and_big_endian_read_the_same(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    affine = np.diag([0.5, 0.75, 2.0, 1.0])
    nib.save(nib.Nifti2Image(data, affine), tmp_path / "two.nii")
    big = nib.Nifti1Image(data, affine, header=nib.Nifti1Header(endianness=">"))
    big.set_data_dtype(np.int16)
    nib.save(big, tmp_path / "big.nii.gz")
    assert nib.load(tmp_path / "big.nii.gz").header.endianness == ">"
    for name in ("two.nii", "big.nii.gz"):
        vol = load_nifti(tmp_path / name)
        np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))
        assert vol.array.dtype.isnative and vol.spacing == (2.0, 0.75, 0.5)


def test_loaded_volume_owns_its_memory_and_pickles(tmp_path):
    import pickle

    truth = write_nifti(tmp_path / "p.nii", shape=(3, 4, 5))
    vol = load_nifti(truth["path"])
    assert not isinstance(vol.array, np.memmap)  # no open file behind the volume
    again = pickle.loads(pickle.dumps(vol))
    np.testing.assert_array_equal(again.array, truth["array"])
    assert again.meta == vol.meta


# --- modality and meta ------------------------------------------------------------------
def test_modality_from_sidecar_and_acquisition_fields_in_ms(tmp_path):
    sidecar = {
        "Modality": "MR",
        "EchoTime": 0.0042,
        "RepetitionTime": 2.3,
        "MagneticFieldStrength": 3,
        "Manufacturer": "Siemens",
        "InstitutionName": "Fake General Hospital",
        "PatientName": "Doe^Jane",
        "AcquisitionTime": "23:59:59.1",
    }
    truth = write_nifti(tmp_path / "scan.nii.gz", sidecar=sidecar)
    vol = load_nifti(truth["path"])
    assert vol.modality == "MR" and scan_nifti(truth["path"]).modality == "MR"
    assert vol.meta["echo_time"] == pytest.approx(4.2)
    assert vol.meta["repetition_time"] == pytest.approx(2300.0)
    assert vol.meta["magnetic_field_strength"] == 3 and vol.meta["manufacturer"] == "Siemens"
    assert vol.meta["intensity"] == "scanner units"
    text = json.dumps(vol.meta)
    for identifying in ("Fake General Hospital", "Doe^Jane", "23:59:59.1"):
        assert identifying not in text


@pytest.mark.parametrize(
    ("name", "sidecar", "expected"),
    [
        ("sub-01_T1w.nii.gz", {}, "MR"),
        ("sub-01_task-rest_bold.nii.gz", {"TaskName": "rest"}, "MR"),
        ("sub-01_ct.nii.gz", {}, "CT"),
        ("sub-01_ct.nii.gz", None, "CT"),  # BIDS name alone
        ("plain_ct.nii.gz", None, "unknown"),  # not a BIDS name: "_ct" means nothing
        ("brain.nii.gz", {"Modality": "mr"}, "MR"),
    ],
)
def test_modality_from_bids_name(tmp_path, name, sidecar, expected):
    truth = write_nifti(tmp_path / name, sidecar=sidecar)
    assert load_nifti(truth["path"]).modality == expected
    assert scan_nifti(truth["path"]).modality == expected


def test_caller_modality_used_without_sidecar_and_wins_with_a_note(tmp_path):
    plain = write_nifti(tmp_path / "a.nii.gz")
    vol = load_nifti(plain["path"], modality="CT")
    assert vol.modality == "CT" and vol.meta["intensity"] == "HU" and vol.meta["problems"] == []
    tagged = write_nifti(tmp_path / "b.nii.gz", sidecar={"Modality": "MR"})
    vol = load_nifti(tagged["path"], modality="CT")
    assert vol.modality == "CT"
    assert any(p.kind is ProblemKind.MODALITY_OVERRIDDEN and "'CT'" in p.message and "'MR'" in p.message for p in vol.problems)


def test_keys_relative_to_root_and_bids_subject(tmp_path):
    a = write_nifti(tmp_path / "ds" / "sub-07" / "ses-1" / "anat" / "sub-07_ses-1_T1w.nii.gz", sidecar={})
    b = write_nifti(tmp_path / "ds" / "sub-07" / "ses-1" / "anat" / "sub-07_ses-1_T2w.nii.gz", sidecar={})
    c = write_nifti(tmp_path / "ds" / "sub-08" / "ses-1" / "anat" / "sub-08_ses-1_T1w.nii.gz", sidecar={})
    root = tmp_path / "ds"
    sa, sb, sc = (scan_nifti(t["path"], root=root, phi_key="k") for t in (a, b, c))
    assert sa.patient_key == sb.patient_key != sc.patient_key
    assert sa.study_key == sb.study_key != sc.study_key
    assert len({sa.series_key, sb.series_key, sc.series_key}) == 3
    assert sa.patient_key.startswith("pat-") and sa.series_key.startswith("ser-") and sa.study_key.startswith("stu-")
    # The same export moved to another place gives the same keys; keys name the source folder
    # (medload.io.sources), so a folder of another name is another dataset: other keys.
    shutil.copytree(root, tmp_path / "elsewhere" / "ds")
    moved = scan_nifti(
        tmp_path / "elsewhere" / "ds" / "sub-07" / "ses-1" / "anat" / "sub-07_ses-1_T1w.nii.gz",
        root=tmp_path / "elsewhere" / "ds",
        phi_key="k",
    )
    assert (moved.series_key, moved.patient_key) == (sa.series_key, sa.patient_key)
    shutil.copytree(root, tmp_path / "ds002")
    other = scan_nifti(
        tmp_path / "ds002" / "sub-07" / "ses-1" / "anat" / "sub-07_ses-1_T1w.nii.gz", root=tmp_path / "ds002", phi_key="k"
    )
    assert other.series_key != sa.series_key and other.patient_key != sa.patient_key
    # Another secret gives other keys; load keeps the keys scan made.
    assert scan_nifti(a["path"], root=root, phi_key="other").series_key != sa.series_key
    vol = load_nifti(sa)
    assert vol.meta["series_key"] == sa.series_key == vol.meta["source_key"]
    assert vol.meta["patient_key"] == sa.patient_key and vol.meta["source"] == "nifti"
    assert vol.meta["description"] == "sub-07_ses-1_T1w" == sa.description


def test_same_file_name_in_two_folders_gives_two_series_keys(tmp_path):
    a = scan_nifti(write_nifti(tmp_path / "p1" / "image.nii.gz")["path"])
    b = scan_nifti(write_nifti(tmp_path / "p2" / "image.nii.gz")["path"])
    assert a.series_key != b.series_key and a.patient_key != b.patient_key
    assert load_nifti(a.files[0]).meta["series_key"] == a.series_key


def test_scan_reads_header_only_and_matches_load(tmp_path):
    truth = write_nifti(tmp_path / "s.nii.gz", shape=(9, 10, 11), scl_slope=2.0)
    series = scan_nifti(truth["path"])
    vol = load_nifti(series)
    assert series.kind == "nifti" and series.files == (str((tmp_path / "s.nii.gz").resolve()),)
    assert series.shape == vol.shape == (9, 10, 11)
    assert series.spacing == vol.spacing
    assert series.source_hash == vol.meta["source_hash"] and series.source_hash.startswith("src-")
    json.dumps(series.summary())


# --- detection and bad files ------------------------------------------------------------
def test_is_nifti_by_suffix_and_magic(tmp_path):
    truth = write_nifti(tmp_path / "x.nii")
    no_suffix = tmp_path / "IMG0001"
    shutil.copy(truth["path"], no_suffix)
    dicom = write_dicom_series(tmp_path / "dcm", shape=(1, 4, 4))["files"][0]
    (tmp_path / "notes.txt").write_text("hello")
    assert is_nifti(truth["path"]) and is_nifti(tmp_path / "X.NII.GZ")
    assert is_nifti(no_suffix) and not is_nifti(no_suffix, check_magic=False)
    assert not is_nifti(dicom) and not is_nifti(tmp_path / "notes.txt")
    assert load_nifti(no_suffix).shape == (6, 7, 8)


def test_truncated_gz_names_the_file(tmp_path):
    truth = write_nifti(tmp_path / "full.nii.gz", shape=(20, 30, 40), dtype="float32")
    data = (tmp_path / "full.nii.gz").read_bytes()
    broken = tmp_path / "cut.nii.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="cut.nii.gz") as info:
        load_nifti(broken)
    assert "truncated" in str(info.value)
    assert scan_nifti(broken).shape == (20, 30, 40)  # the header alone is still whole
    assert load_nifti(truth["path"]).shape == (20, 30, 40)


def test_truncated_uncompressed_names_the_file(tmp_path):
    write_nifti(tmp_path / "full.nii", shape=(10, 10, 10))
    data = (tmp_path / "full.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:1000])
    with pytest.raises(ReadError, match="cut.nii"):
        load_nifti(tmp_path / "cut.nii")


def test_gz_suffix_without_gzip_names_the_file_and_the_fix(tmp_path):
    write_nifti(tmp_path / "plain.nii")
    shutil.copy(tmp_path / "plain.nii", tmp_path / "liar.nii.gz")
    with pytest.raises(ReadError, match=r"liar\.nii\.gz.*not gzip"):
        scan_nifti(tmp_path / "liar.nii.gz")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("garbage.nii", b"this is not a nifti file at all" * 20),
        ("empty.nii", b""),
        ("garbage.nii.gz", gzip.compress(b"\x00" * 400, mtime=0)),
    ],
)
def test_garbage_names_the_file(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    with pytest.raises(ReadError, match=name.replace(".", r"\.")):
        load_nifti(tmp_path / name)
    with pytest.raises(MedloadError, match=name.replace(".", r"\.")):
        scan_nifti(tmp_path / name)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ReadError, match="nope.nii.gz"):
        load_nifti(tmp_path / "nope.nii.gz")
    with pytest.raises(ReadError, match="folder"):
        load_nifti(tmp_path)


# --- real data --------------------------------------------------------------------------
def test_real_ct_nifti_and_mask_grid():
    ct = load_nifti(shared_path("totalsegmentator_ct", "example_ct_sm.nii.gz"), modality="CT")
    image = nib.load(shared_path("totalsegmentator_ct", "example_ct_sm.nii.gz"))
    assert ct.shape == tuple(reversed(image.shape))
    np.testing.assert_allclose(ct.affine[:, [2, 1, 0, 3]], image.affine)
    assert ct.meta["intensity"] == "HU" and float(ct.array.min()) <= -900  # air in HU
    seg = scan_nifti(shared_path("totalsegmentator_ct", "example_seg_dicom.nii.gz"))
    assert seg.shape == (20, 512, 512)


@pytest.mark.parametrize("voxel_mm", [1e-3, 1e-6])
@pytest.mark.parametrize("units", ["mm", "micron"])
def test_micrometre_voxels_load_and_scan_like_the_grid_check_accepts(tmp_path, voxel_mm, units):
    # micro-CT / microscopy: 1 um and 1 nm voxels. The reader refused them as an "unusable
    # affine" by an absolute determinant test (1e-18 < 1e-12) that check_grid and Volume do not use.
    scale = 1e3 if units == "micron" else 1.0  # the header's numbers are in its own units
    affine = np.diag([voxel_mm * scale, 2 * voxel_mm * scale, 3 * voxel_mm * scale, 1.0])
    affine[:3, 3] = [5 * voxel_mm * scale, 0.0, -1.0 * voxel_mm * scale]
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units(units)
    path = tmp_path / "micro.nii.gz"
    nib.save(image, path)
    series = scan_nifti(path)
    vol = load_nifti(series)
    assert series.shape == vol.shape == (4, 5, 6)[::-1]
    np.testing.assert_allclose(series.spacing, vol.spacing, rtol=1e-12)
    # (z, y, x) array of nibabel's (i, j, k): the world of voxel (z, y, x) is nibabel's of (x, y, z)
    np.testing.assert_array_equal(vol.array, array.transpose(2, 1, 0))
    np.testing.assert_allclose(vol.spacing, (3 * voxel_mm, 2 * voxel_mm, voxel_mm), rtol=1e-6)  # the sform is float32
    world = vol.affine @ [3, 4, 5, 1]
    np.testing.assert_allclose(world[:3], (affine @ [5, 4, 3, 1])[:3] / scale, rtol=1e-6, atol=0)


def test_collinear_nifti_axes_are_refused_by_the_grid_check_naming_the_file(tmp_path):
    affine = np.array([[1.0, 1.0, 0, 0], [0, 1e-9, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # i and j both along x
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), affine), tmp_path / "flat.nii")
    with pytest.raises(ReadError, match=r"flat\.nii \(sform\): the voxel grid's axes are \(nearly\) parallel"):
        load_nifti(tmp_path / "flat.nii")
