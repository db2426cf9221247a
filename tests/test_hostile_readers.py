"""Each class of escape the reader campaign (``tools/fuzz_readers.py``) found, as one file made in code.

Every test fails on the code before its fix: a library's exception escaped the reader (nibabel's
HeaderDataError, pydicom's ValueError), a header made an allocation of its own choosing
(a PNG chunk length), an affine of 1e308 mm voxels passed every per-field check and broke
reorientation in convert, or a volume came back silently wrong (int32 products wrapping).
"""

from __future__ import annotations

import copy
import io
import struct

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import medload
from medload.errors import ReadError
from medload.io.nifti import scan_nifti


def _png(tmp_path, name="x.png"):
    array = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    path = tmp_path / name
    Image.fromarray(array).save(path, format="PNG")
    return path, array


def _chunks(data: bytes) -> dict[bytes, int]:
    pos, out = 8, {}
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.setdefault(data[pos + 4 : pos + 8], pos)
        pos += 12 + length
    return out


@pytest.mark.parametrize("chunk", [b"IDAT", b"IEND"])
def test_png_chunk_length_beyond_the_file_is_refused_before_pillow_reads_it(tmp_path, chunk):
    # Before: Pillow read(2**31 - 1) for the chunk, a 2 GiB allocation chosen by the file
    # (MemoryError under a memory cap; without one the image even loaded).
    path, _ = _png(tmp_path)
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, _chunks(bytes(data))[chunk], 2**31 - 1)
    path.write_bytes(bytes(data))
    with pytest.raises(ReadError, match=rf"x.png: PNG chunk '{chunk.decode()}' at byte \d+ claims 2147483647 bytes"):
        medload.load(path)
    found = medload.scan(path)
    assert len(found) == 0 and "claims 2147483647 bytes" in found.errors[0].message


def test_png_with_trailing_bytes_after_iend_still_loads(tmp_path):
    path, array = _png(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x00" * 17)
    np.testing.assert_array_equal(medload.load(path).array[0], array)


def _nifti(tmp_path, name="x.nii"):
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    path = tmp_path / name
    nib.save(image, path)
    return path


def _set(path, offset, fmt, value):
    data = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, data, offset, value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "offset, fmt, value, said",
    [
        (108, "f", 100.0, "vox offset 100 too low"),  # vox_offset inside the header
        (70, "h", 8192, "data code 8192"),  # an unknown datatype
        (116, "f", float("nan"), "invalid intercept nan"),  # scl_inter NaN beside a valid slope
    ],
)
def test_nifti_header_nibabel_refuses_is_a_read_error_naming_the_file(tmp_path, offset, fmt, value, said):
    # Before: nibabel's HeaderDataError escaped scan_nifti / load (scan hid it in its safety net).
    path = _nifti(tmp_path)
    if offset == 116:
        _set(path, 112, "f", 2.0)
    _set(path, offset, fmt, value)
    with pytest.raises(ReadError, match=rf"NIfTI file .*x.nii: its header cannot be used \(HeaderDataError: .*{said}"):
        medload.load(scan_nifti(path))


def test_nifti2_with_a_nifti1_magic_is_a_read_error(tmp_path):
    path = tmp_path / "two.nii"
    nib.save(nib.Nifti2Image(np.zeros((4, 3, 2), np.int16), np.eye(4)), path)
    data = bytearray(path.read_bytes())
    data[4:12] = b"n+1\x00\r\n\x1a\n"
    path.write_bytes(bytes(data))
    with pytest.raises(ReadError, match=r"two.nii: its header cannot be used \(HeaderDataError: magic string 'n\+1'"):
        scan_nifti(path)


def test_nifti_qform_that_is_no_rotation_beside_a_valid_sform_is_a_read_error(tmp_path):
    # nibabel opens it (the affine comes from the sform) and raises ValueError only when the
    # qform is asked for, to compare the two: before, that escaped scan_nifti.
    path = _nifti(tmp_path)
    _set(path, 252, "h", 1)  # qform_code 1 beside sform_code 2
    data = bytearray(path.read_bytes())
    struct.pack_into("<3f", data, 256, 0.6, 0.6, 0.53)  # b^2 + c^2 + d^2 = 1.0009: no rotation
    path.write_bytes(bytes(data))
    with pytest.raises(ReadError, match=r"x.nii: its header cannot be used \(ValueError: w2 should be positive"):
        scan_nifti(path)


