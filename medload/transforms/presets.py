"""Named, documented pipelines: ``medload.preset("ct-brain")``. Details and sources: docs/presets.md.

Presets do not resize: the converter appends ``ResizeSlices(size)`` when asked (``--size 256``).
"""

from __future__ import annotations

from collections.abc import Callable

from medload.errors import TransformError
from medload.transforms.colour import Grayscale, ScaleStoredRange
from medload.transforms.ct import MultiWindow, Window
from medload.transforms.mr import N4BiasCorrection, PercentileClip, ZScore
from medload.transforms.pipeline import Pipeline
from medload.transforms.radiograph import RadiographWindow

__all__ = ["PRESETS", "preset", "default_preset"]

_BUILDERS: dict[str, tuple[str, Callable[[], Pipeline]]] = {
    "ct-brain": ("CT brain window 40/80 HU scaled to [0,1]", lambda: Pipeline([Window("brain")])),
    "ct-lung": ("CT lung window -600/1500 HU scaled to [0,1]", lambda: Pipeline([Window("lung")])),
    "ct-abdomen": ("CT abdomen/soft-tissue window 40/400 HU scaled to [0,1]", lambda: Pipeline([Window("abdomen")])),
    "ct-bone": ("CT bone window 400/1800 HU scaled to [0,1]", lambda: Pipeline([Window("bone")])),
    "ct-multiwindow": (
        "CT brain 40/80, subdural 80/200 and bone 400/1800 windows as 3 channels (C, Z, Y, X)",
        lambda: Pipeline([MultiWindow(("brain", "subdural", "bone"))]),
    ),
    "mr-brain": (
        "MR: N4 bias correction (shrink 4), clip to 0.5-99.5th percentile of the head, z-score inside the head",
        lambda: Pipeline(
            [N4BiasCorrection(shrink_factor=4), PercentileClip(0.5, 99.5, mask="foreground"), ZScore(mask="foreground")]
        ),
    ),
    "mr-body": (
        "MR body: N4 bias correction (shrink 4), clip to 1-99th percentile of the body, z-score inside the body",
        lambda: Pipeline(
            [N4BiasCorrection(shrink_factor=4), PercentileClip(1.0, 99.0, mask="foreground"), ZScore(mask="foreground")]
        ),
    ),
    "xray": (
        "Radiograph (CR/DX/MG): the header's VOI window (first if several), bright = dense, to [0,1]",
        lambda: Pipeline([RadiographWindow()]),
    ),
    "image": (
        "Plain image (PNG/JPEG/TIFF/BMP, modality OT): the stored 8/16-bit range scaled to [0,1], colour kept",
        lambda: Pipeline([ScaleStoredRange()]),
    ),
    "image-grayscale": (
        "Plain image: RGB to grey (ITU-R BT.601 luma), then the stored range scaled to [0,1]",
        lambda: Pipeline([Grayscale(), ScaleStoredRange()]),
    ),
}

#: Preset name -> one-line description.
PRESETS: dict[str, str] = {name: desc for name, (desc, _) in _BUILDERS.items()}


def preset(name: str) -> Pipeline:
    """Return a new Pipeline for the preset ``name`` (see :data:`PRESETS`).

    Examples
    --------
    >>> print(preset("ct-abdomen").describe())
    1. window(window=abdomen, center=40.0, width=400.0, force=False)
    >>> sorted(PRESETS)[:3]
    ['ct-abdomen', 'ct-bone', 'ct-brain']
    """
    try:
        return _BUILDERS[name][1]()
    except KeyError:
        raise TransformError(f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}") from None


def default_preset(modality: str) -> str | None:
    """The preset used when none is named: ct-abdomen for CT, mr-body for MR, xray for CR/DX/MG, image for OT.

    Examples
    --------
    >>> default_preset("MR"), default_preset("PT")
    ('mr-body', None)
    """
    return {"CT": "ct-abdomen", "MR": "mr-body", "CR": "xray", "DX": "xray", "MG": "xray", "OT": "image"}.get(modality)
