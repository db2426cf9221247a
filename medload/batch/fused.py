"""A pipeline that ends in CT windows, written to a uint8 store: window and quantization in one pass.

The plain way computes the windowed float32 volume (4 bytes a voxel), then the store finds
its range and quantizes it to uint8. For integer voxels of at most 16 bits (CT in HU as read)
both steps are functions of the voxel's code alone, so they compose into one table of at
most 65,536 stored values (one per window of ``MultiWindow``), built by running the very same
float32 operations on every code (:meth:`Window.table`, :meth:`MultiWindow.table`, then the store's own :func:`~medload.store.encoding` and
:func:`~medload.store.encode`); every voxel is then looked up once. The stored bytes,
scale, offset, history and metadata are those of the plain way, bit for bit
(``tests/test_convert_fused.py``), without the float32 volume (three of them for the
three windows of ``ct-multiwindow``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.store import encode, encoding
from medload.transforms import Pipeline
from medload.transforms.base import json_params
from medload.transforms.ct import MultiWindow, Window, table_codes
from medload.volume import Volume

__all__ = ["run_for_store"]


def run_for_store(
    pipe: Any, volume: Volume, mask: Volume | None, store: Any
) -> tuple[Volume, Volume | None, tuple[float, float] | None]:
    """Run ``pipe`` on ``volume`` (and ``mask``) for ``store``: ``(out, mask, encoded)``.

    ``encoded`` is ``(scale, offset)`` when ``out.array`` holds the stored uint8 values already
    (pass it to ``store.add(out, encoded=...)``), ``None`` when ``out`` is the plain pipeline's
    output (any other pipeline or store, float or wide integer voxels).

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
    last = steps[-1] if steps else None
    if getattr(store, "dtype", None) == "uint8" and isinstance(last, (Window, MultiWindow)):
        head = Pipeline(steps[:-1])
        if mask is not None:
            volume, mask = head(volume, mask=mask)  # a window moves nothing: the mask is final here
        else:
            volume = head(volume)
        fused = _window_to_uint8(last, volume, store)
        if fused is not None:
            return fused[0], mask, fused[1]
        steps = [last]  # float or wide voxels: the plain window on what the head gave
    run = Pipeline(steps)
    if mask is not None:
        out, mask = run(volume, mask=mask)
        return out, mask, None
    return run(volume), None, None


def _window_to_uint8(window: Window | MultiWindow, volume: Volume, store: Any) -> tuple[Volume, tuple[float, float]] | None:
    if volume.array.size == 0:
        return None
    spec = window.table(volume)
    if spec is None:
        return None
    table, params, changes = spec
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
    out = volume.with_array(stored, step=(window.name, json_params(params)), **changes)
    return out, (scale, offset)


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
