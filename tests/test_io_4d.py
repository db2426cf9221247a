"""4D series: one frame order at every slice position, or a refusal naming the positions (issue 13).

Synthetic series from ``fixtures/special.py`` reproduce the header patterns of real exports;
every pixel of frame ``t`` at slice ``z`` holds ``100 * t + z``, so any frame taken from the
wrong place shows as a wrong number.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fixtures.special import cine_series, enhanced_asl, philips_dti_series, write_image
from medload.errors import FrameOrderError, GeometryError
from medload.io import load, save_nifti, scan
from medload.problems import ProblemKind
from tests.conftest import shared_path
from tests.test_io_reference import DCM2NIIX, match


def test_acquisition_number_changing_at_some_positions_keeps_the_gradient_order(tmp_path):
    # The real Philips export: AcquisitionNumber 19 instead of 22 for some frames at some
    # positions. Ordering by it put frames 3 and 4 first at slices 1 and 4.
    truth = philips_dti_series(tmp_path, acquisition_changes_at=(1, 4))
    vol = load(tmp_path)
    assert vol.shape == truth["array"].shape == (5, 6, 8, 8)
    np.testing.assert_array_equal(vol.array, truth["array"])
    assert vol.meta["problems"] == []


def test_instance_numbers_out_of_order_at_one_position_follow_the_encodings(tmp_path):
    truth = philips_dti_series(tmp_path, scramble_at=(2,))
    vol = load(tmp_path)
    np.testing.assert_array_equal(vol.array, truth["array"])
    assert any(
        p.kind is ProblemKind.FRAMES_REORDERED and "at 1 of 6 slice positions (5.00 mm)" in p.message for p in vol.problems
    )


def test_a_frame_found_at_one_position_only_is_refused_naming_the_position(tmp_path):
    philips_dti_series(tmp_path, foreign_frame_at=(3,))
    with pytest.raises(FrameOrderError, match=r"1 of 6 slice positions.*7\.50 mm.*IM_003_000") as info:
        load(tmp_path)
    assert info.value.positions_mm == (7.5,)
    assert isinstance(info.value, GeometryError)
    # scan says the same from headers, before any pixel is read
    (series,) = scan(tmp_path)
    assert any(p.kind is ProblemKind.FRAME_ORDER_CONFLICT and "7.50 mm" in p.message for p in series.problems)


def bvec_world(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS) direction of each FSL-style bvec column, read with its image's affine."""
    v = np.array(bvecs, dtype=float).T  # (T, 3)
    axes = np.asarray(affine)[:3, :3]
    if np.linalg.det(axes) > 0:
        v[:, 0] = -v[:, 0]
    return v @ (axes / np.linalg.norm(axes, axis=0)).T


def test_diffusion_table_follows_the_frame_order(tmp_path):
    truth = philips_dti_series(tmp_path / "dwi", acquisition_changes_at=(1, 4), scramble_at=(2,))
    vol = load(tmp_path / "dwi")
    table = vol.meta["diffusion"]
    assert table["bvals"] == truth["bvals"]
    np.testing.assert_allclose(table["gradients_lps"], truth["gradients"], atol=1e-6)
    out = save_nifti(vol, tmp_path / "dwi.nii.gz", bids=True)
    assert [Path(p).name for p in out] == ["dwi.nii.gz", "dwi.bval", "dwi.bvec"]
    bvals = np.loadtxt(tmp_path / "dwi.bval")
    bvecs = np.loadtxt(tmp_path / "dwi.bvec")
    np.testing.assert_array_equal(bvals, truth["bvals"])
    # read back with the file's own affine, each bvec points along the gradient (LPS -> RAS)
    affine = nib.load(out[0]).affine
    np.testing.assert_allclose(bvec_world(bvecs, affine), truth["gradients"] * [-1, -1, 1], atol=1e-5)


def test_no_diffusion_files_without_a_table(tmp_path):
    truth = philips_dti_series(tmp_path / "dwi", n_slices=3, n_frames=4)
    vol = load(tmp_path / "dwi")
    assert len(save_nifti(vol, tmp_path / "a.nii")) == 1  # bids=False: the image only
    plain = vol.with_array(vol.array, meta={**vol.meta, "diffusion": None})
    assert len(save_nifti(plain, tmp_path / "b.nii", bids=True)) == 1
    assert truth["bvals"][0] == 0.0


