"""TIFF files: tifffile's header and decode, and the Orientation tag (274) applied as viewers apply it.

tifffile decodes the stored order of rows and columns; the Orientation tag (the tag EXIF took
from TIFF) says how they are meant to be seen. :func:`decode_tiff` applies it to every page
(:func:`medload.io.png16.apply_exif_orientation`, Pillow's ``exif_transpose`` operation), and
the pixel size trades axes on a quarter turn (:func:`tiff_spacing`). Pillow (>= 8) applies the
tag itself while it loads the compressions medload hands it (LZW, JPEG, PackBits without
``imagecodecs``); :func:`pil_tiff_oriented` checks that and applies it where an older Pillow
did not. :mod:`medload.io.images` uses these for ``.tif``/``.tiff`` files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medload.errors import ReadError, UnsupportedError
from medload.io.png16 import apply_exif_orientation
from medload.io.tiffpages import first_page_unlike_the_first
from medload.problems import Problem, ProblemKind

#: Pages (IFDs) a TIFF file may hold unless they are one stack (:func:`_one_stack`): 2,048
#: pages sort into series in about a second even when each is a series of its own (tifffile 2026.3).
MAX_TIFF_PAGES = 2048

__all__ = [
    "MAX_TIFF_PAGES",
    "decode_tiff",
    "orientation_value",
    "oriented_stack",
    "pil_tiff_oriented",
    "tiff_header",
    "tiff_shape",
    "tiff_spacing",
]


def orientation_value(value: Any) -> int:
    """An Orientation tag's value as 1-8 (1, the stored order, for a missing or out-of-range value).

    Examples
    --------
    >>> orientation_value(6), orientation_value(None), orientation_value(9)
    (6, 1, 1)
    """
    try:
        orientation = int(value)
    except (TypeError, ValueError):
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def oriented_stack(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Every slice of a ``(Z, H, W[, 3])`` stack as its Orientation tag says it is meant to be seen.

    Examples
    --------
    >>> oriented_stack(np.arange(6).reshape(1, 2, 3), 6).tolist()  # 90 degrees clockwise
    [[[3, 0], [4, 1], [5, 2]]]
    """
    if orientation == 1:
        return arr
    return np.ascontiguousarray(np.stack([apply_exif_orientation(page, orientation) for page in arr]))


def _one_stack(tif: Any) -> bool:
    """Whether a TIFF of many pages is one stack, told from four pages: tifffile's sample of pages
    1, 7 and the last against the first (``is_uniform``), and page 1 not the start of a series of
    its own (tifffile's "shaped" description, which every page of a series-per-page file has)."""
    try:
        return bool(tif.is_uniform) and not tif.pages[1].aspage().is_shaped
    except Exception:  # noqa: BLE001 - a page that cannot be parsed: not a stack to trust
        return False


def _shown(value: tuple[int, ...]) -> str:
    return "absent" if not value else str(value[0]) if len(value) == 1 else str(list(value))


