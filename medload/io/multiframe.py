"""Classic multi-frame images placed by GridFrameOffsetVector (RT Dose, some NM/PET exports).

Such a file has one ImagePositionPatient (of frame 0), one ImageOrientationPatient and one
PixelSpacing; GridFrameOffsetVector (3004,000C) gives each frame's offset along the slice
normal. PS3.3 C.8.8.3.2: when its first value is 0 the offsets are relative to the image
position; otherwise they are absolute coordinates along the normal (defined for axial
frames only). An RT Dose's stored values times DoseGridScaling (3004,000E) are dose in
DoseUnits (GY, or RELATIVE: percent).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.errors import ReadError
from medload.deidmeta import shown_value
from medload.geometry import slice_normal
from medload.io.frame import Frame, element_value, number, vector

__all__ = ["GRID_TAGS", "RT_DOSE_STORAGE", "dose_intensity", "dose_scaling", "grid_frames", "has_frame_grid"]

_GRID_OFFSETS, _DOSE_SCALING, _DOSE_UNITS, _DOSE_TYPE = 0x3004000C, 0x3004000E, 0x30040002, 0x30040004

#: SOP Class UID of RT Dose Storage.
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
#: Header elements read for these objects.
GRID_TAGS = [_GRID_OFFSETS, _DOSE_SCALING, _DOSE_UNITS, _DOSE_TYPE]


def has_frame_grid(ds: Any) -> bool:
    """A multi-frame object without functional groups whose frames GridFrameOffsetVector places."""
    return "PerFrameFunctionalGroupsSequence" not in ds and element_value(ds, _GRID_OFFSETS) not in (None, "", b"")


def _offsets(ds: Any, n: int, path: str) -> np.ndarray:
    raw = element_value(ds, _GRID_OFFSETS)
    values = [raw] if isinstance(raw, (int, float)) else list(raw)
    try:
        offsets = np.array([float(v) for v in values])
    except (TypeError, ValueError) as exc:
        raise ReadError(
            f"{path}: GridFrameOffsetVector {shown_value(raw)} is not a list of numbers; fix the header or re-export."
        ) from exc
    if len(offsets) != n or not np.all(np.isfinite(offsets)):
        raise ReadError(
            f"{path}: GridFrameOffsetVector has {len(offsets)} value(s) for {n} frames; expected one offset per "
            "frame. The header is damaged; re-export the object."
        )
    return offsets


def grid_frames(ds: Any, path: str, split: tuple[Any, ...], sop_uid: str) -> list[Frame]:
    """One :class:`Frame` per frame, each at its GridFrameOffsetVector position along the normal."""
    n = int(number(ds.get("NumberOfFrames"), 1) or 1)
    position = vector(ds.get("ImagePositionPatient"), 3)
    orientation = vector(ds.get("ImageOrientationPatient"), 6)
    spacing = vector(ds.get("PixelSpacing"), 2)
    if position is None or orientation is None:
        raise ReadError(
            f"{path}: GridFrameOffsetVector without ImagePositionPatient/ImageOrientationPatient; "
            "cannot place the frames. Fix the header or re-export the object."
        )
    offsets = _offsets(ds, n, path)
    normal = slice_normal(orientation)
    origin = np.asarray(position, dtype=float)
    if offsets[0] != 0:
        if np.abs(np.abs(normal) - [0.0, 0.0, 1.0]).max() > 1e-4:
            raise ReadError(
                f"{path}: GridFrameOffsetVector holds absolute coordinates (first value {offsets[0]:g}, not 0), "
                "which PS3.3 defines for axial frames only, but the frames are not axial. Re-export the object."
            )
        offsets = offsets - float(origin @ normal)  # absolute along the normal -> relative to frame 0
    scaling = dose_scaling(ds)
    slope = scaling if scaling else float(number(ds.get("RescaleSlope"), 1.0) or 1.0)
    intercept = 0.0 if scaling else float(number(ds.get("RescaleIntercept"), 0.0) or 0.0)
    return [
        Frame(
            file=path,
            frame=i,
            mosaic=-1,
            position=tuple(float(v) for v in origin + offsets[i] * normal),
            orientation=orientation,
            pixel_spacing=spacing,
            slope=slope,
            intercept=intercept,
            time_key=(float(i),),
            split_key=split,
            uid=f"{sop_uid}#{i}",
        )
        for i in range(n)
    ]


def dose_scaling(ds: Any) -> float | None:
    """DoseGridScaling of an RT Dose (``None`` when absent, zero or not a number)."""
    scaling = number(element_value(ds, _DOSE_SCALING))
    return float(scaling) if scaling and np.isfinite(scaling) else None


def dose_intensity(ds: Any) -> str:
    """What an RT Dose's values mean ("" for other objects).

    Examples
    --------
    >>> dose_intensity({0x30040002: "GY", 0x3004000E: "1e-05"})
    'dose in Gy (stored values x DoseGridScaling 1e-05)'
    """
    scaling = dose_scaling(ds)
    if scaling is None:
        return ""
    units = str(element_value(ds, _DOSE_UNITS) or "").strip().upper()
    # DoseUnits' defined terms only: other text is no unit (and this text goes into stores).
    what = {"GY": "dose in Gy", "RELATIVE": "relative dose (percent of the reference)"}.get(
        units, "dose in units DoseUnits does not define (not GY or RELATIVE)"
    )
    return f"{what} (stored values x DoseGridScaling {scaling:g})"
