"""Radiograph intensity: the DICOM VOI window (from the header or given) to ``[0, 1]``, MONOCHROME1 aware.

:func:`voi_lut_linear` is the pure array function (DICOM's VOI LINEAR); :class:`RadiographWindow`
applies it to a Volume with the window its header gives and records the concrete window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.transforms.base import Transform, check_finite, check_range
from medload.volume import Volume

__all__ = [
    "voi_lut_linear",
    "RadiographWindow",
]


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
    out = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


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

    def params(self) -> dict[str, Any]:
        return {"center": self.center, "width": self.width, "invert": self.invert}

    def apply(self, volume: Volume) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        check_finite(volume.array, self.name)
        params, changes = self._concrete(volume)
        out = voi_lut_linear(volume.array, center=params["center"], width=params["width"])
        if params["invert"]:
            out = 1.0 - out
        return out, params, changes

    def table(self, volume: Volume) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]] | None:
        """This window as a lookup table over the volume's integer codes, with what :meth:`apply` records.

        Like :meth:`medload.transforms.Window.table`: ``table[table_codes(volume.array)]`` is
        :meth:`apply`'s array (the table is :func:`voi_lut_linear` of every code, inverted when
        :meth:`apply` inverts), ``None`` unless the voxels are integers of at most 16 bits. A
        radiograph stored as uint8 is then one lookup per pixel (``medload.batch.fused``)
        instead of float64 and float32 copies of the image.

        Examples
        --------
        >>> import numpy as np
        >>> from medload.transforms.ct import table_codes
        >>> vol = Volume(np.array([[[0, 900, 4095]]], np.uint16), np.eye(4), modality="DX",
        ...              meta={"window_center": 2048, "window_width": 4096})
        >>> table, params, _ = RadiographWindow().table(vol)
        >>> bool((table[table_codes(vol.array)] == RadiographWindow()(vol).array).all()), params["center"]
        (True, 2048.0)
        """
        dtype = volume.array.dtype
        if dtype.kind not in "iu" or dtype.itemsize > 2:
            return None
        params, changes = self._concrete(volume)
        codes = np.arange(1 << (8 * dtype.itemsize), dtype=f"u{dtype.itemsize}").view(dtype)
        table = voi_lut_linear(codes, center=params["center"], width=params["width"])
        if params["invert"]:
            table = 1.0 - table
        return table, params, changes

    def _concrete(self, volume: Volume) -> tuple[dict[str, Any], dict[str, Any]]:
        """The window :meth:`apply` uses on ``volume`` (its recorded parameters) and the meta it sets."""
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
        meta["intensity"] = f"VOI window {center:g}/{width:g} ({source}) scaled to [0,1]" + (", inverted" if invert else "")
        return {"center": float(center), "width": float(width), "invert": bool(invert)}, {"meta": meta}
