"""2D image files (PNG, JPEG, TIFF, BMP) as sources: :func:`scan_image` and :func:`load_image`.

Decoding is Pillow's (PNG, JPEG, BMP, and TIFF files tifffile cannot decode without
``imagecodecs``), tifffile's (TIFF: 8/16-bit, float, multi-page) and SimpleITK's (16-bit colour
PNG, which Pillow cuts to 8 bits: :mod:`medload.io.png16`); medload has no decoder of its own.

What a plain image becomes
--------------------------
- A :class:`~medload.volume.Volume` of one slice ``(1, H, W)``; a multi-page TIFF gives one
  slice per page ``(Z, H, W)``. Colour images are ``(3, Z, H, W)`` with
  ``meta["channels"] = ["R", "G", "B"]``, the layout of colour DICOM.
- Modes: greyscale (1, 8, 16-bit, float) is kept with its dtype; RGB kept (16-bit too); RGBA and LA lose
  their alpha channel and a palette image is expanded to RGB (or to grey when its palette is
  grey), each recorded in ``meta["problems"]``; CMYK and YCbCr are converted to RGB.
- EXIF orientation (phones, dermoscopes, endoscopes) is applied with
  ``PIL.ImageOps.exif_transpose``, so rows and columns are as the image is meant to be seen; a
  TIFF's Orientation tag (274, the first page's) alike, on every page (tifffile decodes the
  stored order; Pillow applies the tag itself while loading). A quarter turn swaps the pixel
  size with the axes; either is recorded in ``meta["problems"]``.
- ``meta["stored_range"]`` is the range of the stored type (``[0, 255]``, ``[0, 65535]``),
  which the ``image`` preset (``ScaleStoredRange``) maps to ``[0, 1]``; float images keep
  their values.
- Geometry: a pixel size the file states in physical units (PNG ``pHYs`` in metres, TIFF or
  JPEG resolution in inches or centimetres) gives the spacing; otherwise 1 mm, recorded in
  ``meta["problems"]``. The affine is the one DICOM images without an orientation get
  (:func:`medload.geometry.default_plane_affine`: DICOM's default axial plane, the grid centred
  on the origin as nibabel places dcm2niix's NIfTI of such an image), so a PNG and a DICOM of
  one radiograph store the same slice the same way up, at the same place.
- Modality: the caller's ``modality=``, else ``"OT"`` (DICOM's "other").

Keys
----
``series_key`` / ``source_key`` is a pseudonym of the scanned root's name and the path below
it (:mod:`medload.io.sources`: ``0001.png`` of two folders is two images).
``patient_key``: with ``patient_pattern`` a pseudonym of the root's name and what the regular
expression finds in the relative path (its ``patient`` group, else its first group, else the
whole match), so patient ``00012`` of two sources is two people;
without one, each image is a patient of its own, so patient-level splits are image-level
splits (two images of one patient can then land in train and test: give a pattern when the
file names hold a patient id).

Bad files
---------
An empty file, no image (a text file named ``.png``), a truncated image, a PNG chunk longer than
the file (:mod:`medload.io.pngchunks`), an image over Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``: a
ReadError naming the file (scan records it, goes on). 16-bit grey + alpha PNG: UnsupportedError.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medload.deid import keyed_source_hash, text_bytes
from medload.errors import ReadError, UnsupportedError
from medload.geometry import default_plane_affine
from medload.io.pngchunks import check_png_chunks
from medload.io.png16 import apply_exif_orientation, is_png16_colour, png_bit_depth, read_png16_colour, refuse_png16_grey_alpha
from medload.io.series import Series
from medload.io.sources import image_keys, patient_from_path, relative_path
from medload.io.sources import source_name as _source_name
from medload.limits import check_volume_size
from medload.io.tiff import decode_tiff, orientation_value, pil_tiff_oriented, tiff_header, tiff_shape, tiff_spacing
from medload.problems import Problem, ProblemKind
from medload.volume import Volume

__all__ = ["IMAGE_SUFFIXES", "image_format", "is_image", "load_image", "patient_from_path", "scan_image"]

#: File name endings read as 2D images (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)
_SUFFIX_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


def image_format(path: str | os.PathLike[str]) -> str | None:
    """The image format found in the first bytes of ``path`` (``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``), or ``None``.

    BMP's two-byte magic ``BM`` is too weak to trust alone: it counts only for a ``.bmp`` name.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.bin")
    >>> _ = open(path, "wb").write(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(20))
    >>> image_format(path)
    'PNG'
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head.startswith(b"BM") and os.fspath(path).lower().endswith(".bmp"):
        return "BMP"
    return None


