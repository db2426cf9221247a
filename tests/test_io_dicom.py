"""DICOM reader on synthetic series with known geometry (no ../shared/data needed).

Each series is written by ``fixtures.synthetic.write_dicom_series``, which computes the
true array and affine independently of medload; the reader must give them back exactly.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fixtures.synthetic import write_dicom_series
from medload.errors import GeometryError, MissingDependencyError, ReadError, UnsupportedError
from medload.io import load, scan
from medload.io.codecs import decode
from medload.problems import ProblemKind

ORIENTATIONS = ["axial", "sagittal", "coronal", "oblique"]


def assert_matches_truth(vol, truth, *, atol_mm=1e-4):
    assert vol.shape == truth["shape"]
    np.testing.assert_allclose(vol.affine, truth["affine"], atol=atol_mm)
    np.testing.assert_array_equal(vol.array.astype(np.float32), truth["array"])


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_geometry_and_voxels_match_truth(tmp_path, orientation, shuffle):
    truth = write_dicom_series(
        tmp_path, orientation=orientation, shape=(6, 9, 7), spacing=(2.5, 0.8, 0.6), shuffle=shuffle, seed=3
    )
    vol = load(tmp_path)
    assert_matches_truth(vol, truth)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.6), abs=1e-5)
    assert vol.modality == "CT"
    assert vol.array.dtype == np.int16  # -1024 .. 1976 HU fits
    assert vol.meta["intensity"] == "HU"
    assert vol.meta["problems"] == []
    # slice 1 lies one step along the slice normal from slice 0
    step = vol.affine[:3, 0]
    np.testing.assert_allclose(step, truth["slice_normal"] * 2.5, atol=1e-5)


def test_shuffled_files_are_sorted_by_position_not_instance_number(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(8, 4, 5), shuffle=True, seed=11)
    series = scan(tmp_path)
    assert len(series) == 1 and series[0].shape == (8, 4, 5)
    numbers = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in truth["files"]]
    assert numbers != sorted(numbers)  # InstanceNumber order is not the spatial order here
    np.testing.assert_array_equal(load(series[0]).array, truth["array"].astype(np.int16))


def test_mr_keeps_unsigned_values_and_scanner_units(tmp_path):
    truth = write_dicom_series(tmp_path, modality="MR", shape=(3, 5, 4), seed=1)
    vol = load(tmp_path)
    assert_matches_truth(vol, truth)
    assert vol.array.dtype in (np.int16, np.uint16)
    assert vol.meta["intensity"] == "scanner units"
    assert vol.meta["echo_time"] == 4.2 and vol.meta["magnetic_field_strength"] == 3.0


def test_non_integer_rescale_gives_float32(tmp_path):
    truth = write_dicom_series(tmp_path, modality="MR", rescale=(0.5, 10.25), shape=(3, 4, 4), seed=2)
    vol = load(tmp_path)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, truth["array"], rtol=0, atol=1e-4)


def test_per_slice_rescale_is_applied_per_slice(tmp_path):
    truth = write_dicom_series(tmp_path, modality="CT", shape=(3, 4, 4), seed=4)
    # Give the middle slice (in world order) its own intercept, as some scanners do.
    middle = truth["files"][1]
    ds = pydicom.dcmread(middle)
    ds.RescaleIntercept = "-1000"
    ds.save_as(middle)
    vol = load(tmp_path)
    expected = truth["array"].copy()
    expected[1] += 24
    np.testing.assert_array_equal(vol.array, expected.astype(np.int16))


def test_several_series_in_one_folder(tmp_path):
    truths = [
        write_dicom_series(
            tmp_path, orientation=o, shape=(3 + i, 5, 4), series_number=10 - i, series_description=f"s{i}", seed=i, shuffle=True
        )
        for i, o in enumerate(["axial", "sagittal", "coronal"])
    ]
    (tmp_path / "README.txt").write_text("not a DICOM file")
    found = scan(tmp_path)
    assert len(found) == 3
    assert [s.description for s in found] == ["s2", "s1", "s0"]  # by series number: 8, 9, 10
    assert found.skipped["not DICOM"] == 1 and found.errors == []
    assert scan(tmp_path) == found  # deterministic
    for series in found:
        truth = truths[int(series.description[1])]
        assert series.shape == truth["shape"]
        assert_matches_truth(load(series), truth)
    with pytest.raises(ReadError, match="holds 3 volumes"):
        load(tmp_path)


def test_keys_are_pseudonyms_and_no_identifying_field_reaches_meta(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(2, 3, 3), seed=5)
    series = scan(tmp_path, phi_key="secret-1")[0]
    assert series.series_key.startswith("ser-") and series.patient_key.startswith("pat-")
    assert series.patient_key != scan(tmp_path, phi_key="secret-2")[0].patient_key
    vol = load(series)
    text = json.dumps(vol.meta)
    for keyword, value in truth["phi"].items():
        assert str(value) not in text, f"{keyword} leaked into meta"
    kept = load(series, keep_phi=True).meta["phi"]
    assert kept["PatientID"] == truth["phi"]["PatientID"]


def test_unreadable_and_non_image_files_are_counted_not_fatal(tmp_path):
    write_dicom_series(tmp_path / "good", shape=(3, 4, 4), seed=6)
    good_file = next((tmp_path / "good").iterdir())
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(good_file.read_bytes()[:300])  # header cut in the middle
    sr_dir = Path(pydicom.__file__).parent / "data" / "test_files"
    shutil.copy(sr_dir / "rtstruct.dcm", tmp_path / "struct")
    found = scan(tmp_path)
    assert len(found) == 1 and found[0].shape == (3, 4, 4)
    assert found.skipped["RT Structure Set"] == 1
    assert [Path(e.path).name for e in found.errors] == ["broken.dcm"]
    assert "broken.dcm" in found.errors[0].message


def test_identical_copy_of_a_file_is_dropped(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(4, 4, 4), seed=7)
    shutil.copy(truth["files"][2], tmp_path / "copy_of_slice_2")
    series = scan(tmp_path)[0]
    assert series.shape == (4, 4, 4)
    vol = load(series)
    assert_matches_truth(vol, truth)
    assert any(p.kind is ProblemKind.DUPLICATE_IMAGES_DROPPED and "1 image(s)" in p.message for p in vol.problems)


def test_duplicate_position_with_other_pixels_is_refused(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(4, 4, 4), seed=8)
    ds = pydicom.dcmread(truth["files"][2])
    ds.SOPInstanceUID = ds.SOPInstanceUID[:60] + ".9"
    arr = ds.pixel_array.copy()
    arr[0, 0] += 1
    ds.PixelData = arr.tobytes()
    ds.save_as(tmp_path / "other_at_slice_2")
    assert [p.kind for p in scan(tmp_path)[0].problems] == [ProblemKind.DUPLICATE_POSITIONS]
    with pytest.raises(GeometryError, match="duplicate positions") as err:
        load(tmp_path)
    assert "other_at_slice_2" in str(err.value)


def test_duplicate_position_with_same_pixels_and_new_uid_is_dropped(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(4, 4, 4), seed=9)
    ds = pydicom.dcmread(truth["files"][1])
    ds.SOPInstanceUID = ds.SOPInstanceUID[:60] + ".9"
    ds.save_as(tmp_path / "reexported_slice_1")
    vol = load(tmp_path)
    assert_matches_truth(vol, truth)
    assert any(p.kind is ProblemKind.IDENTICAL_IMAGES_DROPPED and "reexported_slice_1" in p.message for p in vol.problems)


def test_missing_slice_is_refused_or_interpolated(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(6, 4, 5), spacing=(3.0, 1.0, 1.0), modality="MR", seed=10)
    os.remove(truth["files"][3])
    series = scan(tmp_path)[0]
    assert any(p.kind is ProblemKind.SLICE_GAP and "missing slices" in p.message for p in series.problems)
    with pytest.raises(GeometryError, match="on_gap='interpolate'") as err:
        load(series)
    assert Path(truth["files"][2]).name in str(err.value) and "3.000 mm" in str(err.value)
    vol = load(series, on_gap="interpolate")
    assert vol.shape == (6, 4, 5)
    np.testing.assert_allclose(vol.affine, truth["affine"], atol=1e-4)
    expected = np.rint((truth["array"][2] + truth["array"][4]) / 2)
    np.testing.assert_allclose(vol.array[3], expected, atol=0.5)
    np.testing.assert_array_equal(vol.array[[0, 1, 2, 4, 5]], truth["array"][[0, 1, 2, 4, 5]])
    assert any(p.kind is ProblemKind.SLICES_INTERPOLATED for p in vol.problems)


def test_uneven_spacing_is_refused(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(5, 4, 4), spacing=(2.0, 1.0, 1.0), seed=12)
    ds = pydicom.dcmread(truth["files"][4])
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 0.7]  # last step 2.7 mm instead of 2
    ds.save_as(truth["files"][4])
    assert [p.kind for p in scan(tmp_path)[0].problems] == [ProblemKind.UNEVEN_SPACING]
    with pytest.raises(GeometryError, match="uneven slice spacing: steps of 2.700"):
        load(tmp_path)


def test_mixed_pixel_spacing_is_refused(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(4, 4, 4), seed=13)
    ds = pydicom.dcmread(truth["files"][0])
    ds.PixelSpacing = ["0.9", "0.6"]
    ds.save_as(truth["files"][0])
    assert [p.kind for p in scan(tmp_path)[0].problems] == [ProblemKind.PIXEL_SPACING_MIXED]
    with pytest.raises(GeometryError, match="PixelSpacing differs"):
        load(tmp_path)


def test_temporal_positions_become_a_frames_axis(tmp_path):
    t0 = write_dicom_series(tmp_path / "a", modality="MR", shape=(3, 4, 4), seed=14)
    t1 = write_dicom_series(tmp_path / "b", modality="MR", shape=(3, 4, 4), seed=15, series_uid=t0["series_uid"])
    for t, truth in ((1, t0), (2, t1)):
        for f in truth["files"]:
            ds = pydicom.dcmread(f)
            ds.SOPInstanceUID = ds.SOPInstanceUID[:60] + f".{t}"
            ds.TemporalPositionIdentifier = t
            ds.save_as(f)
    series = scan(tmp_path)
    assert len(series) == 1 and series[0].shape == (2, 3, 4, 4)
    vol = load(series[0])
    assert vol.n_frames == 2 and vol.meta["frames_axis"] == "time"
    np.testing.assert_array_equal(vol.array[0], t0["array"])
    np.testing.assert_array_equal(vol.array[1], t1["array"])
    np.testing.assert_allclose(vol.affine, t0["affine"], atol=1e-4)


def test_localizer_and_other_image_size_are_split_from_the_volume(tmp_path):
    main = write_dicom_series(tmp_path, shape=(4, 6, 6), seed=16)
    scout = write_dicom_series(
        tmp_path / "scout",
        orientation="coronal",
        shape=(1, 8, 8),
        seed=17,
        series_uid=main["series_uid"],
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    found = scan(tmp_path)
    assert sorted(s.shape for s in found) == [(1, 8, 8), (4, 6, 6)]
    vol = load(next(s for s in found if s.shape == (4, 6, 6)))
    assert_matches_truth(vol, main)
    assert load(next(s for s in found if s.shape == (1, 8, 8))).shape == scout["shape"]


def test_monochrome1_is_inverted(tmp_path):
    truth = write_dicom_series(tmp_path, modality="MR", shape=(2, 3, 3), bits_stored=12, seed=18)
    for f in truth["files"]:
        ds = pydicom.dcmread(f)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(f)
    vol = load(tmp_path)
    np.testing.assert_array_equal(vol.array, 4095 - truth["array"])
    assert [p.kind for p in vol.problems] == [ProblemKind.MONOCHROME1_MIRRORED]
    assert vol.meta["stored_range"] == [0, 4095]


def test_monochrome1_header_window_follows_the_inverted_pixels(tmp_path):
    # A CR whose header window is given for the stored (un-mirrored) values: after the reader
    # mirrors the pixels, RadiographWindow must still put the dense (low stored) pixel at 1.
    from medload.transforms import RadiographWindow

    truth = write_dicom_series(tmp_path, modality="MR", shape=(1, 2, 2), bits_stored=12, seed=3)
    ds = pydicom.dcmread(truth["files"][0])
    ds.Modality = "CR"
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = np.array([[0, 1000], [3000, 4095]], np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 1000, 2000  # stored 0 (dense) .. 2000 (air) on screen
    ds.save_as(truth["files"][0])
    out = RadiographWindow()(load(truth["files"][0])).array[0]
    # Stored 0 is white (1.0), stored 1000 mid-grey, 3000 and 4095 beyond the window's air end.
    np.testing.assert_allclose(out, [[1.0, 0.5], [0.0, 0.0]], atol=1e-3)


def test_single_radiograph_loads_as_one_slice():
    path = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    vol = load(path)
    assert vol.shape == (1, 128, 128)
    assert vol.meta["intensity"] == "HU"
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(vol.array[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_missing_codec_names_the_package(monkeypatch):
    # pydicom's decoder says it cannot run (its public availability API), as without pylibjpeg
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    monkeypatch.setattr(Decoder, "missing_dependencies", property(lambda self: ["gdcm - requires gdcm"]))

    class Fake:
        file_meta = pydicom.dataset.FileMetaDataset()
        file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless

        def __contains__(self, key):
            return key == "PixelData"

        @property
        def pixel_array(self):
            raise AssertionError("decode must refuse before asking pydicom to decode")

    with pytest.raises(MissingDependencyError, match="pip install pylibjpeg pylibjpeg-openjpeg") as err:
        decode(Fake(), "/x/slice.dcm")
    assert "/x/slice.dcm" in str(err.value) and "gdcm - requires gdcm" in str(err.value)


def test_a_decoder_failure_is_a_read_error_naming_the_file_whatever_its_wording():
    class Fake:
        file_meta = pydicom.dataset.FileMetaDataset()
        file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless

        def __contains__(self, key):
            return key == "PixelData"

        @property
        def pixel_array(self):  # a message that once read as "a plugin is missing"
            raise RuntimeError("plugin not available: all plugins are missing dependencies")

    with pytest.raises(ReadError, match="/x/slice.dcm: pixel data .* cannot be decoded"):
        decode(Fake(), "/x/slice.dcm")


def test_scan_of_a_missing_path_says_so(tmp_path):
    with pytest.raises(ReadError, match="no such file or folder"):
        scan(tmp_path / "nope")


def test_radiographs_of_one_series_are_separate_one_slice_volumes(tmp_path):
    source = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    expected = []
    for i in range(2):
        ds = pydicom.dcmread(source)
        del ds.ImagePositionPatient, ds.ImageOrientationPatient  # as CR/DX images have none
        ds.Modality = "DX"
        ds.SOPInstanceUID = ds.SOPInstanceUID[:60] + f".{i}"
        ds.PixelData = (ds.pixel_array + i).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(tmp_path / f"view{i}")
        expected.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    found = scan(tmp_path)
    assert [s.shape for s in found] == [(1, 128, 128), (1, 128, 128)]
    for series, truth in zip(sorted(found, key=lambda s: s.files), expected):
        vol = load(series)
        assert vol.modality == "DX" and vol.shape == (1, 128, 128)
        np.testing.assert_array_equal(vol.array[0], truth)
        assert vol.spacing[1:] == pytest.approx((0.661468, 0.661468), abs=1e-6)


def test_philips_private_scale_slope_gives_precise_values(tmp_path):
    """Philips: value = (stored * RS + RI) / (RS * SS), dcm2niix's default, said in meta."""
    truth = write_dicom_series(
        tmp_path,
        modality="MR",
        rescale=(2.0, 0.0),
        shape=(2, 3, 3),
        seed=19,
        extra_tags={"Manufacturer": "Philips Medical Systems"},
    )
    for f in truth["files"]:
        ds = pydicom.dcmread(f)
        ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(0x0E, "FL", 0.3)
        ds.save_as(f)
    vol = load(tmp_path)
    stored = truth["array"] / 2.0
    np.testing.assert_allclose(vol.array, stored / np.float32(0.3), rtol=1e-5)
    assert vol.array.dtype == np.float32
    assert "Philips precise" in vol.meta["intensity"]


