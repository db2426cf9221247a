"""16-bit PNG that Pillow reads at 8 bits: colour read whole (SimpleITK), grey + alpha refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

import medload
from fixtures.images import write_png16
from medload.errors import UnsupportedError
from medload.io.images import load_image, scan_image
from medload.io.png16 import apply_exif_orientation
from medload.problems import ProblemKind


def _values(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """16-bit values whose low bytes differ from their high bytes (what an 8-bit decode loses)."""
    values = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    assert len(np.unique(values & 0xFF)) > 10
    return values


@pytest.mark.parametrize("samples", [3, 4])
def test_16bit_colour_png_keeps_every_bit(tmp_path, samples):
    pixels = _values((5, 7, samples))
    path = write_png16(tmp_path / f"c{samples}.png", pixels)
    series = scan_image(path, root=tmp_path)
    vol = load_image(series)
    assert series.shape == vol.shape == (3, 1, 5, 7)
    assert vol.array.dtype == np.uint16
    np.testing.assert_array_equal(vol.array[:, 0], np.moveaxis(pixels[..., :3], -1, 0))
    assert vol.meta["channels"] == ["R", "G", "B"] and vol.meta["stored_range"] == [0.0, 65535.0]
    assert (ProblemKind.ALPHA_DROPPED in {p.kind for p in vol.problems}) == (samples == 4)
    # The public path gives the same voxels.
    np.testing.assert_array_equal(medload.load(str(path)).array, vol.array)


def test_16bit_colour_png_exif_orientation_is_applied(tmp_path):
    pixels = _values((4, 6, 3), seed=1)
    path = write_png16(tmp_path / "rot.png", pixels, exif_orientation=6)
    series = scan_image(path, root=tmp_path)
    vol = load_image(series)
    assert series.shape == vol.shape == (3, 1, 6, 4)
    np.testing.assert_array_equal(vol.array[:, 0], np.moveaxis(np.rot90(pixels, -1), -1, 0))
    assert any(p.kind is ProblemKind.EXIF_ORIENTATION_APPLIED and "EXIF orientation 6" in p.message for p in vol.problems)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_on_arrays_is_pillows(orientation):
    rgb = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(apply_exif_orientation(rgb, orientation), expected)


def test_16bit_grey_alpha_png_is_refused_by_name(tmp_path):
    path = write_png16(tmp_path / "la.png", _values((5, 7, 2)))
    with pytest.raises(UnsupportedError, match=r"la\.png: 16-bit grey \+ alpha PNG.*Save it without the alpha"):
        load_image(path)
    found = medload.scan(tmp_path)
    assert len(found) == 0
    [problem] = found.errors
    assert problem.path.endswith("la.png") and "16-bit grey + alpha" in problem.message


def test_16bit_grey_png_still_read_by_pillow(tmp_path):
    pixels = _values((5, 7))
    vol = load_image(write_png16(tmp_path / "g.png", pixels))
    assert vol.array.dtype == np.uint16
    np.testing.assert_array_equal(vol.array[0], pixels)
