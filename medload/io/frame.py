"""``Frame``: one 2D image of a DICOM file, and the value readers the header modules share.

A classic file holds one image; a Siemens mosaic holds ``n`` slices tiled in one image
(``mosaic.py``); an enhanced multi-frame object holds ``NumberOfFrames`` images
(``enhanced.py``). All become :class:`Frame` records with the same fields, so grouping and
sorting (``scan.py``, ``sorting.py``) never need to know which kind a file was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np

__all__ = ["Frame", "dicom_seconds", "element_value", "first_item", "image_type", "number", "vector"]


@dataclass
class Frame:
    """One 2D image: where it lies and how to turn its stored values into real ones."""

    file: str
    frame: int  # index in a multi-frame file, -1 for a single-frame file
    mosaic: int  # tile index in a Siemens mosaic, -1 otherwise
    position: tuple[float, ...] | None  # LPS mm of the first pixel's centre (3 values)
    orientation: tuple[float, ...] | None  # 6 direction cosines (row, column)
    pixel_spacing: tuple[float, ...] | None  # (between rows, between columns)
    slope: float
    intercept: float
    time_key: tuple[float, ...]  # orders frames at one position (never used spatially)
    split_key: tuple[Any, ...]  # frames with different split keys are different volumes
    uid: str  # SOPInstanceUID (+ frame/tile) identifying identical copies
    # What makes this image one frame of the volume rather than another, in values that mean
    # the same at every slice position (temporal position, diffusion encoding, ...): the
    # sequence of these along the frames axis must be the same at every position.
    volume_id: tuple[Any, ...] = ()
    diffusion: tuple[float, float, float, float] | None = None  # (b, gx, gy, gz), gradient in LPS
    trigger: float | None = None  # TriggerTime (ms): ranks the same at every position
    # Whether slope and intercept came from the header (RescaleSlope/Intercept, a dose scaling, a
    # modality LUT, per-frame groups) or are the defaults 1 and 0 of a file that states none: a
    # series mixing both would be silently off by the intercept (validate.check_rescale_stated).
    rescale_stated: bool = True


def element_value(ds: Any, tag: int) -> Any:
    """Value of ``tag`` from a pydicom Dataset (which gives elements) or a LiteHeader (values)."""
    got = ds.get(tag)
    return getattr(got, "value", got)


@overload
def number(value: Any, default: float) -> float: ...


@overload
def number(value: Any, default: None = None) -> float | None: ...


def number(value: Any, default: float | None = None) -> float | None:
    """``value`` as a float, or ``default`` when it is missing or not a number.

    Examples
    --------
    >>> number("2.5"), number(""), number("abc", 0.0)
    (2.5, None, 0.0)
    """
    try:
        if value is None or value == "":
            return default
        return float(value)
    except (TypeError, ValueError):
        return default


def vector(value: Any, n: int) -> tuple[float, ...] | None:
    """``value`` as ``n`` finite floats, or ``None``.

    Examples
    --------
    >>> vector(["1", "0", "0"], 3), vector([1, 2], 3)
    ((1.0, 0.0, 0.0), None)
    """
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def first_item(seq_owner: Any, name: str | int) -> Any:
    """The first item of the sequence ``name`` (keyword or tag) in ``seq_owner``, or ``None``."""
    if seq_owner is None:
        return None
    if isinstance(name, int):
        elem = seq_owner.get(name)
        seq = getattr(elem, "value", None)
    else:
        seq = getattr(seq_owner, name, None)
    try:
        return seq[0] if seq else None
    except (TypeError, IndexError):
        return None


def image_type(ds: Any) -> tuple[str, ...]:
    """ImageType values, upper case (``()`` when absent)."""
    value = ds.get("ImageType")
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split("\\")
    return tuple(str(v).strip().upper() for v in value)


def dicom_seconds(value: Any) -> float | None:
    """Seconds since midnight of a DICOM TM value ("HHMMSS.FFFFFF", parts optional), or ``None``.

    Examples
    --------
    >>> dicom_seconds("101530.5"), dicom_seconds("1015"), dicom_seconds("")
    (36930.5, 36900.0, None)
    """
    text = str(value or "").strip().replace(":", "")
    if not text:
        return None
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) > 6 or (frac and not frac.isdigit()):
        return None
    whole = whole.ljust(6, "0") if len(whole) in (2, 4) else whole.zfill(6)
    h, m, sec = int(whole[:2]), int(whole[2:4]), int(whole[4:6])
    return h * 3600.0 + m * 60.0 + sec + (float("0." + frac) if frac else 0.0)
