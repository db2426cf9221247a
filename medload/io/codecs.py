"""Decode pixel data through pydicom's pixel backends; name the package when one is missing.

pydicom 3 decodes native (uncompressed, big endian, deflated) and RLE data itself, and
compressed data through plugins: pylibjpeg with pylibjpeg-libjpeg (JPEG, JPEG-LS) and
pylibjpeg-openjpeg (JPEG 2000, HTJ2K), or python-gdcm, or pyjpegls. We do not write codecs.
Before decoding we ask pydicom's decoder for the transfer syntax whether it can run
(``Decoder.is_available``, ``Decoder.missing_dependencies``): when it cannot, a
:class:`MissingDependencyError` says which ``pip install`` fixes it; a compressed syntax pydicom
has no decoder for is an :class:`UnsupportedError`; a decoding failure is a :class:`ReadError`
naming the file. No decision reads an exception's text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.errors import MissingDependencyError, ReadError, UnsupportedError
from medload.io.codestream import check_codestream

__all__ = ["decode", "codec_hint", "read_native", "add_intercept", "stored_bits"]

_JPEG = "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)"
_JPEGLS = "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls, or python-gdcm)"
_J2K = "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)"
_HINTS = {
    "1.2.840.10008.1.2.4.50": _JPEG,
    "1.2.840.10008.1.2.4.51": _JPEG,
    "1.2.840.10008.1.2.4.57": _JPEG,
    "1.2.840.10008.1.2.4.70": _JPEG,
    "1.2.840.10008.1.2.4.80": _JPEGLS,
    "1.2.840.10008.1.2.4.81": _JPEGLS,
    "1.2.840.10008.1.2.4.90": _J2K,
    "1.2.840.10008.1.2.4.91": _J2K,
    "1.2.840.10008.1.2.4.201": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pip install pylibjpeg pylibjpeg-rle (or update numpy/pydicom)",
}


def codec_hint(transfer_syntax: str) -> str:
    """The ``pip install`` line that provides a decoder for ``transfer_syntax``.

    Examples
    --------
    >>> codec_hint("1.2.840.10008.1.2.4.90")
    'pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)'
    """
    return _HINTS.get(str(transfer_syntax), "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg python-gdcm")


def decode(ds: Any, path: str) -> np.ndarray:
    """Stored pixel values of a full pydicom dataset, as pydicom's backends decode them.

    Returns ``(rows, cols)``, ``(frames, rows, cols)`` or with a trailing samples axis for
    colour. No rescale, no photometric change (YCbCr is converted to RGB by pydicom).

    Raises
    ------
    MissingDependencyError
        No installed plugin decodes this transfer syntax; the message names the package.
    ReadError
        The pixel data is absent, truncated or corrupt.

    Examples
    --------
    >>> import os, pydicom
    >>> path = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    >>> decode(pydicom.dcmread(path), path).shape
    (128, 128)
    """
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ReadError(
            f"{path}: no pixel data in this DICOM image; expected a PixelData element. Remove the file or re-export it."
        )
    _check_decoder(ts, path)
    check_codestream(ds, path, ts)
    try:
        pixels = ds.pixel_array
    except MemoryError:
        raise
    # Only pydicom and its plugins run in this block, on the file's bytes: whatever they raise
    # (ValueError, RuntimeError, struct.error, a plugin's own exceptions) means this file's pixel
    # data does not decode, not a bug of medload's.
    except Exception as exc:
        raise ReadError(
            f"{path}: pixel data (transfer syntax {ts or 'unknown'}) cannot be decoded ({type(exc).__name__}: "
            f"{_first_line(exc)}); the file is damaged or its header does not match its pixel data, "
            "re-export it (uncompressed if it keeps failing)."
        ) from exc
    if "PixelData" not in ds:
        return pixels
    return stored_bits(pixels, int(ds.get("BitsStored", 0) or 0), int(ds.get("PixelRepresentation", 0) or 0) == 1)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines[:3])


def _check_decoder(ts: str, path: str) -> None:
    """Refuse before decoding when pydicom's decoder for ``ts`` cannot run (see module doc)."""
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    uid = UID(ts)
    if not ts or not uid.is_valid or not uid.is_transfer_syntax or not uid.is_compressed:
        return  # native, deflated or unknown: pydicom reads (or refuses) these itself
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedError(
            f"{path}: transfer syntax {ts} ({uid.name}) has no pixel decoder in pydicom or its plugins; "
            "re-export the series uncompressed (or as JPEG 2000 / JPEG-LS)."
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise MissingDependencyError(
            f"{path}: no installed decoder for transfer syntax {ts} ({uid.name}); install one with: "
            f"{codec_hint(ts)}" + (f" (pydicom's plugins say: {missing})" if missing else "")
        )


def read_native(
    path: str,
    *,
    rows: int,
    columns: int,
    bits_allocated: int,
    bits_stored: int,
    signed: bool,
    location: tuple[int, int] | None = None,
    frames: bool = False,
    into: np.ndarray | None = None,
) -> np.ndarray | None:
    """Stored values of a single-frame, single-sample, uncompressed little-endian image, or None.

    The pixel bytes are read straight into a numpy array (no pydicom dataset is built): for a
    512x512 CT slice this is several times faster than ``dcmread(...).pixel_array`` (measured
    in bench/read.py). Unused high bits are cleared, or sign-extended for signed data, as
    pydicom does. Anything else (compressed, big endian, multi-frame, odd sizes) returns None
    and the caller uses :func:`decode`.

    ``location`` is PixelData's ``(value offset, length)`` as scan's header walk found it
    (``FileHeader.pixel_offset``, ``pixel_bytes``) in a file unchanged since: the header is
    then not walked a second time to find it (a tenth of a 512x512 CT slice's read).

    ``frames=True`` reads a multi-frame object's every frame, ``(frames, rows, columns)``: as
    many whole frames as PixelData holds (pydicom's ``pixel_array`` of the same file, without
    parsing its header again: for an enhanced MR file, its thousands of per-frame elements).

    ``into``, a uint8 buffer of at least the image's bytes (one frame), is read into and
    returned viewed as the image: a reader that looks each slice up at once reuses one buffer
    (fresh pages for every slice cost more than reading it, ``medload/io/stored.py``).

    Examples
    --------
    >>> import os, pydicom
    >>> p = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    >>> a = read_native(p, rows=128, columns=128, bits_allocated=16, bits_stored=16, signed=True)
    >>> bool((a == pydicom.dcmread(p).pixel_array).all())
    True
    """
    from medload.io.fastheader import locate_pixel_data

    if bits_allocated not in (8, 16, 32):
        return None
    itemsize = bits_allocated // 8
    count = rows * columns
    dtype = np.dtype(("<i" if signed else "<u") + str(itemsize))
    try:
        with open(path, "rb") as fh:
            if location is None:
                where = locate_pixel_data(fh)
                if where is None:
                    return None
                location = where[:2]
            offset, length = location
            if frames and length >= count * itemsize:
                count *= length // (count * itemsize)
            if length not in (count * itemsize, count * itemsize + 1):  # +1: padding to even length
                return None  # more (or less) data than one image: let pydicom decide
            fh.seek(offset)
            if into is not None and not frames and into.nbytes >= count * itemsize:
                array = into[: count * itemsize].view(dtype)
                if fh.readinto(array.data) != count * itemsize:
                    return None
            else:
                array = np.fromfile(fh, dtype=dtype, count=count)
    except OSError:
        return None  # unreadable (gone, no permission): the pydicom path says so, naming the file
    if array.size != count:
        return None
    return stored_bits(array.reshape((-1, rows, columns) if frames else (rows, columns)), bits_stored, signed)


def stored_bits(array: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """The values of ``array``'s low ``bits_stored`` bits: higher bits cleared, or the sign bit
    (bit ``bits_stored - 1``) extended for signed data.

    One rule for every transfer syntax: pydicom's ``correct_unused_bits``, which it applies to
    native, deflated, RLE and JPEG data (a sample's value is its BitsStored bits, PS3.5 8.1.1;
    the bits above may hold overlays). pydicom leaves JPEG 2000 and JPEG-LS samples as their
    codestream's precision gives them, so a value above ``2**BitsStored - 1`` under a smaller
    BitsStored was kept there and masked for the other codecs; :func:`decode` applies this to
    every codec's output.

    Examples
    --------
    >>> stored_bits(np.array([5000, 4095], np.uint16), 12, False).tolist()
    [904, 4095]
    >>> stored_bits(np.array([0x0FFF, 0x0800], np.int16), 12, True).tolist()
    [-1, -2048]
    """
    shift = array.dtype.itemsize * 8 - bits_stored
    if array.dtype.kind not in "iu" or not 0 < bits_stored or shift <= 0:
        return array
    out = array if array.flags.writeable else array.copy()  # in place: no copy of a slice on the hot path
    if signed and array.dtype.kind == "i":
        np.left_shift(out, shift, out=out)
        np.right_shift(out, shift, out=out)
    else:
        np.bitwise_and(out, out.dtype.type((1 << bits_stored) - 1), out=out)
    return out


def add_intercept(image: np.ndarray, intercept: float, out: np.ndarray) -> None:
    """``out[...] = image + intercept`` for integer pixels, ``intercept`` an integer.

    Pixels as wide as ``out`` (uint16 codes into int16 HU), in native byte order, are added in
    ``out``'s own type: one pass, no int32 temporary and no cast, twice as fast as through int32
    (0.28 against 0.60 ns a voxel, 512x512 slices). Both ways wrap alike (modulo 2**bits), so
    every value is the same, in range or not (``tests/test_io_rescale.py``).

    Examples
    --------
    >>> out = np.empty(3, np.int16)
    >>> add_intercept(np.array([0, 1024, 4095], np.uint16), -1024.0, out)
    >>> out.tolist()
    [-1024, 0, 3071]
    """
    info = np.iinfo(out.dtype)
    same_width = image.dtype.itemsize == out.dtype.itemsize <= 2 and image.dtype.isnative  # a view: not big-endian
    if same_width and float(intercept).is_integer() and info.min <= intercept <= info.max:
        np.add(image.view(out.dtype), out.dtype.type(intercept), out=out)
    else:
        np.add(image, np.int32(intercept), out=out, casting="unsafe")
