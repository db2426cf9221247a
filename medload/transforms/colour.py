"""Plain-image intensity and colour: the stored range to ``[0, 1]``, RGB to grey (ITU-R BT.601 luma).

PNG, JPEG and TIFF files hold 8- or 16-bit values with no physical unit; the reader records
the stored type's range in ``meta["stored_range"]`` and :class:`ScaleStoredRange` maps it to
``[0, 1]`` (the ``image`` preset). :class:`Grayscale` turns an RGB volume ``(3, Z, Y, X)``
into one grey channel with the BT.601 weights Pillow's ``convert("L")`` and OpenCV use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Applied, Transform, check_finite
from medload.volume import Volume

__all__ = ["BT601", "Grayscale", "ScaleStoredRange", "luma"]

#: ITU-R BT.601 luma weights of R, G, B.
BT601 = (0.299, 0.587, 0.114)


def luma(rgb: np.ndarray, *, weights: tuple[float, float, float] = BT601) -> np.ndarray:
    """Grey values ``weights . (R, G, B)`` of a channel-first array ``(3, ...)``, as float32.

    Examples
    --------
    >>> luma(np.array([[255.0], [255.0], [255.0]])).round(3).tolist()
    [255.0]
    >>> [round(float(v), 3) for v in luma(np.array([[255.0], [0.0], [0.0]]))]
    [76.245]
    """
    if rgb.shape[0] != 3:
        raise TransformError(f"grayscale: expected 3 channels (R, G, B) on axis 0, found shape {rgb.shape}.")
    w = np.asarray(weights, np.float32)
    out = w[0] * rgb[0].astype(np.float32) + w[1] * rgb[1].astype(np.float32) + w[2] * rgb[2].astype(np.float32)
    return out.astype(np.float32, copy=False)


class ScaleStoredRange(Transform):
    """Map the stored value range (``meta["stored_range"]``, e.g. ``[0, 255]``) linearly to ``[0, 1]``.

    Parameters
    ----------
    low, high : float, optional
        The range to map; default the volume's ``meta["stored_range"]``. A float image
        without a stored range is left as it is (its values already mean something), which
        the history records as ``low=None``.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> vol = Volume(np.array([[[0, 51, 255]]], np.uint8), np.eye(4), meta={"stored_range": [0, 255]})
    >>> out = ScaleStoredRange()(vol)
    >>> [round(float(v), 3) for v in out.array.ravel()], out.history[-1]
    ([0.0, 0.2, 1.0], ('scale_stored_range', {'low': 0.0, 'high': 255.0}))
    """

    name = "scale_stored_range"

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        if (low is None) != (high is None):
            raise TransformError(
                f"{self.name}: give both low and high, or neither (from meta['stored_range']); found low={low}, high={high}."
            )
        if low is not None and high is not None and not float(high) > float(low):
            raise TransformError(f"{self.name}: high must be above low, found low={low}, high={high}.")
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    def apply(self, volume: Volume) -> Applied:
        check_finite(volume.array, self.name)
        if self.low is not None and self.high is not None:  # __init__ takes both or neither
            low, high = self.low, self.high
        else:
            stored = volume.meta.get("stored_range")
            if stored is None:
                return volume.array, {"low": None, "high": None}, {}
            low, high = float(stored[0]), float(stored[1])
        out = (volume.array.astype(np.float32) - np.float32(low)) / np.float32(high - low)
        meta = volume.meta
        bits = {255.0: "8-bit", 65535.0: "16-bit"}.get(high - low, f"[{low:g}, {high:g}]")
        meta["intensity"] = f"{bits} stored range [{low:g}, {high:g}] scaled to [0,1]"
        return out, {"low": low, "high": high}, {"meta": meta}


class Grayscale(Transform):
    """RGB ``(3, Z, Y, X)`` to grey ``(Z, Y, X)`` with ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B).

    A grey volume passes unchanged, so one pipeline serves a folder of mixed grey and colour
    images. ``meta["stored_range"]`` still holds: luma of
    values in a range stays in it.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> rgb = Volume(np.full((3, 1, 2, 2), 100, np.uint8), np.eye(4), meta={"channels": ["R", "G", "B"]})
    >>> out = Grayscale()(rgb)
    >>> out.shape, float(out.array[0, 0, 0].round(3)), "channels" in out.meta
    ((1, 2, 2), 100.0, False)
    """

    name = "grayscale"

    def __init__(self, weights: str = "ITU-R BT.601") -> None:
        if weights != "ITU-R BT.601":
            raise TransformError(f"{self.name}: weights must be 'ITU-R BT.601' (0.299, 0.587, 0.114), found {weights!r}.")
        self.weights = weights

    def params(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def apply(self, volume: Volume) -> Applied:
        array = volume.array
        check_finite(array, self.name)
        channels = volume.meta.get("channels")
        if array.ndim == 3:
            return array, self.params(), {}
        if channels != ["R", "G", "B"]:
            raise TransformError(
                f"{self.name}: expected an RGB volume (meta['channels'] == ['R', 'G', 'B']), found "
                f"channels {channels} with shape {array.shape}; grayscale applies to colour images."
            )
        meta = volume.meta
        meta.pop("channels", None)
        return luma(array), self.params(), {"meta": meta}