def test_nifti_srow_of_1e30_mm_is_refused_at_scan(tmp_path):
    # Before: finite, invertible, accepted; convert then failed inside nibabel's orientation code
    # ("Unable to find out axis 2.0 in start_ornt"), reported as an internal error.
    path = _nifti(tmp_path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<12f", data, 280, 1.0, 0.0, -1e30, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    struct.pack_into("<h", data, 254, 1)  # sform_code
    path.write_bytes(bytes(data))
    with pytest.raises(ReadError, match=r"x.nii \(sform\): the voxel grid the header gives has voxel sizes \[1, 1, 1e\+30\] mm"):
        scan_nifti(path)
    report = medload.convert(path, tmp_path / "out.h5", workers=0, progress=False)
    assert report["counts"]["unreadable_files"] == 1 and not any(s.get("internal") for s in report.series)


def _dicom(tmp_path, name="CT_small.dcm", **values):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    for key, value in values.items():
        setattr(ds, key, value)
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "in" / "a.dcm"
    ds.save_as(path)
    return path, ds


def test_pixel_spacing_of_1e308_is_refused_at_scan(tmp_path):
    path, _ = _dicom(tmp_path, PixelSpacing=["1e308", "1e308"])
    found = medload.scan(path)
    assert len(found) == 0
    assert (
        "PixelSpacing is [1e+308, 1e+308]; expected two positive millimetre values, 1e-06 to 100000 each"
        in found.errors[0].message
    )


def test_slice_thickness_of_1e308_is_refused_at_load_naming_the_file(tmp_path):
    # One slice: SliceThickness is its spacing along the normal. Before: an affine of 1e308
    # loaded, and convert failed in reorientation with "cannot convert float NaN to integer".
    path, _ = _dicom(tmp_path, "MR_small.dcm", SliceThickness="1e308")
    with pytest.raises(ReadError, match=r"a.dcm: the voxel grid the header gives has voxel sizes \[1e\+308"):
        medload.load(path)
    report = medload.convert(tmp_path / "in", tmp_path / "out.h5", workers=0, progress=False)
    (entry,) = report.failed
    assert entry["error"] == "ReadError" and not entry.get("internal")


def test_first_voxel_1e20_mm_from_the_origin_is_refused(tmp_path):
    path, _ = _dicom(tmp_path, ImagePositionPatient=["1e20", "0", "0"])
    with pytest.raises(ReadError, match=r"a.dcm: the first voxel lies 1e\+20 mm from the scanner's origin"):
        medload.load(path)


def test_palette_colour_image_without_its_palette_is_a_read_error(tmp_path):
    # Before: pydicom's "No suitable Palette Color Lookup Table Module found" (ValueError) escaped load.
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("examples_palette.dcm"))
    for keyword in [k for k in ds.dir() if "PaletteColor" in k]:
        delattr(ds, keyword)
    path = tmp_path / "p.dcm"
    ds.save_as(path)
    with pytest.raises(ReadError, match="p.dcm: its lookup table .* cannot be applied"):
        medload.load(path)


def test_an_integer_slope_beyond_int32_products_is_exact_in_every_slice(tmp_path):
    # Slope 70000 on 16-bit values: 32000 * 70000 = 2.24e9 > int32. The first slice widened the
    # output to int64 and every later one took the int32 fast path: its products wrapped
    # (2240000000 read as -2054967296), a silently wrong volume.
    (tmp_path / "in").mkdir()
    truth = []
    for k in range(3):
        ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
        arr = ds.pixel_array.copy()
        arr[0, :5], arr[1, :5] = 32000, -32000
        ds.PixelData, ds.BitsStored, ds.HighBit = arr.tobytes(), 16, 15
        ds.RescaleSlope, ds.RescaleIntercept = "70000", "-5"
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
        ds.InstanceNumber = k + 1
        ds.save_as(tmp_path / "in" / f"{k}.dcm")
        truth.append(arr.astype(np.int64) * 70000 - 5)
    vol = medload.load(tmp_path / "in")
    np.testing.assert_array_equal(vol.array.astype(np.int64), np.stack(truth))
    assert vol.array[2, 0, 0] == 2_239_999_995


