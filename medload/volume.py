"""``Volume``: the one object that flows from the readers to the store.

A Volume is a numpy array, a 4x4 affine and a little JSON-able metadata. Axis 0 of the
array is the slice axis (the acquisition's stacking direction), then rows, then columns;
a 4D source has a leading frames axis ``(T, Z, Y, X)``. The affine maps the spatial array
indices ``(z, y, x)``, in that order, to RAS+ millimetres, the nibabel convention. Spacing,
origin and orientation are derived from the affine, never stored twice.

Volumes are never changed in place: :meth:`Volume.with_array` returns a changed copy and
transforms append ``(name, parameters)`` to :attr:`Volume.history`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import ConfigError, UnsupportedError
from medload.geometry import axis_codes, spacing_from_affine, unit_axes_volume
from medload.problems import Problem, problems_json, read_problems

if TYPE_CHECKING:  # imported where used: `import medload` stays light
    import nibabel
    from nibabel.spatialimages import SpatialImage

__all__ = ["Volume", "MODALITIES"]

#: Modalities medload treats specially; any other DICOM Modality code is kept as written.
MODALITIES = ("CT", "MR", "CR", "DX", "MG", "PT", "US", "unknown")

HistoryEntry = tuple[str, dict[str, Any]]


def _problem_json(value: Any) -> Any:
    if isinstance(value, Problem):
        return value.to_json()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _check_json(meta: Mapping[str, Any]) -> dict[str, Any]:
    try:
        plain = json.loads(json.dumps(dict(meta), allow_nan=False, default=_problem_json))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"Volume meta must be JSON-able (str, numbers, lists, dicts); found a value that "
            f"is not ({exc}). Convert it (e.g. float(x), str(uid)) before building the Volume."
        ) from exc
    if "problems" in plain:
        # Always records: a plain sentence (an older store, a user's note) becomes "unclassified".
        plain["problems"] = problems_json(plain["problems"])
    return plain


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])


def _singular(affine: np.ndarray) -> bool:
    """Zero spacing or (nearly) repeated axes, by :func:`~medload.geometry.unit_axes_volume`.

    Scale-free, so a grid of micrometre voxels, which the readers accept
    (:func:`medload.io.validate.check_grid`), is not singular.

    Examples
    --------
    >>> _singular(np.diag([1e-6, 1e-6, 1e-6, 1.0])), _singular(np.diag([1.0, 0.0, 1.0, 1.0]))
    (False, True)
    >>> _singular(np.array([[1.0, 1.0, 0, 0], [0, 1e-12, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]]))  # two axes along x
    True
    """
    return unit_axes_volume(affine) < 1e-9


class Volume:
    """An image array with its world geometry, modality, metadata and history.

    Parameters
    ----------
    array : numpy.ndarray
        ``(Z, Y, X)`` or ``(T, Z, Y, X)``. A 2D radiograph is ``(1, Y, X)``.
    affine : array_like, shape (4, 4)
        Maps spatial indices ``(z, y, x)`` to RAS+ millimetres.
    modality : str
        ``"CT"``, ``"MR"``, ``"CR"``, ``"DX"``, ``"MG"``, ``"PT"``, ``"US"`` or ``"unknown"``.
    meta : mapping, optional
        JSON-able metadata: series/study keys (pseudonyms), description, acquisition
        parameters. No identifying fields. ``meta["problems"]`` is a list of
        :class:`~medload.problems.Problem` (held as their JSON objects; see :attr:`problems`).
    history : sequence of (str, dict), optional
        Transforms applied so far, with their concrete parameters.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.zeros((3, 4, 5), np.float32), np.diag([2.0, 0.5, 0.5, 1.0]), modality="CT")
    >>> vol.spacing
    (2.0, 0.5, 0.5)
    >>> vol.shape
    (3, 4, 5)
    >>> vol.with_array(vol.array + 1).array.max()
    np.float32(1.0)
    """

    __slots__ = ("_array", "_affine", "_modality", "_meta", "_history")

    def __init__(
        self,
        array: np.ndarray,
        affine: np.ndarray,
        *,
        modality: str = "unknown",
        meta: Mapping[str, Any] | None = None,
        history: tuple[HistoryEntry, ...] | list[HistoryEntry] = (),
    ) -> None:
        if not isinstance(array, np.ndarray):
            raise ConfigError(
                f"Volume array must be a numpy.ndarray, found {type(array).__name__}; "
                "use numpy.asarray(x), medload.load(path) for a file, or "
                "Volume.from_nifti(image) for a nibabel image."
            )
        if array.ndim not in (3, 4):
            raise ConfigError(
                f"Volume array must be 3D (Z, Y, X) or 4D (T, Z, Y, X), found shape {array.shape}; "
                "a single 2D image is array[None] with shape (1, Y, X)."
            )
        affine = np.array(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ConfigError(f"Volume affine must be 4x4, found shape {affine.shape}.")
        # np.allclose(affine[3], [0, 0, 0, 1]) spelled out (its defaults): allclose costs 0.15 ms, a
        # Volume is made per pipeline step, and a folder of small images makes five per image.
        if not np.all(np.isfinite(affine)) or not np.all(np.abs(affine[3] - _LAST_ROW) <= 1e-8 + 1e-5 * _LAST_ROW):
            raise ConfigError(f"Volume affine must be finite with last row [0, 0, 0, 1], found\n{affine}")
        if _singular(affine):
            raise ConfigError(f"Volume affine is singular (zero spacing or repeated axes):\n{affine}")
        affine.setflags(write=False)
        self._array = array
        self._affine = affine
        self._modality = str(modality) if modality else "unknown"
        self._meta = _check_json(meta or {})
        self._history = tuple((str(name), dict(params)) for name, params in history)

    # --- the data -----------------------------------------------------------------------
    @property
    def array(self) -> np.ndarray:
        """The voxels, ``(Z, Y, X)`` or ``(T, Z, Y, X)``."""
        return self._array

    @property
    def affine(self) -> np.ndarray:
        """4x4 float64, spatial indices ``(z, y, x)`` to RAS+ millimetres (read-only)."""
        return self._affine

    @property
    def modality(self) -> str:
        """DICOM-style modality code, or ``"unknown"``."""
        return self._modality

    @property
    def meta(self) -> dict[str, Any]:
        """JSON-able metadata (a copy: changing it does not change the Volume)."""
        return json.loads(json.dumps(self._meta))

    @property
    def problems(self) -> tuple[Problem, ...]:
        """What the reader found and did (``meta["problems"]``) as typed records; decide by ``kind``.

        Examples
        --------
        >>> import numpy as np
        >>> vol = Volume(np.zeros((1, 2, 2)), np.eye(4), meta={"problems": [Problem("gantry_tilt", "tilted")]})
        >>> vol.problems[0].kind.value, vol.meta["problems"]
        ('gantry_tilt', [{'kind': 'gantry_tilt', 'message': 'tilted'}])
        """
        return read_problems(self._meta.get("problems"))

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """``(transform name, concrete parameters)`` of every step applied, in order."""
        return self._history

    # --- derived geometry ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`array`."""
        return tuple(self._array.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``, without a frames axis."""
        z, y, x = self._array.shape[-3:]  # the array is 3D or 4D (checked in __init__)
        return z, y, x

    @property
    def n_frames(self) -> int:
        """Number of frames (1 for a 3D volume)."""
        return self._array.shape[0] if self._array.ndim == 4 else 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(z, y, x)``, from the affine's column norms."""
        z, y, x = (float(v) for v in np.round(spacing_from_affine(self._affine), 6))
        return z, y, x

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS+ position in mm of voxel ``(0, 0, 0)``."""
        r, a, s = (float(v) for v in self._affine[:3, 3])
        return r, a, s

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Axis codes of ``(z, y, x)``, e.g. ``('S', 'P', 'R')``, as ``nibabel.aff2axcodes`` gives them."""
        z, y, x = axis_codes(self._affine)
        return z, y, x

    # --- copies -------------------------------------------------------------------------
    def with_array(
        self,
        array: np.ndarray,
        *,
        affine: np.ndarray | None = None,
        modality: str | None = None,
        meta: Mapping[str, Any] | None = None,
        step: HistoryEntry | None = None,
    ) -> Volume:
        """Return a new Volume with ``array`` (and optionally a new affine, meta, one more step).

        Examples
        --------
        >>> import numpy as np
        >>> vol = Volume(np.ones((1, 2, 2)), np.eye(4))
        >>> out = vol.with_array(vol.array * 2, step=("scale", {"factor": 2}))
        >>> out.history
        (('scale', {'factor': 2}),)
        >>> vol.history
        ()
        """
        history = self._history + ((step[0], dict(step[1])),) if step is not None else self._history
        if affine is None and meta is None and isinstance(array, np.ndarray) and array.ndim in (3, 4):
            # Only the array is new: the affine and meta were checked when this Volume was made
            # (re-checking the meta is a JSON round trip, per step, per image of a folder).
            out = Volume.__new__(Volume)
            out._array, out._affine, out._meta = array, self._affine, self._meta
            out._modality = self._modality if modality is None else (str(modality) or "unknown")
            out._history = tuple((str(name), dict(params)) for name, params in history)
            return out
        return Volume(
            array,
            self._affine if affine is None else affine,
            modality=self._modality if modality is None else modality,
            meta=self._meta if meta is None else meta,
            history=history,
        )

    # --- converters ---------------------------------------------------------------------
    def to_nifti(self) -> nibabel.Nifti1Image:
        """Return a ``nibabel.Nifti1Image`` holding the same voxels at the same world positions.

        NIfTI's convention is ``(i, j, k[, t])`` = (column, row, slice, frame), the layout
        dcm2niix writes, so the spatial axes are reversed and frames go last; the affine's
        columns are permuted to match, so every voxel keeps its world position.

        Examples
        --------
        >>> import numpy as np
        >>> vol = Volume(np.zeros((3, 4, 5), np.int16), np.diag([2.0, 1.0, 1.0, 1.0]))
        >>> vol.to_nifti().shape
        (5, 4, 3)
        >>> Volume.from_nifti(vol.to_nifti()).shape
        (3, 4, 5)
        """
        import nibabel as nib

        data = self._array.transpose(*range(self._array.ndim)[::-1])  # (x, y, z[, t])
        affine = self._affine[:, [2, 1, 0, 3]]
        image = nib.Nifti1Image(np.asanyarray(data), affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        image.header.set_xyzt_units("mm", "sec")
        return image

    @classmethod
    def from_nifti(cls, image: SpatialImage, *, modality: str = "unknown", meta: Mapping[str, Any] | None = None) -> Volume:
        """Build a Volume from a nibabel image: scaling applied, axes ``(i, j, k, t)`` -> ``(t, k, j, i)``.

        NIfTI's third axis ``k`` is the slice axis; it becomes medload's axis 0, ``j`` the rows
        and ``i`` the columns, and the affine's columns are permuted to match.

        Examples
        --------
        >>> import numpy as np, nibabel as nib
        >>> vol = Volume.from_nifti(nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.float32), np.eye(4)))
        >>> vol.shape
        (5, 4, 3, 2)
        """
        data = np.asanyarray(image.dataobj)
        if data.ndim == 2:
            data = data[..., None]
        if data.ndim == 5 and data.shape[3] == 1:
            data = data[:, :, :, 0]
        if data.ndim > 4:
            raise UnsupportedError(f"NIfTI image with shape {data.shape} has more than 4 dimensions; medload reads 3D or 4D.")
        data = data.transpose(*range(data.ndim)[::-1])  # (t, k, j, i)
        affine = np.asarray(image.affine, dtype=np.float64)[:, [2, 1, 0, 3]]
        return cls(np.ascontiguousarray(data), affine, modality=modality, meta=meta)

    def __repr__(self) -> str:
        spacing = "x".join(f"{s:g}" for s in self.spacing)
        return (
            f"Volume({self._modality}, shape={self.shape}, dtype={self._array.dtype}, "
            f"spacing={spacing} mm, orientation={''.join(self.orientation)}, "
            f"steps={len(self._history)})"
        )

    def __reduce__(self) -> tuple[Callable[..., Volume], tuple[Any, ...]]:
        return (
            _rebuild,
            (self._array, np.array(self._affine), self._modality, self._meta, self._history),
        )


def _rebuild(
    array: np.ndarray, affine: np.ndarray, modality: str, meta: Mapping[str, Any], history: tuple[HistoryEntry, ...]
) -> Volume:
    return Volume(array, affine, modality=modality, meta=meta, history=history)
