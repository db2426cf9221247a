"""A pipeline that ends in a window (then perhaps a resize), run without its float32 volume.

The plain way computes the windowed float32 volume (4 bytes a voxel), then the store finds
its range and quantizes it to uint8. For integer voxels of at most 16 bits (CT in HU as read,
radiographs) a window is a function of the voxel's code alone, so it is one table of at most
65,536 values (one per window of ``MultiWindow``), built by running the very same float32
operations on every code (:meth:`Window.table`, :meth:`MultiWindow.table`,
:meth:`RadiographWindow.table`). Two pipelines' ends use it:

- a final window into a uint8 store: the table composed with the store's own
  :func:`~medload.store.encoding` and :func:`~medload.store.encode`; every voxel is looked up
  once, straight to its stored byte;
- a window followed by ``ResizeSlices(mode="resize")`` (``--size``), into any store: each
  slice is looked up just before it is resized (:meth:`ResizeSlices.apply_lookup`), so only
  the resized float32 volume is made (a quarter of the full-size one for 512 -> 256).

The stored bytes, scale, offset, history and metadata are those of the plain way, bit for
bit (``tests/test_convert_fused.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.store import encode, encoding
from medload.transforms import Pipeline
from medload.transforms.base import json_params
from medload.transforms.ct import MultiWindow, Window, table_codes
from medload.transforms.radiograph import RadiographWindow
from medload.transforms.spatial import ResizeSlices
from medload.volume import Volume

__all__ = ["run_for_store"]

#: Windows that give a lookup table over integer codes: ``step.table(volume)``.
TABLED = (Window, MultiWindow, RadiographWindow)


def run_for_store(
    pipe: Any, volume: Volume, mask: Volume | None, store: Any
) -> tuple[Volume, Volume | None, tuple[float, float] | None]:
    """Run ``pipe`` on ``volume`` (and ``mask``) for ``store``: ``(out, mask, encoded)``.

    ``encoded`` is ``(scale, offset)`` when ``out.array`` holds the stored uint8 values already
    (pass it to ``store.add(out, encoded=...)``), ``None`` when ``out`` is what the plain
    pipeline gives (a window then a resize gives the very same array, made slice by slice).

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> from medload.transforms import Window
    >>> vol = medload.Volume(np.array([[[-1000, 40, 80, 2000]]], np.int16), np.eye(4), modality="CT")
    >>> with medload.Store.create(tempfile.mkdtemp() + "/s.h5") as store:
    ...     out, _, encoded = run_for_store(medload.Pipeline([Window("brain")]), vol, None, store)
    >>> out.array.tolist(), encoded
    ([[[0, 128, 255, 255]]], (0.00392156862745098, 0.0))
    """
    steps = list(pipe)
    resize = steps[-1] if steps and isinstance(steps[-1], ResizeSlices) and steps[-1].mode == "resize" else None
    at = len(steps) - (2 if resize is not None else 1)  # where the window would be
    window = steps[at] if at >= 0 and isinstance(steps[at], TABLED) else None
    if window is None or (resize is None and getattr(store, "dtype", None) != "uint8"):
        return _plain(steps, volume, mask)
    volume, mask = _plain(steps[:at], volume, mask)[:2]  # a window moves nothing: the mask is final here
    spec = window.table(volume) if volume.array.size else None
    if spec is None:  # float or wide voxels: the plain way on what the head gave
        return _plain(steps[at:], volume, mask)
    table, params, changes = spec
    windowed = volume.with_array(volume.array, step=(window.name, json_params(params)), **changes)
    if resize is None:
        out, encoded = _window_to_uint8(table, windowed, store)
        return out, mask, encoded
    # ``windowed`` records the window but still holds the codes: apply_lookup resizes the
    # looked-up values slice by slice. It never leaves this function.
    planned = resize.plan(windowed)
    array, resize_params, resize_changes = planned.apply_lookup(windowed.with_array(table_codes(volume.array)), table)
    out = windowed.with_array(array, step=(resize.name, json_params(resize_params)), **resize_changes)
    return out, (planned.apply_mask(mask) if mask is not None else None), None


def _plain(steps: list[Any], volume: Volume, mask: Volume | None) -> tuple[Volume, Volume | None, None]:
    run = Pipeline(steps)
    if mask is not None:
        out, mask = run(volume, mask=mask)
        return out, mask, None
    return run(volume), None, None


def _window_to_uint8(table: np.ndarray, windowed: Volume, store: Any) -> tuple[Volume, tuple[float, float]]:
    """The stored bytes of ``table[codes]`` and their ``(scale, offset)``; ``windowed`` records the window, holds the codes."""
    volume = windowed
    codes = table_codes(volume.array)
    # Windows are monotone, so the windowed volume's range is that of its extreme voxels: the
    # store's encoding of those values is its encoding of the whole windowed volume.
    extremes = table_codes(np.array([volume.array.min(), volume.array.max()], volume.array.dtype))
    ends = table[..., extremes]
    what = f"volume {volume.meta.get('series_key') or volume.meta.get('source_key') or '(no key)'}"
    scale, offset = encoding(ends, "uint8", value_range=getattr(store, "value_range", None), what=what)
    stored_table = encode(table, "uint8", scale, offset)
    if stored_table.ndim == 1:
        stored = _lookup(stored_table, codes)
    else:  # MultiWindow: (C, Z, Y, X), a channel per window
        stored = np.stack([_lookup(lookup, codes) for lookup in stored_table])
    return windowed.with_array(stored), (scale, offset)


def _lookup(table: np.ndarray, codes: np.ndarray, *, step: int = 1 << 16) -> np.ndarray:
    """``table[codes]`` a block at a time through one reused index buffer.

    numpy converts a whole index array to intp before it gathers (8 bytes a voxel: 2 GB for a
    512x512x1000 CT) and that conversion dominated; blocks of 65,536 measured twice as fast.
    """
    out = np.empty(codes.shape, table.dtype)
    flat_out, flat_codes = out.reshape(-1), codes.reshape(-1)
    index = np.empty(min(step, flat_codes.size), np.intp)
    for start in range(0, flat_codes.size, step):
        n = min(step, flat_codes.size - start)
        index[:n] = flat_codes[start : start + n]
        np.take(table, index[:n], out=flat_out[start : start + n])
    return out
