"""Intensity transforms: CT windows and body mask, MR bias correction and normalization, radiograph VOI.

Pure array functions first (keyword-only options, numpy in, numpy out), then the thin
:class:`~medload.transforms.base.Transform` classes that apply them to Volumes and record
their concrete parameters. Named CT windows and their sources: ``docs/presets.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Transform, check_finite, check_range, map_frames
from medload.volume import Volume

__all__ = [
    "WINDOWS",
    "window",
    "window_table",
    "table_codes",
    "ct_body_mask",
    "foreground_mask",
    "n4_bias_correct",
    "percentile_clip",
    "zscore",
    "minmax",
    "nyul_fit",
    "nyul_apply",
    "voi_lut_linear",
    "FillNonFinite",
    "HUClip",
    "Window",
    "MultiWindow",
    "CTBodyMask",
    "N4BiasCorrection",
    "PercentileClip",
    "ZScore",
    "MinMax",
    "NyulStandardize",
    "RadiographWindow",
]

#: Named CT windows, ``name -> (center/level HU, width HU)``; sources in docs/presets.md.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "stroke": (40.0, 40.0),
    "temporal-bone": (600.0, 2800.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "soft-tissue": (40.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
}


# --- pure functions ----------------------------------------------------------------------
def window(array: np.ndarray, *, center: float, width: float) -> np.ndarray:
    """Clip to ``[center - width/2, center + width/2]`` and scale linearly to ``[0, 1]`` (float32).

    Examples
    --------
    >>> import numpy as np
    >>> window(np.array([-100, 40, 80, 500]), center=40, width=80).tolist()
    [0.0, 0.5, 1.0, 1.0]
    """
    check_range("width", width, low=0, low_open=True, transform="window")
    low = center - width / 2.0
    # One float32 volume, worked in place: two whole-volume temporaries fewer (268 MB of fresh
    # pages each on a 512x512x256 CT). astype, not np.subtract(dtype=float32): numpy's
    # buffered casting inside a ufunc measured slower than the plain cast.
    out = np.asarray(array).astype(np.float32)
    out -= np.float32(low)
    out *= np.float32(1.0 / width)
    return np.clip(out, 0.0, 1.0, out=out)


def window_table(dtype: Any, *, center: float, width: float) -> np.ndarray | None:
    """:func:`window` of every value an integer type of at most 16 bits holds, as a lookup table.

    ``table[code]`` is the windowed value of a voxel whose bit pattern read as unsigned is
    ``code`` (:func:`table_codes`), computed by :func:`window` itself, so looking voxels up
    gives the very values the volume's window gives. ``None`` for floats and wider integers.

    Examples
    --------
    >>> import numpy as np
    >>> table = window_table(np.int16, center=40, width=80)
    >>> hu = np.array([-1000, 0, 40, 60, 3000], np.int16)
    >>> bool((table[table_codes(hu)] == window(hu, center=40, width=80)).all()), table.shape
    (True, (65536,))
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        return None
    codes = np.arange(1 << (8 * dtype.itemsize), dtype=f"u{dtype.itemsize}").view(dtype)
    return window(codes, center=center, width=width)


def table_codes(array: np.ndarray) -> np.ndarray:
    """The unsigned view of an integer array of at most 16 bits: indices into :func:`window_table` (no copy).

    Examples
    --------
    >>> import numpy as np
    >>> table_codes(np.array([-1, 0, 1], np.int16)).tolist()
    [65535, 0, 1]
    """
    array = np.asarray(array)
    return array.view(f"u{array.dtype.itemsize}")


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


