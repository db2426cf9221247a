"""Issue 4, point 5: NaN/inf voxels, constant slices and volumes, parameters out of range.

Each gives a TransformError (also a ValueError) naming the parameter with the expected and
the actual value, or a documented result that is tested here; never NaN in the output.
"""

from __future__ import annotations

import numpy as np
import pytest

import medload
import medload.transforms as T
from fixtures.phantoms import ct_phantom, mr_phantom
from medload.errors import MedloadError, TransformError
from medload.volume import Volume


def every_transform() -> list[T.Transform]:
    """One instance of every registered transform (CT windows forced so MR inputs reach them)."""
    made = [
        T.FillNonFinite(),
        T.HUClip(force=True),
        T.Window("brain", force=True),
        T.MultiWindow(force=True),
        T.CTBodyMask(force=True),
        T.N4BiasCorrection(shrink_factor=2, iterations=[5]),
        T.PercentileClip(),
        T.ZScore(),
        T.MinMax(),
        T.NyulStandardize([0.0, 50.0, 100.0], [1.0, 50.0, 99.0]),
        T.RadiographWindow(),
        T.HistogramEqualize(),
        T.CLAHE(),
        T.NLMeans(),
        T.TVDenoise(),
        T.Bilateral(),
        T.CurvatureDiffusion(),
        T.GradientDiffusion(),
        T.Median(),
        T.Gaussian(sigma=1.0),
        T.Resample((2.0, 2.0, 2.0)),
        T.Reorient(),
        T.CanonicalSlices(),
        T.CropForeground(),
        T.ResizeSlices(24),
        T.Grayscale(),
        T.ScaleStoredRange(),
    ]
    assert {t.name for t in made} == set(T.REGISTRY), "a registered transform is missing from this sweep"
    return made


SWEEP = every_transform()


@pytest.mark.parametrize("transform", SWEEP, ids=lambda t: t.name)
def test_nan_and_inf_voxels_are_refused_with_the_fix(transform):
    array = mr_phantom((4, 16, 16)).array.copy()
    array[1, 2, 3] = np.nan
    array[2, 5, 5] = np.inf
    vol = Volume(array, np.eye(4), modality="MR")
    if isinstance(transform, T.FillNonFinite):
        out = transform(vol).array
        assert np.isfinite(out).all() and out[1, 2, 3] == 0.0 and out[2, 5, 5] == np.nanmax(array[np.isfinite(array)])
        return
    with pytest.raises(
        TransformError,
        match=r"expected finite voxel values, found 2 NaN/inf voxels "
        r"\(first at index \(1, 2, 3\)\).*FillNonFinite",
    ):
        transform(vol)
    fixed = T.Pipeline([T.FillNonFinite(), transform])(vol)
    assert np.isfinite(fixed.array).all()


@pytest.mark.parametrize("transform", SWEEP, ids=lambda t: t.name)
def test_constant_slices_and_volumes_give_finite_documented_output(transform):
    varied = mr_phantom((4, 16, 16)).array.copy()
    varied[2] = 7.0  # one all-constant slice
    for array in (varied, np.full((4, 16, 16), 7.0, np.float32)):
        out = transform(Volume(array, np.eye(4), modality="MR")).array
        assert np.isfinite(out).all(), f"{transform.name} gave NaN/inf"


