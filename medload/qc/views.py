"""Slices as a radiologist reads them, labelled from the affine: arrays in, arrays (and PNGs) out.

The one implementation behind the notebooks' plots (:mod:`medload.qc.plots`), ``medload
preview`` and the QC page. Views follow the radiological convention (axial and coronal:
patient's right on the image's left; axial: anterior at the top; coronal and sagittal:
superior at the top; sagittal: anterior on the left). Nothing is resampled to get there: each
array axis is flipped or swapped to the world axis it is closest to
(``nibabel.orientations.io_orientation``), and the edge letters are read back from the affine
of the grid actually shown, so a wrong affine shows as a wrong letter. For an oblique grid the
letters name the closest anatomical direction, as a scanner's console does.

Images are drawn with numpy and Pillow (no matplotlib): a thumbnail costs about a
millisecond, which is what a QC page over thousands of volumes needs.

Examples
--------
>>> import numpy as np
>>> affine = np.diag([-1.0, 2.0, 3.0, 1.0])              # axes L, A, S
>>> display_grid(np.zeros((4, 6, 8)), affine)[0].shape, edge_labels(affine, "axial")
((8, 6, 4), {'top': 'A', 'bottom': 'P', 'left': 'R', 'right': 'L'})
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from nibabel.orientations import (
    aff2axcodes,
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from medload.errors import ConfigError

__all__ = [
    "DISPLAY_AXCODES",
    "LABEL_COLOURS",
    "PLANES",
    "View",
    "display_grid",
    "display_range",
    "edge_labels",
    "fit",
    "jpeg_bytes",
    "orthogonal_views",
    "overlay",
    "png_bytes",
    "slice_labels",
    "to_uint8",
]

#: Axis codes of the display grid: rows of an axial slice run to P, columns to L (radiological).
DISPLAY_AXCODES = ("I", "P", "L")
#: Plane name -> the axis of the display grid held fixed.
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}
_OPPOSITE = dict(zip("LRAPSI", "RLPAIS"))

#: RGB colour of mask label ``k`` is ``LABEL_COLOURS[(k - 1) % len(LABEL_COLOURS)]`` (label 0 is background).
LABEL_COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


def _ornt(affine: np.ndarray) -> np.ndarray:
    return ornt_transform(io_orientation(np.asarray(affine, float)), axcodes2ornt(DISPLAY_AXCODES))


def display_grid(array: np.ndarray, affine: np.ndarray, *, ornt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (spatial axes last three, ``(..., Z, Y, X)``) on the display grid ``(I, P, L)``, and its affine.

    Leading axes (channels, frames) move last, ready for ``imshow`` as RGB. The result is a
    view of ``array`` (flips and a transpose), not a copy. ``ornt``: the orientation transform,
    when the caller already has it (it costs more than the flips).

    Examples
    --------
    >>> import numpy as np
    >>> array, affine = display_grid(np.zeros((4, 6, 8)), np.diag([1.0, 2.0, 3.0, 1.0]))  # axes R, A, S
    >>> array.shape, aff2axcodes(affine)
    ((8, 6, 4), ('I', 'P', 'L'))
    """
    array = np.asarray(array)
    spatial_shape = array.shape[-3:]
    ornt = _ornt(affine) if ornt is None else ornt
    if array.ndim == 4:
        array = np.moveaxis(array, 0, -1)
    shown = apply_orientation(array, ornt)
    return shown, np.asarray(affine, float) @ inv_ornt_aff(ornt, spatial_shape)


def _edges(row_code: str, col_code: str) -> dict[str, str]:
    # Row 0 is drawn at the top and column 0 on the left: an axis increasing towards X ends at X.
    return {"top": _OPPOSITE[row_code], "bottom": row_code, "left": _OPPOSITE[col_code], "right": col_code}


def edge_labels(affine: np.ndarray, plane: str) -> dict[str, str]:
    """Anatomical direction at each edge of ``plane`` (axial, coronal, sagittal) as drawn, read from ``affine``.

    Examples
    --------
    >>> import numpy as np
    >>> edge_labels(np.eye(4), "sagittal")
    {'top': 'S', 'bottom': 'I', 'left': 'A', 'right': 'P'}
    """
    if plane not in PLANES:
        raise ConfigError(f"plane must be one of {', '.join(PLANES)}, found {plane!r}")
    # The display grid's codes, from the affine as it is after reorientation (not assumed).
    codes = aff2axcodes(np.asarray(affine, float) @ inv_ornt_aff(_ornt(affine), (2, 2, 2)))
    rows, cols = [a for a in range(3) if a != PLANES[plane]]
    return _edges(codes[rows], codes[cols])


def slice_labels(affine: np.ndarray) -> dict[str, str]:
    """Edge letters of a stored slice drawn as it is (rows down, columns right), no flips.

    What a naive ``imshow(array[k])`` shows, which is what a model is trained on.

    Examples
    --------
    >>> import numpy as np
    >>> slice_labels(np.diag([1.0, -1.0, 1.0, 1.0]))   # rows run to P, columns to S
    {'top': 'A', 'bottom': 'P', 'left': 'I', 'right': 'S'}
    """
    codes = aff2axcodes(np.asarray(affine, float))
    return _edges(codes[1], codes[2])


@dataclass(frozen=True)
class View:
    """One drawn plane: the image (rows, columns), its mask (or None), edge letters and pixel size in mm."""

    plane: str
    index: int
    n: int
    image: np.ndarray
    mask: np.ndarray | None
    labels: dict[str, str]
    pixel_mm: tuple[float, float]


