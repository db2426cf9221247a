"""Refuse DICOM headers whose numbers cannot describe a real image, naming the file.

``read_header`` calls :func:`check_header` on every image header it builds, so a lie is
caught at scan (the file is listed as unreadable and its series is not loaded as if whole)
rather than turning into a sheared affine, a mirrored volume or voxels off by 1024:

* ImageOrientationPatient: both direction cosines of unit length and orthogonal, within
  :data:`ORIENTATION_TOLERANCE` (scanners round them to 4-6 decimals; a larger error is a
  damaged header, and no renormalization would say which of the numbers is wrong);
* PixelSpacing: both values finite and from :data:`MIN_SPACING_MM` to :data:`MAX_SPACING_MM`;
* RescaleSlope finite and not 0, RescaleIntercept finite, and no rescaled value beyond
  :data:`MAX_RESCALED` (float32 would overflow);
* Rows, Columns, BitsAllocated, BitsStored, SamplesPerPixel in their valid ranges;
* the pixel data a header claims (Rows x Columns x frames x samples x bits) against the
  bytes the file holds: fewer is a truncated file, more is a header that does not match its
  pixels (uncompressed data), and a compressed file cannot hold fewer than 8 bytes a frame.
  This runs before any loop over frames, so ``NumberOfFrames = 10**7`` in a 1 KB file costs
  nothing.

:func:`check_grid` runs on every volume :func:`medload.load` returns, whatever the reader: a
voxel size or origin no scanner makes (a PixelSpacing or SliceThickness of 1e308, a NIfTI
``srow`` of 1e30) is finite and passes the per-field checks above, but the affine it gives
mirrors nothing real and breaks every step after it (reorientation, resampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medload.errors import ReadError
from medload.deidmeta import shown_value
from medload.geometry import MAX_ORIGIN_MM, MAX_SPACING_MM, MIN_SPACING_MM, grid_fault, unit_axes_volume, voxel_sizes

__all__ = [
    "MAX_RESCALED",
    "NATIVE_SYNTAXES",
    "ORIENTATION_TOLERANCE",
    "check_frame_count",
    "check_grid",
    "check_header",
    "check_rescale_stated",
    "present_vector",
]

#: Largest accepted deviation of |row|, |column| from 1 and of row . column from 0.
ORIENTATION_TOLERANCE = 1e-3
#: Largest magnitude a rescaled value may reach (float32 holds up to 3.4e38).
MAX_RESCALED = 1e30
NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
_FIX = "the header is damaged; re-export the file or remove it"


def _stored_image_bytes(rows: int, columns: int, samples: int, bits_allocated: int, frames: int) -> int:
    bits = rows * columns * samples * frames * bits_allocated
    return (bits + 7) // 8


def _zeros_from(path: str, offset: int, length: int) -> bool:
    """Whether ``length`` bytes of ``path`` from ``offset`` are all zero (padding)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            while length > 0:
                chunk = fh.read(min(length, 1 << 20))
                if not chunk or chunk.count(0) != len(chunk):
                    return False
                length -= len(chunk)
    except OSError:
        return False
    return True