def ct_body_mask(hu: np.ndarray, *, threshold: float = -500.0, opening_mm: float = 3.0,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
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
        return np.stack([
            n4_bias_correct(s, spacing=spacing[-2:], mask=None if mask is None else np.asarray(mask)[i],
                            shrink_factor=shrink_factor, iterations=iterations,
                            convergence_threshold=convergence_threshold)
            for i, s in enumerate(array)])
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


def percentile_clip(array: np.ndarray, *, lower: float = 0.5, upper: float = 99.5,
                    mask: str | np.ndarray | None = None) -> np.ndarray:
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


def nyul_fit(arrays: Sequence[np.ndarray], *, masks: Sequence[np.ndarray | None] | None = None,
             percentiles: Sequence[float] = NYUL_PERCENTILES,
             scale: tuple[float, float] = (0.0, 100.0)) -> list[float]:
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
    masks = list(masks) if masks is not None else ["foreground"] * len(arrays)
    low, high = (float(v) for v in scale)
    mapped = []
    for array, mask in zip(arrays, masks):
        array = np.asarray(array, dtype=np.float64)
        check_finite(array, "nyul_fit")
        marks = np.percentile(array[voxel_mask(array, mask)], percentiles)
        if marks[-1] <= marks[0]:
            continue  # a constant volume says nothing about the histogram's shape
        mapped.append(low + (marks - marks[0]) / (marks[-1] - marks[0]) * (high - low))
    if not mapped:
        raise TransformError("nyul_fit: every volume was constant inside its mask; nothing to fit")
    return [float(v) for v in np.mean(mapped, axis=0)]


def nyul_apply(array: np.ndarray, *, landmarks: Sequence[float],
               percentiles: Sequence[float] = NYUL_PERCENTILES,
               mask: str | np.ndarray | None = None) -> np.ndarray:
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
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if len(landmarks) != len(percentiles):
        raise TransformError(
            f"nyul_apply: expected as many landmarks as percentiles ({len(percentiles)}), found {len(landmarks)}"
        )
    array_f = np.asarray(array, dtype=np.float64)
    marks = np.percentile(array_f[voxel_mask(array_f, mask)], percentiles)
    if marks[-1] <= marks[0]:
        return np.full(array_f.shape, landmarks[len(landmarks) // 2], np.float32)
    # Strictly increasing source landmarks for interp (ties from a spiky histogram).
    marks = np.maximum.accumulate(marks + np.arange(len(marks)) * 1e-9 * (marks[-1] - marks[0]))
    out = np.interp(array_f, marks, landmarks)
    lo_slope = (landmarks[1] - landmarks[0]) / (marks[1] - marks[0])
    hi_slope = (landmarks[-1] - landmarks[-2]) / (marks[-1] - marks[-2])
    out = np.where(array_f < marks[0], landmarks[0] + (array_f - marks[0]) * lo_slope, out)
    out = np.where(array_f > marks[-1], landmarks[-1] + (array_f - marks[-1]) * hi_slope, out)
    return out.astype(np.float32)


def voi_lut_linear(array: np.ndarray, *, center: float, width: float) -> np.ndarray:
    """DICOM VOI LINEAR function (PS3.3 C.11.2.1.2.1) to ``[0, 1]``, float32.

    The same numbers as ``pydicom.pixels.apply_windowing`` with output range ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> voi_lut_linear(np.array([0, 2048, 4095]), center=2048, width=4096).round(3).tolist()
    [0.0, 0.5, 1.0]
    """
    check_range("width", width, low=1, transform="voi_lut_linear")
    x = np.asarray(array, dtype=np.float64)
    if width == 1:
        return (x > center - 0.5).astype(np.float32)
    out = ((x - (center - 0.5)) / (width - 1) + 0.5)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --- Volume transforms -------------------------------------------------------------------
def _require_ct(volume: Volume, name: str, force: bool) -> None:
    if force:
        return
    meta_intensity = volume.meta.get("intensity")
    if volume.modality == "CT" and meta_intensity in (None, "HU"):
        return
    raise TransformError(
        f"{name}: a CT window expects a CT volume in HU (modality 'CT', meta intensity 'HU'), "
        f"found modality {volume.modality!r} with intensity {meta_intensity!r}; "
        "give the modality (load(..., modality='CT'); medload convert --modality CT) or pass force=True "
        "(medload convert --force) if you know the values are Hounsfield units."
    )


class FillNonFinite(Transform):
    """Replace NaN voxels with ``nan`` and +/-inf with the largest/smallest finite value.

    The one transform that accepts NaN/inf; put it first when a source may contain them.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.array([[[np.nan, 1.0, np.inf]]]), np.eye(4))
    >>> FillNonFinite()(vol).array.tolist()
    [[[0.0, 1.0, 1.0]]]
    """

    name = "fill_nonfinite"

    def __init__(self, nan: float = 0.0) -> None:
        self.nan = check_range("nan", nan, transform=self.name)

    def params(self) -> dict[str, Any]:
        return {"nan": self.nan}

    def apply(self, volume):
        array = volume.array
        if not np.issubdtype(array.dtype, np.floating):
            return array, self.params(), {}
        finite = array[np.isfinite(array)]
        high = float(finite.max()) if finite.size else self.nan
        low = float(finite.min()) if finite.size else self.nan
        return np.nan_to_num(array, nan=self.nan, posinf=high, neginf=low), self.params(), {}


class HUClip(Transform):
    """Clip Hounsfield units to ``[low, high]`` (values keep their meaning: still HU).

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.array([[[-2000, 100]]], np.int16), np.eye(4), modality="CT")
    >>> HUClip(low=-1000, high=50)(vol).array.tolist()
    [[[-1000.0, 50.0]]]
    """

    name = "hu_clip"

    def __init__(self, low: float = -1024.0, high: float = 3071.0, *, force: bool = False) -> None:
        self.low = check_range("low", low, transform=self.name)
        self.high = check_range("high", high, low=self.low, low_open=True, transform=self.name)
        self.force = bool(force)

    def params(self):
        return {"low": self.low, "high": self.high, "force": self.force}

    def apply(self, volume):
        _require_ct(volume, self.name, self.force)
        check_finite(volume.array, self.name)
        out = np.clip(volume.array.astype(np.float32, copy=False), np.float32(self.low), np.float32(self.high))
        return out, self.params(), {}


def _window_spec(name: str | None, center: float | None, width: float | None, where: str) -> tuple[str | None, float, float]:
    if name is not None:
        if name not in WINDOWS:
            raise TransformError(f"{where}: unknown window name {name!r}; expected one of {', '.join(WINDOWS)} "
                                 "or center= and width= in HU")
        c, w = WINDOWS[name]
        center = c if center is None else center
        width = w if width is None else width
    if center is None or width is None:
        raise TransformError(f"{where}: give a window name or both center and width in HU, found center={center}, width={width}")
    return name, check_range("center", center, transform=where), check_range("width", width, low=0, low_open=True, transform=where)


class Window(Transform):
    """A CT window (named or center/width in HU) scaled to ``[0, 1]``.

    Refuses a volume that is not CT in HU unless ``force=True``. Sets ``meta["intensity"]``.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.array([[[0, 40, 80]]], np.int16), np.eye(4), modality="CT")
    >>> out = Window("brain")(vol)
    >>> out.array.tolist(), out.meta["intensity"]
    ([[[0.0, 0.5, 1.0]]], 'HU window 40/80 (brain) scaled to [0,1]')
    """

    name = "window"

    def __init__(self, window: str | None = None, *, center: float | None = None,
                 width: float | None = None, force: bool = False) -> None:
        self.window, self.center, self.width = _window_spec(window, center, width, self.name)
        self.force = bool(force)

    def params(self):
        return {"window": self.window, "center": self.center, "width": self.width, "force": self.force}

    def apply(self, volume):
        _require_ct(volume, self.name, self.force)
        check_finite(volume.array, self.name)
        out = window(volume.array, center=self.center, width=self.width)
        return out, self.params(), {"meta": self._meta(volume)}

    def _meta(self, volume: Volume) -> dict[str, Any]:
        meta = volume.meta
        label = f" ({self.window})" if self.window else ""
        meta["intensity"] = f"HU window {self.center:g}/{self.width:g}{label} scaled to [0,1]"
        return meta

    def table(self, volume: Volume) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]] | None:
        """This window as a lookup table over the volume's integer codes, with what :meth:`apply` records.

        Returns ``(table, params, changes)`` like :meth:`apply` with :func:`window_table` in
        place of the windowed array (``table[table_codes(volume.array)]`` is that array), or
        ``None`` when the volume is not integer of at most 16 bits. A converter that stores
        uint8 composes the table with the store's quantization and looks every voxel up once
        (``medload.batch.fused``), instead of a float32 volume and then its quantization.

        Examples
        --------
        >>> import numpy as np
        >>> vol = Volume(np.array([[[0, 40, 80]]], np.int16), np.eye(4), modality="CT")
        >>> table, params, changes = Window("brain").table(vol)
        >>> table[table_codes(vol.array)].tolist() == Window("brain")(vol).array.tolist()
        True
        """
        _require_ct(volume, self.name, self.force)
        table = window_table(volume.array.dtype, center=self.center, width=self.width)
        if table is None:
            return None
        return table, self.params(), {"meta": self._meta(volume)}


class MultiWindow(Transform):
    """Several CT windows as channels: a 3D CT becomes ``(C, Z, Y, X)`` with ``meta["channels"]``.

    The default (brain, subdural, bone) is the usual 3-channel input for head CT networks.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.zeros((2, 3, 3), np.int16), np.eye(4), modality="CT")
    >>> out = MultiWindow()(vol)
    >>> out.shape, out.meta["channels"]
    ((3, 2, 3, 3), ['brain', 'subdural', 'bone'])
    """

    name = "multi_window"

    def __init__(self, windows: Sequence[str | Sequence[float]] = ("brain", "subdural", "bone"), *,
                 force: bool = False) -> None:
        if isinstance(windows, str) or len(windows) == 0:
            raise TransformError(f"{self.name}: windows must be a non-empty list of names or [center, width] pairs, found {windows!r}")
        specs = []
        for w in windows:
            if isinstance(w, str):
                specs.append((w,) + _window_spec(w, None, None, self.name)[1:])
            else:
                c, wd = w
                specs.append((f"{float(c):g}/{float(wd):g}",) + _window_spec(None, c, wd, self.name)[1:])
        self.specs = specs
        self.windows = [s[0] if s[0] in WINDOWS else [s[1], s[2]] for s in specs]
        self.force = bool(force)

    def params(self):
        return {"windows": list(self.windows), "force": self.force}

    def apply(self, volume):
        _require_ct(volume, self.name, self.force)
        if volume.array.ndim != 3:
            raise TransformError(f"{self.name}: expected a 3D CT (Z, Y, X), found shape {volume.shape}")
        check_finite(volume.array, self.name)
        hu = np.asarray(volume.array, dtype=np.float32)  # converted once, not once per window
        out = np.stack([window(hu, center=c, width=w) for _, c, w in self.specs])
        return out, self.params(), {"meta": self._meta(volume)}

    def _meta(self, volume: Volume) -> dict[str, Any]:
        meta = volume.meta
        meta["channels"] = [s[0] for s in self.specs]
        meta["intensity"] = "HU windows " + ", ".join(f"{n} {c:g}/{w:g}" for n, c, w in self.specs) + \
            " as channels, each scaled to [0,1]"
        return meta

    def table(self, volume: Volume) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]] | None:
        """The windows as lookup tables ``(C, codes)``, with what :meth:`apply` records (see :meth:`Window.table`).

        Examples
        --------
        >>> import numpy as np
        >>> vol = Volume(np.array([[[0, 40, 500]]], np.int16), np.eye(4), modality="CT")
        >>> tables, _, changes = MultiWindow().table(vol)
        >>> np.array_equal(tables[:, table_codes(vol.array)], MultiWindow()(vol).array), changes["meta"]["channels"]
        (True, ['brain', 'subdural', 'bone'])
        """
        _require_ct(volume, self.name, self.force)
        if volume.array.ndim != 3:
            raise TransformError(f"{self.name}: expected a 3D CT (Z, Y, X), found shape {volume.shape}")
        tables = [window_table(volume.array.dtype, center=c, width=w) for _, c, w in self.specs]
        if tables[0] is None:
            return None
        return np.stack(tables), self.params(), {"meta": self._meta(volume)}


