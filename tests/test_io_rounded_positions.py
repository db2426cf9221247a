"""Slice positions written with few decimals: rounding is not uneven spacing.

Scanners and anonymizers write ImagePositionPatient (DS, at most 16 characters) rounded to 0-4
decimals. A 0.075 mm step written with 2 decimals reads 0.07, 0.08, 0.07 ...; medload refused
such series as "uneven spacing". Now a stack whose every written position lies within its
rounding (half a unit in the last written decimal, per coordinate, along the normal) of one
even grid is even, with the step first-to-last over the steps; anything further off is still
uneven, a missing slice still a gap, and positions written with full precision are judged as
before.

The reference, dcm2niix (nii_dicom_batch.cpp), accepts any step within 0.2 mm of the first
(``kSliceTolerance``) and stacks the slices at the *first* step (``pixdim[3]``): its first
slice is where the file says, its last drifts by the first step's rounding times the slices
(0.2 mm over 40 slices of 0.075 mm written with 2 decimals; 0.5 mm over 12 of 0.25 mm with 1).
medload matches its first slice within 0.01 mm and puts the last one where the file says.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fixtures.special import enhanced_asl
from fixtures.synthetic import write_dicom_series
from medload.errors import GeometryError
from medload.io import load, scan
from medload.problems import ProblemKind

DCM2NIIX = shutil.which("dcm2niix")
ORIGIN = (10.123456, -20.654321, 30.111111)  # no coordinate on a round number


def rounded_series(folder: Path, orientation: str, n: int, step: float, decimals: int, **options) -> dict:
    """A synthetic series whose ImagePositionPatient strings are rounded to ``decimals``.

    ``drop``: index of a slice whose file is removed; ``shift``: (index, mm along the normal)
    moving one slice before rounding; ``pixel``: in-plane spacing (default 0.5 mm).
    """
    drop, shift, pixel = options.get("drop"), options.get("shift"), options.get("pixel", 0.5)
    truth = write_dicom_series(
        folder, orientation=orientation, shape=(n, 8, 6), spacing=(step, pixel, pixel), origin=ORIGIN, seed=n
    )
    rounding = np.full(3, 0.5 * 10.0**-decimals)
    kept = []
    for k, path in enumerate(truth["files"]):
        if k == drop:
            Path(path).unlink()
            continue
        ds = pydicom.dcmread(path)
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        if shift is not None and shift[0] == k:
            position = position + shift[1] * (truth["slice_normal"] * [-1, -1, 1])  # RAS -> LPS
        ds.ImagePositionPatient = [f"{v:.{decimals}f}" for v in position]
        ds.save_as(path)
        kept.append(k)
    written = np.array([[float(v) for v in pydicom.dcmread(truth["files"][k]).ImagePositionPatient] for k in kept])
    truth.update(kept=kept, written_ras=written * [-1, -1, 1], rounding=rounding)
    return truth


def slice_origin(affine: np.ndarray, z: int) -> np.ndarray:
    """World (RAS) of the first pixel's centre of slice ``z`` of a medload ``(z, y, x)`` affine."""
    return (affine @ [z, 0, 0, 1])[:3]


def dcm2niix_slice_origins(folder: Path, out: Path, rows: int) -> tuple[np.ndarray, list[str]]:
    """World of the first stored pixel of each slice in dcm2niix's ``x.nii``, in its slice order,
    and the names of the other files it wrote (an ``_Eq`` or ``_Tilt`` copy)."""
    if DCM2NIIX is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    out.mkdir()
    subprocess.run([DCM2NIIX, "-z", "n", "-b", "n", "-f", "x", "-o", str(out), str(folder)], check=True, capture_output=True)
    image = nib.load(out / "x.nii")
    # dcm2niix flips rows: the DICOM pixel (row 0, column 0) is NIfTI voxel (0, rows - 1, k).
    origins = np.array([(image.affine @ [0, rows - 1, k, 1])[:3] for k in range(image.shape[2])])
    return origins, sorted(f.name for f in out.glob("x?*.nii"))


# (orientation, slices, step mm, decimals written, the extra files dcm2niix writes): each was
# refused as uneven spacing before.
ROUNDED = [
    ("axial", 40, 0.075, 2, []),  # cone-beam CT step, 2 decimals: steps 0.07 / 0.08
    ("oblique", 21, 0.075, 2, []),
    ("axial", 12, 0.25, 1, []),  # steps 0.2 / 0.3
    ("oblique", 12, 0.3, 1, ["x_Tilt_1.nii"]),  # dcm2niix reads a 1.5 degree gantry tilt into the rounding
    ("axial", 10, 2.5, 0, ["x_Eq_1.nii"]),  # whole millimetres, steps 2 / 3: over dcm2niix's 0.2 mm, resampled
]


