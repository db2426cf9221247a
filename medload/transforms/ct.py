"""CT intensity transforms: HU clipping, named and custom windows, multi-window channels, body mask.

Pure array functions first (keyword-only options, numpy in, numpy out), then the thin
:class:`~medload.transforms.base.Transform` classes that apply them to Volumes and record
their concrete parameters. Named CT windows and their sources: ``docs/presets.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import Applied, Transform, check_finite, check_range, map_frames
from medload.transforms.masks import ct_body_mask
from medload.volume import Volume

__all__ = [
    "WINDOWS",
    "window",
    "window_table",
    "table_codes",
    "HUClip",
    "Window",
    "MultiWindow",
    "CTBodyMask",
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

    def params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "force": self.force}

    def apply(self, volume: Volume) -> Applied:
        _require_ct(volume, self.name, self.force)
        check_finite(volume.array, self.name)
        out = np.clip(volume.array.astype(np.float32, copy=False), np.float32(self.low), np.float32(self.high))
        return out, self.params(), {}


def _window_spec(name: str | None, center: float | None, width: float | None, where: str) -> tuple[str | None, float, float]:
    if name is not None:
        if name not in WINDOWS:
            raise TransformError(
                f"{where}: unknown window name {name!r}; expected one of {', '.join(WINDOWS)} or center= and width= in HU"
            )
        c, w = WINDOWS[name]
        center = c if center is None else center
        width = w if width is None else width
    if center is None or width is None:
        raise TransformError(f"{where}: give a window name or both center and width in HU, found center={center}, width={width}")
    return (
        name,
        check_range("center", center, transform=where),
        check_range("width", width, low=0, low_open=True, transform=where),
    )


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

    def __init__(
        self, window: str | None = None, *, center: float | None = None, width: float | None = None, force: bool = False
    ) -> None:
        self.window, self.center, self.width = _window_spec(window, center, width, self.name)
        self.force = bool(force)

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "center": self.center, "width": self.width, "force": self.force}

    def apply(self, volume: Volume) -> Applied:
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

    def __init__(self, windows: Sequence[str | Sequence[float]] = ("brain", "subdural", "bone"), *, force: bool = False) -> None:
        if isinstance(windows, str) or len(windows) == 0:
            raise TransformError(
                f"{self.name}: windows must be a non-empty list of names or [center, width] pairs, found {windows!r}"
            )
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

    def params(self) -> dict[str, Any]:
        return {"windows": list(self.windows), "force": self.force}

    def apply(self, volume: Volume) -> Applied:
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
        meta["intensity"] = (
            "HU windows " + ", ".join(f"{n} {c:g}/{w:g}" for n, c, w in self.specs) + " as channels, each scaled to [0,1]"
        )
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
        tables = []
        for _, center, width in self.specs:
            table = window_table(volume.array.dtype, center=center, width=width)
            if table is None:  # the same for every window: floats and wide integers have none
                return None
            tables.append(table)
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

    def __init__(self, threshold: float = -500.0, fill: float = -1024.0, *, opening_mm: float = 3.0, force: bool = False) -> None:
        self.threshold = check_range("threshold", threshold, transform=self.name)
        self.fill = check_range("fill", fill, transform=self.name)
        self.opening_mm = check_range("opening_mm", opening_mm, low=0, transform=self.name)
        self.force = bool(force)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "fill": self.fill, "opening_mm": self.opening_mm, "force": self.force}

    def apply(self, volume: Volume) -> Applied:
        _require_ct(volume, self.name, self.force)
        check_finite(volume.array, self.name)

        def one(hu: np.ndarray) -> np.ndarray:
            mask = ct_body_mask(hu, threshold=self.threshold, opening_mm=self.opening_mm, spacing=volume.spacing)
            return np.where(mask, hu, self.fill).astype(np.float32)

        return map_frames(one, volume.array), self.params(), {}
