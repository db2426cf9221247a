"""GE diffusion from GE's private elements: the same .bval and the same world gradient directions as dcm2niix.

The series are written in code (fixtures/ge_dwi.py) as GE writes them: b-value in (0043,1039)
with GE's 10^9 offset, gradients along the image in (0019,10BB-10BD). Before, medload read none
of them: a GE DWI loaded as a 4D volume without b-values.
"""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

import medload
from fixtures.ge_dwi import ge_dwi_series
from medload.io.export import save_nifti
from medload.problems import ProblemKind
from tests.test_io_4d import bvec_world
from tests.test_io_reference import DCM2NIIX

# b=0; unit gradients along each image axis; an oblique one; a shorter gradient (GE's multi-shell
# way: b 2000 with |g| = 0.707 is b 1000); the nominal b on a DTI's b=0 image (no gradient).
BVALS = (0, 1000, 1000, 1000, 1000, 2000, 1000)
GRADIENTS = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.6, 0, 0.8], [0.5, 0.5, 0.7071], [0.3, 0.4, 0.5], [0, 0, 0]]


def _dcm2niix(folder, out):
    if DCM2NIIX is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    subprocess.run(
        [DCM2NIIX, "-b", "y", "-z", "n", "-f", "ref", "-o", str(out), str(folder)], check=True, capture_output=True, timeout=120
    )
    return np.loadtxt(out / "ref.bval"), bvec_world(np.loadtxt(out / "ref.bvec"), nib.load(out / "ref.nii").affine)


@pytest.mark.parametrize("phase", ["COL", "ROW"])
@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal", "oblique"])
def test_bval_and_gradient_directions_equal_dcm2niix(tmp_path, orientation, phase):
    truth = ge_dwi_series(tmp_path / "in", orientation=orientation, phase=phase, bvals=BVALS, gradients=GRADIENTS)
    ref_bval, ref_world = _dcm2niix(tmp_path / "in", tmp_path)
    vol = medload.load(tmp_path / "in")
    assert vol.shape == (7, 4, 8, 8)
    np.testing.assert_array_equal(vol.array, truth["array"])
    out = save_nifti(vol, tmp_path / "ours.nii", bids=True)
    np.testing.assert_array_equal(np.loadtxt(out[1]), ref_bval)
    assert list(ref_bval) == [0, 1000, 1000, 1000, 1000, 1000, 0]  # the offset, the shell and the b=0 rule
    ours_world = bvec_world(np.loadtxt(out[2]), nib.load(out[0]).affine)
    np.testing.assert_allclose(ours_world, ref_world, atol=1e-5)
    # dcm2niix calls only axial (and oblique-axial) COL head-first-supine "validated"
    assert vol.meta["diffusion_gradients_validated"] == (orientation in ("axial", "oblique") and phase == "COL")


def test_implicit_vr_files_give_the_same_table(tmp_path):
    # Implicit VR: the private values reach the fast header path as raw bytes, pydicom decodes them.
    ge_dwi_series(tmp_path / "explicit", bvals=BVALS, gradients=GRADIENTS)
    (tmp_path / "implicit").mkdir()
    for path in sorted((tmp_path / "explicit").iterdir()):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(tmp_path / "implicit" / path.name, enforce_file_format=True)
    explicit = medload.load(tmp_path / "explicit").meta["diffusion"]
    implicit = medload.load(tmp_path / "implicit").meta["diffusion"]
    assert implicit == explicit
    assert explicit["bvals"] == [0.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0, 0.0]


def test_trace_images_of_a_non_dti_scan_keep_their_b_value(tmp_path):
    # NumberOfDiffusionDirection 0: b 1000 without a gradient is a derived trace image, not a b=0.
    ge_dwi_series(tmp_path / "in", bvals=(0, 1000), gradients=[[0, 0, 0], [0, 0, 0]], n_directions=0)
    ref_bval, _ = _dcm2niix(tmp_path / "in", tmp_path)
    vol = medload.load(tmp_path / "in")
    assert vol.meta["diffusion"]["bvals"] == [0.0, 1000.0]
    assert any(p.kind is ProblemKind.DIFFUSION_DERIVED_FRAMES and "derived isotropic/trace" in p.message for p in vol.problems)
    np.testing.assert_array_equal(ref_bval, vol.meta["diffusion"]["bvals"])  # dcm2niix keeps b 1000 there too


