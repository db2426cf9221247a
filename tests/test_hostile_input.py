"""Issue 11: hostile and damaged input is refused naming the file, never silently wrong, and
one file never takes scan down. Each test reproduces one symptom the outside campaign found."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import medload
from fixtures.hostile import (
    cut_element,
    elements,
    insert_before,
    nested_sequences,
    pydicom_file,
    retag,
    set_length,
)
from fixtures.synthetic import write_dicom_series
from medload.errors import LimitError, MedloadError, ReadError
from medload.problems import ProblemKind

RESCALE_INTERCEPT, ROWS, PIXEL_SPACING, PIXEL_DATA = 0x00281052, 0x00280010, 0x00280030, 0x7FE00010


def _series(tmp_path: Path, n: int = 4) -> list[Path]:
    truth = write_dicom_series(tmp_path / "ct", shape=(n, 8, 6), rescale=(1.0, -1024.0), seed=3)
    return sorted(Path(f) for f in truth["files"])


def _rewrite(path: Path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


def test_private_element_before_rescale_intercept_is_not_hidden(tmp_path):
    """A private element placed before (0028,1052) hid RescaleIntercept: 1024 HU off, no problem."""
    good = tmp_path / "good.dcm"
    good.write_bytes(pydicom_file("CT_small.dcm"))
    bad = tmp_path / "bad" / "bad.dcm"
    bad.parent.mkdir()
    bad.write_bytes(insert_before(good.read_bytes(), RESCALE_INTERCEPT, 0x00430010, b"LO", b"GEMS_PARM_01"))
    found = medload.scan(bad)
    assert found.fallbacks == {"elements out of order": 1}
    reference = medload.load(good)
    vol = medload.load(found[0])
    assert vol.meta["intensity"] == "HU"
    np.testing.assert_array_equal(vol.array, reference.array)
    assert float(vol.array.min()) == float(pydicom.dcmread(bad).pixel_array.min()) - 1024


def test_private_element_before_rows_keeps_the_slice(tmp_path):
    """Placed before Rows in one slice, that slice was 'skipped: object without image'."""
    files = _series(tmp_path)
    _rewrite(files[1], lambda d: insert_before(d, ROWS, 0x00430010, b"LO", b"GEMS_PARM_01"))
    found = medload.scan(tmp_path)
    assert not found.skipped and not found.errors
    assert [s.shape[0] for s in found] == [4]
    assert found.n_fallbacks == 1
    assert medload.load(found[0]).shape == (4, 8, 6)


def test_bit_flip_in_pixel_spacing_tag_is_refused(tmp_path):
    """(0028,0030) -> (002A,0030) in one slice: that slice lost its spacing (1 mm assumed)."""
    files = _series(tmp_path)
    _rewrite(files[2], lambda d: retag(d, PIXEL_SPACING, 0x002A0030))
    found = medload.scan(tmp_path)
    assert len(found) == 1
    assert [p.kind for p in found[0].problems] == [ProblemKind.PIXEL_SPACING_INCOMPLETE]
    with pytest.raises(medload.GeometryError, match="no PixelSpacing") as err:
        medload.load(found[0])
    assert files[2].name in str(err.value)


def test_truncated_slice_is_unreadable_and_its_series_is_not_loaded(tmp_path):
    """A truncated image was 'skipped' and the series converted one slice short."""
    files = _series(tmp_path, n=5)
    _rewrite(files[-1], lambda d: d[: len(d) - 20])  # last slice: no gap would show
    found = medload.scan(tmp_path)
    assert [Path(e.path).name for e in found.errors] == [files[-1].name]
    assert "truncated" in found.errors[0].message
    assert not found.skipped
    (series,) = found
    assert any(p.kind is ProblemKind.DAMAGED_FILES and "cannot be read" in p.message for p in series.problems)
    with pytest.raises(ReadError, match="incomplete") as err:
        medload.load(series)
    assert files[-1].name in str(err.value)


def test_truncated_in_the_header_is_unreadable(tmp_path):
    files = _series(tmp_path, n=3)
    _rewrite(files[0], lambda d: cut_element(d, ROWS, keep=5))
    found = medload.scan(tmp_path)
    assert [Path(e.path).name for e in found.errors] == [files[0].name]
    with pytest.raises(ReadError, match="incomplete"):
        medload.load(found[0])


@pytest.mark.parametrize(
    "name, value, expect",
    [
        ("ImageOrientationPatient", [2, 0, 0, 0, 1, 0], "not two orthogonal unit vectors"),
        ("ImageOrientationPatient", [1, 0, 0, 0.7071, 0.7071, 0], "not two orthogonal unit vectors"),
        ("PixelSpacing", [-0.8, 0.6], "two positive millimetre values"),
        ("PixelSpacing", ["nan", 0.6], "finite numbers"),
        ("RescaleSlope", 0, "RescaleSlope is 0.0"),
        ("RescaleSlope", "nan", "RescaleSlope is nan"),
        ("RescaleSlope", "inf", "RescaleSlope is inf"),
        ("RescaleSlope", "1e300", "give values beyond"),
        ("ImagePositionPatient", ["nan", 0, 0], "finite numbers"),
        ("BitsStored", 65535, "BitsStored is 65535"),
        ("Rows", 0, "Rows x Columns is 0"),
    ],
)
def test_geometry_and_pixel_lies_are_refused_naming_the_file(tmp_path, name, value, expect):
    files = _series(tmp_path)
    ds = pydicom.dcmread(files[1])
    setattr(ds, name, value)
    ds.save_as(files[1], enforce_file_format=True)
    found = medload.scan(tmp_path)
    assert [Path(e.path).name for e in found.errors] == [files[1].name]
    assert expect in found.errors[0].message
    assert all(ProblemKind.DAMAGED_FILES in {p.kind for p in s.problems} for s in found)
    for s in found:
        with pytest.raises(MedloadError):
            medload.load(s)


def test_pixel_data_longer_than_rows_times_columns_is_refused(tmp_path):
    files = _series(tmp_path)
    ds = pydicom.dcmread(files[0])
    ds.PixelData = ds.PixelData + bytes(range(1, 97))  # two more rows of data, not padding
    ds.save_as(files[0], enforce_file_format=True)
    found = medload.scan(tmp_path)
    assert [Path(e.path).name for e in found.errors] == [files[0].name]
    assert "do not match the pixels" in found.errors[0].message


def test_zero_padding_after_pixel_data_is_accepted():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small_padded.dcm", download=False)
    assert medload.load(path).shape == (1, 64, 64)


@pytest.mark.parametrize("case", ["struct", "meta_length", "nesting", "giant_length"])
def test_one_damaged_file_never_takes_scan_down(tmp_path, case):
    good = pydicom_file("CT_small.dcm")
    (tmp_path / "good.dcm").write_bytes(good)
    if case == "struct":  # cut inside an element header: struct.error in a naive walk
        bad = cut_element(good, 0x00200032, keep=3)
    elif case == "meta_length":  # pydicom: BytesLengthException
        bad = set_length(good, 0x00020000, 0xFFFF)
    elif case == "nesting":  # pydicom: RecursionError
        bad = nested_sequences(good, 600)
    else:  # a 4 GiB element length
        long_vr = next(e for e in elements(good) if e.length_size == 4 and e.tag >> 16 != 0x0002)
        bad = set_length(good, long_vr.tag, 0xFFFFFFFE)
    (tmp_path / "bad.dcm").write_bytes(bad)
    found = medload.scan(tmp_path)
    assert len(found) == 1 and found[0].files == (str(tmp_path / "good.dcm"),)
    if case == "nesting":  # deep but whole: read by pydicom or refused, never a crash
        assert found.errors == [] or [Path(e.path).name for e in found.errors] == ["bad.dcm"]
    else:
        assert [Path(e.path).name for e in found.errors] == ["bad.dcm"]


def test_number_of_frames_bomb_is_refused_before_any_loop(tmp_path):
    """A 1 KB file claiming NumberOfFrames 10**7 never ended scan."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.NumberOfFrames = 10**7
    ds.PixelData = b""
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    found = medload.scan(tmp_path)
    assert len(found) == 0
    assert [Path(e.path).name for e in found.errors] == ["bomb.dcm"]
    assert "10000000 frame(s)" in found.errors[0].message


