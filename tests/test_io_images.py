"""2D image files (PNG, JPEG, TIFF, BMP) as sources: what scan finds and load decodes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

import medload
from fixtures.images import write_bad_images, write_image_folder
from medload.errors import ReadError
from medload.io.images import load_image, scan_image
from medload.problems import ProblemKind


def test_class_folder_scan_and_pixels_equal_the_decoded_files(tmp_path):
    truth = write_image_folder(tmp_path, n_per_class=3)
    found = medload.scan(tmp_path, patient_pattern=r"(?P<patient>\d+)_")
    assert not found.errors and len(found) == len(truth)
    for series in found:
        rel = series.files[0][len(str(tmp_path.resolve())) + 1 :]
        expected = truth[rel]
        assert series.kind == "image" and series.info["class_folder"] == expected["class"]
        vol = medload.load(series)
        arr = expected["array"]
        if arr.ndim == 3:  # colour: (3, 1, H, W), channels recorded
            assert vol.shape == (3, 1, *arr.shape[:2]) and vol.meta["channels"] == ["R", "G", "B"]
            np.testing.assert_array_equal(vol.array[:, 0], np.moveaxis(arr, -1, 0))
        else:
            assert vol.shape == (1, *arr.shape) and vol.array.dtype == arr.dtype
            np.testing.assert_array_equal(vol.array[0], arr)
        assert vol.meta["stored_range"] == ([0.0, 65535.0] if arr.dtype == np.uint16 else [0.0, 255.0])
        assert vol.modality == "OT" and vol.spacing == (1.0, 1.0, 1.0)
    # Images of one patient share a key; of two patients, never.
    keys = {}
    for series in found:
        patient = series.files[0].rsplit("/", 1)[-1].split("_")[0]
        keys.setdefault(patient, set()).add(series.patient_key)
    assert all(len(k) == 1 for k in keys.values())
    assert len({next(iter(k)) for k in keys.values()}) == len(keys)


def test_without_a_pattern_each_image_is_its_own_patient(tmp_path):
    write_image_folder(tmp_path, n_per_class=2)
    found = medload.scan(tmp_path)
    assert len({s.patient_key for s in found}) == len(found) == 6
    assert all(ProblemKind.PATIENT_UNKNOWN in {p.kind for p in s.problems} for s in found)


def test_a_pattern_that_finds_no_patient_is_a_named_error(tmp_path):
    write_image_folder(tmp_path, n_per_class=1)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "normal" / "scan.png")
    found = medload.scan(tmp_path, patient_pattern=r"(\d+)_")
    assert len(found) == 3
    [problem] = found.errors
    assert problem.path.endswith("scan.png") and "finds nothing" in problem.message


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "1", "I;16"])
def test_modes(tmp_path, mode):
    rng = np.random.default_rng(0)
    path = tmp_path / f"x_{mode.replace(';', '')}.png"
    if mode == "RGBA":
        rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
        Image.fromarray(rgba).save(path)
        vol = load_image(path)
        np.testing.assert_array_equal(vol.array[:, 0], np.moveaxis(rgba[..., :3], -1, 0))
        assert ProblemKind.ALPHA_DROPPED in {p.kind for p in vol.problems}
    elif mode == "LA":
        la = rng.integers(0, 256, (5, 7, 2), dtype=np.uint8)
        Image.fromarray(la, mode="LA").save(path)
        vol = load_image(path)
        np.testing.assert_array_equal(vol.array[0], la[..., 0])
        assert ProblemKind.ALPHA_DROPPED in {p.kind for p in vol.problems}
    elif mode == "P":
        idx = rng.integers(0, 4, (5, 7), dtype=np.uint8)
        palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]
        im = Image.fromarray(idx, mode="P")
        im.putpalette(palette)
        im.save(path)
        vol = load_image(path)
        rgb = np.asarray(palette, np.uint8).reshape(-1, 3)[idx]
        np.testing.assert_array_equal(vol.array[:, 0], np.moveaxis(rgb, -1, 0))
        assert ProblemKind.PALETTE_EXPANDED in {p.kind for p in vol.problems}
    elif mode == "1":
        bits = rng.integers(0, 2, (5, 8)).astype(bool)
        Image.fromarray(bits).save(path)
        vol = load_image(path)
        np.testing.assert_array_equal(vol.array[0], bits.astype(np.uint8) * 255)
        assert ProblemKind.ONE_BIT_EXPANDED in {p.kind for p in vol.problems}
    else:
        arr = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
        Image.fromarray(arr).save(path)
        vol = load_image(path)
        assert vol.array.dtype == np.uint16
        np.testing.assert_array_equal(vol.array[0], arr)


def test_multipage_and_float_tiff_and_bmp(tmp_path):
    stack = (np.arange(3 * 6 * 5) * 300).astype(np.uint16).reshape(3, 6, 5)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    vol = load_image(tmp_path / "stack.tif")
    np.testing.assert_array_equal(vol.array, stack)  # pages are slices
    floats = np.linspace(-1, 1, 30, dtype=np.float32).reshape(6, 5)
    tifffile.imwrite(tmp_path / "f.tiff", floats, resolution=(10.0, 5.0), resolutionunit="CENTIMETER")
    vol = load_image(tmp_path / "f.tiff")
    np.testing.assert_array_equal(vol.array[0], floats)
    assert vol.meta["stored_range"] is None
    assert vol.spacing == (1.0, 2.0, 1.0)  # 5 px/cm down the rows, 10 px/cm along them
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    np.testing.assert_array_equal(load_image(tmp_path / "c.bmp").array[:, 0], np.moveaxis(rgb, -1, 0))


def test_exif_orientation_is_applied(tmp_path):
    arr = np.repeat(np.arange(0, 240, 30, dtype=np.uint8)[None], 4, 0)  # (4, 8): brighter to the right
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    Image.fromarray(arr).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    series = scan_image(tmp_path / "phone.jpg", root=tmp_path)
    vol = load_image(series)
    assert series.shape == vol.shape == (1, 8, 4)
    # Rotated clockwise, the bright right edge is at the bottom.
    assert vol.array[0, -1].mean() > vol.array[0, 0].mean() + 150
    assert any(p.kind is ProblemKind.EXIF_ORIENTATION_APPLIED and "EXIF orientation 6" in p.message for p in vol.problems)


def test_pixel_size_from_png_phys(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "d.png", dpi=(254, 127))
    vol = load_image(tmp_path / "d.png")
    assert vol.spacing == pytest.approx((1.0, 0.2, 0.1), abs=1e-3)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_quarter_turn_of_exif_orientation_swaps_the_pixel_size_with_the_axes(tmp_path, orientation):
    # 0.1 mm along the stored rows (x), 0.2 mm down them (y); turned 90 degrees, the displayed
    # rows run along the stored columns, so their step is the stored x pixel size.
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "o.png", dpi=(254, 127), exif=exif)
    vol = load_image(tmp_path / "o.png")
    turned = orientation in (6, 8)
    assert vol.shape == ((1, 40, 30) if turned else (1, 30, 40))
    assert vol.spacing == pytest.approx((1.0, 0.1, 0.2) if turned else (1.0, 0.2, 0.1), abs=1e-3)
    # turned, the displayed height is the stored width: 40 px x 0.1 mm = 4 mm (else 30 px x 0.2 mm)
    height_mm = vol.shape[1] * vol.spacing[1]
    assert height_mm == pytest.approx(4.0 if turned else 6.0, abs=1e-3)


def test_every_bad_file_is_a_named_error_and_scan_goes_on(tmp_path):
    write_image_folder(tmp_path / "good", n_per_class=1)
    bad = write_bad_images(tmp_path / "bad")
    found = medload.scan(tmp_path)
    errors = {p.path.rsplit("/", 1)[-1]: p.message for p in found.errors}
    good = [s for s in found if "/good/" in s.files[0]]
    assert len(good) == 3  # every good image is still found
    for series in good:
        medload.load(series)
    # Scan reads headers: a truncated file whose header is whole fails when loaded instead.
    failed_at_load = {}
    for name in bad:
        if name not in errors:
            with pytest.raises(ReadError) as info:
                load_image(tmp_path / "bad" / name)
            failed_at_load[name] = str(info.value)
    messages = {**errors, **failed_at_load}
    for name, what in bad.items():
        assert name in messages[name] and what in messages[name], (name, messages[name])


def exif_transposed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """Pillow's reading of a stored (H, W) image with an orientation tag: the reference."""
    from PIL import ImageOps

    image = Image.fromarray(stored)
    image.getexif()[0x0112] = orientation
    return np.asarray(ImageOps.exif_transpose(image))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_orientation_tag_is_applied_like_exif(tmp_path, orientation):
    # tifffile decodes the stored order; viewers (and Pillow) show the Orientation tag's. Before,
    # a TIFF tagged 6 came out lying on its side with rows and columns transposed, unsaid.
    stored = np.arange(5 * 7, dtype=np.uint16).reshape(5, 7) * 100  # every pixel its own value
    stack = np.stack([stored, stored + 1, stored + 2])
    tifffile.imwrite(tmp_path / "o.tif", stack, photometric="minisblack", extratags=[(274, "H", 1, orientation, True)])
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert int(tif.pages[0].tags["Orientation"].value) == orientation
    series = scan_image(tmp_path / "o.tif", root=tmp_path)
    vol = load_image(series)
    expected = np.stack([exif_transposed(page, orientation) for page in stack])
    assert series.shape == vol.shape == expected.shape
    np.testing.assert_array_equal(vol.array, expected)
    said = [p.message for p in vol.problems if p.kind is ProblemKind.EXIF_ORIENTATION_APPLIED]
    assert said == (
        [] if orientation == 1 else [f"TIFF Orientation {orientation} applied (rows and columns as meant to be seen)."]
    )


