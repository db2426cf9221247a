"""medload against dcm2niix (and pydicom) on DICOM files the other reference tests do not use:
pydicom's test files, pydicom-data, nibabel's DICOM test files (docs/validation.md has the table).

Every file is converted by both; medload must agree, or refuse with a MedloadError naming the
file, or differ only for a reason listed in ``tools.validate.KNOWN`` and checked there (dcm2niix
writes palette indices, ignores DoseGridScaling, ...). A DISAGREE is a silently different volume.
Plus regression tests of the two failures the survey found: an 8-bit palette image with a 16-bit
palette came out blank (values cut modulo 256), and an image without world geometry lay with its
columns along S, so the stored slices of such an MR stack were transposed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest

from medload.io import load
from medload.transforms.orientation import CanonicalSlices

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_data_file(name: str) -> Path:
    """A file of pip's ``pydicom-data`` (the [test] extra), or skip saying how to get it."""
    try:
        import data_store
    except ImportError:
        pytest.skip("pydicom-data is not installed (pip install 'medload[test]' or pip install pydicom-data)")
    path = Path(data_store.__file__).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this pydicom-data version")
    return path


def survey_units() -> list[tuple[str, Path]]:
    from tools.validate import units

    return units()


@pytest.mark.slow
@pytest.mark.parametrize("label, path", survey_units(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_file_gives_a_silently_different_volume(label, path, tmp_path):
    from tools.validate import check

    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    row = check(label, path, dcm2niix)
    assert row["result"] in ("agree", "agree*", "agree (pydicom)", "refuse"), row
    if row["result"] == "refuse":
        assert path.name in row["why"] or "<in>" in row["why"], row  # the reason names the file


@pytest.mark.parametrize("where", ["pydicom", "pydicom-data"])
def test_an_8_bit_image_with_a_16_bit_palette_is_not_cut_to_zero(where):
    from pydicom.pixels import apply_color_lut

    path = PYDICOM_FILES / "examples_palette.dcm" if where == "pydicom" else pydicom_data_file("OBXXXX1A.dcm")
    ds = pydicom.dcmread(path)
    assert ds.BitsStored == 8 and ds.RedPaletteColorLookupTableDescriptor[2] == 16
    vol = load(path, allow_burned_in=True)
    rgb = np.moveaxis(apply_color_lut(ds.pixel_array, ds), -1, 0)[:, None]  # (3, 1, rows, columns)
    assert vol.shape == rgb.shape
    assert int(vol.array.max()) == int(rgb.max()) == 65280  # was 0: uint16 entries cut modulo 256
    np.testing.assert_array_equal(vol.array, rgb)


def stack_without_geometry(folder: Path, n: int = 3, spacing: str | None = "2.5") -> list[np.ndarray]:
    """One file of ``n`` MR frames (pydicom's MR_small, each frame shifted) with no position or
    orientation anywhere, like pydicom-data's emri_small.dcm: a stack of 2D images."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "SliceThickness", "PixelSpacing"):
        if keyword in ds:
            delattr(ds, keyword)
    if spacing is not None:
        ds.SpacingBetweenSlices = spacing
    images = [np.roll(ds.pixel_array, 7 * i, axis=1) for i in range(n)]  # asymmetric, each its own
    ds.PixelData = np.stack(images).astype(ds.pixel_array.dtype).tobytes()
    if n > 1:
        ds.NumberOfFrames = n
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR
    ds.save_as(folder / "stack.dcm")
    return images


def test_a_stack_without_geometry_lies_in_dicoms_default_plane(tmp_path):
    images = stack_without_geometry(tmp_path / "stack")
    vol = load(tmp_path / "stack")
    np.testing.assert_array_equal(vol.array, np.stack(images))
    # rows along patient-left (RAS -x), columns posterior (RAS -y), slices superior: DICOM's
    # default ImageOrientationPatient 1\0\0\0\1\0, as dcm2niix assumes; SpacingBetweenSlices apart
    np.testing.assert_allclose(vol.affine[:3, :3], [[0, 0, -1], [0, -1, 0], [2.5, 0, 0]])  # pixels 1 mm: no PixelSpacing
    assert vol.orientation == ("S", "P", "L")


def test_canonical_slices_leave_a_stack_without_geometry_as_acquired(tmp_path):
    # MR is not a projection modality: canonical_slices reorients it by its affine. With the
    # old index-order affine (columns along S) the plane was "sagittal" and every stored slice
    # came out transposed and flipped: the model saw other images than the scanner wrote.
    images = stack_without_geometry(tmp_path / "stack")
    out = CanonicalSlices()(load(tmp_path / "stack"))
    assert out.history[-1][1]["plane"] == "axial"
    np.testing.assert_array_equal(out.array, np.stack(images))


def test_one_image_without_geometry_uses_its_slice_thickness_or_1_mm(tmp_path):
    stack_without_geometry(tmp_path / "one", n=1, spacing=None)
    vol = load(tmp_path / "one")
    assert vol.spacing[0] == 1.0
    assert vol.orientation == ("S", "P", "L")


def dcm2niix_volume(path: Path, tmp_path: Path) -> nibabel.Nifti1Image:
    """dcm2niix's NIfTI of one DICOM file (one series), or skip saying how to get dcm2niix."""
    import subprocess

    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    shutil.copy(path, src / path.name)
    subprocess.run([exe, "-z", "n", "-f", "%s", "-o", str(out), str(src)], capture_output=True, timeout=120, check=True)
    (nii,) = sorted(out.glob("*.nii"))
    return nibabel.load(nii)


@pytest.mark.parametrize(
    "name", ["SC_rgb_small_odd.dcm", "JPEG2000.dcm", "examples_rgb_color.dcm", "SC_rgb_rle_2frame.dcm", "US1_UNCI.dcm"]
)
def test_images_without_geometry_lie_where_dcm2niix_puts_them(name, tmp_path):
    # dcm2niix writes qform/sform code 0 for them; nibabel reads that as the grid centred on the
    # origin. medload placed the first voxel at 0 (half a field of view away: 39.5 mm and 29.5
    # mm for an 80x60 image of 1 mm pixels) and the validation compared the axes only.
    from tools.validate import canonical, corner_centres

    path = PYDICOM_FILES / name if (PYDICOM_FILES / name).is_file() else pydicom_data_file(name)
    assert "ImageOrientationPatient" not in pydicom.dcmread(path, stop_before_pixels=True)
    ref = dcm2niix_volume(path, tmp_path)
    assert int(ref.header["qform_code"]) == int(ref.header["sform_code"]) == 0
    ours, theirs = canonical(load(path, allow_burned_in=True).to_nifti()), canonical(ref)
    assert ours[0].shape == theirs[0].shape
    np.testing.assert_allclose(corner_centres(ours[1], ours[0].shape), corner_centres(theirs[1], theirs[0].shape), atol=0.01)
    np.testing.assert_array_equal(ours[0], theirs[0])  # lossless files: the same voxels too


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not on PATH (pip install dcm2niix)")
@pytest.mark.parametrize("name", ["SC_rgb_small_odd.dcm", "JPEG2000.dcm", "examples_rgb_color.dcm"])
def test_the_validation_finds_images_without_geometry_agree(name, tmp_path):
    from tools.validate import check

    path = PYDICOM_FILES / name
    row = check(f"pydicom/{name}", path, shutil.which("dcm2niix"))
    assert row["result"] == "agree", row


def test_a_stack_without_geometry_and_a_png_are_centred_alike(tmp_path):
    from PIL import Image

    stack_without_geometry(tmp_path / "stack")
    vol = load(tmp_path / "stack")
    centre = (np.array(vol.spatial_shape) - 1) / 2
    np.testing.assert_allclose(vol.affine @ [*centre, 1], [0, 0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], [31.5, 31.5, -2.5, 1])  # 64x64 of 1 mm, 3 slices 2.5 mm apart
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(tmp_path / "a.png")
    png = load(tmp_path / "a.png")
    np.testing.assert_allclose(png.affine @ [0, 1, 1.5, 1], [0, 0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(png.affine[:3, :3], vol.affine[:3, :3] @ np.diag([1 / 2.5, 1, 1]))


MRICRON = Path("/usr/share/mricron/templates")
NIBABEL_NIFTI = sorted(
    p for p in (Path(nibabel.__file__).parent / "tests" / "data").glob("*.nii*") if not p.name.endswith(".dconn.nii")
)


@pytest.mark.parametrize(
    "path",
    [MRICRON / name for name in ("ch2better.nii.gz", "inia19-t1-brain.nii.gz", "JHU-WhiteMatter-labels-2mm.nii.gz", "aal.nii.gz")]
    + NIBABEL_NIFTI,
    ids=lambda p: p.name,
)
def test_nifti_volumes_equal_nibabels_reading(path):
    """Real T1 templates (Debian's mricron-data) and nibabel's NIfTI test files (4D, NIfTI-2,
    scaled, oblique): medload's volume holds nibabel's voxels at nibabel's places."""
    if not path.exists():
        pytest.skip(f"{path} is absent: apt-get install mricron-data (.ci/system-packages installs it)")
    ref = nibabel.as_closest_canonical(nibabel.load(path))
    ours = nibabel.as_closest_canonical(load(path).to_nifti())
    np.testing.assert_allclose(ours.affine, ref.affine, atol=0.01)
    theirs = ref.get_fdata()
    mine = ours.get_fdata().reshape(theirs.shape)
    np.testing.assert_allclose(mine, theirs, atol=1e-3 * max(1.0, float(np.abs(theirs).max())))