class CTBodyMask(Transform):
    """Set everything outside the patient's body (air, table) to ``fill`` HU.

    Examples
    --------
    >>> import numpy as np
    >>> hu = np.full((1, 20, 20), -1000.0); hu[:, 4:14, 4:14] = 40; hu[:, 17:19, 2:18] = 200
    >>> out = CTBodyMask()(Volume(hu, np.eye(4), modality="CT")).array
    >>> float(out[0, 18, 10]), float(out[0, 8, 8])
    (-1024.0, 40.0)
    """

    name = "ct_body_mask"

    def __init__(self, threshold: float = -500.0, fill: float = -1024.0, *, opening_mm: float = 3.0,
                 force: bool = False) -> None:
        self.threshold = check_range("threshold", threshold, transform=self.name)
        self.fill = check_range("fill", fill, transform=self.name)
        self.opening_mm = check_range("opening_mm", opening_mm, low=0, transform=self.name)
        self.force = bool(force)

    def params(self):
        return {"threshold": self.threshold, "fill": self.fill, "opening_mm": self.opening_mm, "force": self.force}

    def apply(self, volume):
        _require_ct(volume, self.name, self.force)
        check_finite(volume.array, self.name)

        def one(hu):
            mask = ct_body_mask(hu, threshold=self.threshold, opening_mm=self.opening_mm, spacing=volume.spacing)
            return np.where(mask, hu, self.fill).astype(np.float32)

        return map_frames(one, volume.array), self.params(), {}


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

    def __init__(self, shrink_factor: int = 4, iterations: Sequence[int] = (50, 50, 50, 50),
                 convergence_threshold: float = 0.001) -> None:
        self.shrink_factor = int(check_range("shrink_factor", shrink_factor, low=1, high=16, transform=self.name))
        if len(iterations) == 0 or any(int(i) < 1 for i in iterations):
            raise TransformError(f"{self.name}: iterations must be a non-empty list of positive counts per level, found {iterations!r}")
        self.iterations = [int(i) for i in iterations]
        self.convergence_threshold = check_range("convergence_threshold", convergence_threshold, low=0, transform=self.name)

    def params(self):
        return {"shrink_factor": self.shrink_factor, "iterations": self.iterations,
                "convergence_threshold": self.convergence_threshold}

    def apply(self, volume):
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

    def params(self):
        return {"lower": self.lower, "upper": self.upper, "mask": self.mask}

    def apply(self, volume):
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

    def params(self):
        return {"mask": self.mask}

    def apply(self, volume):
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

    def params(self):
        return {"mask": self.mask}

    def apply(self, volume):
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

    def __init__(self, landmarks: Sequence[float], percentiles: Sequence[float] = NYUL_PERCENTILES,
                 mask: str = "foreground") -> None:
        self.landmarks = [float(v) for v in landmarks]
        self.percentiles = [float(v) for v in percentiles]
        if len(self.landmarks) != len(self.percentiles) or len(self.landmarks) < 2:
            raise TransformError(f"{self.name}: expected {len(self.percentiles)} landmarks (one per percentile), "
                                 f"found {len(self.landmarks)}")
        if np.any(np.diff(self.landmarks) < 0):
            raise TransformError(f"{self.name}: landmarks must increase, found {self.landmarks}")
        self.mask = self._check_mask(mask)

    @classmethod
    def fit(cls, volumes: Sequence[Volume], *, mask: str = "foreground",
            percentiles: Sequence[float] = NYUL_PERCENTILES,
            scale: tuple[float, float] = (0.0, 100.0)) -> NyulStandardize:
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

    def params(self):
        return {"landmarks": self.landmarks, "percentiles": self.percentiles, "mask": self.mask}

    def apply(self, volume):
        check_finite(volume.array, self.name)
        out = map_frames(lambda a: nyul_apply(a, landmarks=self.landmarks, percentiles=self.percentiles,
                                              mask=self.mask), volume.array)
        meta = volume.meta
        meta["intensity"] = f"Nyul standardized to landmarks {self.landmarks[0]:g}..{self.landmarks[-1]:g}"
        return out, self.params(), {"meta": meta}


