"""MR intensity transforms: N4 bias field correction, percentile clip, z-score, min-max, Nyul.

Pure array functions first (keyword-only options, numpy in, numpy out), then the thin
:class:`~medload.transforms.base.Transform` classes that apply them to Volumes and record
their concrete parameters. Statistics are taken inside a mask (:func:`~medload.transforms.masks.voxel_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Applied, Transform, check_finite, check_range, map_frames
from medload.transforms.masks import voxel_mask
from medload.volume import Volume

__all__ = [
    "NYUL_PERCENTILES",
    "n4_bias_correct",
    "percentile_clip",
    "zscore",
    "minmax",
    "nyul_fit",
    "nyul_apply",
    "N4BiasCorrection",
    "PercentileClip",
    "ZScore",
    "MinMax",
    "NyulStandardize",
]


# --- pure functions ----------------------------------------------------------------------
def n4_bias_correct(
    array: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    mask: np.ndarray | None = None,
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
    convergence_threshold: float = 0.001,
) -> np.ndarray:
    """N4 bias field correction (SimpleITK), fitted on a shrunk copy and applied at full size.

    The field is estimated on the image shrunk by ``shrink_factor`` in every axis (the step that
    turns minutes into seconds on a 256^3 volume), then evaluated on the full grid and divided
    out. ``mask`` defaults to Otsu's foreground (SimpleITK's ``OtsuThreshold``) and excludes
    voxels <= 0, where the log of the bias model is undefined. A constant volume is returned
    unchanged (there is no bias to see). Output float32.

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.mgrid[:8, :32, :32]
    >>> flat = np.where((y - 16) ** 2 + (x - 16) ** 2 < 144, 100.0, 0.0)
    >>> out = n4_bias_correct(flat * (1 + x / 64), shrink_factor=2, iterations=(20,))
    >>> inside = flat > 0
    >>> bool(out[inside].std() / out[inside].mean() < (flat * (1 + x / 64))[inside].std() / 100)
    True
    """
    import SimpleITK as sitk

    array = np.asarray(array, dtype=np.float32)
    if array.max() == array.min():
        return array.copy()
    if array.ndim == 3 and array.shape[0] < 4:
        # N4's B-spline field needs a few voxels along every axis: fit thin stacks slice by slice.
        return np.stack(
            [
                n4_bias_correct(
                    s,
                    spacing=spacing[-2:],
                    mask=None if mask is None else np.asarray(mask)[i],
                    shrink_factor=shrink_factor,
                    iterations=iterations,
                    convergence_threshold=convergence_threshold,
                )
                for i, s in enumerate(array)
            ]
        )
    if min(array.shape) < 2:
        # N4's B-spline field spans each axis: along an axis of one voxel its spacing is 0, which
        # ITK refused with a RuntimeError ("Zero-valued spacing") that escaped as an internal error.
        raise TransformError(
            f"n4: expected at least 2 voxels along every axis, found an image of shape {array.shape}; "
            "leave N4 out of the pipeline for images this small (e.g. a preset without it)."
        )
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing[::-1]])
    if mask is None:
        mask_image = sitk.OtsuThreshold(image, 0, 1, 200)
        mask_arr = sitk.GetArrayViewFromImage(mask_image).astype(bool) & (array > 0)
    else:
        mask_arr = np.asarray(mask, bool) & (array > 0)
    if mask_arr.sum() < 10:
        return array.copy()
    mask_image = sitk.GetImageFromArray(mask_arr.astype(np.uint8))
    mask_image.CopyInformation(image)
    # Keep at least 4 voxels along each axis after shrinking (same reason as above).
    shrink = [int(max(1, min(shrink_factor, n // 4))) for n in array.shape[::-1]]
    small = sitk.Shrink(image, shrink)
    small_mask = sitk.Shrink(mask_image, shrink)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.SetConvergenceThreshold(float(convergence_threshold))
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    field = np.exp(sitk.GetArrayFromImage(log_field)).astype(np.float32)
    return array / field


def percentile_clip(
    array: np.ndarray, *, lower: float = 0.5, upper: float = 99.5, mask: str | np.ndarray | None = None
) -> np.ndarray:
    """Clip to the ``lower`` and ``upper`` percentiles of the voxels inside ``mask`` (float32).

    Examples
    --------
    >>> import numpy as np
    >>> percentile_clip(np.arange(101.0), lower=10, upper=90).min()
    np.float32(10.0)
    """
    check_range("lower", lower, low=0, high=100, transform="percentile_clip")
    check_range("upper", upper, low=0, high=100, transform="percentile_clip")
    if lower >= upper:
        raise TransformError(f"percentile_clip: lower must be below upper, found lower={lower}, upper={upper}")
    array = np.asarray(array, dtype=np.float32)
    inside = array[voxel_mask(array, mask)]
    if inside.size == 0:
        return array.copy()
    lo, hi = np.percentile(inside, [lower, upper])
    return np.clip(array, np.float32(lo), np.float32(hi))


def zscore(array: np.ndarray, *, mask: str | np.ndarray | None = None) -> np.ndarray:
    """Subtract the mean and divide by the standard deviation of the voxels inside ``mask``.

    Zero variance (a constant image or mask region) gives all zeros, not NaN. Float32.

    Examples
    --------
    >>> import numpy as np
    >>> zscore(np.array([1.0, 2.0, 3.0])).astype(float).round(3).tolist()
    [-1.225, 0.0, 1.225]
    >>> zscore(np.full(4, 7.0)).tolist()
    [0.0, 0.0, 0.0, 0.0]
    """
    array = np.asarray(array, dtype=np.float32)
    # mask "all": reduce the array itself, no boolean mask and no copy of the voxels
    inside = array if mask is None or (isinstance(mask, str) and mask == "all") else array[voxel_mask(array, mask)]
    if inside.size == 0:
        return np.zeros_like(array)
    # float32 reductions: numpy's pairwise summation keeps them to ~1e-6, and a float64 copy of a
    # large volume costs more than the whole z-score (bench/transforms.py)
    mean, std = float(inside.mean()), float(inside.std())
    if not std > 0:
        return np.zeros_like(array)
    return (array - np.float32(mean)) / np.float32(std)


def minmax(array: np.ndarray, *, mask: str | np.ndarray | None = None) -> np.ndarray:
    """Scale the range of the voxels inside ``mask`` to ``[0, 1]`` (outside may fall beyond).

    A constant region gives all zeros. Float32.

    Examples
    --------
    >>> import numpy as np
    >>> minmax(np.array([2.0, 4.0, 6.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    array = np.asarray(array, dtype=np.float32)
    inside = array if mask is None or (isinstance(mask, str) and mask == "all") else array[voxel_mask(array, mask)]
    if inside.size == 0:
        return np.zeros_like(array)
    lo, hi = float(inside.min()), float(inside.max())
    if hi == lo:
        return np.zeros_like(array)
    return (array - np.float32(lo)) / np.float32(hi - lo)


#: Nyul & Udupa landmarks: the 1st and 99th percentiles bound the scale, deciles in between.
NYUL_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


def nyul_fit(
    arrays: Sequence[np.ndarray],
    *,
    masks: Sequence[str | np.ndarray | None] | None = None,
    percentiles: Sequence[float] = NYUL_PERCENTILES,
    scale: tuple[float, float] = (0.0, 100.0),
) -> list[float]:
    """Fit Nyul & Udupa's standard histogram landmarks over a set of volumes.

    Each volume's landmark percentiles (inside its mask, default the foreground) are mapped
    linearly so its first and last landmarks land on ``scale``; the standard landmarks are the
    mean over volumes. Nyul LG, Udupa JK, Zhang X. New variants of a method of MRI scale
    standardization. IEEE TMI 2000;19(2):143-50.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> marks = nyul_fit([rng.gamma(2, 50, (4, 8, 8)) + 1 for _ in range(3)], masks=[None] * 3)
    >>> marks[0], marks[-1], len(marks)
    (0.0, 100.0, 11)
    """
    if len(arrays) == 0:
        raise TransformError("nyul_fit: expected at least one volume, found none")
    chosen: list[str | np.ndarray | None] = list(masks) if masks is not None else ["foreground"] * len(arrays)
    low, high = (float(v) for v in scale)
    mapped = []
    for array, mask in zip(arrays, chosen):
        array = np.asarray(array, dtype=np.float64)
        check_finite(array, "nyul_fit")
        marks = np.percentile(array[voxel_mask(array, mask)], percentiles)
        if marks[-1] <= marks[0]:
            continue  # a constant volume says nothing about the histogram's shape
        mapped.append(low + (marks - marks[0]) / (marks[-1] - marks[0]) * (high - low))
    if not mapped:
        raise TransformError("nyul_fit: every volume was constant inside its mask; nothing to fit")
    return [float(v) for v in np.mean(mapped, axis=0)]


def nyul_apply(
    array: np.ndarray,
    *,
    landmarks: Sequence[float],
    percentiles: Sequence[float] = NYUL_PERCENTILES,
    mask: str | np.ndarray | None = None,
) -> np.ndarray:
    """Map a volume's landmark percentiles onto the standard ``landmarks``, piecewise linearly.

    Values beyond the first/last landmark follow the first/last segment's slope. A constant
    volume maps to the middle landmark. Float32.

    Examples
    --------
    >>> import numpy as np
    >>> out = nyul_apply(np.arange(1, 101.0), landmarks=[0, 50, 100], percentiles=[0, 50, 100], mask="all")
    >>> float(out[0]), float(out[-1])
    (0.0, 100.0)
    """
    standard = np.asarray(landmarks, dtype=np.float64)
    if len(standard) != len(percentiles):
        raise TransformError(f"nyul_apply: expected as many landmarks as percentiles ({len(percentiles)}), found {len(standard)}")
    array_f = np.asarray(array, dtype=np.float64)
    marks = np.percentile(array_f[voxel_mask(array_f, mask)], percentiles)
    if marks[-1] <= marks[0]:
        return np.full(array_f.shape, standard[len(standard) // 2], np.float32)
    # Strictly increasing source landmarks for interp (ties from a spiky histogram).
    marks = np.maximum.accumulate(marks + np.arange(len(marks)) * 1e-9 * (marks[-1] - marks[0]))
    out = np.interp(array_f, marks, standard)
    lo_slope = (standard[1] - standard[0]) / (marks[1] - marks[0])
    hi_slope = (standard[-1] - standard[-2]) / (marks[-1] - marks[-2])
    out = np.where(array_f < marks[0], standard[0] + (array_f - marks[0]) * lo_slope, out)
    out = np.where(array_f > marks[-1], standard[-1] + (array_f - marks[-1]) * hi_slope, out)
    return out.astype(np.float32)


# --- Volume transforms -------------------------------------------------------------------
class N4BiasCorrection(Transform):
    """N4 bias field correction (SimpleITK) on an MR, with a shrink factor for speed.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.full((4, 8, 8), 5.0), np.eye(4), modality="MR")
    >>> N4BiasCorrection(shrink_factor=2)(vol).array.max()   # constant: unchanged
    np.float32(5.0)
    """

    name = "n4"

    def __init__(
        self, shrink_factor: int = 4, iterations: Sequence[int] = (50, 50, 50, 50), convergence_threshold: float = 0.001
    ) -> None:
        self.shrink_factor = int(check_range("shrink_factor", shrink_factor, low=1, high=16, transform=self.name))
        if len(iterations) == 0 or any(int(i) < 1 for i in iterations):
            raise TransformError(
                f"{self.name}: iterations must be a non-empty list of positive counts per level, found {iterations!r}"
            )
        self.iterations = [int(i) for i in iterations]
        self.convergence_threshold = check_range("convergence_threshold", convergence_threshold, low=0, transform=self.name)

    def params(self) -> dict[str, Any]:
        return {
            "shrink_factor": self.shrink_factor,
            "iterations": self.iterations,
            "convergence_threshold": self.convergence_threshold,
        }

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        out = map_frames(lambda a: n4_bias_correct(a, spacing=volume.spacing, **self.params()), volume.array)
        return out, self.params(), {}


class _MaskedNorm(Transform):
    masks = ("all", "foreground", "nonzero")

    def _check_mask(self, mask: str) -> str:
        if mask not in self.masks:
            raise TransformError(f"{self.name}: mask must be one of {', '.join(self.masks)}, found {mask!r}")
        return mask


class PercentileClip(_MaskedNorm):
    """Clip to percentiles of the voxels inside a mask (``"all"``, ``"foreground"``, ``"nonzero"``).

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.arange(101.0).reshape(1, 1, 101), np.eye(4), modality="MR")
    >>> PercentileClip(lower=5, upper=95, mask="all")(vol).array.max()
    np.float32(95.0)
    """

    name = "percentile_clip"

    def __init__(self, lower: float = 0.5, upper: float = 99.5, mask: str = "foreground") -> None:
        self.lower = check_range("lower", lower, low=0, high=100, transform=self.name)
        self.upper = check_range("upper", upper, low=self.lower, low_open=True, high=100, transform=self.name)
        self.mask = self._check_mask(mask)

    def params(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "mask": self.mask}

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        out = map_frames(lambda a: percentile_clip(a, lower=self.lower, upper=self.upper, mask=self.mask), volume.array)
        return out, self.params(), {}


class ZScore(_MaskedNorm):
    """Z-score with the mean and standard deviation inside a mask; zero variance gives zeros.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.array([[[1.0, 2.0, 3.0]]]), np.eye(4), modality="MR")
    >>> out = ZScore(mask="all")(vol)
    >>> out.array.astype(float).round(3).tolist(), out.meta["intensity"]
    ([[[-1.225, 0.0, 1.225]]], 'z-score (mean 0, std 1 inside all)')
    """

    name = "zscore"

    def __init__(self, mask: str = "foreground") -> None:
        self.mask = self._check_mask(mask)

    def params(self) -> dict[str, Any]:
        return {"mask": self.mask}

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        out = map_frames(lambda a: zscore(a, mask=self.mask), volume.array)
        meta = volume.meta
        meta["intensity"] = f"z-score (mean 0, std 1 inside {self.mask})"
        return out, self.params(), {"meta": meta}


class MinMax(_MaskedNorm):
    """Scale the range inside a mask to ``[0, 1]``; a constant region gives zeros.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.array([[[2.0, 4.0, 6.0]]]), np.eye(4), modality="MR")
    >>> MinMax(mask="all")(vol).array.tolist()
    [[[0.0, 0.5, 1.0]]]
    """

    name = "minmax"

    def __init__(self, mask: str = "all") -> None:
        self.mask = self._check_mask(mask)

    def params(self) -> dict[str, Any]:
        return {"mask": self.mask}

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        out = map_frames(lambda a: minmax(a, mask=self.mask), volume.array)
        meta = volume.meta
        meta["intensity"] = f"min-max scaled to [0,1] inside {self.mask}"
        return out, self.params(), {"meta": meta}


class NyulStandardize(_MaskedNorm):
    """Nyul histogram standardization onto landmarks fitted with :meth:`fit`.

    Examples
    --------
    >>> import numpy as np, json
    >>> rng = np.random.default_rng(0)
    >>> vols = [Volume(rng.gamma(2, s, (4, 8, 8)) + 1, np.eye(4), modality="MR") for s in (30, 60)]
    >>> nyul = NyulStandardize.fit(vols, mask="all")
    >>> restored = NyulStandardize(**json.loads(json.dumps(nyul.params())))
    >>> out = restored(vols[1]).array
    >>> round(float(np.percentile(out, 99)), 3) == round(nyul.landmarks[-1], 3)
    True
    """

    name = "nyul"

    def __init__(
        self, landmarks: Sequence[float], percentiles: Sequence[float] = NYUL_PERCENTILES, mask: str = "foreground"
    ) -> None:
        self.landmarks = [float(v) for v in landmarks]
        self.percentiles = [float(v) for v in percentiles]
        if len(self.landmarks) != len(self.percentiles) or len(self.landmarks) < 2:
            raise TransformError(
                f"{self.name}: expected {len(self.percentiles)} landmarks (one per percentile), found {len(self.landmarks)}"
            )
        if np.any(np.diff(self.landmarks) < 0):
            raise TransformError(f"{self.name}: landmarks must increase, found {self.landmarks}")
        self.mask = self._check_mask(mask)

    @classmethod
    def fit(
        cls,
        volumes: Sequence[Volume],
        *,
        mask: str = "foreground",
        percentiles: Sequence[float] = NYUL_PERCENTILES,
        scale: tuple[float, float] = (0.0, 100.0),
    ) -> NyulStandardize:
        """Fit the standard landmarks over ``volumes`` (save with ``json.dump(t.params(), f)``).

        Examples
        --------
        >>> import numpy as np
        >>> vols = [Volume(np.arange(1.0, 65.0).reshape(1, 8, 8) * s, np.eye(4)) for s in (1, 3)]
        >>> [round(v, 6) for v in NyulStandardize.fit(vols, mask="all").landmarks[::5]]
        [0.0, 50.0, 100.0]
        """
        arrays = [v.array for v in volumes]
        landmarks = nyul_fit(arrays, masks=[mask] * len(arrays), percentiles=percentiles, scale=scale)
        return cls(landmarks, percentiles, mask)

    def params(self) -> dict[str, Any]:
        return {"landmarks": self.landmarks, "percentiles": self.percentiles, "mask": self.mask}

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        out = map_frames(
            lambda a: nyul_apply(a, landmarks=self.landmarks, percentiles=self.percentiles, mask=self.mask), volume.array
        )
        meta = volume.meta
        meta["intensity"] = f"Nyul standardized to landmarks {self.landmarks[0]:g}..{self.landmarks[-1]:g}"
        return out, self.params(), {"meta": meta}
