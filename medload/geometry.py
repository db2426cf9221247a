"""Pure affine helpers: DICOM orientation and position to a RAS+ affine, spacing, slice normal.

Conventions (see ``medload.volume``): arrays are indexed ``(z, y, x)`` = (slice, row, column)
and the affine maps those indices, in that order, to RAS+ millimetres. DICOM's patient
coordinates are LPS+; :func:`lps_to_ras` turns them into RAS+ once, at the reader's boundary.

DICOM ImageOrientationPatient holds two direction cosines: the first three are the direction
in which the *column index* grows (along a row), the last three the direction in which the
*row index* grows (down a column). PixelSpacing is ``[row spacing, column spacing]``, i.e.
``[distance between rows (y), distance between columns (x)]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "lps_to_ras",
    "slice_normal",
    "dicom_affine",
    "default_plane_affine",
    "spacing_from_affine",
    "unit_axes_volume",
    "MIN_SPACING_MM",
    "MAX_SPACING_MM",
    "MAX_ORIGIN_MM",
    "MIN_AXIS_VOLUME",
    "voxel_sizes",
    "spacing_in_bounds",
    "grid_fault",
    "positions_along_normal",
    "axis_codes",
    "align_to_grid",
]

#: Flips x and y: DICOM LPS+ to NIfTI/nibabel RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# The bounds of a sound voxel grid, one definition for the readers (medload.io.validate.check_grid)
# and the store (medload.store.records, which may not import io): what a reader accepts, a
# store's affine must satisfy.
#: Voxel sizes of a sound grid, millimetres: 1 nm (microscopy) to 100 m.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-6, 1e5
#: Farthest a sound grid's first voxel lies from the scanner's origin (10 km), millimetres.
MAX_ORIGIN_MM = 1e7
#: Smallest :func:`unit_axes_volume` of a sound grid (1: orthogonal axes, 0: collinear).
MIN_AXIS_VOLUME = 1e-6
# Relative rounding of a float32 (2**-23, about 1.2e-7), allowed on the voxel size bounds: NIfTI
# headers hold float32, so a pixdim of 1e-6 is read as 9.99999997e-07.
_FLOAT32_ROUNDING = 2.0**-23


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Turn an affine into LPS+ millimetres into one into RAS+.

    Examples
    --------
    >>> lps_to_ras(np.eye(4))[:3, :3].diagonal()
    array([-1., -1.,  1.])
    """
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane, ``row_cosine x column_cosine`` (LPS).

    Parameters
    ----------
    orientation : sequence of 6 floats
        DICOM ImageOrientationPatient.

    Examples
    --------
    >>> slice_normal([1, 0, 0, 0, 1, 0])
    array([0., 0., 1.])
    """
    iop = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    normal = np.cross(iop[0], iop[1])
    return normal / np.linalg.norm(normal)


def positions_along_normal(positions: np.ndarray, orientation: Sequence[float]) -> np.ndarray:
    """Distance of each ImagePositionPatient along the slice normal (the sort key of slices).

    Examples
    --------
    >>> positions_along_normal(np.array([[0, 0, 5.0], [0, 0, -1.0]]), [1, 0, 0, 0, 1, 0])
    array([ 5., -1.])
    """
    return np.asarray(positions, dtype=np.float64) @ slice_normal(orientation)


def dicom_affine(
    orientation: Sequence[float],
    first_position: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float] | None = None,
    slice_thickness: float = 1.0,
) -> np.ndarray:
    """RAS+ affine of a stack of DICOM slices, for array indices ``(z, y, x)``.

    Parameters
    ----------
    orientation : sequence of 6 floats
        ImageOrientationPatient (row cosine, then column cosine), LPS.
    first_position : sequence of 3 floats
        ImagePositionPatient of slice 0 (the centre of its first pixel), LPS mm.
    pixel_spacing : sequence of 2 floats
        PixelSpacing ``[between rows, between columns]`` in mm.
    slice_step : sequence of 3 floats, optional
        LPS vector from slice ``z`` to slice ``z + 1``: ``(last - first) / (n - 1)``. It may be
        oblique to the normal (gantry tilt); the affine then shears, which is the truth.
        Default: the normal times ``slice_thickness`` (a single slice).
    slice_thickness : float
        Used only when ``slice_step`` is None.

    Examples
    --------
    >>> aff = dicom_affine([1, 0, 0, 0, 1, 0], [-100, -120, 30], [0.5, 0.7], [0, 0, 2.0])
    >>> aff @ [1, 0, 0, 1]          # next slice: 2 mm superior
    array([100., 120.,  32.,   1.])
    >>> aff @ [0, 1, 1, 1]          # one row down (posterior), one column right-to-left
    array([ 99.3, 119.5,  30. ,   1. ])
    """
    iop = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    row_cosine, column_cosine = iop[0], iop[1]
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    if slice_step is None:
        step = slice_normal(orientation) * float(slice_thickness or 1.0)
    else:
        step = np.asarray(slice_step, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = column_cosine * row_spacing  # y: row index grows down a column
    affine[:3, 2] = row_cosine * column_spacing  # x: column index grows along a row
    affine[:3, 3] = np.asarray(first_position, dtype=np.float64)
    return lps_to_ras(affine)


def default_plane_affine(shape: Sequence[int], pixel_spacing: Sequence[float], slice_step: float = 1.0) -> np.ndarray:
    """RAS+ affine, for array indices ``(z, y, x)``, of images without world geometry.

    DICOM's default plane (ImageOrientationPatient ``1\\0\\0\\0\\1\\0``, as dcm2niix assumes):
    rows run to patient-left, columns posterior, slices superior ``slice_step`` mm apart. An
    axial plane, so :class:`~medload.transforms.orientation.CanonicalSlices` leaves such images as
    they are; the index-order identity used before put the columns along S (a sagittal plane)
    and the stored slices came out transposed.

    The grid is centred on the world origin: dcm2niix writes such images with qform and sform
    codes 0 (no world transform), which nibabel (``get_base_affine``) reads as the NIfTI/Analyze
    default, the voxel grid centred on 0 with ``pixdim`` spacing. Centring here puts every voxel
    where a reader of dcm2niix's file finds it; an origin of 0 at the first voxel put the image
    half a field of view away from it.

    Parameters
    ----------
    shape : sequence of 3 ints
        The spatial shape ``(z, y, x)``: slices, rows, columns.
    pixel_spacing : sequence of 2 floats
        ``[between rows, between columns]`` in mm.
    slice_step : float
        Distance between slices in mm.

    Examples
    --------
    >>> aff = default_plane_affine((3, 4, 5), (0.5, 0.7), 2.5)
    >>> aff[:3, :3].tolist()
    [[0.0, 0.0, -0.7], [0.0, -0.5, 0.0], [2.5, 0.0, 0.0]]
    >>> (aff @ [1, 1.5, 2, 1]).tolist()     # the centre of the grid is at the origin
    [0.0, 0.0, 0.0, 1.0]
    """
    n_z, n_y, n_x = (int(v) for v in shape)
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    step = float(slice_step)
    # LPS position of the first voxel: half the grid back along each axis, so its centre is at 0
    first = (-(n_x - 1) / 2 * column_spacing, -(n_y - 1) / 2 * row_spacing, -(n_z - 1) / 2 * step)
    return dicom_affine((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), first, pixel_spacing, (0.0, 0.0, step))


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size along each array axis: the norms of the affine's columns.

    Examples
    --------
    >>> spacing_from_affine(np.diag([3.0, -0.5, 0.5, 1]))
    (3.0, 0.5, 0.5)
    """
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def unit_axes_volume(affine: np.ndarray) -> float:
    """How far the affine's axes are from collinear, whatever the voxel size: 1 orthogonal, 0 collinear.

    The absolute value of the determinant of the 3x3 axes each made unit length. An absolute
    determinant test calls micrometre voxels singular (1e-6 mm voxels: determinant 1e-18)
    though their axes are orthogonal; this one does not depend on the voxel size. It is the
    one test of a singular grid: :func:`grid_fault` (the readers and the store, with
    :data:`MIN_AXIS_VOLUME`) and :class:`~medload.volume.Volume` use it.

    Parameters
    ----------
    affine : array_like, shape (4, 4) or (3, 3)

    Returns
    -------
    float
        In [0, 1]; 0.0 when an axis has zero, infinite or NaN length.

    Examples
    --------
    >>> unit_axes_volume(np.diag([1e-6, 1e-6, 1e-6, 1.0])), unit_axes_volume(np.diag([0.7, 0.7, 2.5]))
    (1.0, 1.0)
    >>> unit_axes_volume(np.diag([1.0, 0.0, 1.0])), unit_axes_volume(np.diag([1.0, np.nan, 1.0]))
    (0.0, 0.0)
    >>> round(unit_axes_volume(np.array([[1.0, 1.0, 0], [0, 1e-3, 0], [0, 0, 1.0]])), 6)  # two axes along x
    0.001
    """
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    with np.errstate(over="ignore", invalid="ignore"):
        sizes = np.hypot.reduce(axes, axis=0)  # no overflow on the way (1e308 stays 1e308)
        if not (np.all(sizes > 0) and np.all(np.isfinite(sizes))):
            return 0.0
        return abs(float(np.linalg.det(axes / sizes)))


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """The lengths of the affine's three axes in millimetres, without overflow (1e308 stays 1e308).

    Examples
    --------
    >>> voxel_sizes(np.diag([1e308, 0.5, 2.0, 1.0])).tolist()
    [1e+308, 0.5, 2.0]
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return np.hypot.reduce(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def spacing_in_bounds(sizes: np.ndarray) -> bool:
    """Whether every voxel size is finite and within [:data:`MIN_SPACING_MM`, :data:`MAX_SPACING_MM`] (float32 rounding allowed).

    Examples
    --------
    >>> spacing_in_bounds(np.array([0.7, 0.7, 2.5])), spacing_in_bounds(np.array([1e308, 1.0, 1.0]))
    (True, False)
    >>> spacing_in_bounds(np.array([np.float32(1e-6), 1.0, 1.0]))  # read from a float32 header
    True
    """
    values = np.asarray(sizes, dtype=np.float64)
    low, high = MIN_SPACING_MM * (1 - _FLOAT32_ROUNDING), MAX_SPACING_MM * (1 + _FLOAT32_ROUNDING)
    return bool(np.all(np.isfinite(values)) and np.all((values >= low) & (values <= high)))


def grid_fault(affine: np.ndarray) -> Literal["spacing", "origin", "axes"] | None:
    """Which bound of a sound voxel grid an affine breaks, first found first; ``None`` for a sound grid.

    ``"spacing"``: a voxel size outside :func:`spacing_in_bounds`; ``"origin"``: the first voxel
    farther than :data:`MAX_ORIGIN_MM` (or not finite); ``"axes"``: axes (nearly) parallel
    (:func:`unit_axes_volume` below :data:`MIN_AXIS_VOLUME`). A reader refuses such a volume
    (:func:`medload.io.validate.check_grid`) and the store such a record.

    Examples
    --------
    >>> grid_fault(np.diag([0.7, 0.7, 2.5, 1.0])) is None
    True
    >>> shifted = np.eye(4); shifted[0, 3] = 1e30
    >>> grid_fault(np.diag([1e308, 1.0, 1.0, 1.0])), grid_fault(shifted), grid_fault(np.ones((4, 4)))
    ('spacing', 'origin', 'axes')
    """
    a = np.asarray(affine, dtype=np.float64)
    if not spacing_in_bounds(voxel_sizes(a)):
        return "spacing"
    with np.errstate(over="ignore", invalid="ignore"):
        origin = float(np.max(np.abs(a[:3, 3])))
    if not np.isfinite(origin) or origin > MAX_ORIGIN_MM:
        return "origin"
    if not unit_axes_volume(a) >= MIN_AXIS_VOLUME:
        return "axes"
    return None


def axis_codes(affine: np.ndarray) -> tuple[str, ...]:
    """Anatomical direction each array axis points to, e.g. ``('S', 'A', 'L')``.

    Examples
    --------
    >>> axis_codes(np.diag([1.0, -1, -1, 1]))
    ('R', 'P', 'I')
    """
    import nibabel as nib

    return tuple(nib.aff2axcodes(affine))


def align_to_grid(
    data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: Sequence[int]
) -> np.ndarray | None:
    """``data`` (on ``affine``) in the target grid's array order when both hold the same voxels
    in world space, else None.

    Masks written by other tools often store the same grid with axes flipped or permuted
    (e.g. rows bottom-up); that is the same mask, so it is reordered, never resampled.

    Examples
    --------
    >>> data = np.arange(6).reshape(1, 2, 3)
    >>> flipped = np.diag([1.0, -1.0, 1.0, 1.0]); flipped[1, 3] = 1.0  # rows stored bottom-up
    >>> align_to_grid(data[:, ::-1], flipped, np.eye(4), (1, 2, 3)).tolist()
    [[[0, 1, 2], [3, 4, 5]]]
    >>> align_to_grid(data, np.eye(4) * 2, np.eye(4), (1, 2, 3)) is None
    True
    """
    to_data = np.linalg.inv(affine) @ target_affine  # target index -> data index
    rot, shift = to_data[:3, :3], to_data[:3, 3]
    perm = np.rint(rot)
    if not (np.allclose(rot, perm, atol=1e-3) and np.allclose(shift, np.rint(shift), atol=1e-3)):
        return None
    if sorted(np.abs(perm).sum(axis=0)) != [1, 1, 1] or sorted(np.abs(perm).sum(axis=1)) != [1, 1, 1]:
        return None
    axes = [int(np.argmax(np.abs(perm[:, a]))) for a in range(3)]  # data axis of each target axis
    out = data.transpose(axes)
    if tuple(out.shape) != tuple(target_shape):
        return None
    for a, b in enumerate(axes):
        sign, start = perm[b, a], int(np.rint(shift[b]))
        if sign > 0 and start != 0 or sign < 0 and start != out.shape[a] - 1:
            return None
        if sign < 0:
            out = np.flip(out, axis=a)
    return out