def test_valid_files_of_every_kind_still_load(tmp_path):
    # The new checks refuse only what no scanner writes: real files of each reader pass them.
    path, ds = _dicom(tmp_path)
    assert medload.load(path).spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert medload.load(_nifti(tmp_path)).shape == (4, 5, 6)
    png, array = _png(tmp_path)
    np.testing.assert_array_equal(medload.load(png).array[0], array)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", dpi=(25400, 25400))  # 1 micrometre pixels
    (tmp_path / "fine.png").write_bytes(buf.getvalue())
    assert medload.load(tmp_path / "fine.png").spacing[1:] == pytest.approx((0.001, 0.001))


def test_micrometre_voxels_the_readers_accept_make_a_volume(tmp_path):
    # check_grid accepts voxel sizes down to 1e-6 mm; the Volume refused them as "singular" (its
    # test was an absolute determinant, 1e-13 here), a ConfigError naming no file.
    from fixtures.synthetic import write_dicom_series

    truth = write_dicom_series(tmp_path / "micro", shape=(3, 6, 5), spacing=(1e-3, 1e-5, 1e-5), seed=2)
    volume = medload.load(medload.scan(tmp_path / "micro")[0])
    np.testing.assert_allclose(volume.spacing, (1e-3, 1e-5, 1e-5), rtol=1e-3)
    assert volume.shape == (3, 6, 5)
    assert np.array_equal(np.sort(volume.array.ravel()), np.sort(np.asarray(truth["array"]).ravel()))
    with pytest.raises(medload.errors.ConfigError, match="singular"):
        medload.Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_a_missing_slice_of_a_micrometre_step_series_is_a_gap_not_a_stretched_volume(tmp_path):
    # 5 um micro-CT slices with the fifth file gone: one step of 10 um among steps of 5 um. The step
    # check's fixed 0.01 mm tolerance passed it as an even stack of 7 slices 5.8 um apart (every
    # slice after the gap misplaced); the gap is now refused with the files on either side, as it
    # is at 0.05 mm, and on_gap="interpolate" fills it.
    import pydicom
    from fixtures.synthetic import write_dicom_series

    for step in (0.005, 0.05):
        folder = tmp_path / f"micro-{step}"
        write_dicom_series(folder, shape=(8, 6, 5), spacing=(step, step, step), seed=2)
        by_z = sorted(folder.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
        by_z[4].unlink()
        series = medload.scan(folder)[0]
        with pytest.raises(medload.errors.GeometryError, match="missing slices: 1 slice") as caught:
            medload.load(series)
        assert by_z[3].name in str(caught.value) and by_z[5].name in str(caught.value)
        filled = medload.load(series, on_gap="interpolate")
        assert filled.shape == (8, 6, 5)
        np.testing.assert_allclose(filled.spacing[0], step, rtol=1e-3)
    whole = tmp_path / "whole"
    write_dicom_series(whole, shape=(8, 6, 5), spacing=(0.005, 0.005, 0.005), seed=2)
    assert medload.load(medload.scan(whole)[0]).spacing == pytest.approx((0.005, 0.005, 0.005), rel=1e-3)


def _enhanced(tmp_path, damage):
    """fixtures.special's 6-frame enhanced MR (3 slices x 2 frames, pixel = 100 t + z) with ``damage(ds)`` applied."""
    from fixtures.special import enhanced_asl

    made = enhanced_asl(tmp_path / "in", n_slices=3, n_frames=2, size=6)
    path = made["files"][0]
    ds = pydicom.dcmread(path)
    damage(ds)
    ds.save_as(path)
    return path


def test_enhanced_number_of_frames_below_the_pixels_is_refused(tmp_path):
    # A targeted probe (the campaigns had no enhanced-object mutator): NumberOfFrames lowered from 6 to 3 in an enhanced object. The
    # PixelData length check only ran where the fast walker located PixelData, and it gave up
    # on every multi-frame file: 3 of 6 frames loaded as a whole volume.
    def fewer(ds):
        ds.NumberOfFrames = 3
        del ds.PerFrameFunctionalGroupsSequence[3:]  # one item per stated frame: only the pixels lie

    path = _enhanced(tmp_path, fewer)
    found = medload.scan(path)
    assert len(found) == 0
    assert "PixelData holds 432 bytes but the header claims 3 frame(s) of 6 x 6" in found.errors[0].message


@pytest.mark.parametrize("items", [2, 9])
def test_enhanced_per_frame_groups_of_another_count_than_the_frames_are_refused(tmp_path, items):
    # 2 items for 6 frames: frames 2-5 had no per-frame group, fell back to the shared one (no
    # position) and became a second series; 2 of 6 frames loaded as a volume. 9 items: the
    # extra ones were ignored, whichever frames they described.
    def recount(ds):
        per = ds.PerFrameFunctionalGroupsSequence
        while len(per) > items:
            del per[-1]
        while len(per) < items:
            per.append(copy.deepcopy(per[0]))

    path = _enhanced(tmp_path, recount)
    found = medload.scan(path)
    assert len(found) == 0
    # 9 items: refused by the count before pydicom parses them (medload.io.frameitems), 2 after
    said = "(5200,9230) holds more than 6 item(s)" if items > 6 else f"has {items} item(s)"
    assert f"enhanced.dcm: PerFrameFunctionalGroupsSequence {said} but NumberOfFrames is 6" in found.errors[0].message
    report = medload.convert(tmp_path / "in", tmp_path / "out.h5", workers=0, progress=False)
    assert report["counts"]["unreadable_files"] == 1 and report["counts"]["converted"] == 0


@pytest.mark.parametrize(
    "name, values, said",
    [
        # before: 16-bit samples decoded as int8, wrapped around (-128..127 for 128..2191)
        (
            "MR_small_jp2klossless.dcm",
            {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7},
            "holds 16-bit samples, but BitsAllocated is 8",
        ),
        # before: every voxel 0
        (
            "MR_small_jpeg_ls_lossless.dcm",
            {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7},
            "holds 16-bit samples, but BitsAllocated is 8",
        ),
        (
            "SC_rgb_jls_lossy_line.dcm",
            {"SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2"},
            "has components 3, but SamplesPerPixel is 1",
        ),
    ],
)
def test_a_header_that_contradicts_its_codestream_is_refused(tmp_path, name, values, said):
    # A targeted probe (the campaigns changed BitsAllocated on native files only): each loaded
    # a silently wrong volume.
    path, _ = _dicom(tmp_path, name, **values)
    with pytest.raises(ReadError, match=rf"a.dcm: the JPEG(-LS| 2000) codestream of frame 0 {said}; the header does not"):
        medload.load(path)
    report = medload.convert(tmp_path / "in", tmp_path / "out.h5", workers=0, progress=False)
    assert [s["error"] for s in report.failed] == ["ReadError"]


def test_compressed_files_whose_header_matches_still_load():
    # The check reads only what the codestream states: sound files decode as pydicom decodes them.
    from tools.fuzz_readers import pixel_oracle

    for name in ("MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm", "JPEG2000.dcm"):
        series = medload.scan(pydicom.data.get_testdata_file(name))[0]
        assert pixel_oracle(series, medload.load(series)) is None
    rgb = medload.load(pydicom.data.get_testdata_file("SC_rgb_jls_lossy_line.dcm"))
    assert sorted(rgb.array.shape)[-3:] == [3, 100, 100]


def test_an_enhanced_frame_without_its_plane_position_is_refused_not_all_frames_stacked_without_geometry(tmp_path):
    # A targeted probe: one frame's PlanePositionSequence empty. Before, that frame had no
    # position, so all 6 frames were stacked in DICOM's default plane 1 mm apart (the other
    # 5 frames' positions and 4 mm spacing dropped, only a no_world_geometry note said so).
    from pydicom.sequence import Sequence

    def empty_position(ds):
        ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence = Sequence([])

    path = _enhanced(tmp_path, empty_position)
    (series,) = medload.scan(path)
    assert [p.kind for p in series.problems] == [medload.problems.ProblemKind.POSITION_INCOMPLETE]
    with pytest.raises(medload.errors.GeometryError, match=r"1 of 6 images have no ImagePositionPatient/.*\[frame 1\]"):
        medload.load(series)
    whole = medload.load(medload.scan(_enhanced(tmp_path / "whole", lambda ds: None))[0])
    assert whole.shape == (2, 3, 6, 6) and whole.spacing[0] == pytest.approx(4.0)


def test_a_tiff_of_thousands_of_one_page_series_is_refused_before_tifffile_sorts_them(tmp_path):
    # Campaign finding (fuzz_readers --only-structure, seed 101 case 9): 5,000 pages written as
    # 5,000 series of 4 x 4 (1.3 MB) cost 20 s CPU in scan alone (tifffile's series pyramid
    # search is quadratic), again in load and convert: a hang under the campaign's alarm.
    import tifffile

    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tw:
        for i in range(2100):
            tw.write(np.full((4, 4), i, np.uint16), contiguous=False)
    with pytest.raises(
        medload.errors.UnsupportedError,
        match=r"pages.tif: TIFF holds 2100 pages \(IFDs\) that are not one stack .* at most 2,048",
    ):
        medload.load(path)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.arange(3000 * 4, dtype=np.uint16).reshape(3000, 2, 2))
    assert medload.load(stack).shape == (3000, 2, 2)