@pytest.mark.parametrize("folder", ["dicom2nifti/philips_enhanced/dti/001", "dicom2nifti/philips_enhanced/dti/001_implicit"])
def test_bval_bvec_equal_dcm2niix(tmp_path, folder):
    if DCM2NIIX is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    src = shared_path(*folder.split("/"))
    subprocess.run(
        [DCM2NIIX, "-z", "n", "-f", "ref", "-o", str(tmp_path), str(src)], check=True, capture_output=True, timeout=300
    )
    (series,) = [s for s in scan(src) if s.kind == "dicom"]
    out = save_nifti(load(series), tmp_path / "ours.nii", bids=True)
    ref_bval, ours_bval = np.loadtxt(tmp_path / "ref.bval"), np.loadtxt(out[1])
    np.testing.assert_array_equal(ours_bval, ref_bval)
    ref_world = bvec_world(np.loadtxt(tmp_path / "ref.bvec"), nib.load(tmp_path / "ref.nii").affine)
    ours_world = bvec_world(np.loadtxt(out[2]), nib.load(out[0]).affine)
    np.testing.assert_allclose(ours_world, ref_world, atol=1e-5)
    # dcm2niix's grid (rows flipped, determinant < 0) and ours (DICOM row order, > 0) differ by
    # a flip of j, so the numbers differ exactly in the signs of x and y components
    np.testing.assert_allclose(np.loadtxt(out[2]), np.loadtxt(tmp_path / "ref.bvec") * [[-1], [-1], [1]], atol=1e-5)


def test_identical_frames_are_kept_so_scan_and_load_agree_on_the_shape(tmp_path):
    # A GE export with the same images twice under new UIDs: scan (headers only) sees 2 frames;
    # load keeps both, as dcm2niix does, and says they are copies.
    pixels = np.arange(3 * 4 * 4, dtype=np.uint16).reshape(3, 4, 4)
    for copy in range(2):
        for z in range(3):
            write_image(
                tmp_path / f"c{copy}_{z}.dcm",
                pixels[z],
                {
                    "InstanceNumber": copy * 3 + z + 1,
                    "ImagePositionPatient": [0, 0, 3.0 * z],
                    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                    "PixelSpacing": [1, 1],
                },
            )
    (series,) = scan(tmp_path)
    vol = load(series)
    assert series.shape == vol.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(vol.array[1], pixels)
    assert any(
        p.kind is ProblemKind.IDENTICAL_FRAMES_KEPT and "2 frames at every slice position" in p.message for p in vol.problems
    )


def test_enhanced_pcasl_frames_follow_dcm2niix_and_the_classic_export(tmp_path):
    # DimensionIndexValues (stack, slice, label/control, repeat): sorted first item first they
    # gave frames 0, 2, 4, 1, 3, 5; dcm2niix makes the last varying item most significant.
    truth = enhanced_asl(tmp_path / "enhanced")
    enhanced = load(tmp_path / "enhanced")
    np.testing.assert_array_equal(enhanced.array, truth["array"])
    classic_truth = enhanced_asl(tmp_path / "classic", classic=True)
    classic = load(tmp_path / "classic")
    np.testing.assert_array_equal(classic.array, enhanced.array)
    np.testing.assert_allclose(classic.affine, enhanced.affine)
    if DCM2NIIX is not None:  # dcm2niix on the classic export: the same frames in the same order
        subprocess.run(
            [DCM2NIIX, "-z", "n", "-f", "ref", "-o", str(tmp_path), classic_truth["folder"]],
            check=True,
            capture_output=True,
            timeout=120,
        )
        ok, why = match(nib.load(tmp_path / "ref.nii"), [("enhanced", enhanced)])
        assert ok, why


def test_cine_phases_follow_trigger_time_at_every_position(tmp_path):
    # trigger times drift between slices (not equal), their order must not
    truth = cine_series(tmp_path / "plain")
    vol = load(tmp_path / "plain")
    np.testing.assert_array_equal(vol.array, truth["array"])
    assert vol.meta["problems"] == []
    truth = cine_series(tmp_path / "scrambled", scramble_at=(1,))
    vol = load(tmp_path / "scrambled")
    np.testing.assert_array_equal(vol.array, truth["array"])
    assert any(
        p.kind is ProblemKind.FRAMES_REORDERED
        and "TriggerTime" in p.message
        and "at 1 of 3 slice positions (8.00 mm)" in p.message
        for p in vol.problems
    )


def test_derived_trace_frame_is_named_in_problems(tmp_path):
    truth = philips_dti_series(tmp_path, n_frames=5, trace_frame=True)
    vol = load(tmp_path)
    np.testing.assert_array_equal(vol.array, truth["array"])
    assert vol.meta["diffusion"]["bvals"][4] == 1000.0 and vol.meta["diffusion"]["gradients_lps"][4] == [0.0, 0.0, 0.0]
    assert any(p.kind is ProblemKind.DIFFUSION_DERIVED_FRAMES and p.message.startswith("frame(s) [4] are") for p in vol.problems)
