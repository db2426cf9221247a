"""Modality-specific preprocessing, recorded and replayable.

Pure array functions live in the family modules (:mod:`~medload.transforms.ct`,
:mod:`~medload.transforms.mr`, :mod:`~medload.transforms.radiograph`,
:mod:`~medload.transforms.masks`, :mod:`~medload.transforms.equalize`,
:mod:`~medload.transforms.denoise`, :mod:`~medload.transforms.spatial`,
:mod:`~medload.transforms.orientation`; :mod:`~medload.transforms.intensity` gathers the
intensity families); the :class:`Transform` classes apply them to Volumes and append
``(name, concrete parameters)`` to ``Volume.history``.

Examples
--------
>>> import numpy as np, medload
>>> vol = medload.Volume(np.zeros((2, 4, 4), np.int16), np.eye(4), modality="CT")
>>> medload.preset("ct-brain")(vol).meta["intensity"]
'HU window 40/80 (brain) scaled to [0,1]'
"""

from medload.transforms.base import REGISTRY, Transform, get_transform, map_slices
from medload.transforms.colour import Grayscale, ScaleStoredRange
from medload.transforms.denoise import (
    Bilateral,
    CurvatureDiffusion,
    Gaussian,
    GradientDiffusion,
    Median,
    NLMeans,
    TVDenoise,
)
from medload.transforms.equalize import CLAHE, HistogramEqualize
from medload.transforms.intensity import (
    WINDOWS,
    CTBodyMask,
    FillNonFinite,
    HUClip,
    MinMax,
    MultiWindow,
    N4BiasCorrection,
    NyulStandardize,
    PercentileClip,
    RadiographWindow,
    Window,
    ZScore,
)
from medload.transforms.orientation import CanonicalSlices, Reorient
from medload.transforms.pipeline import Pipeline
from medload.transforms.presets import PRESETS, default_preset, preset
from medload.transforms.spatial import CropForeground, Resample, ResizeSlices

__all__ = [
    "REGISTRY",
    "Transform",
    "get_transform",
    "map_slices",
    "Pipeline",
    "PRESETS",
    "preset",
    "default_preset",
    "WINDOWS",
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
    "ScaleStoredRange",
    "Grayscale",
    "HistogramEqualize",
    "CLAHE",
    "NLMeans",
    "TVDenoise",
    "Bilateral",
    "CurvatureDiffusion",
    "GradientDiffusion",
    "Median",
    "Gaussian",
    "Resample",
    "Reorient",
    "CanonicalSlices",
    "CropForeground",
    "ResizeSlices",
]