def check_frame_count(
    path: str,
    *,
    n_frames: int,
    rows: int,
    columns: int,
    samples: int,
    bits_allocated: int,
    transfer_syntax: str,
    file_size: int,
    pixel_bytes: int | None = None,
    pixel_offset: int | None = None,
) -> None:
    """Refuse a claimed image size the file cannot hold, before anything loops over frames.

    ``pixel_bytes`` and ``pixel_offset`` (the PixelData length and position, when known) make
    the check exact for uncompressed data: fewer bytes is a truncated file; more bytes that
    are not zero padding mean Rows, Columns or NumberOfFrames do not describe the pixels.

    Examples
    --------
    >>> check_frame_count("a.dcm", n_frames=2, rows=4, columns=4, samples=1, bits_allocated=16,
    ...                   transfer_syntax="1.2.840.10008.1.2.1", file_size=1000)
    >>> try:
    ...     check_frame_count("bomb.dcm", n_frames=10**7, rows=64, columns=64, samples=1,
    ...                       bits_allocated=16, transfer_syntax="1.2.840.10008.1.2.4.90", file_size=1024)
    ... except ReadError as exc:
    ...     print(str(exc)[:70])
    bomb.dcm: the header claims 10000000 frame(s) of 64 x 64, but the file
    """
    if n_frames < 1:
        raise ReadError(f"{path}: NumberOfFrames is {n_frames}; expected at least 1; {_FIX}.")
    if not (1 <= rows <= 65535 and 1 <= columns <= 65535):
        raise ReadError(f"{path}: Rows x Columns is {rows} x {columns}; expected 1 to 65535 each; {_FIX}.")
    claimed = _stored_image_bytes(rows, columns, samples, bits_allocated, n_frames)
    what = f"{n_frames} frame(s) of {rows} x {columns} x {samples} sample(s) x {bits_allocated} bits"
    if transfer_syntax in NATIVE_SYNTAXES or not transfer_syntax:
        if pixel_bytes is not None:
            if pixel_bytes < claimed:
                raise ReadError(
                    f"{path}: the header claims {what} = {claimed} bytes of pixel data, but PixelData "
                    f"holds {pixel_bytes} bytes: the file is truncated or its header is damaged; "
                    "re-copy or re-export it."
                )
            excess = pixel_bytes - claimed
            # Zero bytes after the image are padding (pydicom ignores them too); anything else
            # means the header describes fewer or smaller images than the pixels hold.
            if excess > 1 and not (pixel_offset is not None and _zeros_from(path, pixel_offset + claimed, excess)):
                raise ReadError(
                    f"{path}: PixelData holds {pixel_bytes} bytes but the header claims {what} = "
                    f"{claimed} bytes: Rows, Columns, BitsAllocated or NumberOfFrames do not match the "
                    f"pixels, so the image would be read wrong; {_FIX}."
                )
        elif transfer_syntax and claimed > file_size:
            raise ReadError(
                f"{path}: the header claims {what} = {claimed} bytes of pixel data, but the file has "
                f"{file_size} bytes: the file is truncated or its header is damaged; re-copy or re-export it."
            )
    elif n_frames * 8 > file_size:
        raise ReadError(
            f"{path}: the header claims {n_frames} frame(s) of {rows} x {columns}, but the file "
            f"({file_size} bytes) cannot hold that many compressed frames (8 bytes each at least); {_FIX}."
        )


def stated_number(path: str, value: Any, name: str, default: float) -> float:
    """One number, or ``default`` when the element is absent or empty; a value present but not one
    number (several values, text) is refused: read as absent, a RescaleIntercept of "-1024\\5" made
    a CT 1024 HU off, still labelled HU. (NaN and inf pass here; :func:`check_header` refuses them.)

    Examples
    --------
    >>> stated_number("a.dcm", "-1024", "RescaleIntercept", 0.0), stated_number("a.dcm", None, "RescaleIntercept", 0.0)
    (-1024.0, 0.0)
    >>> try:
    ...     stated_number("a.dcm", ["-1024", "5"], "RescaleIntercept (0028,1052)", 0.0)
    ... except ReadError as exc:
    ...     print(str(exc)[:74])
    a.dcm: RescaleIntercept (0028,1052) is ['-1024', '5']; expected one number
    """
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ReadError(
            f"{path}: {name} is {shown_value(value)}; expected one number (read as absent it would be {default:g}, and every "
            "value of the image off by the difference). The header is damaged; re-export the file or remove it."
        ) from None