def _first_number(value: Any) -> float | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _reader_inverted(meta: dict[str, Any]) -> bool:
    """Whether the reader already mirrored MONOCHROME1 pixels (``meta["monochrome1_mirrored"]``)."""
    return meta.get("monochrome1_mirrored") is True


class RadiographWindow(Transform):
    """A radiograph's VOI window to ``[0, 1]``: from ``meta`` (the header) or given.

    ``center``/``width`` default to ``meta["window_center"]``/``meta["window_width"]`` (the first
    when the header lists several); without them the 0.5-99.5 percentile range is used. The
    concrete window goes to history.

    MONOCHROME1 (``meta["photometric_interpretation"]``; low values are white): medload's DICOM
    reader already mirrors such pixels within their stored range and sets
    ``meta["monochrome1_mirrored"] = True``. The header's window then describes the unmirrored values: with
    ``meta["stored_range"] = [lo, hi]`` its centre is mirrored to ``lo + hi - center``; without it
    the percentile window is used instead (never a window on the wrong side). Pixels not yet
    mirrored are inverted after windowing so that bright is always dense.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.array([[[0, 2048, 4095]]], np.uint16), np.eye(4), modality="DX",
    ...              meta={"window_center": 2048, "window_width": 4096})
    >>> RadiographWindow()(vol).array.round(3).tolist()
    [[[0.0, 0.5, 1.0]]]
    """

    name = "radiograph_window"

    def __init__(self, center: float | None = None, width: float | None = None, invert: bool | None = None) -> None:
        self.center = None if center is None else check_range("center", center, transform=self.name)
        self.width = None if width is None else check_range("width", width, low=1, transform=self.name)
        self.invert = invert

    def params(self):
        return {"center": self.center, "width": self.width, "invert": self.invert}

    def apply(self, volume):
        check_finite(volume.array, self.name)
        meta = volume.meta
        monochrome1 = str(meta.get("photometric_interpretation", "")).upper() == "MONOCHROME1"
        already = monochrome1 and _reader_inverted(meta)
        center = self.center if self.center is not None else _first_number(meta.get("window_center"))
        width = self.width if self.width is not None else _first_number(meta.get("window_width"))
        source = "given" if self.center is not None and self.width is not None else "header"
        # Only the header's centre describes unmirrored values; a centre the user gave is theirs.
        if self.center is None and already and center is not None:
            stored = meta.get("stored_range")
            if isinstance(stored, (list, tuple)) and len(stored) == 2:
                center = float(stored[0]) + float(stored[1]) - center
                source = "header, mirrored with the MONOCHROME1 pixels"
            else:
                center = None
        if center is None or width is None or width < 1:
            lo, hi = np.percentile(volume.array, [0.5, 99.5])
            width = max(float(hi - lo), 1.0)
            center = float(lo) + width / 2
            source = "0.5-99.5 percentiles"
        invert = self.invert
        if invert is None:
            invert = monochrome1 and not already
        out = voi_lut_linear(volume.array, center=center, width=width)
        if invert:
            out = 1.0 - out
        meta["intensity"] = f"VOI window {center:g}/{width:g} ({source}) scaled to [0,1]" + (", inverted" if invert else "")
        return out, {"center": float(center), "width": float(width), "invert": bool(invert)}, {"meta": meta}
