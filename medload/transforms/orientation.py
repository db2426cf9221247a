"""Orientation transforms: reorient to axis codes, and store slices in the display convention per plane.

Axes are only flipped and permuted (``nibabel.orientations``), never interpolated; the affine
follows exactly (``A_new = A_old @ M``), so a voxel keeps its world position, and label masks
move the same way and keep their dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Applied, Transform, check_finite, check_mask_grid
from medload.volume import Volume

__all__ = [
    "reorient_ornt",
    "Reorient",
    "CanonicalSlices",
    "DISPLAY_AXCODES",
    "PROJECTION_MODALITIES",
    "slice_plane",
]


def reorient_ornt(affine: np.ndarray, axcodes: Sequence[str]) -> np.ndarray:
    """The nibabel orientation transform taking an array with ``affine`` to ``axcodes``.

    Examples
    --------
    >>> import numpy as np
    >>> reorient_ornt(np.diag([1.0, -1, 1, 1]), ("R", "A", "S")).tolist()
    [[0.0, 1.0], [1.0, -1.0], [2.0, 1.0]]
    """
    import nibabel.orientations as nio

    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(axcodes)))


class Reorient(Transform):
    """Flip/permute axes to a canonical orientation, exactly (no interpolation).

    ``axcodes`` names where array axes ``(z, y, x)`` point; the default ``("S", "A", "R")`` is
    nibabel's RAS canonical in medload's axis order (the voxels of
    ``nibabel.as_closest_canonical(vol.to_nifti())``): axis 0, the slice axis of the result,
    runs inferior to superior. ``keep_slice_axis=True`` keeps the acquisition's slice axis as
    axis 0 (a sagittal series stays sagittal, pointing R; coronal points A) and orders the
    in-plane axes as ``axcodes`` does; the codes it resolved go to history.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.zeros((2, 3, 4)), np.diag([-1.0, 1, 1, 1]))   # axis 0 points left
    >>> Reorient()(vol).orientation
    ('S', 'A', 'R')
    >>> Reorient(keep_slice_axis=True)(vol).orientation   # slices stay sagittal
    ('R', 'S', 'A')
    """

    name = "reorient"
    is_spatial = True

    def __init__(self, axcodes: Sequence[str] = ("S", "A", "R"), keep_slice_axis: bool = False) -> None:
        codes = [str(c).upper() for c in axcodes]
        world_axis = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
        if len(codes) != 3 or sorted(world_axis.get(c, -1) for c in codes) != [0, 1, 2]:
            raise TransformError(f"{self.name}: axcodes must name each of L/R, A/P, S/I once, found {axcodes!r}")
        self.axcodes = codes
        self.keep_slice_axis = bool(keep_slice_axis)

    def params(self) -> dict[str, Any]:
        return {"axcodes": self.axcodes, "keep_slice_axis": self.keep_slice_axis}

    def _codes(self, volume: Volume) -> list[str]:
        if not self.keep_slice_axis:
            return self.axcodes
        import nibabel.orientations as nio

        world_axis = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
        slice_world = int(nio.io_orientation(volume.affine)[0, 0])
        first = "RAS"[slice_world]
        return [first] + [c for c in self.axcodes if world_axis[c] != slice_world]

    def plan(self, volume: Volume) -> Reorient:
        return Reorient(self._codes(volume))

    def _do(self, volume: Volume, codes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        import nibabel.orientations as nio

        ornt = reorient_ornt(volume.affine, codes)
        spatial = volume.spatial_shape
        array = volume.array
        if array.ndim == 4:
            out = np.stack([nio.apply_orientation(f, ornt) for f in array])
        else:
            out = nio.apply_orientation(array, ornt)
        affine = volume.affine @ nio.inv_ornt_aff(ornt, spatial)
        return np.ascontiguousarray(out), affine

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        codes = self._codes(volume)
        out, affine = self._do(volume, codes)
        return out, {"axcodes": codes, "keep_slice_axis": False}, {"affine": affine}

    def apply_mask(self, mask: Volume) -> Volume:
        check_mask_grid(mask, self.name)
        codes = self._codes(mask)
        out, affine = self._do(mask, codes)
        return mask.with_array(out, affine=affine, step=(self.name, {"axcodes": codes, "keep_slice_axis": False}))


#: Where the axes ``(slice, row, column)`` of stored slices point, per plane: the radiological
#: display convention (axial: anterior at the top, the patient's right on the image's left;
#: coronal and sagittal: superior at the top, the patient's right, resp. anterior, on the
#: left), with slices running along the cross product of the row and column directions, as
#: scanners write them (DICOM's slice normal). Radiographs and 2D image files keep their own.
DISPLAY_AXCODES: dict[str, tuple[str, str, str]] = {
    "axial": ("S", "P", "L"),
    "coronal": ("P", "I", "L"),
    "sagittal": ("R", "I", "P"),
}
#: Projection images (one plane, no slice geometry to follow): stored as acquired.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "XA", "RF", "OT", "SC", "US", "ES", "XC", "IO", "PX"})


def slice_plane(affine: np.ndarray) -> str:
    """``"axial"``, ``"coronal"`` or ``"sagittal"``: the plane of slices stacked along array axis 0.

    Examples
    --------
    >>> slice_plane(np.diag([1.0, 1, 1, 1]))   # axis 0 points R: slices are sagittal
    'sagittal'
    >>> slice_plane(np.array([[0, 0, -1, 0], [0, -1, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]]))
    'axial'
    """
    import nibabel.orientations as nio

    world = int(nio.io_orientation(np.asarray(affine, np.float64))[0, 0])
    return ("sagittal", "coronal", "axial")[world]


class CanonicalSlices(Transform):
    """Store slices in one orientation per plane, the radiological display convention.

    The same scan read from DICOM and from its NIfTI conversion then gives the same stored
    slices (rows, columns and slice order), exactly: axes are only flipped and permuted
    (``nibabel.orientations``), never interpolated, and the affine follows, so every voxel
    keeps its world position. The plane is that of the volume's slice axis (axis 0, as read);
    :data:`DISPLAY_AXCODES` says where each axis points. Volumes of projection modalities
    (CR, DX, MG, ...) and 2D image files are left as they are. History records the plane and
    the concrete ``axcodes``, so a replay repeats the same flips on the same source.

    Parameters
    ----------
    axcodes : three of L/R, A/P, S/I, optional
        Concrete codes to apply (what history records); ``None`` derives them from the plane.
    plane : str, optional
        Recorded with ``axcodes``; informational.

    Examples
    --------
    >>> vol = Volume(np.zeros((2, 3, 4)), np.diag([1.0, 1, 1, 1])[[2, 1, 0, 3]])   # axes S, A, R
    >>> out = CanonicalSlices()(vol)
    >>> out.orientation, out.history[-1]
    (('S', 'P', 'L'), ('canonical_slices', {'axcodes': ['S', 'P', 'L'], 'plane': 'axial'}))
    """

    name = "canonical_slices"
    is_spatial = True

    def __init__(self, axcodes: Sequence[str] | None = None, plane: str | None = None) -> None:
        self.axcodes = None if axcodes is None else Reorient(axcodes).axcodes
        if plane is not None and plane not in (*DISPLAY_AXCODES, "as acquired"):
            raise TransformError(f"{self.name}: plane must be one of {[*DISPLAY_AXCODES, 'as acquired']}, found {plane!r}")
        self.plane = plane

    def params(self) -> dict[str, Any]:
        return {"axcodes": self.axcodes, "plane": self.plane}

    def plan(self, volume: Volume) -> CanonicalSlices:
        if self.axcodes is not None or self.plane == "as acquired":
            return self
        if volume.modality in PROJECTION_MODALITIES or volume.meta.get("source") == "image":
            return CanonicalSlices(None, "as acquired")
        plane = slice_plane(volume.affine)
        return CanonicalSlices(DISPLAY_AXCODES[plane], plane)

    def apply(self, volume: Volume) -> Applied:
        planned = self.plan(volume)
        if planned.axcodes is None:  # a projection image: unchanged, and said so
            return volume.array, planned.params(), {}
        out = Reorient(planned.axcodes)(volume)
        return out.array, planned.params(), {"affine": out.affine}

    def apply_mask(self, mask: Volume) -> Volume:
        check_mask_grid(mask, self.name)
        planned = self.plan(mask)
        if planned.axcodes is None:
            return mask.with_array(mask.array, step=(self.name, planned.params()))
        out = Reorient(planned.axcodes)(mask)
        return mask.with_array(out.array, affine=out.affine, step=(self.name, planned.params()))
