"""Spatial transforms: resample to a spacing, crop to foreground, fixed slice size.

Every one returns the new grid's affine computed exactly from the old one (``A_new = A_old @ M``
with ``M`` mapping new indices to old), so a voxel keeps its world position; label masks follow
with nearest-neighbour interpolation and keep their dtype. Reorienting (:class:`Reorient`,
:class:`CanonicalSlices`) lives in :mod:`~medload.transforms.orientation`; its names are
re-exported here so ``medload.transforms.spatial`` keeps working as an import path.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Applied, Transform, check_finite, check_mask_grid, check_range, map_frames, map_slices
from medload.transforms.orientation import (
    DISPLAY_AXCODES,
    PROJECTION_MODALITIES,
    CanonicalSlices,
    Reorient,
    reorient_ornt,
    slice_plane,
)
from medload.volume import Volume

__all__ = [
    "resample",
    "reorient_ornt",
    "foreground_box",
    "pad_crop_plan",
    "resize_slices",
    "Resample",
    "Reorient",
    "CanonicalSlices",
    "DISPLAY_AXCODES",
    "PROJECTION_MODALITIES",
    "slice_plane",
    "CropForeground",
    "ResizeSlices",
]

_INTERPOLATORS = {"nearest": "sitkNearestNeighbor", "linear": "sitkLinear", "bspline": "sitkBSpline"}


def resample(array: np.ndarray, *, zoom: Sequence[float], shape: Sequence[int], interpolation: str = "linear") -> np.ndarray:
    """Resample a 3D array on the grid whose index ``j`` sits at old index ``j * zoom`` (SimpleITK).

    ``zoom`` is new spacing / old spacing per axis; sample 0 stays on voxel 0, so world
    coordinates are kept by scaling the affine's columns by ``zoom``. Nearest keeps dtype; linear
    and B-spline give float32.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(4.0).reshape(1, 1, 4) * np.ones((2, 2, 1))
    >>> resample(a, zoom=(1, 1, 0.5), shape=(2, 2, 7))[0, 0].tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    """
    import SimpleITK as sitk

    if interpolation not in _INTERPOLATORS:
        raise TransformError(f"resample: interpolation must be one of {', '.join(_INTERPOLATORS)}, found {interpolation!r}")
    keep = interpolation == "nearest"
    src = np.asarray(array)
    if keep and src.dtype == bool:
        src = src.astype(np.uint8)
    elif not keep:
        src = src.astype(np.float32, copy=False)
    image = sitk.GetImageFromArray(src)  # sitk axes are (x, y, z): reverse ours
    # The output grid by size/spacing, not a reference image: that would allocate a volume.
    # The new grid covers the old voxels' extent, so its last samples can fall up to a voxel
    # past the last voxel centre, where ITK's interpolators see "outside" and would write the
    # default 0 (a slice of water in HU, a lost label row): take the nearest voxel there.
    out = sitk.Resample(
        image,
        [int(n) for n in shape[::-1]],
        sitk.Transform(),
        getattr(sitk, _INTERPOLATORS[interpolation]),
        (0.0, 0.0, 0.0),
        [float(z) for z in zoom[::-1]],
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        0.0,
        image.GetPixelID(),
        True,
    )
    result = sitk.GetArrayFromImage(out)
    return result.astype(bool) if keep and np.asarray(array).dtype == bool else result


def foreground_box(mask: np.ndarray, *, margin: Sequence[int] = (0, 0, 0)) -> list[list[int]]:
    """``[[start, stop], ...]`` per axis of the True voxels, grown by ``margin`` and clipped.

    An empty mask gives the whole array (nothing to crop to).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((4, 6, 6), bool); m[1:3, 2:4, 1:5] = True
    >>> foreground_box(m, margin=(0, 1, 1))
    [[1, 3], [1, 5], [0, 6]]
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return [[0, n] for n in mask.shape]
    box = []
    for axis, n in enumerate(mask.shape):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append([max(int(hit[0]) - int(margin[axis]), 0), min(int(hit[-1]) + 1 + int(margin[axis]), n)])
    return box


