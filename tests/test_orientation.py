"""One stored orientation: a scan converted from DICOM and from its NIfTI store the same slices.

Before CanonicalSlices, the TotalSegmentator CT converted from its DICOM series and from
dcm2niix's NIfTI of it stored vertically mirrored slices (correlation 0.36). Now both are
stored in the radiological display convention of their plane, a recorded step.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import medload
from medload.transforms import CanonicalSlices, Pipeline
from medload.transforms.orientation import DISPLAY_AXCODES
from tests.conftest import shared_path

DCM2NIIX = shutil.which("dcm2niix")


def _dcm2niix(dicom_dir: Path, out_dir: Path) -> Path:
    if DCM2NIIX is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    out_dir.mkdir()
    subprocess.run(
        [DCM2NIIX, "-z", "y", "-b", "n", "-f", "ct", "-o", str(out_dir), str(dicom_dir)], check=True, capture_output=True
    )
    (nifti,) = out_dir.glob("ct*.nii.gz")
    return nifti


def _stored(out: Path) -> tuple[np.ndarray, np.ndarray, object]:
    reader = medload.open(out)
    (record,) = reader.volumes
    return reader.read_slices(0, 0, record.n_slices), record.affine, record


@pytest.mark.parametrize("orientation", ["radiological", "acquisition"])
def test_dicom_and_its_nifti_store_the_same_slices(tmp_path, orientation):
    dicom = shared_path("totalsegmentator_ct", "example_ct_dicom")
    nifti = _dcm2niix(dicom, tmp_path / "nii")
    # The same options for both; the NIfTI's header does not say CT, so modality="CT" (DICOM keeps its own).
    options = {"pipeline": "ct-abdomen", "modality": "CT", "workers": 0, "progress": False, "orientation": orientation}
    assert medload.convert(dicom, tmp_path / "from_dicom", **options).ok
    assert medload.convert(nifti, tmp_path / "from_nifti", **options).ok
    a, affine_a, rec_a = _stored(tmp_path / "from_dicom")
    b, affine_b, rec_b = _stored(tmp_path / "from_nifti")
    assert a.shape == b.shape == (20, 512, 512)
    if orientation == "radiological":
        # Positions match: the same affine maps stored voxel (z, y, x) to the same world point.
        np.testing.assert_allclose(affine_a, affine_b, atol=0.01)
        assert rec_a.history[0][0] == rec_b.history[0][0] == "canonical_slices"
        assert medload.Volume(a, affine_a).orientation == DISPLAY_AXCODES["axial"] == ("S", "P", "L")
        np.testing.assert_array_equal(a, b)  # voxel for voxel
    else:
        # As acquired the stored slices differ (rows mirrored): what the default removes. They
        # still hold the same voxels at the same world positions once brought onto one grid.
        assert not np.array_equal(a, b)
        assert medload.Volume(a, affine_a).orientation != medload.Volume(b, affine_b).orientation
        on_a = CanonicalSlices()(medload.Volume(a, affine_a, modality="CT"))
        on_b = CanonicalSlices()(medload.Volume(b, affine_b, modality="CT"))
        np.testing.assert_allclose(on_a.affine, on_b.affine, atol=0.01)
        np.testing.assert_array_equal(on_a.array, on_b.array)


def test_canonical_slices_keeps_every_voxel_at_its_world_position_for_each_plane():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 1000, (3, 4, 5)).astype(np.int16)
    # Axis 0 along A (coronal, pointing P->A reversed), rows along R, columns along I.
    affine = np.array([[0, 1.5, 0, 10], [-2.0, 0, 0, 20], [0, 0, -0.7, 30], [0, 0, 0, 1]])
    vol = medload.Volume(array, affine, modality="MR")
    out = CanonicalSlices()(vol)
    assert out.orientation == DISPLAY_AXCODES["coronal"]
    assert out.history[-1] == ("canonical_slices", {"axcodes": ["P", "I", "L"], "plane": "coronal"})

    def world(v, idx):
        return (v.affine @ [*idx, 1])[:3]

    for idx in [(0, 0, 0), (2, 3, 4), (1, 2, 3)]:
        target = np.round(np.linalg.solve(out.affine, [*world(vol, idx), 1])[:3]).astype(int)
        assert out.array[tuple(target)] == vol.array[idx]
    # Replaying the history repeats it; a second pass changes nothing.
    assert np.array_equal(Pipeline.from_history(out.history)(vol).array, out.array)
    assert np.array_equal(CanonicalSlices()(out).array, out.array)


def test_projection_radiographs_are_left_as_acquired():
    vol = medload.Volume(np.arange(12.0).reshape(1, 3, 4), np.eye(4), modality="DX")
    out = CanonicalSlices()(vol)
    assert np.array_equal(out.array, vol.array) and out.history[-1][1]["plane"] == "as acquired"
