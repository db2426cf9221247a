"""Issue 4, point 1: each transform equals the direct library call it wraps, on the same array."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage import exposure, restoration, transform as sktransform

import medload.transforms as T
from fixtures.phantoms import ct_phantom, mr_phantom, noisy_phantom
from medload.volume import Volume


@pytest.fixture(scope="module")
def noisy() -> Volume:
    _, noisy = noisy_phantom((3, 48, 48), sigma=0.1, seed=1)
    return Volume(noisy, np.diag([2.0, 0.8, 0.8, 1.0]), modality="MR")


def _sitk(a):
    return sitk.GetImageFromArray(np.asarray(a, np.float32))


@pytest.mark.parametrize("workers", [1, 2])
def test_nl_means_equals_skimage_per_slice(noisy, workers):
    out = T.NLMeans(sigma=0.1, h=0.8, workers=workers)(noisy).array
    for z in range(noisy.shape[0]):
        ref = restoration.denoise_nl_means(noisy.array[z], h=0.08, sigma=0.1, patch_size=5, patch_distance=6, fast_mode=True)
        np.testing.assert_array_equal(out[z], ref.astype(np.float32))


def test_nl_means_3d_equals_skimage(noisy):
    out = T.NLMeans(sigma=0.1, per_slice=False, patch_size=3, patch_distance=2)(noisy).array
    ref = restoration.denoise_nl_means(noisy.array, h=0.08, sigma=0.1, patch_size=3, patch_distance=2, fast_mode=True)
    np.testing.assert_array_equal(out, ref.astype(np.float32))


def test_tv_equals_skimage(noisy):
    out = T.TVDenoise(weight=0.1)(noisy).array
    ref = np.stack([restoration.denoise_tv_chambolle(s, weight=0.1) for s in noisy.array])
    np.testing.assert_array_equal(out, ref.astype(np.float32))


def test_bilateral_equals_simpleitk(noisy):
    out = T.Bilateral(domain_sigma=1.5, range_sigma=0.2)(noisy).array
    ref = np.stack([sitk.GetArrayFromImage(sitk.Bilateral(_sitk(s), 1.5, 0.2)) for s in noisy.array])
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    "cls, func",
    [(T.CurvatureDiffusion, sitk.CurvatureAnisotropicDiffusion), (T.GradientDiffusion, sitk.GradientAnisotropicDiffusion)],
)
def test_diffusion_equals_simpleitk_2d_and_3d(noisy, cls, func):
    out2d = cls(iterations=3, conductance=2.0)(noisy).array
    ref2d = np.stack([sitk.GetArrayFromImage(func(_sitk(s), 0.125, 2.0, 1, 3)) for s in noisy.array])
    np.testing.assert_array_equal(out2d, ref2d)
    out3d = cls(iterations=3, conductance=2.0, per_slice=False)(noisy).array
    np.testing.assert_array_equal(out3d, sitk.GetArrayFromImage(func(_sitk(noisy.array), 0.0625, 2.0, 1, 3)))


def test_median_and_gaussian_equal_scipy(noisy):
    np.testing.assert_array_equal(
        T.Median(size=3)(noisy).array, np.stack([ndimage.median_filter(s, size=3) for s in noisy.array])
    )
    np.testing.assert_array_equal(T.Median(size=3, per_slice=False)(noisy).array, ndimage.median_filter(noisy.array, size=3))
    # sigma_mm=1.6 on 0.8 mm pixels is sigma 2 voxels in-plane
    out = T.Gaussian(sigma_mm=1.6)(noisy)
    np.testing.assert_array_equal(out.array, np.stack([ndimage.gaussian_filter(s, sigma=[2.0, 2.0]) for s in noisy.array]))
    assert out.history[-1][1]["sigma"] == [2.0, 2.0]


def test_clahe_equals_skimage_per_slice_and_3d():
    vol = ct_phantom((4, 64, 64))
    lo, hi = float(vol.array.min()), float(vol.array.max())
    unit = (vol.array.astype(np.float64) - lo) / (hi - lo)
    out = T.CLAHE(clip_limit=0.02, kernel_mm=12.8, workers=2)(vol)  # 12.8 mm / 0.8 mm = 16 voxels
    assert out.history[-1][1]["kernel_size"] == [16, 16]
    assert out.history[-1][1]["in_range"] == [lo, hi]
    for z in range(4):
        ref = exposure.equalize_adapthist(unit[z], kernel_size=[16, 16], clip_limit=0.02, nbins=256)
        np.testing.assert_array_equal(out.array[z], ref.astype(np.float32))
    out3d = T.CLAHE(clip_limit=0.02, kernel_size=(2, 16, 16), per_slice=False)(vol).array
    ref3d = exposure.equalize_adapthist(unit, kernel_size=[2, 16, 16], clip_limit=0.02, nbins=256)
    np.testing.assert_array_equal(out3d, ref3d.astype(np.float32))


def test_equalize_hist_equals_skimage_with_mask():
    vol = mr_phantom((6, 32, 32))
    out = T.HistogramEqualize(nbins=128, mask="nonzero")(vol).array
    ref = exposure.equalize_hist(vol.array, nbins=128, mask=vol.array != 0)
    np.testing.assert_array_equal(out, ref.astype(np.float32))
    per_slice = T.HistogramEqualize(per_slice=True)(vol).array
    np.testing.assert_array_equal(per_slice[3], exposure.equalize_hist(vol.array[3], nbins=256).astype(np.float32))


def test_n4_equals_simpleitk_recipe():
    vol = mr_phantom((16, 32, 32))
    out = T.N4BiasCorrection(shrink_factor=2, iterations=[10, 10])(vol).array
    image = _sitk(vol.array)
    image.SetSpacing([1.0, 1.0, 1.2])
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    shrunk, shrunk_mask = sitk.Shrink(image, [2, 2, 2]), sitk.Shrink(mask, [2, 2, 2])
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([10, 10])
    n4.SetConvergenceThreshold(0.001)
    n4.Execute(shrunk, shrunk_mask)
    field = np.exp(sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image))).astype(np.float32)
    np.testing.assert_allclose(out, vol.array / field, rtol=1e-6)


def test_window_and_hu_clip_equal_numpy():
    vol = ct_phantom()
    hu = vol.array.astype(np.float32)
    np.testing.assert_allclose(T.Window("abdomen")(vol).array, np.clip((hu - (40 - 200)) / 400, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(T.HUClip(-200, 300)(vol).array, np.clip(hu, -200, 300))
    multi = T.MultiWindow(["brain", [-600, 1500]])(vol)
    np.testing.assert_allclose(multi.array[1], np.clip((hu + 1350) / 1500, 0, 1), atol=1e-6)


def test_radiograph_window_equals_pydicom_apply_windowing():
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    arr = np.arange(0, 4096, 7, dtype=np.uint16).reshape(1, 1, -1)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.BitsAllocated, ds.PixelRepresentation = 12, 16, 0
    ds.WindowCenter, ds.WindowWidth = 1500, 1200
    ds.VOILUTFunction = "LINEAR"
    ref = apply_windowing(arr[0, 0].astype(np.float64), ds)  # output in the stored range [0, 4095]
    vol = Volume(arr, np.eye(4), modality="DX", meta={"window_center": [1500, 900], "window_width": [1200, 500]})
    out = T.RadiographWindow()(vol)
    np.testing.assert_allclose(out.array[0, 0], ref / 4095, atol=1e-6)
    assert out.history[-1][1] == {"center": 1500.0, "width": 1200.0, "invert": False}
    assert pydicom.__version__  # pydicom's own function is the reference


def test_reorient_equals_nibabel_as_closest_canonical():
    import nibabel as nib

    vol = ct_phantom((5, 16, 12))  # axes (z, y, x) point S, P, L
    out = T.Reorient()(vol)
    canonical = Volume.from_nifti(nib.as_closest_canonical(vol.to_nifti()))
    assert out.orientation == ("S", "A", "R")
    np.testing.assert_array_equal(out.array, canonical.array)
    np.testing.assert_allclose(out.affine, canonical.affine)


def _skimage_per_slice(array, size, *, order=1, anti_aliasing=True):
    """skimage's 2D resize on each slice of ``(..., Y, X)``, in float32 as medload feeds it."""
    flat = array.reshape((-1,) + array.shape[-2:])
    if order > 0:
        flat = flat.astype(np.float32)
    out = [
        sktransform.resize(s, size, order=order, mode="edge", preserve_range=True, anti_aliasing=anti_aliasing and order > 0)
        for s in flat
    ]
    return np.stack(out).reshape(array.shape[:-2] + tuple(size))


