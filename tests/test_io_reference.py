"""medload's DICOM reader against dcm2niix, the reference, on real scanner data (issue 2, point 2).

For each input folder, dcm2niix runs once per session (``-z n -b y -f %s_%p``) into a
temporary folder. Every volume it writes must be matched by one medload volume of the same
folder: same shape, affine within 0.01 mm and the same voxel values after both go through
``nibabel.as_closest_canonical``, every frame of a 4D volume in dcm2niix's order. The ``Ref/``
NIfTIs shipped with the data are a second check of the same kind.

Known, reasoned differences are listed in ``KNOWN`` with the reason; the comparison itself is
never loosened.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medload.errors import MedloadError
from medload.io import load, scan
from tests.conftest import SHARED_DATA, shared_path
from tools.validate import canonical  # every frame, canonical orientation: one definition for tests and tool

DCM2NIIX = shutil.which("dcm2niix")

# (folder relative to ../shared/data) — point 2's list, and every dicom2nifti series folder
# except failing/ (those are point 5, tests/test_io_failing.py).
FOLDERS = [
    "dcm_qa_nih/In",
    "dcm_qa_enh/In",
    "dcm_qa_ts/In",
    "totalsegmentator_ct/example_ct_dicom",
    "dicom2nifti/anatomical/001",
    "dicom2nifti/anatomical/001_implicit",
    "dicom2nifti/generic/anatomical/001",
    "dicom2nifti/generic/anatomical/001_implicit",
    "dicom2nifti/generic/anatomical/002_non_isotropic",
    "dicom2nifti/generic/compressed/001",
    "dicom2nifti/generic/compressed_j2k/001",
    "dicom2nifti/generic/compressed_jpeg/001",
    "dicom2nifti/generic/compressed_jpegls/001",
    "dicom2nifti/generic/compressed_rle/001",
    "dicom2nifti/generic/rgb/001",
    "dicom2nifti/hitachi/anatomical/001",
    "dicom2nifti/hitachi/anatomical/001_implicit",
    "dicom2nifti/hyperfine/anatomical/001",
    "dicom2nifti/philips_enhanced/anatomical/001",
    "dicom2nifti/philips_enhanced/anatomical/001_implicit",
    "dicom2nifti/philips_enhanced/dti/001",
    "dicom2nifti/philips_enhanced/dti/001_implicit",
    "dicom2nifti/philips_enhanced/fmri/001",
    "dicom2nifti/philips_enhanced/fmri/001_implicit",
    "dicom2nifti/siemens_multiframe/anatomical/001",
]

# dcm2niix output file name -> why medload orders 4D frames differently on purpose. For these
# (none today), medload's frames may be a permutation of dcm2niix's, but one permutation of
# whole volumes: found on the whole array and checked to map every slice alike.
FRAME_ORDER_DIFFERS: dict[str, str] = {}


def volume_permutation(data: np.ndarray, ref: np.ndarray, tol: float) -> list[int] | None:
    """The one frame order mapping ``data`` onto ``ref`` at every slice, or ``None``.

    For each slice z separately, each reference frame is matched with the medload frame
    nearest to it; a permutation is returned only when it is one-to-one and the same at
    every slice (a slice-dependent order is a scrambled volume, never accepted).
    """
    n_t = ref.shape[-1]
    per_slice = set()
    for z in range(ref.shape[2]):
        order = tuple(int(np.argmin([np.abs(data[:, :, z, a] - ref[:, :, z, b]).max() for a in range(n_t)])) for b in range(n_t))
        if not np.allclose(data[:, :, z, list(order)], ref[:, :, z], atol=tol):
            return None
        if np.ptp(ref[:, :, z]) > 0:  # a blank slice matches any order: it decides nothing
            per_slice.add(order)
    if len(per_slice) != 1:
        return None
    order = list(per_slice.pop())
    return order if sorted(order) == list(range(n_t)) else None


def match(ref: nib.Nifti1Image, candidates: list, *, permuted: bool = False) -> tuple[bool, str]:
    """Is ``ref`` matched, every frame in order, by one of ``candidates``?

    With ``permuted`` (documented in FRAME_ORDER_DIFFERS) one whole-volume permutation of
    the frames, the same at every slice, is allowed.
    """
    ref_data, ref_affine = canonical(ref)
    tol = 1e-3 * max(1.0, float(np.abs(ref_data).max()))
    notes = []
    for name, vol in candidates:
        data, affine = canonical(vol.to_nifti())
        if data.shape != ref_data.shape:
            notes.append(f"{name}: shape {data.shape} vs {ref_data.shape}")
            continue
        err = float(np.abs(affine - ref_affine).max())
        if err > 0.01:
            notes.append(f"{name}: affine differs by {err:.4f}")
            continue
        if permuted:
            order = volume_permutation(data, ref_data, tol)
            if order is None:
                notes.append(f"{name}: no single frame permutation matches every slice")
                continue
            data = data[..., order]
        diff = np.abs(data - ref_data).max(axis=(0, 1, 2))
        if float(diff.max()) > tol:
            bad = [int(t) for t in np.nonzero(diff > tol)[0]]
            notes.append(f"{name}: voxels differ by up to {float(diff.max()):g} in frame(s) {bad[:10]}")
            continue
        return True, name
    return False, "; ".join(notes) or "no medload volume"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Run dcm2niix once per folder (lazily) and load every medload volume of that folder."""
    if DCM2NIIX is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    cache: dict[str, tuple[list[Path], list]] = {}

    def get(folder: str):
        if folder not in cache:
            src = shared_path(*folder.split("/"))
            out = tmp_path_factory.mktemp(folder.replace("/", "_"))
            subprocess.run(
                [DCM2NIIX, "-z", "n", "-b", "y", "-f", "%s_%p", "-o", str(out), str(src)],
                check=True,
                capture_output=True,
                timeout=300,
            )
            vols = []
            for series in scan(src):
                if series.kind != "dicom":
                    continue
                try:
                    vols.append((f"{series.description or series.series_key} {series.shape}", load(series)))
                except MedloadError as exc:
                    vols.append((f"ERROR {exc}", None))
            cache[folder] = (sorted(out.glob("*.nii")), vols)
        return cache[folder]

    return get


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_dcm2niix_volume_is_matched(converted, folder):
    refs, vols = converted(folder)
    assert refs, f"dcm2niix wrote nothing for {folder}"
    errors = [name for name, v in vols if v is None]
    assert not errors, f"medload refused series of {folder}: {errors}"
    loaded = [(n, v) for n, v in vols if v is not None]
    failures = []
    for ref_path in refs:
        ok, why = match(nib.load(ref_path), loaded, permuted=ref_path.name in FRAME_ORDER_DIFFERS)
        if not ok:
            failures.append(f"{ref_path.name}: {why}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["dcm_qa_nih", "dcm_qa_enh", "dcm_qa_ts"])
def test_shipped_reference_niftis_are_matched(converted, name):
    """Second check: the Ref/ NIfTIs made by the dcm2niix authors (where shipped)."""
    ref_folder = shared_path(name, "Ref")
    _, vols = converted(f"{name}/In")
    loaded = [(n, v) for n, v in vols if v is not None]
    refs = sorted(ref_folder.glob("*.nii"))
    # Ref/ also lists outputs whose inputs were too large to ship (.MISSING_FROM_SNAPSHOT.txt).
    missing = SHARED_DATA / name / ".MISSING_FROM_SNAPSHOT.txt"
    absent = set(missing.read_text().split()) if missing.exists() else set()
    refs = [r for r in refs if f"Ref/{r.name}" not in absent]
    assert refs
    failures = [f"{r.name}: {why}" for r in refs for ok, why in [match(nib.load(r), loaded)] if not ok]
    assert not failures, "\n".join(failures)


def test_segmentation_lies_on_the_ct_grid():
    """Issue 2, point 3: the TotalSegmentator mask is on exactly the grid medload reads."""
    seg = nib.load(shared_path("totalsegmentator_ct", "example_seg_dicom.nii.gz"))
    vol = load(shared_path("totalsegmentator_ct", "example_ct_dicom"))
    ours = vol.to_nifti()
    # The mask file stores rows in the other direction; the grid is the same in world space.
    canon_seg = nib.as_closest_canonical(seg)
    canon_ours = nib.as_closest_canonical(ours)
    assert canon_seg.shape == canon_ours.shape
    np.testing.assert_allclose(canon_ours.affine, canon_seg.affine, atol=0.01)
    # the mask labels body voxels: they must lie where the CT shows tissue, not air
    labels = np.asanyarray(canon_seg.dataobj) > 0
    hu = np.asanyarray(canon_ours.dataobj)
    assert labels.sum() > 1000
    assert np.median(hu[labels]) > -200 > np.median(hu[~labels])


def test_every_transfer_syntax_decodes_to_identical_pixels():
    """Issue 2, point 1: the 9 files of dcm_qa_ts/In (explicit/implicit LE, big endian, RLE,
    JPEG lossless x2, JPEG-LS x2, JPEG 2000) hold one mosaic; all decode to the same voxels."""
    folder = shared_path("dcm_qa_ts", "In")
    files = sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem))
    assert len(files) == 9
    vols = [load(f) for f in files]
    syntaxes = {v.meta["transfer_syntax"] for v in vols}
    assert len(syntaxes) == 7  # 5/6 are two JPEG lossless encodings, 7/8 two JPEG-LS ones
    first = vols[0]
    assert first.shape == (35, 64, 64) and first.meta["mosaic_tiles"] == 35
    assert int(first.array.max()) > 100  # a real image, not zeros
    for f, v in zip(files[1:], vols[1:]):
        np.testing.assert_array_equal(v.array, first.array, err_msg=f.name)
        np.testing.assert_allclose(v.affine, first.affine, atol=1e-6, err_msg=f.name)
