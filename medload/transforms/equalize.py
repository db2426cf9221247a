"""Histogram equalization: global (``skimage.exposure.equalize_hist``) and CLAHE
(``skimage.exposure.equalize_adapthist``), per slice or in 3D, with an optional mask."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Applied, Transform, check_finite, check_range, map_frames, map_slices
from medload.transforms.masks import voxel_mask
from medload.volume import Volume

__all__ = ["rescale_unit", "equalize_hist", "clahe", "HistogramEqualize", "CLAHE"]


def rescale_unit(array: np.ndarray, *, in_range: Sequence[float]) -> np.ndarray:
    """Map ``in_range`` linearly to ``[0, 1]`` and clip (float64, what skimage expects).

    Examples
    --------
    >>> import numpy as np
    >>> rescale_unit(np.array([-10.0, 0.0, 5.0, 20.0]), in_range=(0, 10)).tolist()
    [0.0, 0.0, 0.5, 1.0]
    """
    lo, hi = float(in_range[0]), float(in_range[1])
    if not hi > lo:
        return np.zeros(np.shape(array), np.float64)
    return np.clip((np.asarray(array, np.float64) - lo) / (hi - lo), 0.0, 1.0)


def equalize_hist(array: np.ndarray, *, nbins: int = 256, mask: np.ndarray | None = None) -> np.ndarray:
    """Global histogram equalization to ``[0, 1]`` (float32), histogram taken inside ``mask``.

    Wraps ``skimage.exposure.equalize_hist``; a constant array gives zeros.

    Examples
    --------
    >>> import numpy as np
    >>> out = equalize_hist(np.arange(100.0).reshape(10, 10) ** 2)
    >>> round(float(np.median(out)), 1)
    0.5
    """
    from skimage.exposure import equalize_hist as sk_equalize_hist

    array = np.asarray(array)
    if array.max() == array.min():
        return np.zeros(array.shape, np.float32)
    return sk_equalize_hist(array, nbins=int(nbins), mask=mask).astype(np.float32)


def clahe(
    unit: np.ndarray, *, kernel_size: Sequence[int] | None = None, clip_limit: float = 0.01, nbins: int = 256
) -> np.ndarray:
    """CLAHE of a 2D or 3D array already in ``[0, 1]`` (``skimage.exposure.equalize_adapthist``).

    A constant array is returned as is (float32): CLAHE of a flat image has no contrast to
    raise, and skimage's internal rescale would divide by zero.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> out = clahe(rng.random((32, 32)) * 0.2 + 0.4, kernel_size=(8, 8))
    >>> bool(out.std() > 0.2 * 0.29)
    True
    """
    from skimage.exposure import equalize_adapthist

    unit = np.asarray(unit)
    if unit.max() == unit.min():
        return unit.astype(np.float32)
    out = equalize_adapthist(
        unit,
        kernel_size=None if kernel_size is None else [int(k) for k in kernel_size],
        clip_limit=float(clip_limit),
        nbins=int(nbins),
    )
    return out.astype(np.float32)


class HistogramEqualize(Transform):
    """Global histogram equalization to ``[0, 1]``, over the volume or per slice, optional mask.

    ``mask``: ``"all"``, ``"foreground"`` (Otsu) or ``"nonzero"``: the histogram is taken inside
    it; voxels outside are mapped by the same function.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> vol = Volume(np.arange(64.0).reshape(1, 8, 8) ** 2, np.eye(4))
    >>> out = HistogramEqualize()(vol)
    >>> round(float(out.array.mean()), 1), out.meta["intensity"]
    (0.5, 'histogram equalized to [0,1]')
    """

    name = "equalize_hist"
    slice_wise = True

    def __init__(self, nbins: int = 256, mask: str = "all", per_slice: bool = False, *, workers: int | None = 1) -> None:
        self.nbins = int(check_range("nbins", nbins, low=2, high=65536, transform=self.name))
        if mask not in ("all", "foreground", "nonzero"):
            raise TransformError(f"{self.name}: mask must be 'all', 'foreground' or 'nonzero', found {mask!r}")
        self.mask = mask
        self.per_slice = bool(per_slice)
        self.workers = workers

    def params(self) -> dict[str, Any]:
        return {"nbins": self.nbins, "mask": self.mask, "per_slice": self.per_slice}

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)

        def one(a: np.ndarray) -> np.ndarray:
            m = None if self.mask == "all" else voxel_mask(a, self.mask)
            return equalize_hist(a, nbins=self.nbins, mask=m)

        if self.per_slice:
            out = map_slices(one, volume.array, workers=self.workers)
        else:
            out = map_frames(one, volume.array)
        meta = volume.meta
        meta["intensity"] = "histogram equalized to [0,1]"
        return out, self.params(), {"meta": meta}


class CLAHE(Transform):
    """Contrast-limited adaptive histogram equalization (scikit-image), per slice or 3D.

    The volume is first mapped to ``[0, 1]`` with ``in_range`` (default: its own min and max,
    recorded as numbers), then each slice (or the volume) goes through
    ``skimage.exposure.equalize_adapthist``. ``kernel_mm`` converts a kernel size in millimetres
    to voxels with the volume's spacing; the voxel sizes are what history records. With a
    ``mask``, voxels outside it keep their ``[0, 1]``-mapped value. A constant slice stays
    constant. Output float32 in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> rng = np.random.default_rng(0)
    >>> vol = Volume(rng.normal(0, 10, (2, 32, 32)), np.diag([2.0, 0.5, 0.5, 1]), modality="CT")
    >>> out = CLAHE(kernel_mm=4)(vol)
    >>> out.history[-1][1]["kernel_size"]
    [8, 8]
    """

    name = "clahe"
    slice_wise = True

    def __init__(
        self,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        kernel_mm: float | Sequence[float] | None = None,
        nbins: int = 256,
        per_slice: bool = True,
        in_range: Sequence[float] | None = None,
        mask: str = "all",
        *,
        workers: int | None = 1,
    ) -> None:
        self.clip_limit = check_range("clip_limit", clip_limit, low=0, high=1, transform=self.name)
        self.nbins = int(check_range("nbins", nbins, low=2, high=65536, transform=self.name))
        self.per_slice = bool(per_slice)
        ndim = 2 if self.per_slice else 3
        if kernel_size is not None and kernel_mm is not None:
            raise TransformError(
                f"{self.name}: give kernel_size (voxels) or kernel_mm, not both; found "
                f"kernel_size={kernel_size}, kernel_mm={kernel_mm}"
            )
        self.kernel_size = self._sizes("kernel_size", kernel_size, ndim)
        self.kernel_mm = self._sizes("kernel_mm", kernel_mm, ndim)
        if in_range is not None:
            lo = check_range("in_range[0]", in_range[0], transform=self.name)
            hi = check_range("in_range[1]", in_range[1], low=lo, low_open=True, transform=self.name)
            in_range = [lo, hi]
        self.in_range = in_range
        if mask not in ("all", "foreground", "nonzero"):
            raise TransformError(f"{self.name}: mask must be 'all', 'foreground' or 'nonzero', found {mask!r}")
        self.mask = mask
        self.workers = workers

    def _sizes(self, label: str, value: Any, ndim: int) -> list[float] | None:
        if value is None:
            return None
        values = [value] * ndim if np.isscalar(value) else list(value)
        if len(values) != ndim:
            raise TransformError(f"{self.name}: {label} needs {ndim} values for per_slice={self.per_slice}, found {value!r}")
        return [check_range(label, v, low=0, low_open=True, transform=self.name) for v in values]

    def params(self) -> dict[str, Any]:
        return {
            "clip_limit": self.clip_limit,
            "kernel_size": self.kernel_size,
            "kernel_mm": self.kernel_mm,
            "nbins": self.nbins,
            "per_slice": self.per_slice,
            "in_range": self.in_range,
            "mask": self.mask,
        }

    def apply(self, volume: Volume) -> Applied:
        array = volume.array
        check_finite(array, self.name)
        ndim = 2 if self.per_slice else 3
        kernel: Sequence[float] | None = self.kernel_size
        if kernel is None and self.kernel_mm is not None:
            spacing = volume.spacing[-ndim:]
            kernel = [max(int(round(mm / s)), 1) for mm, s in zip(self.kernel_mm, spacing)]
        kernel_px = None if kernel is None else [int(k) for k in kernel]
        in_range = self.in_range or [float(array.min()), float(array.max())]
        unit = rescale_unit(array, in_range=in_range)

        one = partial(clahe, kernel_size=kernel_px, clip_limit=self.clip_limit, nbins=self.nbins)
        out = map_slices(one, unit, workers=self.workers) if self.per_slice else map_frames(one, unit)
        if self.mask != "all":
            inside = voxel_mask(array, self.mask)
            out = np.where(inside, out, unit.astype(np.float32))
        concrete = {**self.params(), "kernel_size": kernel_px, "kernel_mm": None, "in_range": in_range}
        meta = volume.meta
        meta["intensity"] = f"CLAHE of [{in_range[0]:g}, {in_range[1]:g}] to [0,1]"
        return out, concrete, {"meta": meta}
