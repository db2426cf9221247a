"""NIfTI files are told apart by their bytes, not by their header.

Every image of one protocol registered to one template (an MNI-space or BraTS-style set) has
the same header and, uncompressed, the same file size. medload recorded a NIfTI's identity as a
digest of exactly those, so the converter took such a set for one series: it converted the
first file and reported every other patient as a "duplicate", matched masks by that digest, and
would have resumed one file as another. Now the identity is a digest of the file's bytes.
"""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from fixtures.stores import as_earlier_medload
import medload
from medload.errors import StoreError
from medload.io import nifti

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _template_set(folder, n=3, suffix=".nii"):
    """``n`` subjects on one template grid: one header, different voxels (and masks)."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    arrays = {}
    for i in range(n):
        array = np.random.default_rng(i).integers(0, 1000, (10, 12, 8)).astype(np.int16)
        mask = np.zeros(array.shape, np.uint8)
        mask[i : i + 2, 2:5, 1:3] = 1  # a different place for each subject
        nib.save(nib.Nifti1Image(array, AFFINE), images / f"sub-0{i}{suffix}")
        nib.save(nib.Nifti1Image(mask, AFFINE), masks / f"sub-0{i}{suffix}")
        arrays[f"sub-0{i}"] = (array, mask)
    return images, masks, arrays


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_every_subject_of_a_template_registered_set_is_converted_with_its_own_mask(tmp_path, suffix):
    images, masks, arrays = _template_set(tmp_path, suffix=suffix)
    headers = {bytes(nib.load(p).header.binaryblock) for p in images.iterdir()}
    assert len(headers) == 1  # the set this test is about: one header for every subject
    report = medload.convert(
        images,
        tmp_path / "out",
        masks=masks,
        pipeline="none",
        orientation="acquisition",
        dtype="float32",
        workers=0,
        progress=False,
    )
    assert report.counts["converted"] == 3 and report.counts["duplicate_series"] == 0, report.counts
    found = set()
    with medload.open(tmp_path / "out") as store:
        for index in range(len(store.volumes)):
            volume, mask = store.read_volume(index, mask=True)
            # Which subject is it? The one whose voxels it holds, as medload reads the source file.
            (name,) = [n for n in arrays if np.array_equal(volume.array, medload.load(images / f"{n}{suffix}").array)]
            np.testing.assert_array_equal(mask.array, medload.load(masks / f"{name}{suffix}").array, err_msg=name)
            found.add(name)
    assert found == set(arrays)


def test_the_same_file_twice_is_still_one_series(tmp_path):
    images, _, _ = _template_set(tmp_path, n=1)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(images / "sub-00.nii", copy / "again.nii")
    report = medload.convert([images, copy], tmp_path / "out", pipeline="none", workers=0, progress=False)
    assert report.counts["converted"] == 1 and report.counts["duplicate_series"] == 1


def test_a_store_recorded_by_header_only_is_not_continued(tmp_path, monkeypatch):
    images, _, _ = _template_set(tmp_path, n=2)

    def header_only(path):  # what medload recorded before
        import hashlib

        digest = hashlib.sha256(bytes(nib.load(path).header.binaryblock))
        digest.update(str(path.stat().st_size).encode())
        return digest.hexdigest()[:16]

    with monkeypatch.context() as patch:
        patch.setattr(nifti, "_source_hash", header_only)
        as_earlier_medload(patch)  # and unkeyed, as then
        medload.convert(images, tmp_path / "out", pipeline="none", workers=0, progress=False)
    with medload.open(tmp_path / "out") as store:
        assert len(store.volumes) == 1  # the old digest took the two subjects for one
    with pytest.raises(StoreError, match="by header and file size only"):
        medload.convert(images, tmp_path / "out", pipeline="none", workers=0, progress=False)
    report = medload.convert(images, tmp_path / "out", pipeline="none", workers=0, progress=False, overwrite=True)
    assert report.counts["converted"] == 2