def test_rows_columns_65535_is_refused(tmp_path):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.Rows = ds.Columns = 65535
    ds.save_as(tmp_path / "huge.dcm", enforce_file_format=True)
    found = medload.scan(tmp_path)
    assert "65535 x 65535" in found.errors[0].message and len(found) == 0


def _nifti(path: Path, shape=(6, 5, 4)) -> Path:
    nib.save(nib.Nifti1Image(np.ones(shape, np.int16), np.eye(4)), path)
    return path


def test_nifti_claiming_3_gb_in_a_small_file_is_refused(tmp_path):
    path = _nifti(tmp_path / "claim.nii")
    data = bytearray(path.read_bytes())
    data[40:56] = struct.pack("<8h", 3, 2048, 2048, 384, 1, 1, 1, 1)  # 3 GiB of int16
    path.write_bytes(bytes(data))
    found = medload.scan(tmp_path)
    assert len(found) == 0 and "the file has" in found.errors[0].message
    with pytest.raises(ReadError, match="claim.nii"):
        medload.load(path)


def test_nifti_gz_bomb_is_refused_by_the_volume_limit(tmp_path, monkeypatch):
    """A small .nii.gz that inflates to a volume above the limit is refused from its header."""
    path = tmp_path / "zeros.nii.gz"
    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 256))
    header.set_data_dtype(np.int16)
    raw = bytearray(header.binaryblock) + b"\x00" * 4
    struct.pack_into("<f", raw, 108, 352.0)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(bytes(raw))
        for _ in range(256):
            fh.write(bytes(512 * 512 * 2))
    assert path.stat().st_size < 1_000_000
    monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "64M")
    with pytest.raises(LimitError) as err:
        medload.load(path)
    assert "zeros.nii.gz" in str(err.value) and "128.0 MiB" in str(err.value)
    assert "MEDLOAD_MAX_VOLUME_BYTES" in str(err.value)
    monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "1G")
    assert medload.load(path).shape == (256, 512, 512)


