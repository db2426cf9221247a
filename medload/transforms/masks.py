"""Masks that intensity statistics and crops are taken over: the CT body, the MR foreground.

Pure array functions (numpy in, boolean numpy out): :func:`ct_body_mask` drops air and the
table from a CT in HU, :func:`foreground_mask` separates an MR's head or body from the
background (Otsu), and :func:`voxel_mask` resolves a normalization's ``mask=`` option.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medload.errors import TransformError

__all__ = [
    "ct_body_mask",
    "foreground_mask",
    "voxel_mask",
]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    # Planes are the last two axes whatever the rank: iterating a 2D mask would fill each row
    # in 1D, joining any two parts of a row (the gap between two legs became foreground).
    planes = mask.reshape((-1,) + mask.shape[-2:])
    return np.stack([ndimage.binary_fill_holes(p) for p in planes]).reshape(mask.shape)


def ct_body_mask(
    hu: np.ndarray, *, threshold: float = -500.0, opening_mm: float = 3.0, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """Boolean mask of the patient's body in a CT in HU: drops air and the table.

    Threshold above air, a small in-plane opening to cut the thin links between the table and
    the body, the largest 3D connected component (the body; the table is a separate part),
    then holes filled slice by slice (lungs, bowel gas stay inside).

    Examples
    --------
    >>> import numpy as np
    >>> hu = np.full((2, 20, 20), -1000.0); hu[:, 4:14, 4:14] = 40; hu[:, 17:19, 2:18] = 200  # body, table
    >>> m = ct_body_mask(hu)
    >>> int(m[0].sum()), bool(m[0, 18, 10])
    (100, False)
    """
    from scipy import ndimage

    mask = np.asarray(hu) > threshold
    radius = [max(int(round(opening_mm / float(s) / 2)), 0) for s in spacing[-2:]]
    if max(radius) > 0:
        structure = np.zeros((1, 2 * radius[0] + 1, 2 * radius[1] + 1), bool)
        structure[0] = True
        mask = ndimage.binary_opening(mask, structure=structure)
    mask = _largest_component(mask)
    return _fill_holes_per_slice(mask)


def foreground_mask(array: np.ndarray) -> np.ndarray:
    """Head/body foreground of an MR: Otsu threshold, largest component, holes filled per slice.

    A constant volume has no background to separate: every voxel is foreground.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((2, 10, 10)); a[:, 2:8, 2:8] = 100
    >>> int(foreground_mask(a).sum())
    72
    """
    from skimage.filters import threshold_otsu

    array = np.asarray(array)
    if array.max() == array.min():
        return np.ones(array.shape, bool)
    mask = array > threshold_otsu(array)
    return _fill_holes_per_slice(_largest_component(mask))


def voxel_mask(array: np.ndarray, mask: str | np.ndarray | None) -> np.ndarray:
    """The boolean mask of the voxels statistics are taken over: ``"all"``/None, ``"foreground"``,
    ``"nonzero"`` or a boolean array of the image's shape.

    Examples
    --------
    >>> voxel_mask(np.array([0.0, 2.0]), "nonzero").tolist()
    [False, True]
    """
    if mask is None or (isinstance(mask, str) and mask == "all"):
        return np.ones(array.shape, bool)
    if isinstance(mask, str):
        if mask == "foreground":
            return foreground_mask(array)
        if mask == "nonzero":
            return array != 0
        raise TransformError(f"mask must be 'all', 'foreground', 'nonzero' or a boolean array, found {mask!r}")
    mask = np.asarray(mask, bool)
    if mask.shape != array.shape:
        raise TransformError(f"mask shape {mask.shape} does not match the image shape {array.shape}")
    return mask
