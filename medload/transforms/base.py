"""The :class:`Transform` base class, its name registry, and slice-wise execution.

A transform wraps one pure array function (in the family modules) for Volumes. Calling it
returns a new Volume whose history ends with ``(name, concrete parameters)``: parameters the
transform worked out from the image (an estimated noise level, a crop box, a kernel size
converted from millimetres) are written as numbers, so that ``TransformClass(**params)``
applied to the same input reproduces the output bit for bit (torchio's idea, without seeds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeAlias

import numpy as np

from medload.cores import resolve_workers
from medload.errors import TransformError
from medload.volume import Volume

__all__ = ["Applied", "Transform", "REGISTRY", "get_transform", "map_slices", "check_finite"]

#: What :meth:`Transform.apply` returns: the new array, the concrete parameters (written to
#: history) and the changes to the Volume (``affine``, ``meta``, ``modality``; may be empty).
Applied: TypeAlias = tuple[np.ndarray, dict[str, Any], dict[str, Any]]

#: Transform name -> class; filled by subclass definition, used by ``Pipeline.from_config``.
REGISTRY: dict[str, type[Transform]] = {}


def get_transform(name: str) -> type[Transform]:
    """Return the Transform class registered under ``name``.

    Examples
    --------
    >>> import medload.transforms
    >>> get_transform("window").__name__
    'Window'
    """
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise TransformError(
            f"unknown transform name {name!r}; expected one of: {known}. Was the config written by a newer medload?"
        ) from None


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Return ``params`` as plain JSON types (tuples become lists, numpy scalars numbers).

    Examples
    --------
    >>> import numpy as np
    >>> json_params({"size": (256, 256), "sigma": np.float32(0.5)})
    {'size': [256, 256], 'sigma': 0.5}
    """

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, np.ndarray)):
            return [convert(v) for v in value]
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        return value

    plain = convert(params)
    try:
        return json.loads(json.dumps(plain, allow_nan=False))
    except (TypeError, ValueError) as exc:  # a bug in a transform, not a user error
        raise TransformError(f"transform parameters are not JSON-able: {plain!r} ({exc})") from exc


def map_slices(func: Callable[[np.ndarray], np.ndarray], array: np.ndarray, *, workers: int | None = 1) -> np.ndarray:
    """Apply ``func`` to every 2D slice ``array[..., i, :, :]`` and stack the results.

    Threads, not processes: the libraries we wrap (scikit-image's Cython denoisers, SimpleITK,
    scipy.ndimage) release the GIL in their inner loops, so threads share the array without
    copies. A process pool was measured for CLAHE (numpy-level Python that holds the GIL much
    of the time) and lost: starting forkserver workers and shipping the slices cost more than
    CLAHE itself on a 128-slice volume (bench/transforms.py). ``workers=1`` starts no pool.

    Examples
    --------
    >>> import numpy as np
    >>> map_slices(lambda s: s * 2, np.ones((3, 2, 2)), workers=2).sum()
    np.float64(24.0)
    """
    flat = array.reshape((-1,) + array.shape[-2:])
    first = np.asarray(func(flat[0]))
    out = np.empty((flat.shape[0],) + first.shape, dtype=first.dtype)
    out[0] = first

    def run(i: int) -> None:
        out[i] = func(flat[i])

    n_workers = min(resolve_workers(workers), max(flat.shape[0] - 1, 1))  # 0: in this thread
    if n_workers <= 1:
        for i in range(1, flat.shape[0]):
            run(i)
    else:
        with ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(run, range(1, flat.shape[0])))
    return out.reshape(array.shape[:-2] + first.shape)


def map_frames(func: Callable[[np.ndarray], np.ndarray], array: np.ndarray) -> np.ndarray:
    """Apply a 3D function to a ``(Z, Y, X)`` array, or to each frame of ``(T, Z, Y, X)``.

    Examples
    --------
    >>> import numpy as np
    >>> map_frames(lambda a: a - a.mean(), np.arange(16.0).reshape(2, 2, 2, 2))[1].max()
    np.float64(3.5)
    """
    if array.ndim == 3:
        return func(array)
    return np.stack([func(frame) for frame in array])


def check_finite(array: np.ndarray, transform: str) -> None:
    """Raise a :class:`TransformError` if ``array`` holds NaN or infinite voxels.

    One reduction (the sum) instead of ``isfinite().all()``: NaN and inf propagate through it
    and it allocates no boolean copy of the volume, so cheap transforms stay cheap
    (bench/transforms.py). Only a non-finite sum, which a float32 overflow can also cause,
    pays for the exact check.

    Examples
    --------
    >>> import numpy as np
    >>> check_finite(np.zeros((1, 2, 2)), "window")
    """
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum()):
            return
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise TransformError(
        f"{transform}: expected finite voxel values, found {int(bad.sum())} NaN/inf voxels "
        f"(first at index {first}); put FillNonFinite() first in the pipeline to replace them."
    )