def present_vector(path: str, value: Any, n: int, name: str) -> tuple[float, ...] | None:
    """``n`` finite floats, or None when the element is absent; a present but malformed one is refused.

    Treating a NaN or a wrong count as absent would drop an image's geometry silently (a NaN
    position made a one-slice volume of its own).

    Examples
    --------
    >>> present_vector("a.dcm", ["1", "2", "3"], 3, "ImagePositionPatient"), present_vector("a.dcm", None, 3, "x")
    ((1.0, 2.0, 3.0), None)
    >>> try:
    ...     present_vector("a.dcm", ["nan", "0", "0"], 3, "ImagePositionPatient")
    ... except ReadError as exc:
    ...     print(str(exc).split(";")[0])
    a.dcm: ImagePositionPatient is [nan, 0.0, 0.0]
    """
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    try:
        values = [value] if isinstance(value, (int, float, str)) else list(value)
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise ReadError(f"{path}: {name} is {shown_value(value)}; expected {n} numbers; {_FIX}.") from None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ReadError(f"{path}: {name} is {list(out)}; expected {n} finite numbers; {_FIX}.")
    return out


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def check_header(header: Any) -> None:
    """Refuse an image header (a ``FileHeader``) whose geometry or pixel description lies.

    Raises
    ------
    ReadError
        Naming the file, the value found and what was expected.

    Examples
    --------
    >>> import os, pydicom
    >>> from medload.io.headers import read_header
    >>> h = read_header(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm"))
    >>> check_header(h)   # a sound header passes silently
    >>> h.frames[0].slope = float("nan")
    >>> try:
    ...     check_header(h)
    ... except ReadError as exc:
    ...     print(str(exc).split(": ", 1)[1][:38])
    RescaleSlope is nan; expected a finite
    """
    path = header.path
    if not (1 <= header.rows <= 65535 and 1 <= header.columns <= 65535):
        raise ReadError(f"{path}: Rows x Columns is {header.rows} x {header.columns}; expected 1 to 65535 each; {_FIX}.")
    if header.bits_allocated not in (1, 8, 16, 32, 64):
        raise ReadError(f"{path}: BitsAllocated is {header.bits_allocated}; expected 1, 8, 16, 32 or 64; {_FIX}.")
    if not 1 <= header.bits_stored <= header.bits_allocated:
        raise ReadError(
            f"{path}: BitsStored is {header.bits_stored} with BitsAllocated {header.bits_allocated}; expected "
            f"1 to {header.bits_allocated}; {_FIX}."
        )
    if not 1 <= header.samples <= 4:
        raise ReadError(f"{path}: SamplesPerPixel is {header.samples}; expected 1 to 4; {_FIX}.")
    top = 2.0**header.bits_stored
    for f in header.frames:
        where = path + (f"[frame {f.frame}]" if f.frame >= 0 else "")
        if not _finite(f.slope) or f.slope == 0:
            raise ReadError(
                f"{where}: RescaleSlope is {f.slope}; expected a finite number other than 0 "
                f"(every voxel would be the intercept or not a number); {_FIX}."
            )
        if not _finite(f.intercept):
            raise ReadError(f"{where}: RescaleIntercept is {f.intercept}; expected a finite number; {_FIX}.")
        if abs(f.slope) * top + abs(f.intercept) > MAX_RESCALED:
            raise ReadError(
                f"{where}: RescaleSlope {f.slope:g} and RescaleIntercept {f.intercept:g} give values beyond "
                f"{MAX_RESCALED:g} for {header.bits_stored}-bit pixels; {_FIX}."
            )
        if f.pixel_spacing is not None and not all(
            _finite(v) and MIN_SPACING_MM <= float(v) <= MAX_SPACING_MM for v in f.pixel_spacing
        ):
            raise ReadError(
                f"{where}: PixelSpacing is {list(f.pixel_spacing)}; expected two positive millimetre values, "
                f"{MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} each (a negative or zero spacing would mirror or "
                f"collapse the image, a huge one overflow its affine); {_FIX}."
            )
        if f.orientation is not None:
            row, col = f.orientation[:3], f.orientation[3:]
            nr = math.sqrt(sum(v * v for v in row))
            nc = math.sqrt(sum(v * v for v in col))
            dot = sum(a * b for a, b in zip(row, col))
            if abs(nr - 1) > ORIENTATION_TOLERANCE or abs(nc - 1) > ORIENTATION_TOLERANCE or abs(dot) > ORIENTATION_TOLERANCE:
                raise ReadError(
                    f"{where}: ImageOrientationPatient {list(f.orientation)} is not two orthogonal unit "
                    f"vectors (lengths {nr:.4f}, {nc:.4f}, dot product {dot:.4f}; tolerance "
                    f"{ORIENTATION_TOLERANCE}): the affine would be sheared or scaled; {_FIX}."
                )