def tiff_header(path: Path) -> dict[str, Any] | None:
    """Shape, dtype and axes of the TIFF's one image series; ``None`` when tifffile cannot read it."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            # Counting the IFDs is a cheap walk of their chain; tifffile's grouping of pages into
            # series is not: its pyramid search compares every series with every other (5,000
            # one-page series in a 1.3 MB file cost 20 s CPU, 20,000 would cost minutes).
            if len(tif.pages) > MAX_TIFF_PAGES and not _one_stack(tif):
                raise UnsupportedError(
                    f"{path}: TIFF holds {len(tif.pages)} pages (IFDs) that are not one stack of pages of one size; "
                    f"medload sorts at most {MAX_TIFF_PAGES:,} such pages per file (the time to sort pages into "
                    "series grows with the square of their number). Split the file, or save the stack as one NIfTI volume."
                )
            # tifffile decodes pages it finds alike from a sample of four with the first page's
            # layout (and the Orientation is the first page's): every page's IFD is checked.
            unlike = first_page_unlike_the_first(path, len(tif.pages)) if len(tif.pages) > 1 else None
            if unlike is not None:
                index, tag, first, other = unlike
                raise UnsupportedError(
                    f"{path}: TIFF page {index} (of {len(tif.pages)}) has {tag} {_shown(other)}, page 0 has {_shown(first)}; "
                    "medload reads the pages of a file as one stack of one size, type, sample count and orientation, "
                    "and this page would be decoded with page 0's. Save such pages in separate files."
                )
            if len(tif.series) != 1:
                raise UnsupportedError(
                    f"{path}: TIFF holds {len(tif.series)} image series of different shapes or types; "
                    "medload reads one series (pages of one size) per file. Split it into one file per series."
                )
            series = tif.series[0]
            page = tif.pages[0]
            resolution = None
            try:
                tags = getattr(page, "tags", {})
                unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
                if "XResolution" in tags and "YResolution" in tags and unit in (2, 3):
                    xr, yr = tags["XResolution"].value, tags["YResolution"].value
                    resolution = (xr[0] / xr[1], yr[0] / yr[1], "inch" if unit == 2 else "cm")
            except Exception:  # noqa: BLE001 - a pixel size is optional
                resolution = None
            # Orientation (274), the tag EXIF took from TIFF: how the stored rows and columns are
            # meant to be seen. tifffile decodes the stored order; decode_tiff applies it. The
            # first page's counts for the series (tifffile parses the other pages' IFDs lazily).
            orientation = getattr(page, "tags", {}).get("Orientation")
            return {
                "shape": tuple(int(v) for v in series.shape),
                "axes": series.axes,
                "dtype": np.dtype(series.dtype),
                "compression": int(page.compression),
                "resolution": resolution,
                "orientation": orientation_value(orientation.value if orientation is not None else None),
            }
    except UnsupportedError:
        raise
    except Exception:  # noqa: BLE001 - tifffile could not parse it; Pillow gets its turn and names the problem
        return None


def decode_tiff(path: Path, header: dict[str, Any], problems: list[Problem]) -> np.ndarray:
    """tifffile's decode as ``(Z, H, W)`` or ``(Z, H, W, 3)``, oriented as the Orientation tag says (the caller checks the pixel count first)."""
    import tifffile

    axes, shape = header["axes"], header["shape"]
    try:
        arr = tifffile.imread(path, series=0)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds; each becomes a named ReadError
        raise ReadError(
            f"{path}: TIFF pixels cannot be decoded ({type(exc).__name__}: {exc}); the file is probably truncated "
            "or damaged. Re-export or re-copy it."
        ) from None
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    spatial = axes.replace("S", "")
    if not spatial.endswith("YX") or len(spatial) > 3:
        raise UnsupportedError(
            f"{path}: TIFF axes {header['axes']!r} (shape {shape}); medload reads YX images, one page or "
            "a stack of pages (one more axis). Save one file per image or stack."
        )
    if len(spatial) == 2:
        arr = arr[None]
    if "S" in axes:
        s = arr.shape[-1]
        if s == 1:
            arr = arr[..., 0]
        elif s == 2:
            problems.append(Problem(ProblemKind.ALPHA_DROPPED, "alpha channel dropped (grey + alpha image)."))
            arr = arr[..., 0]
        elif s >= 3:
            if s > 3:
                problems.append(Problem(ProblemKind.ALPHA_DROPPED, f"{s - 3} extra sample(s) (alpha) dropped."))
            arr = arr[..., :3]
    if arr.dtype == bool:
        problems.append(Problem(ProblemKind.ONE_BIT_EXPANDED, "1-bit image read as 8-bit (0 and 255)."))
        arr = arr.astype(np.uint8) * np.uint8(255)
    orientation = header.get("orientation", 1)
    if orientation != 1:  # tifffile returns the stored order; viewers show the tag's
        arr = oriented_stack(arr, orientation)
        problems.append(
            Problem(
                ProblemKind.EXIF_ORIENTATION_APPLIED,
                f"TIFF Orientation {orientation} applied (rows and columns as meant to be seen).",
            )
        )
    return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("="), copy=False))


def tiff_spacing(header: dict[str, Any]) -> tuple[float, float] | None:
    """(row, column) pixel size in mm from a TIFF's resolution tags, as the image is meant to be seen."""
    res = header["resolution"]
    if res is None or not (res[0] > 0 and res[1] > 0):
        return None
    per = 25.4 if res[2] == "inch" else 10.0
    spacing = (per / res[1], per / res[0])
    if header.get("orientation", 1) in (5, 6, 7, 8):
        spacing = (spacing[1], spacing[0])  # a quarter turn: rows and columns trade pixel sizes too
    return spacing


def pil_tiff_oriented(path: Path, image: Any, frame: np.ndarray, orientation: int) -> np.ndarray:
    """A TIFF page Pillow decoded, as its Orientation tag says it is meant to be seen; refused
    when Pillow's result has not the shape the tag gives (Pillow 13 mis-decodes an uncompressed
    page with a quarter turn; tifffile, which medload uses for those, is not affected)."""
    if 0x0112 in image.tag_v2:  # this Pillow did not apply it while loading
        frame = apply_exif_orientation(frame, orientation)
    rows, columns = image.tag_v2.get(257), image.tag_v2.get(256)  # ImageLength, ImageWidth
    expected = (columns, rows) if orientation in (5, 6, 7, 8) else (rows, columns)
    if tuple(frame.shape[:2]) != expected:
        raise UnsupportedError(
            f"{path}: TIFF with Orientation {orientation} decoded by Pillow to {frame.shape[:2]} pixels, "
            f"expected {expected} after the orientation; the pixels may be scrambled. Save it uncompressed "
            "or deflate-compressed (tifffile reads those) or without the Orientation tag, and convert again."
        )
    return frame


def tiff_shape(path: Path, header: dict[str, Any]) -> tuple[tuple[int, int, int], int]:
    """``((Z, H, W), samples)`` of a TIFF as :func:`decode_tiff` will give it (turned by its Orientation tag).

    Raises
    ------
    UnsupportedError
        Axes other than one page or a stack of pages.
    """
    axes, shape = header["axes"], header["shape"]
    channels = shape[axes.index("S")] if "S" in axes else 1
    spatial = tuple(v for a, v in zip(axes, shape) if a != "S")
    if len(spatial) == 2:
        spatial = (1, *spatial)
    if len(spatial) != 3:
        raise UnsupportedError(f"{path}: TIFF axes {axes!r} (shape {shape}); medload reads one page or a stack of pages.")
    if header["orientation"] in (5, 6, 7, 8):
        spatial = (spatial[0], spatial[2], spatial[1])  # a quarter turn at load: rows and columns trade
    return (int(spatial[0]), int(spatial[1]), int(spatial[2])), int(channels)