def is_image(path: str | os.PathLike[str], *, check_magic: bool = True) -> bool:
    """Whether ``path`` is a 2D image file medload reads: by name, or (``check_magic``) by its first bytes.

    A file with an image suffix counts even when broken, so that reading it gives an error
    that names it instead of a silent skip.

    Examples
    --------
    >>> is_image("chest/0001.PNG", check_magic=False), is_image("0001.dcm", check_magic=False)
    (True, False)
    """
    if os.fspath(path).lower().endswith(IMAGE_SUFFIXES):
        return True
    return check_magic and os.path.isfile(path) and image_format(path) is not None


# --- opening and checking -----------------------------------------------------------------
def _limit() -> int | None:
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def _check_pixels(path: Path, n_pixels: int) -> None:
    limit = _limit()
    if limit is not None and n_pixels > limit:
        raise ReadError(
            f"{path}: {n_pixels:,} pixels is over the decompression-bomb limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS); the file may be crafted to exhaust memory. If the image is "
            "genuine, raise PIL.Image.MAX_IMAGE_PIXELS before converting."
        )


def _open_pil(path: Path) -> Any:  # a PIL.Image.Image
    """``PIL.Image.open`` with a decompression-bomb *warning* made an error, and errors naming the file."""
    from PIL import Image, UnidentifiedImageError

    size = path.stat().st_size
    if size == 0:
        raise ReadError(f"{path}: empty file (0 bytes); expected a PNG, JPEG, TIFF or BMP image. Re-copy or remove it.")
    check_png_chunks(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReadError(
            f"{path}: over the decompression-bomb limit of {_limit():,} pixels (PIL.Image.MAX_IMAGE_PIXELS; "
            f"{exc}); the file may be crafted to exhaust memory. If it is genuine, raise that limit."
        ) from None
    except UnidentifiedImageError:
        with open(path, "rb") as fh:
            head = fh.read(8)
        fmt = image_format(path)
        if fmt is not None:
            raise ReadError(
                f"{path}: starts like a {fmt} file but its header cannot be read ({size} bytes); the file is "
                "truncated or damaged. Re-export or re-copy it."
            ) from None
        raise ReadError(
            f"{path}: not an image Pillow can read (first bytes {head!r}); expected PNG, JPEG, TIFF or BMP. "
            "The file may be another format under an image name, or damaged: re-export or remove it."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ReadError(
            f"{path}: image header cannot be read ({type(exc).__name__}: {exc}); the file is damaged. Re-export it."
        ) from None
    frames = max(int(getattr(image, "n_frames", 1)), 1)
    _check_pixels(path, image.width * image.height * frames)
    # The per-volume limit too, in the bytes the decoded pixels take (a 16-bit RGBA PNG of 89
    # million pixels, under Pillow's limit, is 715 MB): refused before decoding.
    depth = png_bit_depth(path) if image.format == "PNG" else None
    itemsize = 2 if depth is not None and depth[0] == 16 else _MODE_ITEMSIZE.get(image.mode, 1)
    check_volume_size(str(path), (frames, image.height, image.width, len(image.getbands())), itemsize)
    return image


#: Bytes per band of Pillow's modes that are not 8 bits per band.
_MODE_ITEMSIZE = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


# --- colour -----------------------------------------------------------------------------------
def _to_array(image: Any, path: Path, problems: list[Problem]) -> np.ndarray:
    """A decoded Pillow image as ``(H, W)`` or ``(H, W, 3)``, alpha dropped and palettes expanded, recorded."""
    mode = image.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in image.info
        rgb = image.convert("RGBA" if has_alpha else "RGB")
        arr = np.asarray(rgb)[..., :3]
        grey = _grey_palette(image)  # the palette, not the pixels, decides: as scan_image does
        expanded = f"palette image expanded to {'grey' if grey else 'RGB'}" + (", transparency dropped" if has_alpha else "")
        problems.append(Problem(ProblemKind.PALETTE_EXPANDED, expanded + "."))
        return np.ascontiguousarray(arr[..., 0]) if grey else np.ascontiguousarray(arr)
    if mode == "1":
        problems.append(Problem(ProblemKind.ONE_BIT_EXPANDED, "1-bit image read as 8-bit (0 and 255)."))
        return np.asarray(image.convert("L"))
    if mode in ("LA", "La"):
        problems.append(Problem(ProblemKind.ALPHA_DROPPED, "alpha channel dropped (grey + alpha image)."))
        return np.asarray(image.convert("L")) if mode == "La" else np.ascontiguousarray(np.asarray(image)[..., 0])
    if mode in ("RGBA", "RGBa", "RGBX"):
        if mode != "RGBX":
            problems.append(Problem(ProblemKind.ALPHA_DROPPED, "alpha channel dropped (RGBA image)."))
        return np.ascontiguousarray(np.asarray(image)[..., :3])
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        problems.append(Problem(ProblemKind.COLOUR_CONVERTED, f"{mode} image converted to RGB by Pillow."))
        return np.asarray(image.convert("RGB"))
    if mode in ("L", "RGB", "F", "I") or mode.startswith("I;16"):
        arr = np.asarray(image)
        if mode == "I":
            # Pillow opens some 16-bit greyscale files as 32-bit "I"; keep the narrowest type holding them.
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
            arr = arr.astype(np.uint16) if 0 <= lo and hi <= 65535 else arr
        return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("=")))
    raise UnsupportedError(f"{path}: Pillow image mode {mode!r} is not one medload reads (greyscale, RGB, RGBA, palette).")


