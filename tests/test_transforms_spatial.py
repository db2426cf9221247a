"""Issue 4, point 3: spatial transforms keep world coordinates; masks follow their image."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import medload.transforms as T
from fixtures.phantoms import ct_phantom, landmark_volume
from medload.volume import Volume
from tests.conftest import shared_path


def _world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.r_[np.asarray(index, float), 1.0])[:3]


def _centroids(mask: Volume, n: int) -> np.ndarray:
    """World position of each label's centre of mass."""
    from scipy import ndimage

    idx = ndimage.center_of_mass(np.ones(mask.shape), mask.array, range(1, n + 1))
    return np.array([_world(mask.affine, i) for i in idx])


def _half_voxel_world(vol: Volume, world: np.ndarray) -> np.ndarray:
    """Distance from ``world`` to the voxel grid expressed in voxels along each axis."""
    return np.linalg.solve(vol.affine[:3, :3], world - vol.affine[:3, 3])


@pytest.mark.parametrize(
    "spacing, interpolation", [((1.5, 0.5, 0.6), "linear"), ((2.0, 1.3, 1.1), "bspline"), ((None, 0.35, 0.35), "linear")]
)
def test_resample_keeps_landmarks_in_place(spacing, interpolation):
    image, mask, marks = landmark_volume()
    out, out_mask = T.Pipeline([T.Resample(spacing, interpolation)])(image, mask=mask)
    expected = [s if s is not None else image.spacing[0] for s in spacing]
    np.testing.assert_allclose(out.spacing, expected, atol=1e-6)
    np.testing.assert_allclose(out.origin, image.origin)  # voxel 0 does not move
    # Each landmark's brightest voxel in the output lies within half an output voxel of where
    # the input affine puts the landmark's centre.
    for z, y, x in marks:
        world = _world(image.affine, (z, y, x))
        where = _half_voxel_world(out, world)  # fractional output index of the landmark
        near = np.round(where).astype(int)
        box = tuple(slice(max(c - 2, 0), c + 3) for c in near)
        local = np.unravel_index(np.argmax(out.array[box]), out.array[box].shape)
        peak = np.array([b.start + i for b, i in zip(box, local)])
        assert np.all(np.abs(peak - where) <= 0.5 + 1e-6), (peak, where)
    # The mask moved with the image: label centroids in world coordinates agree.
    assert out_mask.shape == out.shape and out_mask.array.dtype == np.uint8
    np.testing.assert_allclose(out_mask.affine, out.affine)
    n = len(marks)
    before, after = _centroids(mask, n), _centroids(out_mask, n)
    # within half an output voxel along each output axis
    shift_voxels = np.linalg.solve(out.affine[:3, :3], (before - after).T)
    assert np.abs(shift_voxels).max() <= 0.5 + 1e-6, shift_voxels
    assert set(np.unique(out_mask.array)) <= set(range(n + 1))  # nearest neighbour: no new labels


@pytest.mark.parametrize("interpolation", ["linear", "bspline"])
def test_upsampling_fills_the_last_half_voxel_with_the_edge_not_zero(interpolation):
    # 10 slices of 3 mm cover 30 mm; 1.5 mm gives 20 slices, the last 1.5 mm past the last
    # slice centre. ITK calls that point outside: it must get the edge value, not 0 (water in HU).
    ramp = (np.arange(10.0) * 10 + 100)[:, None, None] * np.ones((1, 6, 6))
    image = Volume(ramp, np.diag([3.0, 1.0, 1.0, 1.0]), modality="CT")
    mask = Volume(np.ones((10, 6, 6), np.uint8), image.affine)
    out, out_mask = T.Pipeline([T.Resample((1.5, None, None), interpolation)])(image, mask=mask)
    assert out.shape == (20, 6, 6)
    np.testing.assert_allclose(out.array[::2, 3, 3], ramp[:, 3, 3], atol=1e-3)  # on the old centres
    np.testing.assert_allclose(out.array[-1], 190.0, atol=1e-3)  # edge value, not 0
    assert out.array.min() >= 100.0 - 1e-3
    assert int(out_mask.array.sum()) == 20 * 36  # every resampled voxel keeps its label