def _assert_float32_close(actual, desired):
    span = max(float(np.ptp(desired)), 1.0)
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-5 * span)


def test_resize_equals_skimage_resize():
    vol = ct_phantom((2, 40, 30))
    out = T.ResizeSlices((20, 24), mode="resize", workers=2)(vol).array
    # medload computes skimage's resize as two cached 1D operators: skimage's 2D call on
    # each slice to float32 precision...
    assert out.dtype == np.float32 and out.shape == (2, 20, 24)
    _assert_float32_close(out, _skimage_per_slice(vol.array, (20, 24)))
    # ... and one 3D call in float64 likewise (the slice axis is not touched).
    ref = sktransform.resize(vol.array, (2, 20, 24), order=1, mode="edge", preserve_range=True, anti_aliasing=True)
    _assert_float32_close(out, ref)


_RESIZE_SHAPES = [
    ((64, 64), (32, 32)),  # down by 2
    ((66, 53), (20, 16)),  # down by 3.3
    ((16, 12), (64, 48)),  # up by 4
    ((40, 10), (13, 31)),  # one axis down, one up
    ((1, 7), (5, 1)),  # 1-pixel edges
    ((9, 1), (1, 4)),
    ((3, 5), (3, 5)),  # same size
    ((600, 7), (150, 9)),  # operator built from more than one block of identity columns
]


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize(("plane", "size"), _RESIZE_SHAPES)
def test_resize_slices_equals_skimage_per_slice(plane, size, dtype):
    rng = np.random.default_rng(7)
    array = (rng.normal(0, 400, (3,) + plane) + 40).astype(dtype)
    out = T.spatial.resize_slices(array, size)
    assert out.dtype == np.float32 and out.shape == (3,) + size
    _assert_float32_close(out, _skimage_per_slice(array, size))
    # stays inside each slice's range, as skimage's clip keeps it
    assert (out.min(axis=(1, 2)) >= array.min(axis=(1, 2)) - 1e-3).all()
    assert (out.max(axis=(1, 2)) <= array.max(axis=(1, 2)) + 1e-3).all()