def test_malformed_optional_number_is_ignored_not_fatal(tmp_path):
    # Real exports hold numbers like "120kV" or "1,5" in optional fields. pydicom keeps the
    # text; scan's fast header path must too, instead of rejecting every file of the series.
    truth = write_dicom_series(tmp_path, shape=(3, 4, 5), seed=21)
    for path in truth["files"]:
        ds = pydicom.dcmread(path)
        ds["KVP"]._value = "120kV"  # _value: pydicom refuses to set an invalid DS otherwise
        ds.SliceThickness = "2"
        ds["SliceThickness"]._value = "2,5"
        ds.save_as(path)
    found = scan(tmp_path)
    assert len(found) == 1 and found.errors == []
    assert found[0].shape == (3, 4, 5)
    vol = load(found[0])
    assert_matches_truth(vol, truth)
    assert "kvp" not in vol.meta and "slice_thickness" not in vol.meta
    assert vol.spacing == pytest.approx((2.0, 0.8, 0.6), abs=1e-5)


def test_enhanced_single_frame_copies_are_compared_on_the_whole_image(tmp_path):
    # An enhanced (functional-groups) object of one frame: pixel_array is 2D, so "frame 0" is
    # the image itself, not its first row. Two images at one position that differ below
    # row 0 are not copies and must be refused, never one silently dropped.
    from pydicom.data import get_testdata_file
    from pydicom.pixels import pack_bits
    from pydicom.uid import generate_uid

    source = get_testdata_file("liver_1frame.dcm", download=False)
    if source is None:
        pytest.skip("pydicom's liver_1frame.dcm test file is not installed")
    for name, z, flip in (("a", 0.0, False), ("b", 1.0, False), ("c", 2.0, False), ("d", 1.0, True)):
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[name])
        ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient[2] = z
        if flip:
            px = ds.pixel_array.copy()
            px[1:] = 1 - px[1:]
            ds.PixelData = pack_bits(px)
        ds.save_as(tmp_path / f"{name}.dcm")
    found = scan(tmp_path)
    assert len(found) == 1 and found[0].shape == (3, 512, 512)
    with pytest.raises(GeometryError, match="duplicate positions"):
        load(found[0])


