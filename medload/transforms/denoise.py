"""Denoising, 2D (per slice, ``workers=`` threads) or 3D: non-local means and total variation
(scikit-image), bilateral and anisotropic diffusion (SimpleITK), median and gaussian (scipy.ndimage).

Each pure function takes one 2D or 3D float array and the wrapped library's own options, so
it equals the library call on the same array (tested). Filter sizes are in voxels; the
Volume transforms accept millimetres where it makes sense and record voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Applied, Transform, check_finite, check_range, map_frames, map_slices
from medload.volume import Volume

if TYPE_CHECKING:
    import SimpleITK

__all__ = [
    "estimate_noise",
    "nl_means",
    "tv_denoise",
    "bilateral",
    "curvature_diffusion",
    "gradient_diffusion",
    "median",
    "gaussian",
    "NLMeans",
    "TVDenoise",
    "Bilateral",
    "CurvatureDiffusion",
    "GradientDiffusion",
    "Median",
    "Gaussian",
]


def estimate_noise(array: np.ndarray) -> float:
    """Gaussian noise standard deviation, ``skimage.restoration.estimate_sigma``.

    Donoho's median absolute deviation of the finest wavelet details (PyWavelets). A 3D
    array is estimated slice by slice and the estimates averaged: skimage's 3D wavelet pads
    the slice axis, which biases thin stacks low (a 2-slice volume of sigma 5 read as 4.4).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> round(estimate_noise(rng.normal(0, 2.0, (64, 64))), 1)
    2.0
    """
    from skimage.restoration import estimate_sigma

    array = np.asarray(array, np.float64)
    if array.size == 0 or min(array.shape[-2:]) < 2:
        return 0.0
    planes = array.reshape(-1, *array.shape[-2:])
    # A constant plane has no noise; skimage would give NaN or round-off (1e-32) for it.
    sigmas = np.array([estimate_sigma(plane, channel_axis=None) if np.ptp(plane) > 0 else 0.0 for plane in planes], np.float64)
    finite = sigmas[np.isfinite(sigmas)]
    return float(finite.mean()) if finite.size else 0.0


def nl_means(
    array: np.ndarray, *, sigma: float, h: float, patch_size: int = 5, patch_distance: int = 6, fast_mode: bool = True
) -> np.ndarray:
    """Non-local means, ``skimage.restoration.denoise_nl_means`` (float32 out).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noisy = np.zeros((32, 32)) + rng.normal(0, 1, (32, 32))
    >>> bool(nl_means(noisy, sigma=1.0, h=0.8).std() < 0.5)
    True
    """
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(
        np.asarray(array, np.float32),
        h=float(h),
        sigma=float(sigma),
        patch_size=int(patch_size),
        patch_distance=int(patch_distance),
        fast_mode=bool(fast_mode),
    ).astype(np.float32)


def tv_denoise(array: np.ndarray, *, weight: float, max_num_iter: int = 200) -> np.ndarray:
    """Total-variation denoising, ``skimage.restoration.denoise_tv_chambolle`` (float32 out).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> bool(tv_denoise(rng.normal(0, 1, (32, 32)), weight=1.0).std() < 0.5)
    True
    """
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(np.asarray(array, np.float32), weight=float(weight), max_num_iter=int(max_num_iter)).astype(
        np.float32
    )


def _to_sitk(array: np.ndarray) -> SimpleITK.Image:
    import SimpleITK as sitk

    # Voxel units (spacing 1): sizes and diffusion time steps mean the same in every volume.
    return sitk.GetImageFromArray(np.asarray(array, np.float32))


def bilateral(array: np.ndarray, *, domain_sigma: float, range_sigma: float) -> np.ndarray:
    """Bilateral filter, ``SimpleITK.Bilateral`` (``domain_sigma`` in voxels, ``range_sigma`` in
    intensity units), 2D or 3D, float32 out.

    Examples
    --------
    >>> import numpy as np
    >>> step = np.zeros((16, 16)); step[:, 8:] = 100
    >>> out = bilateral(step, domain_sigma=2, range_sigma=10)
    >>> float(out[0, 0]), float(out[0, 15])   # edges kept
    (0.0, 100.0)
    """
    import SimpleITK as sitk

    out = sitk.Bilateral(_to_sitk(array), float(domain_sigma), float(range_sigma))
    return sitk.GetArrayFromImage(out)


def curvature_diffusion(array: np.ndarray, *, time_step: float, conductance: float = 3.0, iterations: int = 5) -> np.ndarray:
    """Curvature anisotropic diffusion, ``SimpleITK.CurvatureAnisotropicDiffusion``, float32.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> bool(curvature_diffusion(rng.normal(0, 1, (32, 32)), time_step=0.125).std() < 1)
    True
    """
    import SimpleITK as sitk

    out = sitk.CurvatureAnisotropicDiffusion(_to_sitk(array), float(time_step), float(conductance), 1, int(iterations))
    return sitk.GetArrayFromImage(out)


def gradient_diffusion(array: np.ndarray, *, time_step: float, conductance: float = 3.0, iterations: int = 5) -> np.ndarray:
    """Gradient anisotropic diffusion (Perona-Malik), ``SimpleITK.GradientAnisotropicDiffusion``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> bool(gradient_diffusion(rng.normal(0, 1, (32, 32)), time_step=0.125).std() < 1)
    True
    """
    import SimpleITK as sitk

    out = sitk.GradientAnisotropicDiffusion(_to_sitk(array), float(time_step), float(conductance), 1, int(iterations))
    return sitk.GetArrayFromImage(out)


def median(array: np.ndarray, *, size: int | Sequence[int]) -> np.ndarray:
    """Median filter over a box of ``size`` voxels, ``scipy.ndimage.median_filter`` (reflect).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((5, 5)); a[2, 2] = 100
    >>> float(median(a, size=3).max())
    0.0
    """
    from scipy import ndimage

    return ndimage.median_filter(np.asarray(array, np.float32), size=size)


def gaussian(array: np.ndarray, *, sigma: float | Sequence[float], truncate: float = 4.0) -> np.ndarray:
    """Gaussian smoothing, ``scipy.ndimage.gaussian_filter`` (sigma in voxels, reflect), float32.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((9, 9)); a[4, 4] = 1
    >>> round(float(gaussian(a, sigma=1).sum()), 3)
    1.0
    """
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(array, np.float32), sigma=sigma, truncate=float(truncate))


class _Denoiser(Transform):
    slice_wise = True

    def _init_common(self, per_slice: bool, workers: int | None) -> None:
        self.per_slice = bool(per_slice)
        self.workers = workers

    def _run(self, volume: Volume, func: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        check_finite(volume.array, self.name)
        if self.per_slice:
            return map_slices(func, volume.array, workers=self.workers)
        return map_frames(func, volume.array)


class NLMeans(_Denoiser):
    """Non-local means with the noise level estimated from the image (recorded as a number).

    ``h`` is relative to the noise: the filter strength passed to skimage is ``h * sigma``.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> rng = np.random.default_rng(0)
    >>> vol = Volume(rng.normal(100, 5, (2, 64, 64)), np.eye(4), modality="MR")
    >>> step = NLMeans()(vol).history[-1]
    >>> step[0], round(step[1]["sigma"])
    ('nl_means', 5)
    """

    name = "nl_means"

    def __init__(
        self,
        sigma: float | None = None,
        h: float = 0.8,
        patch_size: int = 5,
        patch_distance: int = 6,
        per_slice: bool = True,
        fast_mode: bool = True,
        *,
        workers: int | None = 1,
    ) -> None:
        self.sigma = None if sigma is None else check_range("sigma", sigma, low=0, transform=self.name)
        self.h = check_range("h", h, low=0, low_open=True, high=100, transform=self.name)
        self.patch_size = int(check_range("patch_size", patch_size, low=1, high=31, transform=self.name))
        self.patch_distance = int(check_range("patch_distance", patch_distance, low=1, high=50, transform=self.name))
        self.fast_mode = bool(fast_mode)
        self._init_common(per_slice, workers)

    def params(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "h": self.h,
            "patch_size": self.patch_size,
            "patch_distance": self.patch_distance,
            "per_slice": self.per_slice,
            "fast_mode": self.fast_mode,
        }

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        sigma = self.sigma if self.sigma is not None else estimate_noise(volume.array)
        if sigma == 0:
            return volume.array.astype(np.float32), {**self.params(), "sigma": 0.0}, {}
        out = self._run(
            volume,
            lambda a: nl_means(
                a,
                sigma=sigma,
                h=self.h * sigma,
                patch_size=self.patch_size,
                patch_distance=self.patch_distance,
                fast_mode=self.fast_mode,
            ),
        )
        return out, {**self.params(), "sigma": float(sigma)}, {}


class TVDenoise(_Denoiser):
    """Total-variation denoising (Chambolle); ``weight`` is in intensity units.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> vol = Volume(np.random.default_rng(0).normal(0, 1, (1, 16, 16)), np.eye(4))
    >>> bool(TVDenoise(weight=1.0)(vol).array.std() < 0.5)
    True
    """

    name = "tv_denoise"

    def __init__(self, weight: float = 0.1, max_num_iter: int = 200, per_slice: bool = True, *, workers: int | None = 1) -> None:
        self.weight = check_range("weight", weight, low=0, low_open=True, transform=self.name)
        self.max_num_iter = int(check_range("max_num_iter", max_num_iter, low=1, transform=self.name))
        self._init_common(per_slice, workers)

    def params(self) -> dict[str, Any]:
        return {"weight": self.weight, "max_num_iter": self.max_num_iter, "per_slice": self.per_slice}

    def apply(self, volume: Volume) -> Applied:
        return self._run(volume, lambda a: tv_denoise(a, weight=self.weight, max_num_iter=self.max_num_iter)), self.params(), {}


class Bilateral(_Denoiser):
    """Edge-preserving bilateral filter (SimpleITK); ``domain_sigma`` in voxels.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> vol = Volume(np.random.default_rng(0).normal(0, 1, (1, 16, 16)), np.eye(4))
    >>> bool(Bilateral(domain_sigma=2, range_sigma=5)(vol).array.std() < 0.7)
    True
    """

    name = "bilateral"

    def __init__(
        self, domain_sigma: float = 1.0, range_sigma: float = 50.0, per_slice: bool = True, *, workers: int | None = 1
    ) -> None:
        self.domain_sigma = check_range("domain_sigma", domain_sigma, low=0, low_open=True, high=20, transform=self.name)
        self.range_sigma = check_range("range_sigma", range_sigma, low=0, low_open=True, transform=self.name)
        self._init_common(per_slice, workers)

    def params(self) -> dict[str, Any]:
        return {"domain_sigma": self.domain_sigma, "range_sigma": self.range_sigma, "per_slice": self.per_slice}

    def apply(self, volume: Volume) -> Applied:
        return (
            self._run(volume, lambda a: bilateral(a, domain_sigma=self.domain_sigma, range_sigma=self.range_sigma)),
            self.params(),
            {},
        )


class _Diffusion(_Denoiser):
    _func = staticmethod(curvature_diffusion)

    def __init__(
        self,
        iterations: int = 5,
        conductance: float = 3.0,
        time_step: float | None = None,
        per_slice: bool = True,
        *,
        workers: int | None = 1,
    ) -> None:
        self.iterations = int(check_range("iterations", iterations, low=1, high=1000, transform=self.name))
        self.conductance = check_range("conductance", conductance, low=0, low_open=True, transform=self.name)
        self._init_common(per_slice, workers)
        # ITK's stability limit for unit spacing is 1 / 2**(ndim + 1).
        limit = 0.125 if self.per_slice else 0.0625
        self.time_step = (
            limit
            if time_step is None
            else check_range("time_step", time_step, low=0, low_open=True, high=limit, transform=self.name)
        )

    def params(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "conductance": self.conductance,
            "time_step": self.time_step,
            "per_slice": self.per_slice,
        }

    def apply(self, volume: Volume) -> Applied:
        func = type(self)._func
        return (
            self._run(
                volume, lambda a: func(a, time_step=self.time_step, conductance=self.conductance, iterations=self.iterations)
            ),
            self.params(),
            {},
        )


class CurvatureDiffusion(_Diffusion):
    """Curvature anisotropic diffusion (SimpleITK); ``time_step`` defaults to the stable limit.

    Examples
    --------
    >>> CurvatureDiffusion(per_slice=False).time_step
    0.0625
    """

    name = "curvature_diffusion"
    _func = staticmethod(curvature_diffusion)


class GradientDiffusion(_Diffusion):
    """Gradient anisotropic diffusion, Perona-Malik (SimpleITK).

    Examples
    --------
    >>> GradientDiffusion().time_step
    0.125
    """

    name = "gradient_diffusion"
    _func = staticmethod(gradient_diffusion)


class Median(_Denoiser):
    """Median filter, ``size`` voxels wide in-plane (per slice) or in 3D.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> a = np.zeros((1, 5, 5)); a[0, 2, 2] = 100
    >>> float(Median(size=3)(Volume(a, np.eye(4))).array.max())
    0.0
    """

    name = "median"

    def __init__(self, size: int = 3, per_slice: bool = True, *, workers: int | None = 1) -> None:
        self.size = int(check_range("size", size, low=1, high=51, transform=self.name))
        self._init_common(per_slice, workers)

    def params(self) -> dict[str, Any]:
        return {"size": self.size, "per_slice": self.per_slice}

    def apply(self, volume: Volume) -> Applied:
        return self._run(volume, lambda a: median(a, size=self.size)), self.params(), {}


class Gaussian(_Denoiser):
    """Gaussian smoothing; ``sigma_mm`` (converted with the spacing) or ``sigma`` in voxels.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> vol = Volume(np.zeros((3, 8, 8)), np.diag([3.0, 0.5, 0.5, 1]))
    >>> Gaussian(sigma_mm=1.0, per_slice=False)(vol).history[-1][1]["sigma"]
    [0.3333333333333333, 2.0, 2.0]
    """

    name = "gaussian"

    def __init__(
        self,
        sigma: float | Sequence[float] | None = None,
        sigma_mm: float | Sequence[float] | None = None,
        per_slice: bool = True,
        truncate: float = 4.0,
        *,
        workers: int | None = 1,
    ) -> None:
        self._init_common(per_slice, workers)
        if (sigma is None) == (sigma_mm is None):
            raise TransformError(
                f"{self.name}: give exactly one of sigma (voxels) or sigma_mm, found sigma={sigma}, sigma_mm={sigma_mm}"
            )
        ndim = 2 if self.per_slice else 3
        self.sigma = self._sizes("sigma", sigma, ndim)
        self.sigma_mm = self._sizes("sigma_mm", sigma_mm, ndim)
        self.truncate = check_range("truncate", truncate, low=0, low_open=True, transform=self.name)

    def _sizes(self, label: str, value: Any, ndim: int) -> list[float] | None:
        if value is None:
            return None
        values = [value] * ndim if np.isscalar(value) else list(value)
        if len(values) != ndim:
            raise TransformError(f"{self.name}: {label} needs {ndim} values, found {value!r}")
        return [check_range(label, v, low=0, high=100, transform=self.name) for v in values]

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "sigma_mm": self.sigma_mm, "per_slice": self.per_slice, "truncate": self.truncate}

    def apply(self, volume: Volume) -> Applied:
        sigma = self.sigma
        if sigma is None:
            assert self.sigma_mm is not None  # __init__ takes exactly one of sigma and sigma_mm
            spacing = volume.spacing[-len(self.sigma_mm) :]
            sigma = [mm / s for mm, s in zip(self.sigma_mm, spacing)]
        out = self._run(volume, lambda a: gaussian(a, sigma=sigma, truncate=self.truncate))
        return out, {**self.params(), "sigma": [float(s) for s in sigma], "sigma_mm": None}, {}