@pytest.mark.parametrize("orientation", [1, 3, 5, 6, 8])
def test_a_quarter_turn_of_a_tiff_orientation_swaps_the_pixel_size_with_the_axes(tmp_path, orientation):
    # 10 px/cm along the stored rows (x: 1 mm), 5 px/cm down them (y: 2 mm), RGB
    rgb = np.random.default_rng(3).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "c.tif", rgb, resolution=(10.0, 5.0), resolutionunit="CENTIMETER", extratags=[(274, "H", 1, orientation, True)]
    )
    vol = load_image(tmp_path / "c.tif")
    turned = orientation in (5, 6, 7, 8)
    assert vol.shape == ((3, 1, 6, 4) if turned else (3, 1, 4, 6))
    assert vol.spacing == pytest.approx((1.0, 1.0, 2.0) if turned else (1.0, 2.0, 1.0))
    np.testing.assert_array_equal(np.moveaxis(vol.array[:, 0], 0, -1), exif_transposed(rgb, orientation))


@pytest.mark.parametrize("orientation", [2, 6, 7])
def test_a_tiff_pillow_decodes_is_oriented_as_tifffiles_are(tmp_path, orientation):
    # LZW needs imagecodecs in tifffile, so Pillow (libtiff) decodes it: the same orientation,
    # the same pixel size and the same note as the tifffile path above.
    from PIL import TiffImagePlugin

    stored = (np.arange(5 * 7, dtype=np.uint8).reshape(5, 7) * 7).astype(np.uint8)
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[274] = orientation
    Image.fromarray(stored).save(tmp_path / "lzw.tif", compression="tiff_lzw", tiffinfo=tags, dpi=(254, 127))
    series = scan_image(tmp_path / "lzw.tif", root=tmp_path)
    vol = load_image(series)
    assert series.shape == vol.shape
    np.testing.assert_array_equal(vol.array[0], exif_transposed(stored, orientation))
    assert vol.spacing == pytest.approx((1.0, 0.1, 0.2) if orientation in (5, 6, 7, 8) else (1.0, 0.2, 0.1), abs=1e-3)
    assert any(
        p.kind is ProblemKind.EXIF_ORIENTATION_APPLIED and f"TIFF Orientation {orientation}" in p.message for p in vol.problems
    )
