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
    # With DiffusionGradientOrientation as well (here on every file, the b=0 one too), dcm2niix
    # still takes GE's private b-values and gradients, but treats the (image-frame) gradients as
    # world vectors and skips its GE rules: b 2000 at |g| 0.707 stays 2000 and the in-plane
    # signs differ from its own reading of the same private values without the public ones
    # (it decides by the series' first file, see the test below). medload applies GE's rules to
    # the private values either way: the same table as without the public attributes.
    ge_dwi_series(tmp_path / "plain", bvals=BVALS, gradients=GRADIENTS)
    ge_dwi_series(tmp_path / "both", bvals=BVALS, gradients=GRADIENTS)
    _add_public(tmp_path / "both", PUBLIC_B, PUBLIC_G)
    plain = medload.load(tmp_path / "plain").meta["diffusion"]
    both = medload.load(tmp_path / "both").meta["diffusion"]
    assert both == plain
    assert both["bvals"] == [0.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0, 0.0]


def _public_series(folder, *, private_gradient, private_b=True, zero_on_b0, orientation="axial", phase="COL"):
    """GE's series with the public MR Diffusion attributes: b and (0018,9089) on the DW images,
    and a zero (0018,9089) on the b=0 image too (``zero_on_b0``); GE's private gradient and
    b-value kept or removed."""
    ge_dwi_series(folder, orientation=orientation, phase=phase, bvals=PUBLIC_CASE_B, gradients=PUBLIC_CASE_PRIVATE_G)
    for path in sorted(folder.iterdir()):
        volume = int(path.name.split("_")[1])
        ds = pydicom.dcmread(path)
        ds.DiffusionBValue = float(PUBLIC_CASE_B[volume])
        if PUBLIC_CASE_B[volume] > 0 or zero_on_b0:
            ds.DiffusionGradientOrientation = [float(v) for v in PUBLIC_CASE_LPS[volume]]
        removed = ([0x001910BB, 0x001910BC, 0x001910BD] if not private_gradient else []) + ([0x00431039] if not private_b else [])
        for tag in removed:
            del ds[tag]
        ds.save_as(path)


PUBLIC_CASE_B = (0, 1000, 1000, 1000, 1000)
PUBLIC_CASE_PRIVATE_G = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.6, 0, 0.8], [0.5, 0.5, 0.7071]]
#: the public gradients, in the patient frame (LPS) as DICOM defines (0018,9089); unlike the private ones
PUBLIC_CASE_LPS = [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0.48, 0.6, 0.64], [1, 0, 0]]


def _ours(folder, out):
    vol = medload.load(folder)
    files = save_nifti(vol, out / "ours.nii", bids=True)
    return np.loadtxt(files[1]), bvec_world(np.loadtxt(files[2]), nib.load(files[0]).affine)


@pytest.mark.parametrize("orientation, phase", [("axial", "COL"), ("coronal", "ROW")])
def test_a_public_gradient_beside_ges_private_b_value_is_read_not_dropped(tmp_path, orientation, phase):
    # GE's b-value in (0043,1039), the gradient only in the public (0018,9089): before, every DW
    # image counted as a b=0 image (no private gradient) and the series lost its whole table,
    # unsaid. The public gradient is read in the patient frame, as DICOM defines it and as
    # dcm2niix reads this series: the same .bval and world directions.
    _public_series(tmp_path / "in", private_gradient=False, zero_on_b0=True, orientation=orientation, phase=phase)
    bval, world = _ours(tmp_path / "in", tmp_path)
    np.testing.assert_array_equal(bval, PUBLIC_CASE_B)
    np.testing.assert_allclose(world, np.array(PUBLIC_CASE_LPS) * [-1, -1, 1], atol=1e-6)  # LPS -> RAS
    ref_bval, ref_world = _dcm2niix(tmp_path / "in", tmp_path)
    np.testing.assert_array_equal(bval, ref_bval)
    np.testing.assert_allclose(world, ref_world, atol=1e-5)


@pytest.mark.parametrize(
    "case, private_gradient, private_b, consistent_when_zero_on_b0",
    [
        ("private and public gradient", True, True, False),
        ("public gradient, private b", False, True, True),
        ("public attributes only", False, False, True),
    ],
)
def test_dcm2niix_takes_a_ge_gradients_frame_from_the_series_first_file(
    tmp_path, case, private_gradient, private_b, consistent_when_zero_on_b0
):
    # The same DW files, with and without a zero (0018,9089) on the b=0 image (the series' first
    # file): dcm2niix (v1.0.20260724) reads every GE gradient of the series in the patient frame
    # when that first file has one, and in GE's image frame (its GE rules) when it has not,
    # whichever element the gradient came from. medload reads each element in its own frame
    # (private: GE's image frame; public: the patient frame) and the private one wins, so its
    # table does not depend on the b=0 file; it equals dcm2niix's where dcm2niix's frame is the
    # element's own, and differs by dcm2niix's switch where it is not (docs/validation.md).
    results = {}
    for zero_on_b0 in (False, True):
        folder = tmp_path / f"zero{int(zero_on_b0)}"
        _public_series(folder / "in", private_gradient=private_gradient, private_b=private_b, zero_on_b0=zero_on_b0)
        results[zero_on_b0] = (_ours(folder / "in", folder), _dcm2niix(folder / "in", folder))
    (ours_a, ref_a), (ours_b, ref_b) = results[False], results[True]
    np.testing.assert_allclose(ours_a[1], ours_b[1], atol=1e-9)  # ours: the b=0 file does not matter
    assert not np.allclose(ref_a[1], ref_b[1], atol=1e-3)  # dcm2niix's: it does
    ours, ref = results[consistent_when_zero_on_b0]
    np.testing.assert_array_equal(ours[0], ref[0])
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-5)


def test_a_damaged_public_gradient_beside_ges_b_value_is_refused_naming_the_file(tmp_path):
    _public_series(tmp_path / "in", private_gradient=False, zero_on_b0=True)
    path = sorted((tmp_path / "in").glob("IM_001_*"))[0]
    ds = pydicom.dcmread(path)
    ds.DiffusionGradientOrientation = [0.0, float("nan"), 1.0]
    ds.save_as(path)
    found = medload.scan(tmp_path / "in")
    (problem,) = found.errors
    assert problem.path == str(path) and "DiffusionGradientOrientation (0018,9089) is [0.0, nan, 1.0]" in problem.message
    with pytest.raises(medload.MedloadError, match="1 of its files cannot be read") as err:
        medload.load(found[0])  # the rest of the series is not read as if that image were b=0
    assert path.name in str(err.value)