def test_dicom_volume_limit_names_series_size_and_setting(tmp_path, monkeypatch):
    _series(tmp_path)
    monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "100")
    with pytest.raises(LimitError, match="above the per-volume limit of 100 B.*MEDLOAD_MAX_VOLUME_BYTES"):
        medload.load(medload.scan(tmp_path)[0])


@pytest.mark.parametrize("dims", [(3, 6, 0, 4), (0, 6, 5, 4)])
def test_nifti_with_an_empty_dimension_is_a_read_error(tmp_path, dims):
    path = _nifti(tmp_path / "zero.nii")
    data = bytearray(path.read_bytes())
    data[40:48] = struct.pack("<4h", *dims)
    path.write_bytes(bytes(data))
    with pytest.raises(MedloadError, match="zero.nii"):
        medload.load(path)


def test_nifti_scale_that_overflows_float32_is_refused(tmp_path):
    image = nib.Nifti1Image(np.full((4, 4, 2), 100, np.int16), np.eye(4))
    image.header.set_slope_inter(1e38, 0.0)
    path = tmp_path / "over.nii"
    nib.save(image, path)
    with pytest.raises(ReadError, match="beyond float32"):
        medload.load(path)


@pytest.mark.parametrize("label", [-1, 10**20, float("inf")])
def test_a_label_outside_the_classes_is_a_store_error(tmp_path, label):
    vol = medload.load(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    with medload.Store.create(tmp_path / "s.h5") as store, pytest.raises(medload.StoreError, match="label must be"):
        store.add(vol, label=label)


def test_scan_json_is_valid_json_even_with_nan_values(tmp_path, capsys):
    import json

    from medload.cli import main

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.KVP = "nan"
    ds.SliceThickness = "nan"
    ds.SpacingBetweenSlices = "nan"
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    assert main(["scan", str(tmp_path), "--json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text and json.loads(text)["series"]


def test_nan_slice_thickness_of_a_single_slice_gives_a_finite_affine(tmp_path):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.SliceThickness = ds.SpacingBetweenSlices = "nan"
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    (series,) = medload.scan(tmp_path)
    assert series.spacing[0] == 1.0
    assert np.isfinite(medload.load(series).affine).all()


def test_convert_of_good_series_and_one_file_of_each_class_names_every_bad_file(tmp_path):
    """Issue 11, 'what must be shown' 2: every good series converted, every bad file in the
    report as unreadable (by pseudonym; --source-map resolves it), exit 1."""
    import io
    import json

    from fixtures.hostile import nested_sequences
    from medload.cli import main

    src = tmp_path / "export"
    for k in range(2):
        write_dicom_series(
            src / f"good{k}", shape=(5, 16, 16), seed=k, series_number=k + 1, series_uid=f"1.2.826.0.1.3680043.8.498.{k + 50}"
        )
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.int16), np.eye(4)), src / "good.nii.gz")
    good = pydicom_file("CT_small.dcm")
    bad = src / "bad"
    bad.mkdir()

    def lie(name, value, **extra):
        ds = pydicom.dcmread(io.BytesIO(good))
        setattr(ds, name, value)
        for k, v in extra.items():
            setattr(ds, k, v)
        b = io.BytesIO()
        ds.save_as(b, enforce_file_format=True)
        return b.getvalue()

    files = {
        "truncated.dcm": good[: len(good) // 2],
        "hdr_cut.dcm": cut_element(good, 0x00280010, keep=5),
        "giant_length.dcm": set_length(
            good, next(e for e in elements(good) if e.length_size == 4 and e.tag >> 16 != 2).tag, 0xFFFFFFFE
        ),
        "meta_length.dcm": set_length(good, 0x00020000, 0xFFFF),
        "nested.dcm": nested_sequences(good, 600),
        "iop.dcm": lie("ImageOrientationPatient", [2, 0, 0, 0, 1, 0]),
        "spacing.dcm": lie("PixelSpacing", [-0.8, 0.6]),
        "slope0.dcm": lie("RescaleSlope", 0),
        "slope_inf.dcm": lie("RescaleSlope", "inf"),
        "nan_pos.dcm": lie("ImagePositionPatient", ["nan", 0, 0]),
        "bits.dcm": lie("BitsStored", 65535),
        "rows0.dcm": lie("Rows", 0),
        "frames_bomb.dcm": lie("NumberOfFrames", 10**7, PixelData=b""),
        "rows65535.dcm": lie("Rows", 65535, Columns=65535),
    }
    for n, b in files.items():
        (bad / n).write_bytes(b)
    for name, offset, dims in (("claim.nii", 40, (3, 2048, 2048, 384, 1, 1, 1, 1)), ("zero_dim.nii", 40, (3, 6, 0, 4))):
        p = bad / name
        nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.int16), np.eye(4)), p)
        d = bytearray(p.read_bytes())
        d[offset : offset + 2 * len(dims)] = struct.pack(f"<{len(dims)}h", *dims)
        p.write_bytes(bytes(d))
    out = tmp_path / "out"
    code = main(["convert", str(src), "-o", str(out), "--quiet", "--workers", "0", "--source-map", str(tmp_path / "map.json")])
    report = json.loads((out / "report.json").read_text())
    assert code == 1
    assert report["counts"]["converted"] == 3 and report["counts"]["failed"] == 0
    unreadable = [f for f in report["files"] if f["status"] == "unreadable"]
    assert len(unreadable) == len(files) + 2 == report["counts"]["unreadable_files"]
    mapping = json.loads((tmp_path / "map.json").read_text())
    named = {Path(p).name for p in json.dumps(mapping).split('"') if "/bad/" in p}
    assert named >= set(files) | {"claim.nii", "zero_dim.nii"}
