"""Siemens mosaics: how many slices one image tiles, where each lies, and how to cut them out.

A mosaic stores ``n`` slices side by side in one image of ``ceil(sqrt(n))`` tiles a side.
The count comes from the CSA image header (NumberOfImagesInMosaic) or the public Siemens
tag (0019,100A); the CSA header also gives the slice normal, whose sign is the acquisition
order. nibabel's CSA parser reads the private header.
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import numpy as np

from medload.errors import ReadError
from medload.geometry import slice_normal
from medload.io.frame import Frame, element_value, number

__all__ = ["cut_tile", "mosaic_frames", "mosaic_tiles", "tiles_per_side"]


def _csareader() -> ModuleType:
    import warnings

    with warnings.catch_warnings():
        # nibabel.nicom warns about its DICOM *readers* on import; we use only the CSA parser.
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader
    return csareader


def _csa_errors(csareader: Any) -> tuple[type[BaseException], ...]:
    """What nibabel's CSA parser raises on a damaged or unexpected private header."""
    return (csareader.CSAError, ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError)


def tiles_per_side(tiles: int) -> int:
    """Tiles along each side of a mosaic of ``tiles`` slices.

    Examples
    --------
    >>> tiles_per_side(36), tiles_per_side(37)
    (6, 7)
    """
    return int(np.ceil(np.sqrt(tiles)))


def cut_tile(image: np.ndarray, index: int, tiles: int, rows: int, columns: int) -> np.ndarray:
    """Tile ``index`` (row-major) of a mosaic ``image`` whose tiles are ``rows`` x ``columns``.

    Examples
    --------
    >>> m = np.arange(16).reshape(4, 4)
    >>> cut_tile(m, 3, 4, 2, 2).tolist()
    [[10, 11], [14, 15]]
    """
    r, c = divmod(index, tiles_per_side(tiles))
    return image[r * rows : (r + 1) * rows, c * columns : (c + 1) * columns]