def test_constant_results_are_the_documented_ones():
    flat = Volume(np.full((3, 8, 8), 7.0, np.float32), np.eye(4), modality="MR")
    assert (T.ZScore(mask="all")(flat).array == 0).all()  # zero variance: zeros
    assert (T.MinMax()(flat).array == 0).all()
    assert (T.N4BiasCorrection()(flat).array == 7.0).all()  # no bias to see: unchanged
    assert (T.HistogramEqualize()(flat).array == 0).all()
    nlm = T.NLMeans()(flat)
    assert (nlm.array == 7.0).all() and nlm.history[-1][1]["sigma"] == 0.0
    assert (T.NyulStandardize([0.0, 50.0, 100.0], [1.0, 50.0, 99.0])(flat).array == 50.0).all()  # middle landmark
    # CLAHE: a constant slice of a varied volume keeps its [0, 1]-mapped value
    varied = mr_phantom((4, 16, 16)).array.copy()
    varied[2] = 7.0
    out = T.CLAHE()(Volume(varied, np.eye(4)))
    lo, hi = out.history[-1][1]["in_range"]
    np.testing.assert_allclose(out.array[2], (7.0 - lo) / (hi - lo), rtol=1e-6)
    assert 0.0 <= out.array.min() and out.array.max() <= 1.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: T.CLAHE(clip_limit=2), r"clahe: clip_limit must be in \[0, 1\], found 2"),
        (lambda: T.CLAHE(kernel_size=0), r"clahe: kernel_size must be in \(0, inf\], found 0"),
        (lambda: T.CLAHE(kernel_size=8, kernel_mm=10), r"kernel_size \(voxels\) or kernel_mm, not both"),
        (lambda: T.Window(center=40, width=-5), r"window: width must be in \(0, inf\], found -5"),
        (lambda: T.Window("brian"), r"unknown window name 'brian'; expected one of brain, subdural"),
        (lambda: T.HUClip(low=100, high=-100), r"hu_clip: high must be in \(100, inf\], found -100"),
        (lambda: T.NLMeans(h=0), r"nl_means: h must be in \(0, 100\], found 0"),
        (lambda: T.NLMeans(sigma=float("nan")), r"nl_means: sigma must be in \[0, inf\], found nan"),
        (lambda: T.N4BiasCorrection(shrink_factor=0), r"n4: shrink_factor must be in \[1, 16\], found 0"),
        (lambda: T.N4BiasCorrection(iterations=[]), r"n4: iterations must be a non-empty list"),
        (lambda: T.PercentileClip(lower=60, upper=40), r"percentile_clip: upper must be in \(60, 100\], found 40"),
        (lambda: T.ZScore(mask="brain"), r"zscore: mask must be one of all, foreground, nonzero, found 'brain'"),
        (lambda: T.Resample(spacing=(-1, 1, 1)), r"resample: spacing must be in \(0, 100\], found -1"),
        (lambda: T.Resample(interpolation="cubic"), r"interpolation must be 'linear', 'bspline' or 'nearest', found 'cubic'"),
        (lambda: T.ResizeSlices(0), r"resize_slices: size must be in \[1, 16384\], found 0"),
        (lambda: T.ResizeSlices(64, mode="stretch"), r"mode must be 'pad-crop' or 'resize', found 'stretch'"),
        (lambda: T.Median(size=0), r"median: size must be in \[1, 51\], found 0"),
        (lambda: T.Gaussian(), r"give exactly one of sigma \(voxels\) or sigma_mm"),
        (lambda: T.CurvatureDiffusion(time_step=0.5, per_slice=False), r"time_step must be in \(0, 0.0625\], found 0.5"),
        (lambda: T.Reorient(("R", "L", "S")), r"axcodes must name each of L/R, A/P, S/I once"),
        (lambda: T.NyulStandardize([0, 100], [1, 50, 99]), r"expected 3 landmarks .* found 2"),
        (lambda: T.CLAHE(workers=-1), None),
    ],
)
def test_out_of_range_parameters_name_expected_and_found(make, message):
    if message is None:  # workers is checked when the transform runs
        with pytest.raises(medload.ConfigError, match=r"workers must be >= 0 .* found -1"):
            make()(ct_phantom((2, 16, 16)))
        return
    with pytest.raises(TransformError, match=message) as info:
        make()
    assert isinstance(info.value, ValueError) and isinstance(info.value, MedloadError)


def test_ct_window_on_mr_is_refused_unless_forced():
    mr = mr_phantom((2, 16, 16))
    for transform in (T.Window("brain"), T.MultiWindow(), T.HUClip(), T.CTBodyMask()):
        with pytest.raises(TransformError, match=r"expects a CT volume in HU .* found modality 'MR'.*force=True"):
            transform(mr)
    with pytest.raises(TransformError, match="found modality 'CT' with intensity 'HU window 40/80"):
        medload.preset("ct-lung")(medload.preset("ct-brain")(ct_phantom((2, 16, 16))))
    forced = T.Window("brain", force=True)(mr)
    assert 0.0 <= forced.array.min() and forced.array.max() <= 1.0


def test_wrong_inputs_to_pipeline_and_transforms():
    with pytest.raises(TransformError, match="expected a medload.Volume, found ndarray"):
        T.Window("brain")(np.zeros((2, 2, 2)))
    with pytest.raises(TransformError, match="Pipeline step 0 must be a medload Transform, found str"):
        T.Pipeline(["window"])
    with pytest.raises(TransformError, match=r"multi_window: expected a 3D CT \(Z, Y, X\), found shape \(3, 2, 4, 4\)"):
        T.MultiWindow(force=True)(T.MultiWindow()(Volume(np.zeros((2, 4, 4)), np.eye(4), modality="CT")))
    mask = Volume(np.zeros((2, 4, 4), np.float32), np.eye(4))
    with pytest.raises(TransformError, match="a mask must hold integer labels or booleans, found dtype float32"):
        T.Pipeline([T.ResizeSlices(8)])(Volume(np.zeros((2, 4, 4)), np.eye(4)), mask=mask)


def test_four_d_volumes_are_handled_frame_by_frame():
    frames = np.stack([mr_phantom((4, 16, 16)).array * s for s in (1.0, 3.0)])
    vol = Volume(frames, np.diag([1.2, 1.0, 1.0, 1.0]), modality="MR")
    out = T.Pipeline([T.ZScore(mask="all"), T.Resample((2.4, 2.0, 2.0)), T.NLMeans()])(vol)
    assert out.shape == (2, 2, 8, 8)
    np.testing.assert_allclose(out.array[0], out.array[1], atol=1e-4)  # z-score removes the per-frame scale
