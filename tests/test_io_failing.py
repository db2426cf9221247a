"""Broken input gives a documented result or a MedloadError naming the file (issue 2, point 5).

Real broken series: ``dicom2nifti/failing`` (gantry tilt, missing slices, a "volume" of one
position, two slices, two orientations in one series UID). Deliberately broken files:
pydicom's test files. And a folder holding all of them beside good series still scans to
the good series.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medload.errors import GeometryError, MedloadError, ReadError
from medload.geometry import lps_to_ras
from medload.io import load, scan
from medload.problems import ProblemKind
from tests.conftest import shared_path
from tests.test_io_reference import DCM2NIIX, match

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def failing(*parts: str) -> Path:
    return shared_path("dicom2nifti", "failing", *parts)


def positions_lps(folder: Path) -> dict[str, np.ndarray]:
    return {
        f.name: np.array([float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient])
        for f in sorted(folder.iterdir())
    }


def dcm2niix(folder: Path, out: Path) -> list[Path]:
    if DCM2NIIX is None:
        pytest.skip("dcm2niix not on PATH")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [DCM2NIIX, "-z", "n", "-b", "n", "-f", "%s_%p", "-o", str(out), str(folder)], check=True, capture_output=True, timeout=120
    )
    return sorted(out.glob("*.nii"))


def test_gantry_tilt_keeps_the_sheared_affine_and_says_so():
    folder = failing("gantrytilting", "001")
    series = scan(folder)
    assert len(series) == 1
    assert any(p.kind is ProblemKind.GANTRY_TILT and "gantry tilt of 14.00 degrees" in p.message for p in series[0].problems)
    vol = load(series[0])
    assert vol.shape == (4, 512, 512)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(14.0, abs=0.01)
    assert any(p.kind is ProblemKind.GANTRY_TILT and "dcm2niix instead resamples" in p.message for p in vol.problems)
    # Every slice's first voxel is exactly where its file says it is (a sheared affine).
    world = sorted(positions_lps(folder).values(), key=lambda p: p[2])
    for z, p in enumerate(world):
        expected = (lps_to_ras(np.eye(4)) @ np.r_[p, 1.0])[:3]
        np.testing.assert_allclose(vol.affine @ [z, 0, 0, 1], np.r_[expected, 1.0], atol=1e-4)
    # and rows are still along the (tilted) column cosine: the step is not along the normal
    normal = np.cross(vol.affine[:3, 2], vol.affine[:3, 1])
    cos = abs(vol.affine[:3, 0] @ normal) / np.linalg.norm(vol.affine[:3, 0]) / np.linalg.norm(normal)
    assert np.degrees(np.arccos(cos)) == pytest.approx(14.0, abs=0.01)


def test_missing_slice_is_refused_naming_the_files_or_interpolated():
    folder = failing("sliceincrement", "001")
    with pytest.raises(GeometryError) as err:
        load(folder)
    text = str(err.value)
    assert "missing slices: 1 slice(s)" in text and "5.000 mm" in text
    assert "IM-0001-0009-0001.dcm" in text and "IM-0001-0010-0001.dcm" in text
    assert "on_gap='interpolate'" in text
    vol = load(folder, on_gap="interpolate")
    assert vol.shape == (5, 512, 512) and vol.spacing[0] == pytest.approx(5.0, abs=1e-3)
    files = sorted(folder.iterdir())
    acquired = np.stack([pydicom.dcmread(f).pixel_array.astype(float) for f in files])
    slopes = [float(pydicom.dcmread(f, stop_before_pixels=True).RescaleIntercept) for f in files]
    hu = acquired + np.array(slopes)[:, None, None]
    np.testing.assert_array_equal(vol.array[[0, 1, 2, 4]], hu)
    np.testing.assert_allclose(vol.array[3], np.rint((hu[2] + hu[3]) / 2), atol=0.5)
    assert any(p.kind is ProblemKind.SLICES_INTERPOLATED for p in vol.problems)


def test_tilted_series_with_a_missing_slice_is_refused():
    folder = failing("sliceincrement", "002")
    with pytest.raises(GeometryError, match="missing slices") as err:
        load(folder)
    assert "IM-0001-0003.dcm" in str(err.value) and "IM-0001-0005.dcm" in str(err.value)
    vol = load(folder, on_gap="interpolate")
    assert vol.shape == (5, 512, 512)
    assert any(p.kind is ProblemKind.GANTRY_TILT and "gantry tilt of 15.50 degrees" in p.message for p in vol.problems)


def test_images_at_one_position_become_frames(tmp_path):
    folder = failing("notavolume", "001")
    series = scan(folder)
    assert len(series) == 1 and series[0].shape == (4, 1, 512, 512)
    vol = load(series[0])
    assert vol.meta["frames_axis"] == "time"
    # frames ordered by InstanceNumber (23..26) as dcm2niix orders them, never by file name
    # nor by AcquisitionNumber (15..12 here: it runs the other way)
    inst = {f.name: int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in folder.iterdir()}
    by_instance = sorted(inst, key=inst.get)
    for t, name in enumerate(by_instance):
        ds = pydicom.dcmread(folder / name)
        np.testing.assert_array_equal(vol.array[t, 0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    refs = dcm2niix(folder, tmp_path)
    ok, why = match(nib.load(refs[0]), [("medload", vol)])  # every frame, in dcm2niix's order
    assert ok, why


def test_two_slice_series_loads_as_dcm2niix_does(tmp_path):
    folder = failing("slicecount", "001")
    vol = load(folder)
    assert vol.shape == (2, 256, 256) and vol.meta["problems"] == []
    refs = dcm2niix(folder, tmp_path)
    ok, why = match(nib.load(refs[0]), [("medload", vol)])
    assert ok, why


def test_two_orientations_in_one_folder_are_two_volumes(tmp_path):
    folder = failing("sliceorientation", "001")
    found = scan(folder)
    assert len(found) == 2 and all(s.shape[0] == 2 for s in found)
    with pytest.raises(ReadError, match="holds 2 volumes"):
        load(folder)
    vols = [("medload", load(s)) for s in found]
    for ref in dcm2niix(folder, tmp_path):
        ok, why = match(nib.load(ref), vols)
        assert ok, f"{ref.name}: {why}"


# pydicom's deliberately broken files: what each gives. "skip:<kind>" = scan counts it under
# that kind and returns no series; "error" = scan records it in .errors; load raises
# ReadError naming the file in both cases and for "load-error".
BROKEN = {
    "MR_truncated.dcm": "error",  # pixel data cut short: unreadable at scan (issue 11)
    "badVR.dcm": "error",  # NumberOfFrames '1A' does not parse: how many images is unknown
    "JPEG-lossy.dcm": "load-error",  # 12-bit JPEG every installed decoder rejects
    "no_meta_group_length.dcm": "error",
    "UN_sequence.dcm": "error",
    "no_meta.dcm": "skip:not DICOM",  # starts with a tag of no known group
    "meta_missing_tsyntax.dcm": "skip:not DICOM",  # preamble without the DICM marker
    "rtplan_truncated.dcm": "error",  # a truncated file is unreadable, whatever it holds (issue 11)
    "reportsi_with_empty_number_tags.dcm": "skip:non-image object 1.2.840.10008.5.1.4.1.1.88.11",
    "empty_charset_LEI.dcm": "skip:object without image (no Rows/Columns)",
    "ExplVR_BigEndNoMeta.dcm": "skip:object without image (no Rows/Columns)",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_pydicom_files(name):
    path = PYDICOM_FILES / name
    if not path.exists():
        pytest.skip(f"{name} not shipped with this pydicom")
    found = scan(path)
    outcome = BROKEN[name]
    if outcome.startswith("skip:"):
        assert len(found) == 0 and found.skipped[outcome[5:]] == 1 and not found.errors
    elif outcome == "error":
        assert len(found) == 0 and [Path(e.path).name for e in found.errors] == [name]
        assert name in found.errors[0].message
    else:
        assert len(found) == 1
    with pytest.raises(ReadError) as err:
        load(path)
    assert name in str(err.value)


def test_scan_of_broken_and_good_together_returns_the_good(tmp_path):
    src = shared_path("dicom2nifti")
    shutil.copytree(src / "failing", tmp_path / "failing")
    shutil.copytree(src / "generic" / "anatomical" / "001", tmp_path / "good_mr")
    shutil.copytree(shared_path("totalsegmentator_ct", "example_ct_dicom"), tmp_path / "good_ct")
    for name in BROKEN:
        if (PYDICOM_FILES / name).exists():
            shutil.copy(PYDICOM_FILES / name, tmp_path / name)
    found = scan(tmp_path)

    def holding(folder: str):
        return [s for s in found if any(Path(f).parent == tmp_path / folder for f in s.files)]

    # failing/slicecount holds 2 of the same instances (same UIDs) as good_mr: one series,
    # the copies dropped.
    assert [s.shape for s in holding("good_mr")] == [(4, 256, 256)]
    assert [s.shape for s in holding("good_ct")] == [(20, 512, 512)]
    assert load(holding("good_ct")[0]).array.shape == (20, 512, 512)
    assert load(holding("good_mr")[0]).array.shape == (4, 256, 256)
    assert sorted(Path(e.path).name for e in found.errors) == sorted(n for n, o in BROKEN.items() if o == "error")
    # every series found either loads or refuses with a MedloadError; nothing else escapes
    outcomes = {}
    for s in found:
        try:
            outcomes[s.series_key] = load(s).shape
        except MedloadError as exc:
            outcomes[s.series_key] = type(exc).__name__
    assert sum(o == "GeometryError" for o in outcomes.values()) == 2  # the two sliceincrement series
    assert sum(o == "ReadError" for o in outcomes.values()) == 1  # JPEG-lossy (MR_truncated: unreadable at scan)


def test_where_dcm2niix_differs_on_broken_series_and_why(tmp_path):
    """The failing/ series where dcm2niix's output cannot be matched, each reason checked.

    * gantrytilting: dcm2niix writes ``4_.nii`` with a slice column of 4.851 mm along z (the
      5 mm table step times cos 14 deg) and ``4__Tilt_1.nii`` resampled to 521 rows; the files
      say the slices are 5 mm apart. medload keeps the true positions (sheared affine).
    * sliceincrement/001: dcm2niix writes ``2_dicom2nifti.nii`` with 4 slices 5 mm apart, but
      the last slice is 10 mm from the third: slice 3 is placed 5 mm from where it was
      acquired. medload refuses (or interpolates a 5-slice grid on request); dcm2niix's
      ``_Eq_1`` version resamples to 6 slices of 4 mm.
    """
    folder = failing("gantrytilting", "001")
    plain = nib.load(next(p for p in dcm2niix(folder, tmp_path / "tilt") if "Tilt" not in p.name))
    ipp = sorted(positions_lps(folder).values(), key=lambda p: p[2])
    ras = [lps_to_ras(np.eye(4))[:3, :3] @ p for p in ipp]
    vol = load(folder)
    ours = [(vol.affine @ [z, 0, 0, 1])[:3] for z in range(4)]
    # dcm2niix's slice k lies at -k * 0.149 mm from the file's position along z
    k_axis = int(np.argmax(np.abs(plain.affine[2, :3])))
    assert plain.affine[2, k_axis] == pytest.approx(4.851, abs=1e-3)
    # slice 3 relative to slice 0: dcm2niix says 3 x 4.851 mm superior, the files 3 x 5 mm
    assert abs(3 * plain.affine[2, k_axis]) == pytest.approx(14.553, abs=0.01)
    assert ras[3][2] - ras[0][2] == pytest.approx(15.0, abs=1e-3)
    assert max(np.abs(np.array(ours) - np.array(ras)).max(axis=1)) < 1e-4

    folder = failing("sliceincrement", "001")
    plain = nib.load(next(p for p in dcm2niix(folder, tmp_path / "gap") if "Eq" not in p.name))
    z_files = sorted(p[2] for p in positions_lps(folder).values())
    assert np.diff(z_files) == pytest.approx([5, 5, 10], abs=1e-3)
    k_axis = int(np.argmax(np.abs(plain.affine[2, :3])))
    assert abs(plain.affine[2, k_axis]) == pytest.approx(5.0, abs=1e-3)  # claims 5 mm for the 10 mm step