def _count_from_public(ds: Any) -> tuple[int, str]:
    """The slice count from the tags dcm2niix reads when the CSA header is absent (nii_dicom.cpp)."""
    n = number(element_value(ds, 0x0019100A))
    if n and n >= 1:
        return int(n), "NumberOfImagesInMosaic (0019,100A)"
    times = element_value(ds, 0x00191029)  # MosaicRefAcqTimes: one time per slice
    if isinstance(times, (bytes, bytearray)) and len(times) >= 8 and len(times) % 8 == 0:
        return len(times) // 8, "MosaicRefAcqTimes (0019,1029)"
    if isinstance(times, (list, tuple)) and len(times) >= 1:
        return len(times), "MosaicRefAcqTimes (0019,1029)"
    rows, cols = int(number(ds.get("Rows"), 0) or 0), int(number(ds.get("Columns"), 0) or 0)
    matrix = element_value(ds, 0x00181310)  # AcquisitionMatrix: freq rows, freq cols, phase rows, phase cols
    interpolated = "I" in str(element_value(ds, 0x0051100B) or "") + str(element_value(ds, 0x00211158) or "")
    if isinstance(matrix, (list, tuple)) and len(matrix) == 4 and not interpolated:
        freq = int(matrix[0] or matrix[1] or 0)
        phase = int(matrix[2] or matrix[3] or 0)
        # dcm2niix issue 337: the mosaic is a grid of acquisition-matrix tiles, more than 2 a side
        if freq and phase and cols % freq == 0 and cols // freq > 2 and rows % phase == 0 and rows // phase > 2:
            return (cols // freq) * (rows // phase), "AcquisitionMatrix (0018,1310) tiles in the image"
    steps = number(element_value(ds, 0x00180089))  # NumberOfPhaseEncodingSteps
    if steps and steps >= 1 and cols % int(steps) == 0 and rows % int(steps) == 0:
        return (cols // int(steps)) * (rows // int(steps)), "NumberOfPhaseEncodingSteps (0018,0089) tiles in the image"
    return 0, ""


def mosaic_tiles(ds: Any, image_type: tuple[str, ...], path: str = "") -> tuple[int, Any, str]:
    """Slices tiled in a Siemens mosaic (0 if not a mosaic), its CSA header, and where the count came from.

    The count comes from every source dcm2niix uses, in its order: the CSA image header's
    NumberOfImagesInMosaic, (0019,100A), the number of MosaicRefAcqTimes (0019,1029), the
    image size over the AcquisitionMatrix (when not interpolated), or over the number of
    phase-encoding steps.

    Raises
    ------
    ReadError
        ImageType says MOSAIC but no source gives the count: returning the mosaic as one
        image would be a silently wrong volume.
    """
    if "MOSAIC" not in image_type:
        return 0, None, ""
    csareader = _csareader()

    csa = None
    try:
        csa = csareader.get_csa_header(ds, "image")
    except _csa_errors(csareader):  # a damaged private header: fall back on the public tags below
        csa = None
    n = None
    if csa is not None:
        try:
            n = csareader.get_n_mosaic(csa)
        except _csa_errors(csareader):
            n = None
    if n:
        source = "CSA image header NumberOfImagesInMosaic"
    else:
        n, source = _count_from_public(ds)
    rows, cols = int(number(ds.get("Rows"), 0) or 0), int(number(ds.get("Columns"), 0) or 0)
    if not n or n < 1:
        raise ReadError(
            f"{path}: Siemens mosaic (ImageType MOSAIC) whose slice count is not in the file: no CSA "
            "image header (0029,1010), no NumberOfImagesInMosaic (0019,100A), no MosaicRefAcqTimes "
            "(0019,1029), and AcquisitionMatrix / phase-encoding steps do not divide the image. "
            "medload will not return the mosaic as one image; re-export with Siemens private "
            "headers kept (anonymisers often strip them)."
        )
    side = tiles_per_side(int(n))
    if rows % side or cols % side:
        # Refused, not rounded: no cut of the leftover is defined. nibabel's MosaicWrapper raises
        # here; dcm2niix (nii_demosaic) steps tile rows by rows * columns // side pixels, which is
        # not a whole number of lines, so its slices after the first tile row start mid-line
        # (sheared across two tiles); flooring the tile size instead would differ from it.
        raise ReadError(
            f"{path}: Siemens mosaic of {int(n)} slices ({source}) cannot be cut: {rows}x{cols} "
            f"pixels are not {side}x{side} equal tiles ({rows % side} row(s) and {cols % side} column(s) left "
            "over, so which pixels belong to which slice is not defined). The header does not match the "
            "image; re-export it."
        )
    return int(n), csa, source


def mosaic_frames(
    ds: Any,
    path: str,
    csa: Any,
    tiles: int,
    position: tuple[float, ...] | None,
    orientation: tuple[float, ...] | None,
    spacing: tuple[float, ...] | None,
    time_key: tuple[float, ...],
    split: tuple[Any, ...],
    sop_uid: str,
) -> list[Frame]:
    """Positions of the ``tiles`` slices of a Siemens mosaic.

    The header's ImagePositionPatient is that of the whole mosaic image's first pixel, not of
    the first slice; the correction (as nibabel's MosaicWrapper and dcm2niix do) shifts it by
    half the difference between the mosaic and the tile size along rows and columns. Slices
    then follow the CSA SliceNormalVector, whose sign gives the acquisition order.
    """
    if position is None or orientation is None or spacing is None:
        raise ReadError(
            f"{path}: Siemens mosaic without ImagePositionPatient/ImageOrientationPatient/PixelSpacing; cannot place its slices."
        )
    side = tiles_per_side(tiles)
    rows, cols = int(ds.Rows), int(ds.Columns)
    tile_rows, tile_cols = rows // side, cols // side
    iop = np.asarray(orientation).reshape(2, 3)
    row_cos, col_cos = iop[0], iop[1]  # column index grows along row_cos, row index along col_cos
    csareader = _csareader()
    normal = None
    if csa is not None:
        try:
            normal = np.asarray(csareader.get_slice_normal(csa), dtype=float)
        except _csa_errors(csareader):
            normal = None
    if normal is None or normal.shape != (3,) or not np.all(np.isfinite(normal)):
        normal = slice_normal(orientation)
    normal = normal / np.linalg.norm(normal)
    pos = np.asarray(position, dtype=float)
    shift = (cols - tile_cols) / 2.0 * spacing[1] * row_cos + (rows - tile_rows) / 2.0 * spacing[0] * col_cos
    first = pos + shift
    step = number(ds.get("SpacingBetweenSlices")) or number(ds.get("SliceThickness")) or 1.0
    frames = []
    for i in range(tiles):
        p = first + i * step * normal
        frames.append(
            Frame(
                file=path,
                frame=-1,
                mosaic=i,
                position=tuple(float(v) for v in p),
                orientation=orientation,
                pixel_spacing=spacing,
                slope=float(number(ds.get("RescaleSlope"), 1.0) or 0.0),
                intercept=float(number(ds.get("RescaleIntercept"), 0.0) or 0.0),
                time_key=time_key,
                split_key=split,
                uid=f"{sop_uid}@{i}",
            )
        )
    return frames