def _decode_pil(path: Path, problems: list[Problem]) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Decode every frame with Pillow: ``(Z, H, W)`` or ``(Z, H, W, 3)``, and the pixel size in mm if stated."""
    from PIL import ImageOps

    image = _open_pil(path)
    try:
        spacing = _pil_spacing(image)
        frames = []
        n = int(getattr(image, "n_frames", 1))
        fmt = image.format
        depth = png_bit_depth(path) if fmt == "PNG" else None
        refuse_png16_grey_alpha(path, depth)
        for k in range(n if fmt == "TIFF" else 1):
            image.seek(k)
            # Orientation first: EXIF says how the stored rows and columns are meant to be seen.
            orientation = image.getexif().get(0x0112) if k == 0 and fmt != "TIFF" else None
            oriented = image
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                applied = f"EXIF orientation {orientation} applied (rows and columns as meant to be seen)."
                problems.append(Problem(ProblemKind.EXIF_ORIENTATION_APPLIED, applied))
            if orientation in (5, 6, 7, 8) and spacing is not None:
                spacing = (spacing[1], spacing[0])  # a quarter turn: rows and columns trade pixel sizes too
            if is_png16_colour(depth):  # Pillow would cut it to 8 bits per channel
                return apply_exif_orientation(read_png16_colour(path, problems), orientation)[None], spacing
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                oriented = ImageOps.exif_transpose(image)
            # A TIFF's Orientation tag, read before the load: Pillow (>= 8) applies it while
            # loading and then deletes the tag; an older one leaves both to us.
            stated = orientation_value(image.tag_v2.get(0x0112)) if fmt == "TIFF" else 1
            oriented.load()
            frame = _to_array(oriented, path, problems if k == 0 else [])
            if stated != 1:
                frame = pil_tiff_oriented(path, image, frame, stated)
                if k == 0:
                    applied = f"TIFF Orientation {stated} applied (rows and columns as meant to be seen)."
                    problems.append(Problem(ProblemKind.EXIF_ORIENTATION_APPLIED, applied))
            frames.append(frame)
    except (ReadError, UnsupportedError):
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ReadError(
            f"{path}: pixels cannot be decoded ({type(exc).__name__}: {exc}); the file is probably truncated "
            "or damaged. Re-export or re-copy it."
        ) from None
    finally:
        image.close()
    if len({(f.shape, f.dtype) for f in frames}) > 1:
        raise UnsupportedError(
            f"{path}: pages of different sizes or types; medload reads pages of one size as slices. Split the file."
        )
    return np.stack(frames), spacing


def _pil_spacing(image: Any) -> tuple[float, float] | None:
    """(row, column) pixel size in mm when the file states one in physical units."""
    fmt = image.format
    try:
        if fmt == "PNG" and "dpi" in image.info:
            # Pillow converts pHYs in metres to dpi; pHYs without a unit gives no "dpi".
            dx, dy = (float(v) for v in image.info["dpi"])
            return (25.4 / dy, 25.4 / dx) if dx > 0 and dy > 0 else None
        if fmt == "JPEG" and image.info.get("jfif_unit") in (1, 2):
            dx, dy = (float(v) for v in image.info["jfif_density"])
            per = 25.4 if image.info["jfif_unit"] == 1 else 10.0
            return (per / dy, per / dx) if dx > 0 and dy > 0 else None
    except (TypeError, ValueError, KeyError):
        return None
    return None


def _decode(path: Path) -> tuple[np.ndarray, tuple[float, float] | None, list[Problem], str]:
    """Decode ``path``: ``(Z, H, W[, 3])`` array, pixel size (mm) if stated, problems, format."""
    problems: list[Problem] = []
    fmt = image_format(path)
    if fmt == "TIFF":
        header = tiff_header(path)
        if header is not None:
            axes, shape = header["axes"], header["shape"]
            _check_pixels(path, int(np.prod(shape)) // (shape[axes.index("S")] if "S" in axes else 1))
            check_volume_size(str(path), shape, header["dtype"].itemsize)
            try:
                arr = decode_tiff(path, header, problems)
            except ReadError:
                if header["compression"] in (1, 8, 32946):  # none / deflate: tifffile alone decodes these
                    raise
                # Compressions tifffile needs imagecodecs for (LZW, JPEG, PackBits...): Pillow decodes them.
                arr = None
            if arr is not None:
                return arr, tiff_spacing(header), problems, fmt
            arr, spacing = _decode_pil(path, problems)  # Pillow orients the pages as tifffile's path does
            return arr, spacing or tiff_spacing(header), problems, fmt
    arr, spacing = _decode_pil(path, problems)
    return arr, spacing, problems, fmt or "image"


def _stored_range(dtype: np.dtype) -> list[float] | None:
    if dtype == np.uint8:
        return [0.0, 255.0]
    if dtype == np.uint16:
        return [0.0, 65535.0]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return [float(info.min), float(info.max)]
    return None


def _file_hash(path: Path, relative: str) -> str:
    """``sha256:`` + a digest of the file and its path below the source (what an earlier medload
    stored as it is; now keyed by :func:`medload.deid.keyed_source_hash`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    digest.update(text_bytes(relative))
    return "sha256:" + digest.hexdigest()[:16]


# --- scan and load -------------------------------------------------------------------------
def scan_image(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    phi_key: Any = None,
    patient_pattern: str | re.Pattern[str] | None = None,
    source_name: str | None = None,
) -> Series:
    """Describe one image file as a :class:`Series` (header only, pixels not decoded).

    Parameters
    ----------
    path : str or path-like
        A PNG, JPEG, TIFF or BMP file.
    root : str or path-like, optional
        The folder being scanned (the source): keys are pseudonyms of its name and the path
        below it (:mod:`medload.io.sources`: ``0001.png`` of two folders is two images of two
        patients), and the first folder below it is the image's class folder
        (``info["class_folder"]``, ImageFolder's layout).
    phi_key : str, bytes or medload.deid.PhiKey, optional
        Secret of the pseudonyms (default: :func:`medload.deid.resolve_key`'s).
    patient_pattern : str or compiled regular expression, optional
        Searched in the relative path; what it finds is the patient of this source (see the module doc).
    source_name : str, optional
        The source's name in its keys; default the root folder's own name.

    Raises
    ------
    ReadError
        Empty, not an image, unreadable header, over the decompression-bomb limit, or a
        ``patient_pattern`` that finds nothing in its path.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp(); os.mkdir(os.path.join(root, "normal"))
    >>> Image.fromarray(np.zeros((4, 6), np.uint8)).save(os.path.join(root, "normal", "07_a.png"))
    >>> s = scan_image(os.path.join(root, "normal", "07_a.png"), root=root, patient_pattern=r"(\\d+)_")
    >>> s.kind, s.shape, s.modality, s.info["class_folder"]
    ('image', (1, 4, 6), 'OT', 'normal')
    """
    file = Path(path).resolve()
    relative = relative_path(file, root)
    fmt = image_format(file)
    header = tiff_header(file) if fmt == "TIFF" else None
    if header is not None:
        spatial, channels = tiff_shape(file, header)
        _check_pixels(file, int(np.prod(spatial)))
        colour = channels >= 3
        mode = f"TIFF {header['dtype']}{' colour' if colour else ''}"
    else:
        image = _open_pil(file)
        try:
            refuse_png16_grey_alpha(file, png_bit_depth(file) if image.format == "PNG" else None)
            n = int(getattr(image, "n_frames", 1)) if image.format == "TIFF" else 1
            w, h = image.size
            if image.format == "TIFF":  # stored size turned by the Orientation tag, as load applies it
                w, h = image.tag_v2.get(256, w), image.tag_v2.get(257, h)
                if orientation_value(image.tag_v2.get(0x0112)) in (5, 6, 7, 8):
                    w, h = h, w
            if image.format == "JPEG" or (image.format != "TIFF" and "exif" in image.info):
                # Only where the EXIF block precedes the pixels: asking a PNG whose eXIf chunk
                # follows them would decode the whole image during a header scan.
                orientation = image.getexif().get(0x0112)
                if orientation in (5, 6, 7, 8):  # transposed by exif_transpose at load
                    w, h = h, w
            spatial = (n, h, w)
            mode = image.mode
            colour = mode in ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV") or (
                mode in ("P", "PA") and not _grey_palette(image)
            )
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ReadError(
                f"{file}: image header cannot be read ({type(exc).__name__}: {exc}); the file is damaged. Re-export it."
            ) from None
        finally:
            image.close()
    shape: tuple[int, ...] = (3, *spatial) if colour else spatial
    keys, problems = image_keys(file, relative, root, source=source_name, patient_pattern=patient_pattern, secret=phi_key)
    parts = relative.split("/")
    class_folder = parts[0] if root is not None and len(parts) > 1 else None
    return Series(
        kind="image",
        files=(str(file),),
        series_key=keys["series_key"],
        study_key=keys["study_key"],
        patient_key=keys["patient_key"],
        modality="OT",
        # No description: a file name is the one place a failing image is named in reports, and
        # descriptions are hidden there (the path below the source is shown, as for DICOM files).
        description="",
        shape=shape,
        spacing=None,
        problems=tuple(problems),
        source_hash=keyed_source_hash(_file_hash(file, relative), phi_key),
        info={"format": fmt or "image", "mode": mode, "class_folder": class_folder, **_source_info(root, source_name, relative)},
    )


