"""Enhanced multi-frame: a per-frame geometry or scaling value that is NaN or infinite is refused, naming frame and tag.

Read as absent, such a value fell back to the shared group or a default: a frame without a
position gave a volume without world geometry, one without an orientation a series of its own,
and a Philips frame with an infinite RescaleSlope loaded as if sound.
"""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medload
from tests.conftest import shared_path

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR DS")


@pytest.fixture(autouse=True)
def _write_nan(monkeypatch):
    """NaN and infinity in a DS are what these tests write on purpose."""
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)


def _three_frames(folder, damage=None):
    """pydicom's one-frame enhanced liver SEG made a 3-frame object at z = 0, 1, 2 mm; ``damage(ds)`` edits it."""
    source = get_testdata_file("liver_1frame.dcm", download=False)
    if source is None:
        pytest.skip("pydicom's liver_1frame.dcm test file is not installed")
    ds = pydicom.dcmread(source)
    item = ds.PerFrameFunctionalGroupsSequence[0]
    items = []
    for z in range(3):
        frame = copy.deepcopy(item)
        frame.PlanePositionSequence[0].ImagePositionPatient[2] = float(z)
        items.append(frame)
    ds.PerFrameFunctionalGroupsSequence = items
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3  # 1-bit frames of 512 x 512: whole bytes each
    if damage is not None:
        damage(ds)
    folder.mkdir()
    ds.save_as(folder / "seg.dcm")
    return folder


def _set(seq, keyword, index, bad):
    def damage(ds):
        frame = ds.PerFrameFunctionalGroupsSequence[1]
        if seq not in frame:  # the liver SEG states it once, in the shared group: frame 1 gets its own
            frame[seq] = copy.deepcopy(ds.SharedFunctionalGroupsSequence[0][seq])
        element = getattr(frame, seq)[0][keyword]
        if index is None:
            element.value = bad
        else:
            values = list(element.value)
            values[index] = bad
            element.value = values

    return damage


def _set_shared(seq, keyword, index, bad):
    def damage(ds):
        shared = ds.SharedFunctionalGroupsSequence[0]
        for frame in ds.PerFrameFunctionalGroupsSequence:  # the frames state none of their own
            if seq in frame:
                del frame[seq]
        element = getattr(shared, seq)[0][keyword]
        values = list(element.value)
        values[index] = bad
        element.value = values

    return damage


def test_the_sound_three_frame_object_loads_with_its_geometry(tmp_path):
    folder = _three_frames(tmp_path / "ok")
    [series] = medload.scan(folder)
    vol = medload.load(series)
    assert vol.shape == (3, 512, 512)
    assert vol.spacing[0] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("seq", "keyword", "index", "tag"),
    [
        ("PlanePositionSequence", "ImagePositionPatient", 2, "(0020,0032)"),
        ("PlaneOrientationSequence", "ImageOrientationPatient", 0, "(0020,0037)"),
        ("PixelMeasuresSequence", "PixelSpacing", 1, "(0028,0030)"),
    ],
)
def test_non_finite_per_frame_geometry_is_refused_naming_frame_and_tag(tmp_path, seq, keyword, index, tag, bad):
    folder = _three_frames(tmp_path / "bad", _set(seq, keyword, index, bad))
    found = medload.scan(folder)
    assert len(found) == 0  # no volume without geometry, no frame split off into a series of its own
    [problem] = found.errors
    assert f"seg.dcm[frame 1]: {keyword} {tag} is [" in problem.message
    assert "expected" in problem.message and "re-export" in problem.message


def test_non_finite_shared_orientation_is_refused_not_replaced(tmp_path):
    folder = _three_frames(tmp_path / "bad", _set_shared("PlaneOrientationSequence", "ImageOrientationPatient", 4, "nan"))
    [problem] = medload.scan(folder).errors
    assert "seg.dcm[frame 0]: ImageOrientationPatient (0020,0037)" in problem.message


@pytest.mark.parametrize("keyword", ["RescaleSlope", "RescaleIntercept"])
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_per_frame_rescale_is_refused_naming_frame_and_tag(tmp_path, keyword, bad):
    # A Philips fMAP with per-frame Pixel Value Transformation: its precise-value formula made an
    # infinite RescaleSlope vanish (the frame loaded), and a NaN slope was reported as the intercept.
    source = shared_path("dcm_qa_enh", "In", "Philips", "IM_0027_fMAP.dcm")
    ds = pydicom.dcmread(source)
    ds.PerFrameFunctionalGroupsSequence[5].PixelValueTransformationSequence[0][keyword].value = bad
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "fmap.dcm")
    found = medload.scan(tmp_path / "in")
    assert len(found) == 0
    [problem] = found.errors
    assert f"fmap.dcm[frame 5]: {keyword} (0028,105" in problem.message and "finite number" in problem.message


def test_non_finite_philips_scale_slope_of_one_frame_is_refused(tmp_path):
    source = shared_path("dcm_qa_enh", "In", "Philips", "IM_0027_fMAP.dcm")
    sound = medload.scan(source.parent)
    assert len(sound) == 2 and not sound.errors
    ds = pydicom.dcmread(source)
    ds.PerFrameFunctionalGroupsSequence[7][0x2005140F][0][0x2005100E].value = float("nan")
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "fmap.dcm")
    found = medload.scan(tmp_path / "in")
    assert len(found) == 0
    [problem] = found.errors
    assert "fmap.dcm[frame 7]: Philips ScaleSlope (2005,100E) is nan" in problem.message
    assert np.isfinite(medload.load(sound[0]).array).all()


@pytest.mark.parametrize("what", ["b", "gradient"])
def test_non_finite_diffusion_encoding_of_one_frame_is_refused(tmp_path, what):
    # Read as absent, a NaN b-value made its frame a b=0 frame of the table and a NaN gradient a
    # "derived trace" frame: a .bval/.bvec silently wrong in one column.
    source = next(shared_path("dicom2nifti", "philips_enhanced", "dti", "001").iterdir())
    sound = medload.load(str(source))
    assert 1300.0 in sound.meta["diffusion"]["bvals"]
    ds = pydicom.dcmread(source)
    item = ds.PerFrameFunctionalGroupsSequence[3].MRDiffusionSequence[0]
    if what == "b":
        item.DiffusionBValue = float("nan")
    else:
        item.DiffusionGradientDirectionSequence[0].DiffusionGradientOrientation = [0.0, float("nan"), 1.0]
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "dti.dcm")
    found = medload.scan(tmp_path / "in")
    assert len(found) == 0
    [problem] = found.errors
    assert "dti.dcm[frame 3]: diffusion encoding MRDiffusionSequence DiffusionBValue (0018,9087)" in problem.message
    assert "nan" in problem.message


def test_non_finite_classic_diffusion_encoding_is_refused_naming_the_file(tmp_path):
    from fixtures.special import philips_dti_series

    truth = philips_dti_series(tmp_path / "dwi", n_slices=3, n_frames=4)
    damaged = truth["files"][5]
    ds = pydicom.dcmread(damaged)
    ds.DiffusionGradientOrientation = [float("nan"), 0.0, 1.0]
    ds.save_as(damaged)
    found = medload.scan(tmp_path / "dwi")
    [problem] = found.errors
    assert problem.path.endswith(damaged.rsplit("/", 1)[-1])
    assert "DiffusionBValue (0018,9087) / DiffusionGradientOrientation (0018,9089) is b=1000.0, gradient [nan" in problem.message
