"""Philips "precise" values: the private ScaleSlope (2005,100E), as dcm2niix applies it.

FP = (PV * RS + RI) / (RS * SS), dcm2niix's default (``-p y``), makes values comparable
between scans; the public rescale alone gives display values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.errors import ReadError
from medload.io.frame import number

__all__ = ["is_philips", "precise", "scale_slope"]


def is_philips(ds: Any) -> bool:
    """Manufacturer starts with "Philips"."""
    return str(ds.get("Manufacturer", "")).lower().startswith("philips")


def scale_slope(owner: Any, where: str | None = None) -> float | None:
    """Philips private ScaleSlope (2005,100E) of ``owner`` (a dataset or sequence item), or ``None``.

    With ``where`` (the file, and frame), a value that is present but NaN or infinite is refused
    naming it: read as absent, that image alone would get display values while the others of
    its series get precise ones.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.add_new(0x2005100E, "FL", float("nan"))
    >>> scale_slope(ds) is None
    True
    >>> scale_slope(ds, "a.dcm[frame 3]")
    Traceback (most recent call last):
    ...
    medload.errors.ReadError: a.dcm[frame 3]: Philips ScaleSlope (2005,100E) is nan; ...
    """
    if owner is None or 0x2005100E not in owner:
        return None
    value = owner[0x2005100E].value
    if isinstance(value, bytes):
        value = np.frombuffer(value[:4], "<f4")[0] if len(value) >= 4 else None
    elif isinstance(value, (list, tuple)):
        value = value[0] if value else None
    value = number(value)
    if where is not None and value is not None and not np.isfinite(value):
        raise ReadError(
            f"{where}: Philips ScaleSlope (2005,100E) is {value}; expected a finite number (this image's values "
            "would not be comparable with the others'). The header is damaged; re-export the file or remove it."
        )
    return value if value and np.isfinite(value) else None


def precise(slope: float, intercept: float, slope_ss: float | None) -> tuple[float, float]:
    """Rescale slope and intercept giving precise values, given the private ScaleSlope.

    Examples
    --------
    >>> precise(2.0, 10.0, 4.0)  # (PV * 2 + 10) / (2 * 4) = PV / 4 + 10 / 8
    (0.25, 1.25)
    >>> precise(2.0, 10.0, None)
    (2.0, 10.0)
    """
    if slope_ss is None or slope == 0:
        return slope, intercept
    return 1.0 / slope_ss, intercept / (slope * slope_ss)