def test_without_a_phase_direction_the_encoding_is_unknown_not_guessed(tmp_path):
    ge_dwi_series(tmp_path / "in", phase=None, bvals=BVALS, gradients=GRADIENTS)
    vol = medload.load(tmp_path / "in")
    assert "diffusion" not in vol.meta
    assert "InPlanePhaseEncodingDirection ROW or COL" in vol.meta["diffusion_unknown"]
    assert vol.shape == (7, 4, 8, 8)


def test_ge_series_without_diffusion_weighting_get_no_table(tmp_path):
    # GE writes (0043,1039) = 0 on every EPI image, fMRI included: no table, no facts.
    ge_dwi_series(tmp_path / "in", bvals=(0, 0, 0), offset_1e9=False)
    vol = medload.load(tmp_path / "in")
    assert "diffusion" not in vol.meta and "diffusion_gradients_validated" not in vol.meta


def _add_public(folder, bvals, gradients=None):
    """Write the public DiffusionBValue (and DiffusionGradientOrientation) beside GE's private elements."""
    for path in sorted(folder.iterdir()):
        volume = int(path.name.split("_")[1])
        ds = pydicom.dcmread(path)
        ds.DiffusionBValue = float(bvals[volume])
        if gradients is not None:
            ds.DiffusionGradientOrientation = [float(v) for v in gradients[volume]]
        ds.save_as(path)


# Public values that disagree with the private ones everywhere: whichever is read shows.
PUBLIC_B = (0, 500, 500, 700, 700, 3000, 800)
PUBLIC_G = [[0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("orientation", ["axial", "coronal"])
def test_private_ge_encoding_wins_over_a_public_b_value_as_in_dcm2niix(tmp_path, orientation):
    # GE software 27 on writes DiffusionBValue (0018,9087) beside the private elements, without
    # a gradient. Before, medload read the public b-value alone: b 500/700/3000/800 with zero
    # gradients, a table of "derived trace" frames. dcm2niix lets the private values win.
    ge_dwi_series(tmp_path / "in", orientation=orientation, bvals=BVALS, gradients=GRADIENTS)
    _add_public(tmp_path / "in", PUBLIC_B)
    vol = medload.load(tmp_path / "in")
    assert vol.meta["diffusion"]["bvals"] == [0.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0, 0.0]
    ref_bval, ref_world = _dcm2niix(tmp_path / "in", tmp_path)
    out = save_nifti(vol, tmp_path / "ours.nii", bids=True)
    np.testing.assert_array_equal(np.loadtxt(out[1]), ref_bval)
    np.testing.assert_allclose(bvec_world(np.loadtxt(out[2]), nib.load(out[0]).affine), ref_world, atol=1e-5)


def test_private_ge_encoding_wins_over_a_public_gradient_too(tmp_path):
    # With DiffusionGradientOrientation as well, dcm2niix still takes GE's private b-values and
    # gradients, but treats the (image-frame) gradients as world vectors and skips its GE rules
    # (geCorrectBvecs returns early once 0018,9089 was seen): b 2000 at |g| 0.707 stays 2000 and
    # the in-plane signs differ from its own reading of the same private values without the
    # public ones. medload applies GE's rules to the private values either way: the same table
    # as without the public attributes.
    ge_dwi_series(tmp_path / "plain", bvals=BVALS, gradients=GRADIENTS)
    ge_dwi_series(tmp_path / "both", bvals=BVALS, gradients=GRADIENTS)
    _add_public(tmp_path / "both", PUBLIC_B, PUBLIC_G)
    plain = medload.load(tmp_path / "plain").meta["diffusion"]
    both = medload.load(tmp_path / "both").meta["diffusion"]
    assert both == plain
    assert both["bvals"] == [0.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0, 0.0]