def test_file_unreadable_after_scan_gives_a_read_error_naming_it(tmp_path, monkeypatch):
    # Permissions cannot be tested as root: make opening one file fail the way a
    # permission-denied file does, in both pixel paths (our direct read and pydicom's).
    import builtins

    import medload.io.codecs
    import pydicom.filereader

    write_dicom_series(tmp_path, shape=(3, 4, 4), seed=22)
    found = scan(tmp_path)
    locked = found[0].files[1]

    def fake_open(file, *args, **kwargs):
        if os.fspath(file) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(medload.io.codecs, "open", fake_open, raising=False)
    monkeypatch.setattr(pydicom.filereader, "open", fake_open, raising=False)
    with pytest.raises(ReadError, match="readable") as info:
        load(found[0])
    assert locked in str(info.value)


def test_colour_images_at_one_position_are_refused_not_cut_to_the_first(tmp_path):
    # Two different RGB images at one position (two time points): a colour Volume has its
    # channels on the leading axis, so one of them would be lost without a word.
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = get_testdata_file("SC_rgb_small_odd.dcm", download=False)
    if source is None:
        pytest.skip("pydicom's SC_rgb_small_odd.dcm test file is not installed")
    first = None
    for name, t in (("a", 1), ("b", 2), ("c", 2)):
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[name])
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1]
        ds.TemporalPositionIdentifier = t
        if name == "a":
            first = ds.pixel_array.copy()
        if t == 2:
            ds.PixelData = (255 - first).tobytes()
        ds.save_as(tmp_path / f"{name}.dcm")
    # One image per time point: a and b differ, refused.
    (tmp_path / "c.dcm").rename(tmp_path.parent / f"{tmp_path.name}_c.dcm")
    with pytest.raises(UnsupportedError, match="colour images at each slice position"):
        load(tmp_path)
    # Identical copies at one position (b and c, new UIDs) still load as one colour image.
    (tmp_path / "a.dcm").unlink()
    (tmp_path.parent / f"{tmp_path.name}_c.dcm").rename(tmp_path / "c.dcm")
    vol = load(tmp_path)
    assert vol.shape == (3, 1, 3, 3) and vol.meta["channels"] == ["R", "G", "B"]
    np.testing.assert_array_equal(np.moveaxis(vol.array[:, 0], 0, -1), 255 - first)