def test_resize_slices_4d_and_no_anti_aliasing_equal_skimage():
    rng = np.random.default_rng(3)
    array = rng.random((2, 3, 48, 36)).astype(np.float32)  # (C, Z, Y, X)
    out = T.ResizeSlices((20, 50), mode="resize")(Volume(array, np.eye(4))).array
    assert out.shape == (2, 3, 20, 50)
    _assert_float32_close(out, _skimage_per_slice(array, (20, 50)))
    plain = T.spatial.resize_slices(array, (20, 50), anti_aliasing=False)
    _assert_float32_close(plain, _skimage_per_slice(array, (20, 50), anti_aliasing=False))
    assert not np.allclose(plain, out, atol=1e-3)  # the anti-aliasing did smooth the shrunk axis


@pytest.mark.parametrize("order", [2, 3])
def test_resize_slices_spline_orders_equal_skimage_with_its_clip(order):
    # splines overshoot at edges; skimage clips to the slice's range, and so must we
    array = np.zeros((2, 30, 30), np.float32)
    array[0, 10:20, 10:20] = 1000.0
    array[1] = np.random.default_rng(5).normal(size=(30, 30))
    out = T.spatial.resize_slices(array, (47, 13), order=order)
    _assert_float32_close(out, _skimage_per_slice(array, (47, 13), order=order))
    assert out[0].min() == 0.0 and out[0].max() <= 1000.0


@pytest.mark.parametrize(("plane", "size"), _RESIZE_SHAPES + [((2, 4), (1, 2)), ((7, 5), (2, 3))])
def test_resize_nearest_copies_labels_as_skimage(plane, size):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 6, (2,) + plane).astype(np.uint8)
    out = T.spatial.resize_slices(labels, size, order=0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _skimage_per_slice(labels, size, order=0))
    mask = Volume(labels.astype(np.int16), np.eye(4))
    image = Volume(labels.astype(np.float32), np.eye(4))
    _, resized_mask = T.ResizeSlices(size, mode="resize").apply_pair(image, mask)
    assert resized_mask.array.dtype == np.int16
    np.testing.assert_array_equal(resized_mask.array, out)


def test_resample_equals_simpleitk_resample():
    vol = mr_phantom((8, 20, 20))
    out = T.Resample(spacing=(2.4, 0.5, 0.5), interpolation="bspline")(vol)
    image = _sitk(vol.array)
    image.SetSpacing([1.0, 1.0, 1.2])
    ref = sitk.Resample(
        image,
        [40, 40, 4],
        sitk.Transform(),
        sitk.sitkBSpline,
        image.GetOrigin(),
        [0.5, 0.5, 2.4],
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    np.testing.assert_allclose(out.array, sitk.GetArrayFromImage(ref), rtol=1e-5, atol=1e-4)
    assert out.shape == (4, 40, 40) and out.spacing == (2.4, 0.5, 0.5)
