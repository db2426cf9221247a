"""Intensity transforms, by family: CT windows and body mask, MR bias correction and normalization, radiograph VOI.

The families live in their own modules: :mod:`~medload.transforms.ct` (HU clip, windows,
multi-window channels, body mask), :mod:`~medload.transforms.mr` (N4, percentile clip,
z-score, min-max, Nyul), :mod:`~medload.transforms.radiograph` (VOI window) and
:mod:`~medload.transforms.masks` (the body and foreground masks they share). This module
holds :class:`FillNonFinite`, which any modality may need first, and re-exports the families'
names so ``medload.transforms.intensity`` keeps working as an import path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.transforms.base import Transform, check_range
from medload.transforms.ct import WINDOWS, CTBodyMask, HUClip, MultiWindow, Window, table_codes, window, window_table
from medload.transforms.masks import ct_body_mask, foreground_mask
from medload.transforms.masks import voxel_mask as voxel_mask
from medload.transforms.mr import NYUL_PERCENTILES as NYUL_PERCENTILES
from medload.transforms.mr import (
    MinMax,
    N4BiasCorrection,
    NyulStandardize,
    PercentileClip,
    ZScore,
    minmax,
    n4_bias_correct,
    nyul_apply,
    nyul_fit,
    percentile_clip,
    zscore,
)
from medload.transforms.radiograph import RadiographWindow, voi_lut_linear
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

    def apply(self, volume: Volume) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        array = volume.array
        if not np.issubdtype(array.dtype, np.floating):
            return array, self.params(), {}
        finite = array[np.isfinite(array)]
        high = float(finite.max()) if finite.size else self.nan
        low = float(finite.min()) if finite.size else self.nan
        return np.nan_to_num(array, nan=self.nan, posinf=high, neginf=low), self.params(), {}
