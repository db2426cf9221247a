"""16-bit PNG that Pillow cannot read at full depth: colour read with SimpleITK, grey + alpha refused.

Pillow decodes a 16-bit RGB or RGBA PNG to 8 bits per channel (mode ``"RGB"``/``"RGBA"``, the
low byte gone) and a 16-bit grey + alpha PNG to 8-bit RGBA, without a word. A silently
different image is worse than none, so :func:`medload.io.images.load_image` reads 16-bit colour
PNG with SimpleITK (ITK's libpng reader, a dependency already) at full depth, and refuses 16-bit
grey + alpha, which neither library reads at full depth. Pillow still opens the file for what
it reads right: the size (checked against the decompression-bomb limit), ``pHYs`` and EXIF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medload.errors import ReadError, UnsupportedError
from medload.problems import Problem, ProblemKind

__all__ = ["apply_exif_orientation", "is_png16_colour", "png_bit_depth", "read_png16_colour", "refuse_png16_grey_alpha"]

# PNG colour types (IHDR byte 25).
_RGB, _GREY_ALPHA, _RGBA = 2, 4, 6


def png_bit_depth(path: str | Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG's IHDR chunk, or ``None`` when the file has none.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "g.png")
    >>> Image.fromarray(np.zeros((2, 3), np.uint16)).save(path)
    >>> png_bit_depth(path)  # 16-bit greyscale: colour type 0
    (16, 0)
    """
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) == 26 and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def is_png16_colour(depth: tuple[int, int] | None) -> bool:
    """Whether an IHDR ``(bit depth, colour type)`` is 16-bit RGB or RGBA, which Pillow cuts to 8 bits.

    Examples
    --------
    >>> is_png16_colour((16, 2)), is_png16_colour((16, 6)), is_png16_colour((8, 2)), is_png16_colour(None)
    (True, True, False, False)
    """
    return depth is not None and depth[0] == 16 and depth[1] in (_RGB, _RGBA)


def refuse_png16_grey_alpha(path: str | Path, depth: tuple[int, int] | None) -> None:
    """Raise :class:`UnsupportedError` for a 16-bit grey + alpha PNG (no reader here keeps its 16 bits).

    Examples
    --------
    >>> refuse_png16_grey_alpha("ok.png", (16, 0))  # 16-bit grey: Pillow reads it whole
    >>> refuse_png16_grey_alpha("xray.png", (16, 4))
    Traceback (most recent call last):
    ...
    medload.errors.UnsupportedError: xray.png: 16-bit grey + alpha PNG; ...
    """
    if depth is not None and depth[0] == 16 and depth[1] == _GREY_ALPHA:
        raise UnsupportedError(
            f"{path}: 16-bit grey + alpha PNG; Pillow would decode it to 8-bit RGBA (the low byte of every "
            "pixel lost) and SimpleITK cannot read it, so medload refuses it rather than store a different "
            "image. Save it without the alpha channel (16-bit greyscale PNG or TIFF) and convert again."
        )


# Pillow's ImageOps.exif_transpose, on a numpy (H, W[, C]) array: orientation -> operation.
_EXIF_OPS = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270 (90 degrees clockwise)
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90 (counter-clockwise)
}


def apply_exif_orientation(array: np.ndarray, orientation: int | None) -> np.ndarray:
    """Rows and columns of ``array`` (``(H, W[, C])``) as EXIF ``orientation`` says they are meant to be seen.

    The same operation as ``PIL.ImageOps.exif_transpose`` for orientations 2-8; others leave the
    array as it is.

    Examples
    --------
    >>> a = np.arange(6).reshape(2, 3)
    >>> apply_exif_orientation(a, 6).tolist()  # 90 degrees clockwise
    [[3, 0], [4, 1], [5, 2]]
    """
    op = _EXIF_OPS.get(orientation) if orientation is not None else None
    return np.ascontiguousarray(op(array)) if op is not None else array


def read_png16_colour(path: str | Path, problems: list[Problem]) -> np.ndarray:
    """A 16-bit RGB or RGBA PNG as a ``(H, W, 3)`` uint16 array, every bit kept, alpha dropped and recorded.

    Raises
    ------
    ReadError
        When SimpleITK cannot decode the pixels (a truncated or damaged file), naming it.

    Examples
    --------
    >>> import tempfile, os, struct, zlib
    >>> def chunk(kind, body):
    ...     return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    >>> rgb = np.array([[[1, 256, 65535]]], ">u2")  # one pixel; its low bytes are what Pillow drops
    >>> path = os.path.join(tempfile.mkdtemp(), "c16.png")
    >>> _ = open(path, "wb").write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 16, 2, 0, 0, 0))
    ...     + chunk(b"IDAT", zlib.compress(b"\\x00" + rgb.tobytes())) + chunk(b"IEND", b""))
    >>> read_png16_colour(path, []).tolist()
    [[[1, 256, 65535]]]
    """
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path), imageIO="PNGImageIO")
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1][:200]
        raise ReadError(
            f"{path}: 16-bit colour PNG pixels cannot be decoded ({reason}); the file is probably truncated "
            "or damaged. Re-export or re-copy it."
        ) from None
    if array.dtype != np.uint16 or array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ReadError(
            f"{path}: 16-bit colour PNG decoded to {array.dtype} of shape {array.shape}; expected uint16 "
            "with 3 or 4 samples per pixel. The file is damaged or unusual: re-export it as 16-bit RGB."
        )
    if array.shape[-1] == 4:
        # ITK expands a tRNS colour key to an alpha channel too: either way the alpha goes.
        problems.append(Problem(ProblemKind.ALPHA_DROPPED, "alpha channel dropped (RGBA image)."))
    return np.ascontiguousarray(array[..., :3])