def check_range(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False, transform: str = ""
) -> float:
    """Check a number lies in ``[low, high]`` (``(low, ...`` if ``low_open``); return it as float.

    Examples
    --------
    >>> check_range("clip_limit", 0.01, low=0, high=1)
    0.01
    """
    where = f"{transform}: " if transform else ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TransformError(f"{where}{name} must be a number, found {value!r}") from None
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and number > high
    if not np.isfinite(number) or bad_low or bad_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        bracket = "(" if low_open else "["
        raise TransformError(f"{where}{name} must be in {bracket}{lo}, {hi}], found {value!r}")
    return number


def check_mask_grid(mask: Volume, name: str) -> None:
    """Raise a :class:`TransformError` unless a mask a spatial transform moves holds integer labels or booleans.

    Examples
    --------
    >>> import numpy as np
    >>> check_mask_grid(Volume(np.zeros((1, 2, 2), np.uint8), np.eye(4)), "resample")
    """
    if not np.issubdtype(mask.array.dtype, np.integer) and mask.array.dtype != bool:
        raise TransformError(f"{name}: a mask must hold integer labels or booleans, found dtype {mask.array.dtype}")


class Transform:
    """Base of every medload transform.

    Subclasses set ``name`` (registry key, written to history), ``is_spatial`` and implement
    :meth:`apply` (array work + the concrete parameters). Spatial transforms also implement
    :meth:`plan` and :meth:`apply_mask` so a label mask follows the image exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.transforms import HUClip
    >>> vol = Volume(np.array([[[-3000, 0, 5000]]], np.int16), np.eye(4), modality="CT")
    >>> HUClip(low=-1024, high=3071)(vol).array.tolist()
    [[[-1024.0, 0.0, 3071.0]]]
    """

    name: ClassVar[str] = ""
    is_spatial: ClassVar[bool] = False
    #: whether ``workers=`` spreads slices over threads
    slice_wise: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
                raise TypeError(f"transform name {cls.name!r} registered twice")
            REGISTRY[cls.name] = cls

    # --- what subclasses provide -----------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The configuration (JSON-able); ``type(self)(**t.params())`` rebuilds the transform."""
        raise NotImplementedError

    def apply(self, volume: Volume) -> Applied:
        """Return ``(array, concrete params, changes)``; changes: optional affine/meta/modality."""
        raise NotImplementedError

    # --- calling -----------------------------------------------------------------------
    def __call__(self, volume: Volume) -> Volume:
        if not isinstance(volume, Volume):
            raise TransformError(
                f"{self.name}: expected a medload.Volume, found {type(volume).__name__}; "
                "wrap an array with medload.Volume(array, affine)."
            )
        array, concrete, changes = self.apply(volume)
        return volume.with_array(array, step=(self.name, json_params(concrete)), **changes)

    def apply_pair(self, volume: Volume, mask: Volume | None) -> tuple[Volume, Volume | None]:
        """Transform an image and, for spatial transforms, its mask the same way.

        Examples
        --------
        >>> import numpy as np
        >>> from medload.transforms import ResizeSlices
        >>> image = Volume(np.ones((1, 4, 4)), np.eye(4))
        >>> mask = Volume(np.ones((1, 4, 4), np.uint8), np.eye(4))
        >>> out, out_mask = ResizeSlices(6).apply_pair(image, mask)
        >>> int(out_mask.array.sum()), out_mask.origin
        (16, (0.0, -1.0, -1.0))
        """
        if mask is None or not self.is_spatial:
            return self(volume), mask
        planned = self.plan(volume)
        return planned(volume), planned.apply_mask(mask)

    def plan(self, volume: Volume) -> Transform:
        """Spatial transforms: a copy whose parameters are all concrete for ``volume``."""
        return self

    def apply_mask(self, mask: Volume) -> Volume:
        """Spatial transforms: move a label mask the same way, nearest neighbour."""
        raise NotImplementedError(f"{self.name} is not spatial; masks do not follow it")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Transform)
            and type(other) is type(self)
            and json_params(self.params()) == json_params(other.params())
        )

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(json_params(self.params()), sort_keys=True)))

    def describe(self) -> str:
        """One line: the name and parameters."""
        args = ", ".join(f"{k}={v}" for k, v in self.params().items() if v is not None)
        return f"{self.name}({args})"
