"""Issue 4, point 4: replaying a stored history reproduces the output bit for bit; configs round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

import medload
import medload.transforms as T
from fixtures.phantoms import ct_phantom, mr_phantom, noisy_phantom
from medload.errors import TransformError
from medload.volume import Volume


def _through_store(history):
    """The store keeps history as JSON text: what comes back is lists and plain numbers."""
    return json.loads(json.dumps(history))


def _noisy_ct() -> Volume:
    _, noisy = noisy_phantom((3, 40, 40), sigma=0.1, seed=2)
    return Volume(noisy * 1000 - 500, np.diag([2.5, 0.7, 0.7, 1.0]), modality="CT", meta={"intensity": "HU"})


PIPELINES = {
    "ct": lambda: T.Pipeline([T.CropForeground(), T.HUClip(-1000, 1000), T.NLMeans(), T.CLAHE(kernel_mm=10), T.ResizeSlices(48)]),
    "ct-multiwindow": lambda: medload.preset("ct-multiwindow") + T.ResizeSlices((32, 30), mode="resize"),
    "ct-resample": lambda: T.Pipeline(
        [T.Gaussian(sigma_mm=1.0), T.Resample((1.0, 1.0, 1.0), "bspline"), T.Window("liver"), T.Median(size=3)]
    ),
    "mr": lambda: T.Pipeline(
        [
            T.Reorient(),
            T.N4BiasCorrection(shrink_factor=2, iterations=[10, 10]),
            T.PercentileClip(),
            T.ZScore(),
            T.Bilateral(range_sigma=0.5),
            T.GradientDiffusion(),
            T.CurvatureDiffusion(per_slice=False),
            T.TVDenoise(),
        ]
    ),
    "mr-eq": lambda: T.Pipeline(
        [T.HistogramEqualize(mask="foreground"), T.MinMax(), T.NyulStandardize([0.0, 50.0, 100.0], [1.0, 50.0, 99.0], mask="all")]
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_replay_from_stored_history_is_bit_identical(name):
    vol = mr_phantom((8, 32, 32)) if name.startswith("mr") else (ct_phantom((3, 48, 40)) if name != "ct" else _noisy_ct())
    out = PIPELINES[name]()(vol)
    assert len(out.history) >= 1
    replay = T.Pipeline.from_history(_through_store(out.history))
    again = replay(vol)
    assert again.array.dtype == out.array.dtype and again.shape == out.shape
    np.testing.assert_array_equal(again.array, out.array)
    np.testing.assert_array_equal(again.affine, out.affine)
    assert again.history == out.history and again.meta == out.meta


def test_history_holds_concrete_numbers():
    vol = _noisy_ct()
    out = PIPELINES["ct"]()(vol)
    steps = dict(out.history)
    assert isinstance(steps["nl_means"]["sigma"], float) and steps["nl_means"]["sigma"] > 0
    assert steps["clahe"]["kernel_size"] == [14, 14] and steps["clahe"]["kernel_mm"] is None  # 10 mm / 0.7 mm
    lo, hi = steps["clahe"]["in_range"]  # its input's range, recorded
    assert -1000.0 <= lo < hi <= 1000.0
    assert all(len(b) == 2 for b in steps["crop_foreground"]["box"])
    assert steps["resize_slices"]["pad_value"] == 0.0  # the CLAHE output's minimum
    assert "workers" not in json.dumps(out.history)  # how it ran is not what it did


def test_workers_do_not_change_the_result():
    vol = _noisy_ct()
    one = T.Pipeline([T.NLMeans(workers=1), T.CLAHE(workers=1), T.Median(workers=1)])(vol)
    two = T.Pipeline([T.NLMeans(workers=2), T.CLAHE(workers=2), T.Median(workers=2)])(vol)
    np.testing.assert_array_equal(one.array, two.array)
    assert one.history == two.history


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_round_trips_through_files(tmp_path, suffix):
    pipe = T.Pipeline(
        [
            T.CTBodyMask(),
            T.Window(center=50, width=350),
            T.CLAHE(kernel_mm=(10, 12), clip_limit=0.02),
            T.NLMeans(h=0.6),
            T.ResizeSlices((256, 200), mode="resize"),
            T.CropForeground(margin=[1, 2, 3]),
            T.MultiWindow(["brain", [60, 300]], force=True),
        ]
    )
    path = pipe.save(tmp_path / f"pipe{suffix}")
    loaded = T.Pipeline.load(path)
    assert loaded == pipe and loaded.to_config() == pipe.to_config()
    assert json.loads(json.dumps(pipe.to_config())) == pipe.to_config()
    assert pipe.to_config()["medload_pipeline"] == 1
    assert pipe.describe().splitlines()[1] == "2. window(center=50.0, width=350.0, force=False)"
    vol = ct_phantom((2, 32, 32))
    np.testing.assert_array_equal(loaded(vol).array, pipe(vol).array)


def test_toml_refuses_values_it_cannot_hold(tmp_path):
    pipe = T.Pipeline([T.Resample((None, 1.0, 1.0))])
    with pytest.raises(TransformError, match=r"steps\[0\]\.params\.spacing.*\.json"):
        pipe.save(tmp_path / "p.toml")
    assert T.Pipeline.load(pipe.save(tmp_path / "p.json")) == pipe


def test_hand_written_toml_and_bad_configs(tmp_path):
    path = tmp_path / "hand.toml"
    path.write_text(
        'medload_pipeline = 1\n[[steps]]\nname = "window"\n[steps.params]\nwindow = "lung"\n'
        '[[steps]]\nname = "resize_slices"\nparams = { size = 128 }\n'
    )
    pipe = T.Pipeline.load(path)
    assert [s.name for s in pipe] == ["window", "resize_slices"] and pipe[1].size == [128, 128]
    with pytest.raises(TransformError, match="unknown transform name 'sharpen'"):
        T.Pipeline.from_config({"medload_pipeline": 1, "steps": [{"name": "sharpen", "params": {}}]})
    with pytest.raises(TransformError, match="version 2"):
        T.Pipeline.from_config({"medload_pipeline": 2, "steps": []})
    with pytest.raises(TransformError, match="do not fit"):
        T.Pipeline.from_config({"steps": [{"name": "window", "params": {"colour": 3}}]})
    (tmp_path / "bad.toml").write_text("steps = [")
    with pytest.raises(TransformError, match="not valid TOML"):
        T.Pipeline.load(tmp_path / "bad.toml")
    with pytest.raises(TransformError, match="unknown preset 'ct-heart'"):
        medload.preset("ct-heart")


def test_from_history_skips_reader_steps_when_asked():
    vol = ct_phantom((2, 16, 16))
    out = T.Window("brain")(vol.with_array(vol.array, step=("load_dicom", {"files": 2})))
    with pytest.raises(TransformError, match="unknown transform name 'load_dicom'"):
        T.Pipeline.from_history(out.history)
    assert [s.name for s in T.Pipeline.from_history(out.history, unknown="skip")] == ["window"]


def test_intensity_steps_leave_the_mask_alone():
    vol = ct_phantom((2, 16, 16))
    mask = Volume(np.ones(vol.shape, np.uint8), vol.affine)
    out, out_mask = T.Pipeline([T.Window("brain"), T.NLMeans(), T.ResizeSlices(20)])(vol, mask=mask)
    assert [n for n, _ in out_mask.history] == ["resize_slices"]
    assert out_mask.shape == out.shape and int(out_mask.array.sum()) == 2 * 16 * 16
    with pytest.raises(TransformError, match="mask grid does not match"):
        T.Pipeline([T.Window("brain")])(vol, mask=Volume(np.ones((2, 16, 15), np.uint8), vol.affine))