def test_load_reads_pixels_where_scan_found_them_and_rereads_a_file_changed_since(tmp_path, monkeypatch):
    import medload.io.fastheader as fastheader

    truth = write_dicom_series(tmp_path, shape=(4, 9, 7), seed=5)
    series = scan(tmp_path)[0]
    heads = {h.path: h for h in series.headers}
    for path, h in heads.items():  # scan recorded where each file's PixelData value starts
        ds = pydicom.dcmread(path)
        with open(path, "rb") as fh:
            fh.seek(h.pixel_offset)
            raw = np.frombuffer(fh.read(h.pixel_bytes), "<i2").reshape(9, 7)
        assert h.pixel_bytes == 9 * 7 * 2 and np.array_equal(raw, ds.pixel_array)
    walks = []
    original = fastheader.locate_pixel_data
    monkeypatch.setattr(fastheader, "locate_pixel_data", lambda fh: walks.append(fh) or original(fh))
    assert_matches_truth(load(series), truth)
    assert walks == []  # no header walked a second time
    # one file rewritten after the scan with a longer header: its pixels now start elsewhere
    changed = sorted(heads)[2]
    ds = pydicom.dcmread(changed)
    ds.ImageComments = "x" * 301
    ds.save_as(changed)
    assert fastheader.pixel_data_location(changed)[0] != heads[changed].pixel_offset
    assert_matches_truth(load(series), truth)  # read again, at its new place