def test_an_image_over_the_volume_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    # The per-volume limit (MEDLOAD_MAX_VOLUME_BYTES) bounded DICOM and NIfTI only; a PNG or TIFF
    # was bounded by Pillow's pixel count alone (a 16-bit RGBA PNG under it decodes to 715 MB).
    import tifffile

    monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "100K")
    big = np.zeros((200, 200, 4), np.uint8)  # 160,000 bytes decoded
    Image.fromarray(big, "RGBA").save(tmp_path / "big.png")
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((3, 200, 100), np.uint16), compression="zlib")  # 120,000 bytes
    for name in ("big.png", "big.tif"):
        with pytest.raises(
            medload.errors.LimitError, match=rf"{name}: its header claims a volume of shape .* above the per-volume limit"
        ):
            medload.load(tmp_path / name)
    Image.fromarray(big[:100, :100]).save(tmp_path / "small.png")  # 40,000 bytes
    assert (
        medload.load(tmp_path / "small.png").shape[-3:] == (1, 100, 100)
        or medload.load(tmp_path / "small.png").array.size == 40000
    )


@pytest.mark.parametrize("shape", [(2, 64, 1), (5, 1, 64)])
def test_n4_on_an_image_one_voxel_wide_is_a_transform_error(shape):
    # Campaign finding (fuzz_readers --only-structure, seed 202 case 88): an RLE image whose
    # Columns lie loaded one voxel wide; convert's MR preset ran N4 on it and ITK's RuntimeError
    # ("Zero-valued spacing is not supported") escaped as an internal error. Two voxels work.
    from medload.errors import TransformError
    from medload.transforms.mr import n4_bias_correct

    image = np.random.default_rng(0).random(shape).astype(np.float32) + 1
    with pytest.raises(TransformError, match=rf"n4: expected at least 2 voxels along every axis, found .*{shape[-1]}\)"):
        n4_bias_correct(image)
    assert n4_bias_correct(np.repeat(image, 2, axis=shape.index(1))).shape == tuple(2 * n if n == 1 else n for n in shape)


@pytest.mark.parametrize("values", [{"Rows": 64}, {"Columns": 127}])
def test_an_rle_image_whose_rows_or_columns_lie_is_refused(tmp_path, values):
    # A targeted probe: pydicom decodes an RLE segment longer than Rows x Columns with a warning
    # and keeps its start, so Rows 64 of 128 loaded the top half as the whole image and
    # Columns 127 of 128 a sheared one. The segments' decoded lengths are counted from their runs.
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.compress(RLELossless)
    for key, value in values.items():
        setattr(ds, key, value)
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "a.dcm")
    with pytest.raises(ReadError, match=r"a.dcm: RLE segment 0 of frame 0 decodes to 16384 bytes, but Rows x Columns is"):
        medload.load(tmp_path / "in" / "a.dcm")
    report = medload.convert(tmp_path / "in", tmp_path / "out.h5", workers=0, progress=False)
    assert [s["error"] for s in report.failed] == ["ReadError"]