def _source_info(root: Any, source: str | None, relative: str) -> dict[str, str | None]:
    """Which source and where in it (label CSVs name images so: ``medload.batch.plan``)."""
    if root is None:
        return {"source_name": None, "relative": None}
    return {"source_name": source or _source_name(root), "relative": relative}


def _grey_palette(image: Any) -> bool:
    palette = image.getpalette() or []
    rgb = np.asarray(palette[: 3 * 256], np.int64).reshape(-1, 3)
    return bool(rgb.size) and bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 0] == rgb[:, 2]).all())


def load_image(series_or_path: Series | str | os.PathLike[str], *, modality: str | None = None) -> Volume:
    """Decode one image file into a :class:`~medload.volume.Volume`.

    Parameters
    ----------
    series_or_path : Series or path
        A ``kind="image"`` Series from :func:`medload.scan`, or an image file.
    modality : str, optional
        The modality to record (``"CR"``, ``"DX"``, ``"US"``...); default ``"OT"``.

    Returns
    -------
    Volume
        ``(Z, H, W)`` in the stored dtype, or ``(3, Z, H, W)`` with ``meta["channels"]`` for colour.

    Raises
    ------
    ReadError, UnsupportedError
        Each names the file: empty, not an image, truncated, over the decompression-bomb limit.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "rgb.png")
    >>> Image.fromarray(np.full((4, 6, 3), 7, np.uint8)).save(path)
    >>> vol = load_image(path)
    >>> vol.shape, vol.meta["channels"], vol.meta["stored_range"], vol.spacing
    ((3, 1, 4, 6), ['R', 'G', 'B'], [0.0, 255.0], (1.0, 1.0, 1.0))
    """
    if isinstance(series_or_path, Series):
        series = series_or_path
    else:
        file = Path(series_or_path)
        if not file.is_file():
            raise ReadError(f"{file}: no such image file; expected a PNG, JPEG, TIFF or BMP file.")
        series = scan_image(file, root=file.resolve().parent)
    file = Path(series.files[0])
    arr, pixel_mm, problems, fmt = _decode(file)
    if pixel_mm is None:
        pixel_mm = (1.0, 1.0)
        problems.append(Problem(ProblemKind.PIXEL_SPACING_ASSUMED, "pixel size not stated in physical units: 1 mm assumed."))
    affine = default_plane_affine(arr.shape[:3], pixel_mm)  # as a DICOM image without geometry (centred)
    meta: dict[str, Any] = {
        **series.volume_meta(),
        "format": fmt,
        "stored_range": _stored_range(arr.dtype),
        "intensity": f"stored {arr.dtype} values"
        + ("" if np.issubdtype(arr.dtype, np.floating) else f" (range {_stored_range(arr.dtype)})"),
        "problems": list(series.problems) + problems,
    }
    if series.info.get("class_folder"):
        meta["class_folder"] = series.info["class_folder"]
    if arr.ndim == 4:
        arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))  # (Z, H, W, 3) -> (3, Z, H, W)
        meta["channels"] = ["R", "G", "B"]
    expected = tuple(series.shape)
    if expected and tuple(arr.shape) != expected:
        raise ReadError(
            f"{file}: decoded shape {arr.shape} differs from the {expected} its header gave when scanned; the file changed or is damaged. Scan again."
        )
    return Volume(arr, affine, modality=modality or series.modality or "OT", meta=meta)
