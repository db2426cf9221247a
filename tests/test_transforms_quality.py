"""Issue 4, point 2: the transforms do what a user wants, with numbers (phantoms and real CT)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

import medload
import medload.transforms as T
from fixtures.phantoms import bias_phantom, ct_phantom, mr_phantom, noisy_phantom
from medload.volume import Volume
from tests.conftest import shared_path


def _cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def test_nl_means_raises_psnr_by_3_db():
    clean, noisy = noisy_phantom((4, 64, 64), sigma=0.1, seed=0)
    vol = Volume(noisy, np.eye(4), modality="MR")
    out = T.NLMeans()(vol)
    before = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    after = peak_signal_noise_ratio(clean, out.array, data_range=1.0)
    assert after - before >= 3.0, f"PSNR {before:.1f} dB -> {after:.1f} dB"
    assert out.history[-1][1]["sigma"] == pytest.approx(0.1, rel=0.15)  # noise estimated from the image


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (T.TVDenoise, {"weight": 0.08}),
        (T.Bilateral, {"range_sigma": 0.2}),
        (T.CurvatureDiffusion, {"conductance": 1.0}),
        (T.Gaussian, {"sigma": 1.0}),
        (T.Median, {"size": 3}),
    ],
)
def test_other_denoisers_raise_psnr(cls, kwargs):
    clean, noisy = noisy_phantom((2, 64, 64), sigma=0.1, seed=3)
    out = cls(**kwargs)(Volume(noisy, np.eye(4)))
    gain = peak_signal_noise_ratio(clean, out.array, data_range=1.0) - peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    assert gain > 1.0, f"{cls.__name__}: PSNR gain {gain:.2f} dB"


def test_n4_halves_coefficient_of_variation():
    corrupted, _, inside = bias_phantom((32, 64, 64), strength=0.4)
    vol = Volume(corrupted, np.diag([1.5, 1.0, 1.0, 1.0]), modality="MR")
    out = T.N4BiasCorrection(shrink_factor=4)(vol).array  # the default shrink: fast and enough
    before, after = _cv(corrupted[inside]), _cv(out[inside])
    assert after <= 0.5 * before, f"CV {before:.3f} -> {after:.3f}"
    assert np.isfinite(out).all()


def test_clahe_raises_rms_contrast_of_real_ct():
    path = shared_path("totalsegmentator_ct", "example_ct.nii.gz")
    vol = Volume.from_nifti(nib.load(path), modality="CT", meta={"intensity": "HU"})
    unit = T.HUClip(-1024, 3071)(vol)  # a [0,1] view for the "before": CLAHE maps the same range
    lo, hi = -1024.0, 3071.0
    before = ((unit.array - lo) / (hi - lo)).std()
    out = T.CLAHE(clip_limit=0.01, kernel_mm=48, in_range=(lo, hi), workers=2)(vol)
    after = out.array.std()
    assert after > 1.5 * before, f"RMS contrast {before:.3f} -> {after:.3f}"
    assert 0.0 <= out.array.min() and out.array.max() <= 1.0
    assert out.history[-1][1]["kernel_size"] == [16, 16]  # 48 mm on 3 mm voxels


def test_ct_body_mask_drops_air_and_table():
    vol = ct_phantom((4, 64, 64))
    out = T.CTBodyMask()(vol).array
    table = (slice(None), slice(56, 57), slice(10, 54))
    assert (vol.array[table] > 200).all() and (out[table] == -1024).all()
    lung = (slice(None), 27, 21)
    assert (out[lung] < -700).all()  # lungs are inside the body: kept, not filled
    assert abs(float(out[:, 29, 32].mean()) - 40) < 10


def test_ct_body_mask_on_real_ct_keeps_the_body():
    path = shared_path("totalsegmentator_ct", "example_ct_sm.nii.gz")
    vol = Volume.from_nifti(nib.load(path), modality="CT")
    out = T.CTBodyMask()(vol).array
    kept = out != -1024
    assert 0.15 < kept.mean() < 0.9
    assert (vol.array[kept] > -500).mean() > 0.8  # what is kept is mostly tissue
    assert (vol.array[~kept] < -500).mean() > 0.9  # what is dropped is mostly air


def test_zscore_inside_foreground_and_percentile_clip():
    vol = mr_phantom((12, 40, 40))
    fg = T.intensity.foreground_mask(vol.array)
    clipped = T.PercentileClip(1, 99, mask="foreground")(vol)
    assert float(clipped.array.max()) == pytest.approx(float(np.percentile(vol.array[fg], 99)), rel=1e-5)
    out = T.ZScore(mask="foreground")(clipped)
    fg = T.intensity.foreground_mask(clipped.array)  # the mask ZScore computes, on its input
    assert float(out.array[fg].mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(out.array[fg].std()) == pytest.approx(1.0, abs=1e-3)
    assert out.meta["intensity"] == "z-score (mean 0, std 1 inside foreground)"
    mm = T.MinMax(mask="foreground")(vol).array
    assert float(mm[fg].min()) == 0.0 and float(mm[fg].max()) == 1.0


def test_nyul_makes_differently_scaled_volumes_agree(tmp_path):
    rng = np.random.default_rng(0)
    vols = [
        Volume(rng.gamma(2.0, s, (6, 24, 24)).astype(np.float32) + o, np.eye(4), modality="MR")
        for s, o in [(20, 5), (45, 30), (80, 0)]
    ]
    nyul = T.NyulStandardize.fit(vols[:2], mask="all")
    (tmp_path / "landmarks.json").write_text(json.dumps(nyul.params()))
    loaded = T.NyulStandardize(**json.loads((tmp_path / "landmarks.json").read_text()))
    outs = [loaded(v).array for v in vols]
    deciles = [np.percentile(o, [10, 50, 90]) for o in outs]
    np.testing.assert_allclose(deciles[0], deciles[2], atol=1.0)  # before: medians 39 vs 134
    np.testing.assert_allclose(np.percentile(outs[2], nyul.percentiles), nyul.landmarks, atol=0.5)


def test_multiwindow_channels_and_presets():
    vol = ct_phantom()
    out = medload.preset("ct-multiwindow")(vol)
    assert out.shape == (3,) + vol.shape and out.meta["channels"] == ["brain", "subdural", "bone"]
    # soft tissue at 40 HU: middle of the brain window 40/80, (40 + 500) / 1800 of the bone window 400/1800
    assert out.array[0, :, 29, 32].mean() == pytest.approx(0.5, abs=0.1)
    assert out.array[2, :, 29, 32].mean() == pytest.approx(0.3, abs=0.01)
    assert set(T.PRESETS) >= {"ct-brain", "ct-lung", "ct-abdomen", "ct-bone", "ct-multiwindow", "mr-brain", "mr-body", "xray"}
    for name in T.PRESETS:
        assert len(medload.preset(name)) >= 1
    mr = medload.preset("mr-brain")(mr_phantom((8, 32, 32)))
    assert mr.meta["intensity"].startswith("z-score") and np.isfinite(mr.array).all()


def test_radiograph_monochrome1_is_inverted():
    arr = np.array([[[0, 500, 1000]]], np.uint16)
    vol = Volume(
        arr,
        np.eye(4),
        modality="CR",
        meta={"window_center": 500, "window_width": 1001, "photometric_interpretation": "MONOCHROME1"},
    )
    out = medload.preset("xray")(vol)
    assert out.array[0, 0, 0] == pytest.approx(1.0, abs=1e-3) and out.array[0, 0, 2] == pytest.approx(0.0, abs=1e-3)
    assert out.meta["intensity"].endswith("inverted")


@pytest.mark.parametrize("n_slices", [1, 3, 6])
def test_n4_on_thin_stacks_and_single_slices(n_slices):
    corrupted, _, inside = bias_phantom((16, 64, 64), strength=0.4)
    middle = slice(8 - n_slices // 2, 8 - n_slices // 2 + n_slices)
    vol = Volume(corrupted[middle], np.eye(4), modality="MR")
    out = T.N4BiasCorrection(shrink_factor=4)(vol).array  # shrink capped so every axis keeps 4 voxels
    assert _cv(out[inside[middle]]) <= 0.5 * _cv(corrupted[middle][inside[middle]])


def test_radiograph_already_mirrored_by_the_reader_is_not_inverted_twice():
    # The DICOM reader mirrors MONOCHROME1 pixels (new = 4095 - old for 12 bits) and says so.
    stored = np.array([[[0, 1000, 4095]]], np.uint16)  # MONOCHROME1: 0 is white (dense)
    mirrored = (4095 - stored).astype(np.uint16)
    meta = {
        "window_center": 1000,
        "window_width": 1001,
        "photometric_interpretation": "MONOCHROME1",
        "monochrome1_mirrored": True,
    }
    out = T.RadiographWindow()(Volume(mirrored, np.eye(4), modality="CR", meta={**meta, "stored_range": [0, 4095]}))
    assert out.history[-1][1] == {"center": 3095.0, "width": 1001.0, "invert": False}
    assert out.array[0, 0, 0] == pytest.approx(1.0) and out.array[0, 0, 1] == pytest.approx(0.5, abs=1e-3)
    # without the stored range the header window cannot be placed: percentiles, not a wrong window
    out = T.RadiographWindow()(Volume(mirrored, np.eye(4), modality="CR", meta=meta))
    assert "percentiles" in out.meta["intensity"] and not out.history[-1][1]["invert"]
    assert out.array[0, 0, 0] > out.array[0, 0, 2]  # dense (stored 0) stays brightest
    # a centre the user gives is on the pixels as they are: kept, even with the header's width
    out = T.RadiographWindow(center=3095)(Volume(mirrored, np.eye(4), modality="CR", meta={**meta, "stored_range": [0, 4095]}))
    assert out.history[-1][1] == {"center": 3095.0, "width": 1001.0, "invert": False}


def test_clahe_with_mask_leaves_the_background_alone():
    vol = mr_phantom((6, 40, 40))
    out = T.CLAHE(mask="nonzero", kernel_size=10)(vol)
    lo, hi = out.history[-1][1]["in_range"]
    outside = vol.array == 0
    np.testing.assert_allclose(out.array[outside], (0 - lo) / (hi - lo), atol=1e-7)
    inside = ~outside
    assert out.array[inside].std() > ((vol.array[inside] - lo) / (hi - lo)).std()  # contrast raised inside


def test_foreground_of_a_single_slice_fills_holes_in_the_plane_not_along_rows():
    # per-slice equalization computes the foreground of 2D slices: the gap between the legs of
    # a U is background, the hole inside a ring is foreground
    from medload.transforms.masks import foreground_mask

    u = np.zeros((20, 20))
    u[4:16, 3:8] = 100
    u[4:16, 12:17] = 100
    u[4:7, 3:17] = 100
    ring = np.zeros((20, 20))
    ring[3:17, 3:17] = 100
    ring[7:13, 7:13] = 0
    for plane, expected in [(u, 132), (ring, 196)]:
        mask = foreground_mask(plane)
        assert mask.shape == plane.shape and int(mask.sum()) == expected
        np.testing.assert_array_equal(mask, foreground_mask(plane[None])[0])