def test_reorient_crop_and_resize_keep_world_coordinates():
    image, mask, marks = landmark_volume()
    pipe = T.Pipeline(
        [T.Reorient(), T.CropForeground(threshold=50, margin=2), T.ResizeSlices(48), T.ResizeSlices((30, 20), mode="resize")]
    )
    out, out_mask = pipe(image, mask=mask)
    assert out.shape[1:] == (30, 20) and out_mask.shape == out.shape
    np.testing.assert_allclose(out_mask.affine, out.affine)
    before, after = _centroids(mask, len(marks)), _centroids(out_mask, len(marks))
    # exact steps (reorient, crop, pad) then one in-plane resize: within half an output voxel
    shift_voxels = np.linalg.solve(out.affine[:3, :3], (before - after).T)
    assert np.abs(shift_voxels).max() <= 0.5 + 1e-6, shift_voxels
    assert [name for name, _ in out.history] == ["reorient", "crop_foreground", "resize_slices", "resize_slices"]
    assert [name for name, _ in out_mask.history] == ["reorient", "crop_foreground", "resize_slices", "resize_slices"]


def test_pad_crop_shifts_origin_exactly():
    vol = ct_phantom((2, 30, 40))
    out = T.ResizeSlices((20, 50))(vol)  # crop 5 rows each side, pad 5 columns each side
    np.testing.assert_array_equal(out.array[:, :, 5:45], vol.array[:, 5:25, :])
    assert (out.array[:, :, :5] == vol.array.min()).all()
    np.testing.assert_allclose(out.origin, _world(vol.affine, (0, 5, -5)))
    assert out.spacing == vol.spacing
    assert out.history[-1][1]["pad_value"] == float(vol.array.min())


def test_resize_affine_maps_pixel_centres():
    vol = Volume(np.zeros((1, 100, 80), np.float32), np.diag([2.0, 0.5, 0.5, 1.0]))
    out = T.ResizeSlices(50, mode="resize")(vol)
    assert out.spacing == (2.0, 1.0, 0.8)
    # output pixel 0 covers input pixels 0-1: its centre is at input index 0.5
    np.testing.assert_allclose(_world(out.affine, (0, 0, 0)), _world(vol.affine, (0, 0.5, 0.3)))


def test_crop_foreground_ct_uses_body_mask():
    vol = ct_phantom((4, 64, 64))
    out = T.CropForeground()(vol)
    box = out.history[-1][1]["box"]
    assert box[0] == [0, 4]
    assert box[1][1] < 56  # the table (rows 56-57) is cut off
    np.testing.assert_allclose(out.origin, _world(vol.affine, [b[0] for b in box]))


def test_resampled_real_ct_mask_stays_aligned():
    ct = nib.load(shared_path("totalsegmentator_ct", "example_ct_sm.nii.gz"))
    image = Volume.from_nifti(ct, modality="CT")
    mask = Volume((image.array > 200).astype(np.uint8), image.affine)  # bone: a mask on the image grid
    out, out_mask = T.Pipeline([T.Resample((4.0, 2.0, 2.0))])(image, mask=mask)
    # where the mask says bone, the linearly resampled image says bone too (almost everywhere)
    assert (out.array[out_mask.array == 1] > 100).mean() > 0.9
    bone_ml = [float(m.array.sum() * np.prod(m.spacing)) / 1000 for m in (mask, out_mask)]
    assert bone_ml[1] == pytest.approx(bone_ml[0], rel=0.1)  # same bone volume in millilitres


def test_reorient_keep_slice_axis_keeps_a_sagittal_series_sagittal():
    affine = np.diag([-1.2, -0.8, -1.0, 1.0])  # axis 0 points L (sagittal slices), rows P, columns I
    image, mask, marks = landmark_volume()
    vol, msk = Volume(image.array, affine), Volume(mask.array, affine)
    assert vol.orientation == ("L", "P", "I")
    out, out_mask = T.Pipeline([T.Reorient(keep_slice_axis=True)])(vol, mask=msk)
    assert out.orientation == ("R", "S", "A") and out.history[-1][1]["axcodes"] == ["R", "S", "A"]
    np.testing.assert_array_equal(out.array, vol.array[::-1, ::-1, ::-1].transpose(0, 2, 1))
    before, after = _centroids(msk, len(marks)), _centroids(out_mask, len(marks))
    np.testing.assert_allclose(before, after, atol=1e-9)


@pytest.mark.parametrize("pad_value, dtype", [(-1.0, np.float32), (0.5, np.float32), (7.0, np.uint8)])
def test_pad_value_is_padded_as_given_never_wrapped_into_the_dtype(pad_value, dtype):
    image = Volume(np.full((2, 4, 4), 9, np.uint8), np.eye(4))
    out = T.ResizeSlices(6, pad_value=pad_value)(image).array
    assert out.dtype == dtype and out.shape == (2, 6, 6)
    assert float(out[0, 0, 0]) == pad_value  # not 255 (wrapped) or 0 (truncated)
    assert (out[:, 1:5, 1:5] == 9).all()