def pad_crop_plan(n: int, size: int) -> tuple[int, int]:
    """``(start, pad_before)``: centre a length ``n`` into ``size`` (crop if larger, pad if smaller).

    Examples
    --------
    >>> pad_crop_plan(10, 6), pad_crop_plan(6, 10)
    ((2, 0), (0, 2))
    """
    if n >= size:
        return (n - size) // 2, 0
    return 0, (size - n) // 2


@lru_cache(maxsize=64)
def _resize_operator(n: int, size: int, order: int, anti_aliasing: bool) -> tuple[Any, bool]:
    """The exact ``(size, n)`` matrix of skimage's 1D resize of a length-``n`` axis to ``size``.

    skimage's resize (Gaussian anti-aliasing per axis, then ``ndimage.zoom`` with
    ``grid_mode=True`` and mode "nearest") is linear and separable, so resizing a slice is
    ``A_y @ plane @ A_x.T``. The matrix comes from skimage itself, run on identity columns: the
    second axis keeps its size, so it gets no smoothing (sigma 0 is skipped) and zoom factor 1
    (samples on the knots), and the columns are independent, hence built a block at a time
    (memory bounded for large ``n``). ``clip=False`` keeps the negative lobes of splines (the
    identity's range is [0, 1]); the caller clips to each slice's range as skimage does.
    Returns ``(operator, convex)``: float32 CSR when banded (order 1: a few taps per row),
    dense otherwise (spline orders: every input pixel weighs); ``convex`` when all weights are
    >= 0 (rows sum to 1), so the output stays in the input's range without clipping.
    """
    import scipy.sparse
    from skimage.transform import resize

    block = max(16, min(512, (1 << 22) // max(n, 1)))  # <= 32 MiB of float64 identity per block
    columns = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        eye = np.zeros((n, stop - start))
        eye[np.arange(start, stop), np.arange(stop - start)] = 1.0
        columns.append(
            resize(
                eye, (size, stop - start), order=order, mode="edge", preserve_range=True, anti_aliasing=anti_aliasing, clip=False
            )
        )
    matrix = np.hstack(columns)
    convex = bool((matrix >= 0).all())
    if np.count_nonzero(matrix) <= 0.25 * matrix.size:
        return scipy.sparse.csr_array(matrix.astype(np.float32)), convex
    return matrix.astype(np.float32), convex


@lru_cache(maxsize=64)
def _nearest_index(n: int, size: int) -> np.ndarray:
    """skimage's order-0 resize of one axis as the source index of each output pixel.

    ``ndimage.zoom`` picks the nearest source pixel along each axis independently, so a
    slice is ``plane[np.ix_(iy, ix)]``: labels are copied, never mixed.
    """
    matrix, _ = _resize_operator(n, size, 0, False)
    dense = matrix.toarray() if hasattr(matrix, "toarray") else matrix
    if not (np.count_nonzero(dense, axis=1) == 1).all():  # a copy of one pixel, or not nearest
        raise TransformError(f"resize: order-0 operator for {n} -> {size} is not a selection")
    return np.argmax(dense, axis=1)


def resize_slices(
    array: np.ndarray,
    size: Sequence[int],
    *,
    order: int = 1,
    anti_aliasing: bool = True,
    workers: int | None = 1,
    lookup: np.ndarray | None = None,
) -> np.ndarray:
    """Resize every 2D slice ``array[..., :, :]`` to ``size`` as ``skimage.transform.resize`` does.

    The same numbers as ``resize(plane, size, order=order, mode="edge", preserve_range=True,
    anti_aliasing=anti_aliasing)`` on each slice (to float32 precision), computed as two
    cached 1D operators taken from skimage itself: ``A_y @ plane @ A_x.T`` (sparse for order
    1), 5-10x faster than the per-slice call. ``order > 0`` gives float32, clipped to each
    slice's range as skimage does; ``order=0`` (nearest, for labels) copies source pixels and
    keeps the dtype (``anti_aliasing`` applies to ``order > 0`` only: labels are never
    smoothed). Memory: the output plus a few slices.

    ``lookup`` (a 1D table; ``array`` then holds unsigned integer indices into it) resizes
    ``lookup[array]`` without making that volume: each slice is looked up just before it is
    resized, so the result is the very array ``resize_slices(lookup[array], size)`` gives. A
    CT window is such a table over a volume's integer codes (``medload.batch.fused``): the
    float32 windowed volume at full size (4 bytes a voxel) is never allocated.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage.transform import resize
    >>> a = np.random.default_rng(0).random((3, 40, 30)).astype(np.float32)
    >>> out = resize_slices(a, (20, 45))
    >>> ref = resize(a[1], (20, 45), order=1, mode="edge", preserve_range=True, anti_aliasing=True)
    >>> out.shape, out.dtype, bool(np.allclose(out[1], ref, atol=1e-6))
    ((3, 20, 45), dtype('float32'), True)
    >>> codes = np.random.default_rng(1).integers(0, 256, (2, 30, 30)).astype(np.uint8)
    >>> table = np.linspace(0, 1, 256, dtype=np.float32)
    >>> np.array_equal(resize_slices(codes, (10, 10), lookup=table), resize_slices(table[codes], (10, 10)))
    True
    """
    array = np.asarray(array)
    if lookup is not None:
        lookup = np.asarray(lookup)
        if lookup.ndim != 1 or array.dtype.kind != "u":
            raise TransformError(
                f"resize: lookup must be a 1D table indexed by an unsigned integer array, found a "
                f"{lookup.ndim}D table and dtype {array.dtype}"
            )
    (ny, nx), (hy, hx) = array.shape[-2:], (int(size[0]), int(size[1]))
    if order == 0:
        rows, cols = _nearest_index(ny, hy), _nearest_index(nx, hx)
        picked = np.ascontiguousarray(array[..., rows[:, None], cols[None, :]])
        return picked if lookup is None else np.take(lookup, picked)
    # skimage smooths only axes that shrink; asking for it otherwise changes nothing there.
    op_y, convex_y = _resize_operator(ny, hy, order, anti_aliasing)
    op_x, convex_x = _resize_operator(nx, hx, order, anti_aliasing)
    clip = not (convex_y and convex_x)

    def one(plane: np.ndarray) -> np.ndarray:
        plane = np.asarray(plane, dtype=np.float32) if lookup is None else np.take(lookup, plane).astype(np.float32, copy=False)
        # rows first, then columns on the transposed (contiguous) result: CSR times C-ordered
        # dense is sparse's fast path both times.
        out = (op_x @ np.ascontiguousarray((op_y @ plane).T)).T
        if clip:
            np.clip(out, plane.min(), plane.max(), out=out)
        return out

    return map_slices(one, array, workers=workers)


def _shift_affine(affine: np.ndarray, offset: Sequence[float]) -> np.ndarray:
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = affine[:3, :3] @ np.asarray(offset, np.float64) + affine[:3, 3]
    return out


class Resample(Transform):
    """Resample to a target spacing in mm (``None`` keeps an axis), world coordinates kept.

    Voxel 0 keeps its position; the affine's columns are scaled to the new spacing. Images:
    ``"linear"`` or ``"bspline"``; masks: nearest neighbour. History records the new shape.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.zeros((10, 20, 20), np.float32), np.diag([3.0, 0.5, 0.5, 1]))
    >>> out = Resample(spacing=(1.5, 1.0, 1.0))(vol)
    >>> out.shape, out.spacing
    ((20, 10, 10), (1.5, 1.0, 1.0))
    """

    name = "resample"
    is_spatial = True

    def __init__(
        self,
        spacing: Sequence[float | None] | float = (None, 1.0, 1.0),
        interpolation: str = "linear",
        shape: Sequence[int] | None = None,
    ) -> None:
        # np.isscalar is a TypeGuard: it narrows the scalar branch only, hence the casts here and below.
        values = [spacing] * 3 if np.isscalar(spacing) else list(cast(Sequence[float | None], spacing))
        if len(values) != 3:
            raise TransformError(f"{self.name}: spacing needs 3 values (z, y, x) in mm, found {spacing!r}")
        self.spacing = [
            None if v is None else check_range("spacing", v, low=0, low_open=True, high=100, transform=self.name) for v in values
        ]
        if interpolation not in ("linear", "bspline", "nearest"):
            raise TransformError(f"{self.name}: interpolation must be 'linear', 'bspline' or 'nearest', found {interpolation!r}")
        self.interpolation = interpolation
        self.shape = None if shape is None else [int(n) for n in shape]

    def params(self) -> dict[str, Any]:
        return {"spacing": self.spacing, "interpolation": self.interpolation, "shape": self.shape}

    def _grid(self, volume: Volume) -> tuple[list[float], list[int], list[float]]:
        old = [float(s) for s in np.linalg.norm(volume.affine[:3, :3], axis=0)]
        new = [o if s is None else s for o, s in zip(old, self.spacing)]
        zoom = [n / o for n, o in zip(new, old)]
        shape = self.shape or [max(int(round(n * o / s)), 1) for n, o, s in zip(volume.spatial_shape, old, new)]
        return zoom, shape, new

    def plan(self, volume: Volume) -> Resample:
        _, shape, new = self._grid(volume)
        return Resample(new, self.interpolation, shape)

    def _affine(self, volume: Volume, zoom: Sequence[float]) -> np.ndarray:
        affine = np.array(volume.affine)
        affine[:3, :3] = affine[:3, :3] * np.asarray(zoom)[None, :]
        return affine

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        zoom, shape, new = self._grid(volume)
        out = map_frames(lambda a: resample(a, zoom=zoom, shape=shape, interpolation=self.interpolation), volume.array)
        concrete = {"spacing": new, "interpolation": self.interpolation, "shape": shape}
        return out, concrete, {"affine": self._affine(volume, zoom)}

    def apply_mask(self, mask: Volume) -> Volume:
        check_mask_grid(mask, self.name)
        zoom, shape, new = self._grid(mask)
        out = map_frames(lambda a: resample(a, zoom=zoom, shape=shape, interpolation="nearest"), mask.array)
        return mask.with_array(
            out, affine=self._affine(mask, zoom), step=(self.name, {"spacing": new, "interpolation": "nearest", "shape": shape})
        )


class CropForeground(Transform):
    """Crop to the bounding box of the foreground plus ``margin`` voxels; the origin shifts.

    Foreground: ``value > threshold``; with ``threshold=None`` the CT body mask for CT volumes
    (air and table dropped) and "above the minimum" otherwise. The box found goes to history,
    so replaying crops the same voxels.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((4, 10, 10)); a[1:3, 2:5, 3:9] = 1
    >>> out = CropForeground(margin=1)(Volume(a, np.eye(4)))
    >>> out.shape, out.origin
    ((4, 5, 8), (0.0, 1.0, 2.0))
    """

    name = "crop_foreground"
    is_spatial = True

    def __init__(
        self, threshold: float | None = None, margin: int | Sequence[int] = 0, box: Sequence[Sequence[int]] | None = None
    ) -> None:
        self.threshold = None if threshold is None else check_range("threshold", threshold, transform=self.name)
        margins = [margin] * 3 if np.isscalar(margin) else list(cast(Sequence[int], margin))
        if len(margins) != 3:
            raise TransformError(f"{self.name}: margin needs 1 or 3 values, found {margin!r}")
        self.margin = [int(check_range("margin", m, low=0, transform=self.name)) for m in margins]
        self.box = None if box is None else [[int(a), int(b)] for a, b in box]

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "margin": self.margin, "box": self.box}

    def _box(self, volume: Volume) -> list[list[int]]:
        if self.box is not None:
            for (a, b), n in zip(self.box, volume.spatial_shape):
                if not 0 <= a < b <= n:
                    raise TransformError(f"{self.name}: box {self.box} does not fit a volume of shape {volume.spatial_shape}")
            return self.box
        check_finite(volume.array, self.name)
        array = volume.array if volume.array.ndim == 3 else volume.array.max(axis=0)
        if self.threshold is not None:
            mask = array > self.threshold
        elif volume.modality == "CT" and volume.meta.get("intensity", "HU") == "HU":
            from medload.transforms.masks import ct_body_mask

            mask = ct_body_mask(array, spacing=volume.spacing)
        else:
            mask = array > array.min()
        return foreground_box(mask, margin=self.margin)

    def plan(self, volume: Volume) -> CropForeground:
        return CropForeground(self.threshold, self.margin, self._box(volume))

    def _crop(self, volume: Volume, box: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        index = (Ellipsis,) + tuple(slice(a, b) for a, b in box)
        return np.ascontiguousarray(volume.array[index]), _shift_affine(volume.affine, [a for a, _ in box])

    def apply(self, volume: Volume) -> Applied:
        box = self._box(volume)
        out, affine = self._crop(volume, box)
        return out, {**self.params(), "box": box}, {"affine": affine}

    def apply_mask(self, mask: Volume) -> Volume:
        check_mask_grid(mask, self.name)
        out, affine = self._crop(mask, self._box(mask))
        return mask.with_array(out, affine=affine, step=(self.name, self.params()))


class ResizeSlices(Transform):
    """Bring every slice to ``size`` (``H, W``) rows and columns; the slice count is kept.

    ``mode="pad-crop"``: centred crop or pad with ``pad_value`` (default: the volume minimum,
    recorded; a value the image's integer dtype cannot hold gives float32); the origin shifts,
    spacing is kept. ``mode="resize"``: interpolate
    (:func:`resize_slices`: ``skimage.transform.resize``'s numbers per slice, pixel centres
    aligned as skimage does: new pixel ``j`` sits at old ``(j + 0.5) * n / size - 0.5``); the
    in-plane spacing in the affine changes. Masks: padded with 0, or resized nearest neighbour.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.zeros((2, 100, 80)), np.eye(4))
    >>> ResizeSlices(64)(vol).shape, ResizeSlices((50, 40), mode="resize")(vol).spacing
    ((2, 64, 64), (1.0, 2.0, 2.0))
    """

    name = "resize_slices"
    is_spatial = True

    def __init__(
        self,
        size: int | Sequence[int] = 256,
        mode: str = "pad-crop",
        pad_value: float | None = None,
        order: int = 1,
        anti_aliasing: bool = True,
        *,
        workers: int | None = 1,
    ) -> None:
        sizes = [size, size] if np.isscalar(size) else list(cast(Sequence[int], size))
        if len(sizes) != 2:
            raise TransformError(f"{self.name}: size must be one number or (H, W), found {size!r}")
        self.size = [int(check_range("size", s, low=1, high=16384, transform=self.name)) for s in sizes]
        if mode not in ("pad-crop", "resize"):
            raise TransformError(f"{self.name}: mode must be 'pad-crop' or 'resize', found {mode!r}")
        self.mode = mode
        self.pad_value = None if pad_value is None else check_range("pad_value", pad_value, transform=self.name)
        self.order = int(check_range("order", order, low=0, high=5, transform=self.name))
        self.anti_aliasing = bool(anti_aliasing)
        self.workers = workers

    def params(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mode": self.mode,
            "pad_value": self.pad_value,
            "order": self.order,
            "anti_aliasing": self.anti_aliasing,
        }

    def plan(self, volume: Volume) -> ResizeSlices:
        pad = self.pad_value
        if pad is None and self.mode == "pad-crop":
            pad = float(volume.array.min())
        return ResizeSlices(self.size, self.mode, pad, self.order, self.anti_aliasing, workers=self.workers)

    def _pad_crop(self, array: np.ndarray, fill: float) -> tuple[np.ndarray, list[int]]:
        (ny, nx), (hy, hx) = array.shape[-2:], self.size
        (sy, py), (sx, px) = pad_crop_plan(ny, hy), pad_crop_plan(nx, hx)
        dtype = array.dtype
        if np.asarray(fill).astype(dtype) != fill:  # e.g. -1 or 0.5 in uint8 would wrap or truncate
            dtype = np.result_type(dtype, np.float32)
        out = np.full(array.shape[:-2] + (hy, hx), fill, dtype=dtype)
        cy, cx = min(ny, hy), min(nx, hx)
        out[..., py : py + cy, px : px + cx] = array[..., sy : sy + cy, sx : sx + cx]
        return out, [0, sy - py, sx - px]

    def _resize(
        self, volume: Volume, *, order: int, anti_aliasing: bool, lookup: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        (ny, nx), (hy, hx) = volume.spatial_shape[-2:], self.size
        # The numbers of skimage's per-slice resize (the slice axis keeps its size, so one 3D
        # call gives the same), from cached separable operators: see resize_slices.
        out = resize_slices(
            volume.array, (hy, hx), order=order, anti_aliasing=anti_aliasing and order > 0, workers=self.workers, lookup=lookup
        )
        sy, sx = ny / hy, nx / hx
        m = np.eye(4)
        m[1, 1], m[2, 2] = sy, sx
        m[1, 3], m[2, 3] = 0.5 * sy - 0.5, 0.5 * sx - 0.5
        return out, volume.affine @ m

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        planned = self.plan(volume)
        if self.mode == "pad-crop":
            assert planned.pad_value is not None  # plan() fills it in pad-crop mode
            out, offset = self._pad_crop(volume.array, planned.pad_value)
            return out, planned.params(), {"affine": _shift_affine(volume.affine, offset)}
        out, affine = self._resize(volume, order=self.order, anti_aliasing=self.anti_aliasing)
        return out.astype(np.float32, copy=False), planned.params(), {"affine": affine}

    def apply_lookup(self, volume: Volume, lookup: np.ndarray) -> Applied:
        """:meth:`apply` on the volume ``lookup[volume.array]`` without making it (``mode="resize"`` only).

        ``volume`` holds unsigned integer codes (its affine, meta and history are those of the
        looked-up volume); ``lookup`` is one table, or a stack ``(C, codes)`` giving a channel
        each (``(C, Z, H, W)``). Returns what :meth:`apply` returns for the looked-up volume,
        the same array (see :func:`resize_slices`'s ``lookup``). A converter uses it for a
        window followed by a resize (``medload.batch.fused``).

        Examples
        --------
        >>> import numpy as np
        >>> codes = Volume(np.arange(64, dtype=np.uint8).reshape(1, 8, 8), np.eye(4))
        >>> table = np.linspace(0, 1, 256, dtype=np.float32)
        >>> out, params, changes = ResizeSlices(4, mode="resize").apply_lookup(codes, table)
        >>> np.array_equal(out, ResizeSlices(4, mode="resize")(codes.with_array(table[codes.array])).array)
        True
        """
        if self.mode != "resize":
            raise TransformError(f"{self.name}: apply_lookup resizes (mode='resize'), found mode {self.mode!r}")
        lookup = np.asarray(lookup)
        if lookup.ndim == 1:
            out, affine = self._resize(volume, order=self.order, anti_aliasing=self.anti_aliasing, lookup=lookup)
        else:  # a channel per table, each written in place
            out = np.empty((len(lookup),) + volume.shape[:-2] + tuple(self.size), np.float32)
            for channel, table in zip(out, lookup):
                channel[...], affine = self._resize(volume, order=self.order, anti_aliasing=self.anti_aliasing, lookup=table)
        return out.astype(np.float32, copy=False), self.plan(volume).params(), {"affine": affine}

    def apply_mask(self, mask: Volume) -> Volume:
        check_mask_grid(mask, self.name)
        if self.mode == "pad-crop":
            out, offset = self._pad_crop(mask.array, 0)
            affine = _shift_affine(mask.affine, offset)
        else:
            out, affine = self._resize(mask, order=0, anti_aliasing=False)
            out = out.astype(mask.array.dtype, copy=False)  # order 0 already keeps it
        params = {**self.params(), "pad_value": 0.0, "order": 0, "anti_aliasing": False}
        return mask.with_array(out, affine=affine, step=(self.name, params))