@pytest.mark.parametrize(("orientation", "n", "step", "decimals", "extra"), ROUNDED)
def test_rounded_positions_load_even_at_the_written_first_and_last_slice(tmp_path, orientation, n, step, decimals, extra):
    truth = rounded_series(tmp_path / "dicom", orientation, n, step, decimals)
    volume = load(tmp_path / "dicom")
    written, normal = truth["written_ras"], truth["slice_normal"]
    along = float((written[-1] - written[0]) @ normal) / (n - 1)
    assert volume.shape == (n, 8, 6)
    np.testing.assert_array_equal(volume.array.astype(np.float32), truth["array"])
    # even step along the normal, first to last: no shear from the rounding of the other coordinates
    np.testing.assert_allclose(volume.affine[:3, 0], normal * along, atol=1e-9)
    assert volume.spacing[0] == pytest.approx(along, abs=1e-6)
    np.testing.assert_allclose(slice_origin(volume.affine, 0), written[0], atol=1e-9)
    assert float((slice_origin(volume.affine, n - 1) - written[-1]) @ normal) == pytest.approx(0.0, abs=1e-9)
    # every slice within the rounding of where the scanner put it
    limit = 2 * float(np.linalg.norm(truth["rounding"]))
    for z in range(n):
        assert np.linalg.norm(slice_origin(volume.affine, z) - slice_origin(truth["affine"], z)) <= limit
    kinds = [p.kind for p in volume.problems]
    assert ProblemKind.POSITIONS_ROUNDED in kinds and ProblemKind.GANTRY_TILT not in kinds
    # scan says the same step as load
    assert scan(tmp_path / "dicom")[0].spacing[0] == pytest.approx(along, abs=1e-6)

    # dcm2niix: the same first slice (within 0.01 mm); its last slice sits at its first step
    # times the slices, off the written one by that step's rounding times n - 1.
    theirs, written_too = dcm2niix_slice_origins(tmp_path / "dicom", tmp_path / "nii", rows=8)
    assert written_too == extra
    ours = np.array([slice_origin(volume.affine, z) for z in range(n)])
    assert theirs.shape == ours.shape
    assert np.linalg.norm(theirs[0] - ours[0]) <= 0.01
    first_step = theirs[1] - theirs[0]
    np.testing.assert_allclose(theirs[-1], theirs[0] + (n - 1) * first_step, atol=1e-3)
    truth_last = slice_origin(truth["affine"], n - 1)
    assert np.linalg.norm(ours[-1] - truth_last) <= np.linalg.norm(theirs[-1] - truth_last) + 1e-6


def test_rounded_positions_with_a_missing_slice_are_a_gap_filled_on_request(tmp_path):
    truth = rounded_series(tmp_path / "dicom", "axial", 40, 0.075, 2, drop=20)
    with pytest.raises(GeometryError, match="missing slices: 1 slice"):
        load(tmp_path / "dicom")
    kinds = [p.kind for p in scan(tmp_path / "dicom")[0].problems]
    assert ProblemKind.SLICE_GAP in kinds and ProblemKind.UNEVEN_SPACING not in kinds
    filled = load(tmp_path / "dicom", on_gap="interpolate")
    assert filled.shape == (40, 8, 6)
    written = truth["written_ras"]
    assert filled.spacing[0] == pytest.approx(float(written[-1, 2] - written[0, 2]) / 39, abs=1e-6)
    # the acquired slices next to the gap keep their voxels
    np.testing.assert_array_equal(filled.array[19].astype(np.float32), truth["array"][19])
    np.testing.assert_array_equal(filled.array[21].astype(np.float32), truth["array"][21])


def test_a_rounded_position_beyond_its_rounding_is_still_uneven(tmp_path):
    # slice 10 moved 0.02 mm: its written position is 0.015 mm off any even grid (rounding: 0.005)
    rounded_series(tmp_path / "dicom", "axial", 40, 0.075, 2, shift=(10, 0.02))
    with pytest.raises(GeometryError, match="uneven slice spacing"):
        load(tmp_path / "dicom")


def _positions_written(folder: Path, z_values: list[float], decimals: int) -> None:
    truth = write_dicom_series(folder, shape=(len(z_values), 8, 6), spacing=(1.0, 0.5, 0.5), origin=ORIGIN, seed=1)
    for path, z in zip(truth["files"], z_values):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [f"{v:.{decimals}f}" for v in (ORIGIN[0], ORIGIN[1], z)]
        ds.save_as(path)


def test_uneven_steps_written_with_full_precision_are_refused(tmp_path):
    _positions_written(tmp_path / "a", [30.0, 32.0, 34.0, 37.0], 6)  # steps 2.0, 2.0, 3.0
    with pytest.raises(GeometryError, match="uneven slice spacing"):
        load(tmp_path / "a")
    _positions_written(tmp_path / "b", [30.0, 32.0, 34.0, 37.0], 2)  # 1 mm is not 2-decimal rounding
    with pytest.raises(GeometryError, match="uneven slice spacing"):
        load(tmp_path / "b")


def test_the_same_steps_are_rounding_only_when_written_with_few_decimals(tmp_path):
    # steps 0.2, 0.3, 0.2, 0.3 ...: the rounding of 0.25 mm when written with 1 decimal; uneven
    # when the file says 0.200000 (nothing loosened for positions written with full precision)
    z_values = [30.0 + round(0.25 * k, 1) for k in range(8)]
    _positions_written(tmp_path / "one", z_values, 1)
    assert load(tmp_path / "one").spacing[0] == pytest.approx(0.25, abs=2 * 0.05 / 7)
    _positions_written(tmp_path / "six", z_values, 6)
    with pytest.raises(GeometryError, match="uneven slice spacing"):
        load(tmp_path / "six")


def test_rounded_per_frame_positions_of_an_enhanced_object_are_even(tmp_path):
    # one enhanced MR object, 12 frames 0.25 mm apart, each PlanePositionSequence written with 1 decimal
    truth = enhanced_asl(tmp_path / "enhanced", n_slices=12, n_frames=1)
    ds = pydicom.dcmread(truth["files"][0])
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item.PlanePositionSequence[0].ImagePositionPatient = ["0.0", "0.0", f"{round(0.25 * k, 1):.1f}"]
    ds.save_as(truth["files"][0])
    volume = load(tmp_path / "enhanced")
    assert volume.shape == (12, 6, 6)
    assert volume.spacing[0] == pytest.approx(2.8 / 11, abs=1e-6)  # 0.0 to 2.8 (2.75 written with 1 decimal)
    np.testing.assert_array_equal(volume.array, truth["array"][0])
    assert ProblemKind.POSITIONS_ROUNDED in [p.kind for p in volume.problems]