def _default_centre(shown: np.ndarray, shown_mask: np.ndarray | None) -> tuple[int, int, int]:
    """The mask's centroid where it has labelled voxels, else the middle of the grid."""
    if shown_mask is not None:
        labelled = shown_mask > 0
        total = int(np.count_nonzero(labelled))
        if total:
            # centroid from the three projections (cheaper than np.nonzero over the volume)
            z, y, x = (
                int(
                    np.rint(
                        (labelled.sum(axis=tuple(a for a in range(3) if a != axis)) * np.arange(labelled.shape[axis])).sum()
                        / total
                    )
                )
                for axis in range(3)
            )
            return z, y, x
    z, y, x = (int(s) // 2 for s in shown.shape[:3])
    return z, y, x


def orthogonal_views(
    array: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None, centre: tuple[int, int, int] | None = None
) -> list[View]:
    """Axial, coronal and sagittal planes through ``centre`` (display-grid indices).

    The default centre is the mask's centroid where the mask has labelled voxels (so the
    thumbnails show the labelled structure), else the middle of the grid.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((4, 6, 8), np.uint8); mask[1, 2, 7] = 1     # one voxel, axes R, A, S
    >>> views = orthogonal_views(np.zeros((4, 6, 8)), np.eye(4), mask)
    >>> [(v.plane, v.index, v.image.shape) for v in views]
    [('axial', 0, (6, 4)), ('coronal', 3, (8, 4)), ('sagittal', 2, (8, 6))]
    >>> int(views[0].mask.sum())
    1
    """
    ornt = _ornt(affine)
    shown, grid_affine = display_grid(array, affine, ornt=ornt)
    shown_mask = None if mask is None else display_grid(mask, affine, ornt=ornt)[0]
    if centre is None:
        centre = _default_centre(shown, shown_mask)
    spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
    codes = aff2axcodes(grid_affine)
    views = []
    for plane, axis in PLANES.items():
        rows, cols = [a for a in range(3) if a != axis]
        index = int(centre[axis])
        pick = (slice(None),) * axis + (index,)  # basic indexing: a view, where np.take copies
        views.append(
            View(
                plane,
                index,
                shown.shape[axis],
                shown[pick],
                None if shown_mask is None else shown_mask[pick],
                _edges(codes[rows], codes[cols]),
                (float(spacing[rows]), float(spacing[cols])),
            )
        )
    return views


def display_range(values: np.ndarray, window: tuple[float, float] | None = None) -> tuple[float, float]:
    """``window`` (low, high) if given, else the 0.5 and 99.5 percentiles of ``values`` (finite ones).

    Examples
    --------
    >>> display_range(np.arange(1001.0))
    (5.0, 995.0)
    >>> display_range(np.zeros(3), (0, 1))
    (0.0, 1.0)
    """
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
    else:
        finite = np.asarray(values).ravel()
        if finite.size > 40_000:  # a percentile of a strided sample: the same to the eye, 20x faster
            finite = finite[:: finite.size // 20_000]
        finite = finite.astype(np.float32)
        finite = finite[np.isfinite(finite)]
        lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5])) if finite.size else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` to ``[0, 255]`` (clipped; NaN -> 0).

    Examples
    --------
    >>> to_uint8(np.array([-1.0, 0.5, 2.0, np.nan]), 0.0, 1.0).tolist()
    [0, 128, 255, 0]
    """
    scaled = (np.asarray(image, np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(np.nan_to_num(scaled), 0, 255)).astype(np.uint8)


def overlay(gray: np.ndarray, mask: np.ndarray | None, *, alpha: float = 0.35) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8: ``gray`` (or a colour ``(H, W, 3)`` image) with each mask label blended in its
    :data:`LABEL_COLOURS` colour.

    Examples
    --------
    >>> rgb = overlay(np.zeros((1, 2), np.uint8), np.array([[0, 1]]), alpha=1.0)
    >>> rgb.tolist()
    [[[0, 0, 0], [230, 25, 75]]]
    """
    gray = np.asarray(gray, np.uint8)
    rgb = gray.copy() if gray.ndim == 3 else np.repeat(gray[..., None], 3, axis=-1)
    if mask is None or not np.any(mask):
        return rgb
    mask = np.asarray(mask)
    colours = np.asarray(LABEL_COLOURS, np.float32)
    labelled = mask > 0
    colour = colours[(mask[labelled].astype(np.int64) - 1) % len(colours)]
    rgb[labelled] = np.rint((1 - alpha) * rgb[labelled] + alpha * colour).astype(np.uint8)
    return rgb


def fit(rgb: np.ndarray, pixel_mm: tuple[float, float], size: int) -> np.ndarray:
    """Resize ``rgb`` (H, W[, 3]) so pixels are square in mm and the longer side is ``size`` pixels.

    Examples
    --------
    >>> fit(np.zeros((10, 20, 3), np.uint8), (2.0, 1.0), 40).shape   # 20 mm x 20 mm
    (40, 40, 3)
    """
    from PIL import Image

    height_mm, width_mm = rgb.shape[0] * pixel_mm[0], rgb.shape[1] * pixel_mm[1]
    scale = size / max(height_mm, width_mm)
    shape = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    if shape == (rgb.shape[1], rgb.shape[0]):
        return rgb
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(shape, Image.Resampling.BILINEAR))


def jpeg_bytes(gray: np.ndarray, quality: int = 90) -> bytes:
    """JPEG file bytes of a uint8 image: for grey thumbnails, 5-10x faster to encode than PNG and smaller.

    Examples
    --------
    >>> jpeg_bytes(np.zeros((2, 2), np.uint8))[:2]
    b'\\xff\\xd8'
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(gray)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG file bytes of a uint8 image (fast zlib level: thumbnails are small); lossless, for mask colours.

    Examples
    --------
    >>> png_bytes(np.zeros((2, 2, 3), np.uint8))[:4]
    b'\\x89PNG'
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