def check_rescale_stated(frames: Sequence[Any], label: str) -> None:
    """Refuse a series in which some images state RescaleSlope/Intercept and others do not.

    A file that states none is read with slope 1 and intercept 0, which is right when no image
    of the series states one (most MR) and silently wrong (a CT slice 1024 HU off, still
    labelled HU) when the others do: a damaged or edited header, e.g. a tag renamed into a
    private group, that pydicom reads the same way.

    Raises
    ------
    ReadError
        Naming the series, a file without the tags and how many images state them.

    Examples
    --------
    >>> from types import SimpleNamespace as F
    >>> check_rescale_stated([F(file="a", rescale_stated=True), F(file="b", rescale_stated=True)], "series s")
    >>> try:
    ...     check_rescale_stated([F(file="a", rescale_stated=True), F(file="b", rescale_stated=False)], "series s")
    ... except ReadError as exc:
    ...     print(str(exc)[:59])
    series s: b states no RescaleSlope/RescaleIntercept while 1
    """
    missing = [f for f in frames if not f.rescale_stated]
    if missing and len(missing) < len(frames):
        raise ReadError(
            f"{label}: {missing[0].file} states no RescaleSlope/RescaleIntercept while {len(frames) - len(missing)} "
            f"other image(s) of the series do, so its values would be read unscaled (slope 1, intercept 0) and be "
            f"off by the others' intercept. {len(missing)} image(s) lack them; {_FIX}."
        )


def check_grid(what: str, affine: Any) -> None:
    """Refuse a volume whose affine no scanner would write: voxel sizes, origin or axes out of range.

    Parameters
    ----------
    what : str
        Names the file or series in the message.
    affine : array_like, shape (4, 4)
        The volume's affine (RAS, mm).

    Raises
    ------
    ReadError
        A voxel size outside [:data:`~medload.geometry.MIN_SPACING_MM`, :data:`~medload.geometry.MAX_SPACING_MM`],
        an origin farther than :data:`~medload.geometry.MAX_ORIGIN_MM`, or axes (nearly) collinear
        (:func:`medload.geometry.grid_fault`); naming the values found.

    Examples
    --------
    >>> import numpy as np
    >>> check_grid("ct/", np.diag([0.7, 0.7, 2.5, 1.0]))   # a sound grid passes silently
    >>> try:
    ...     check_grid("bad.dcm", np.diag([1e308, 1.0, 1.0, 1.0]))
    ... except ReadError as exc:
    ...     print(str(exc)[:64])
    bad.dcm: the voxel grid the header gives has voxel sizes [1e+308
    """
    import numpy as np

    a = np.asarray(affine, dtype=np.float64)
    fault = grid_fault(a)
    if fault is None:
        return
    sizes = voxel_sizes(a)
    shown = "[" + ", ".join(f"{v:.6g}" for v in sizes) + "] mm"
    if fault == "spacing":
        raise ReadError(
            f"{what}: the voxel grid the header gives has voxel sizes {shown}; expected "
            f"{MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm each (PixelSpacing, SliceThickness or the "
            f"image positions of DICOM; pixdim or srow of NIfTI); {_FIX}."
        )
    if fault == "origin":
        with np.errstate(over="ignore", invalid="ignore"):
            origin = float(np.max(np.abs(a[:3, 3])))
        raise ReadError(
            f"{what}: the first voxel lies {origin:.6g} mm from the scanner's origin; expected at most "
            f"{MAX_ORIGIN_MM:g} mm (ImagePositionPatient of DICOM; qoffset or srow of NIfTI); {_FIX}."
        )
    raise ReadError(
        f"{what}: the voxel grid's axes are (nearly) parallel (volume of the unit axes {unit_axes_volume(a):.3g}; "
        f"voxel sizes {shown}), so slices would collapse onto each other; {_FIX}."
    )
