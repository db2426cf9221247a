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

A third starts before the volume exists, for a DICOM series whose pipeline is axis flips and
permutations (``CanonicalSlices``, ``Reorient``) then a final ``Window`` or ``MultiWindow``
into a uint8 store: :class:`StoredTables` gives the reader (``medload.io.load_stored``) the
window's stored table, which it composes with each slice's RescaleSlope/Intercept and looks
up as each file is read (:mod:`medload.io.stored`); the flips and permutations then move the
bytes (a voxel-wise lookup and a permutation commute). No rescaled int16 volume is made.

The stored bytes, scale, offset, history and metadata are those of the plain way, bit for
bit (``tests/test_convert_fused.py``, ``tests/test_convert_stored.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.errors import MedloadError
from medload.io.stored import LookedUp
from medload.store import encode, encoding
from medload.transforms import Pipeline
from medload.transforms.base import json_params
from medload.transforms.ct import MultiWindow, Window, table_codes
from medload.transforms.orientation import CanonicalSlices, Reorient
from medload.transforms.radiograph import RadiographWindow
from medload.transforms.spatial import ResizeSlices
from medload.volume import Volume

__all__ = ["run_for_store", "stored_plan", "StoredTables"]

#: Windows that give a lookup table over integer codes: ``step.table(volume)``.
TABLED = (Window, MultiWindow, RadiographWindow)

#: Steps that only flip and permute axes, with parameters that follow from the affine alone:
#: a voxel-wise lookup gives the same voxels before them as after them.
PERMUTING = (CanonicalSlices, Reorient)


def run_for_store(
    pipe: Any, volume: Volume | LookedUp, mask: Volume | None, store: Any
) -> tuple[Volume, Volume | None, tuple[float, float] | None]:
    """Run ``pipe`` on ``volume`` (and ``mask``) for ``store``: ``(out, mask, encoded)``.

    ``volume`` may be what ``medload.io.load_stored`` gave for this pipeline and store's
    :class:`StoredTables` (without a mask): :meth:`StoredTables.finish` makes it the output.

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
    if isinstance(volume, LookedUp):
        tables = StoredTables.of(pipe, getattr(store, "dtype", None), getattr(store, "value_range", None))
        if tables is None or mask is not None:
            raise RuntimeError("a volume looked up for another pipeline or store, or with a mask (a bug of the caller)")
        out, encoded = tables.finish(volume)
        return out, None, encoded
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


def stored_plan(pipe: Any, store_dtype: str | None) -> tuple[list[Any], Any] | None:
    """``(head, window)`` where ``pipe`` can run on stored codes into a store of ``store_dtype``, else ``None``.

    It can where the store is uint8 and the pipeline is :data:`PERMUTING` steps then a final
    ``Window`` or ``MultiWindow`` (CT's presets with the radiological orientation).

    Examples
    --------
    >>> from medload.transforms import ResizeSlices
    >>> head, window = stored_plan(Pipeline([CanonicalSlices(), Window("brain")]), "uint8")
    >>> [s.name for s in head], window.name
    (['canonical_slices'], 'window')
    >>> stored_plan(Pipeline([Window("brain"), ResizeSlices(64)]), "uint8"), stored_plan(Pipeline([Window("brain")]), "float32")
    (None, None)
    """
    steps = list(pipe)
    if store_dtype != "uint8" or not steps or not isinstance(steps[-1], (Window, MultiWindow)):
        return None
    if not all(isinstance(step, PERMUTING) for step in steps[:-1]):
        return None
    return steps[:-1], steps[-1]


class StoredTables:
    """The tables a reader looks a series up in for a pipeline of :func:`stored_plan`, and the output it makes.

    Called as ``table_for(shell, value_range)`` (:data:`medload.io.stored.TableFor`): the
    window's table on the pipeline's way (its head run on ``shell``) quantized to the store's
    bytes for a volume of ``value_range`` (``None``: a volume reaching both ends of the rescaled
    type, which fills every window). ``None`` where the window refuses the volume (not CT in
    HU): the reader then gives the plain Volume, and the plain way says why.

    Examples
    --------
    >>> tables = StoredTables.of(Pipeline([Window("brain")]), "uint8", None)
    >>> shell = Volume(np.zeros((1, 1, 1), np.int16), np.eye(4), modality="CT", meta={"intensity": "HU"})
    >>> table = tables(shell, (-1000, 60))   # the volume's top, 60 HU, is the store's 255
    >>> table.shape, table[table_codes(np.array([-1000, 0, 40, 60], np.int16))].tolist()
    ((65536,), [0, 0, 170, 255])
    """

    def __init__(self, head: list[Any], window: Any, value_range: tuple[float, float] | None) -> None:
        self.head, self.window, self.value_range = head, window, value_range

    @classmethod
    def of(cls, pipe: Any, store_dtype: str | None, value_range: tuple[float, float] | None) -> StoredTables | None:
        """The tables of ``pipe`` into a store of ``store_dtype`` and ``value_range``, or ``None`` (:func:`stored_plan`)."""
        planned = stored_plan(pipe, store_dtype)
        return None if planned is None else cls(planned[0], planned[1], value_range)

    def __call__(self, shell: Volume, value_range: tuple[int, int] | None) -> np.ndarray | None:
        try:
            spec, probe = self._spec(shell)
        except MedloadError:
            return None
        if spec is None:
            return None
        dtype = shell.array.dtype
        if value_range is None:
            value_range = (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        return _stored_table(spec[0], np.array(value_range, dtype), probe.meta, self)[0]

    def finish(self, looked: LookedUp) -> tuple[Volume, tuple[float, float]]:
        """The pipeline's output (the stored bytes) and their ``(scale, offset)`` from what the reader looked up."""
        shell = Volume(
            np.zeros((1, 1, 1), looked.rescaled_dtype), looked.volume.affine, modality=looked.volume.modality, meta=looked.meta
        )
        spec, probe = self._spec(shell)
        assert spec is not None  # the reader looked up this very table
        table, params, changes = spec
        stored_table, encoded = _stored_table(table, np.array(looked.value_range, looked.rescaled_dtype), probe.meta, self)
        if not np.array_equal(stored_table, looked.table):
            raise RuntimeError("the volume was looked up in another table than its pipeline's (a bug)")
        out = Pipeline(self.head)(looked.volume)
        return out.with_array(out.array, step=(self.window.name, json_params(params)), **changes), encoded

    def _spec(self, shell: Volume) -> tuple[Any, Volume]:
        # The head's parameters, affine and meta follow from the affine and meta alone, and the
        # window's table from the rescaled type: a one-voxel volume gives what the full one would.
        probe = Pipeline(self.head)(shell)
        return self.window.table(probe), probe


def _stored_table(
    table: np.ndarray, extremes: np.ndarray, meta: dict[str, Any], store: Any
) -> tuple[np.ndarray, tuple[float, float]]:
    """``table`` quantized to the store's bytes, and their ``(scale, offset)``, for a volume from ``extremes[0]`` to ``extremes[1]``."""
    # Windows are monotone, so the windowed volume's range is that of its extreme voxels: the
    # store's encoding of those values is its encoding of the whole windowed volume.
    ends = table[..., table_codes(extremes)]
    what = f"volume {meta.get('series_key') or meta.get('source_key') or '(no key)'}"
    scale, offset = encoding(ends, "uint8", value_range=getattr(store, "value_range", None), what=what)
    return encode(table, "uint8", scale, offset), (scale, offset)


def _window_to_uint8(table: np.ndarray, windowed: Volume, store: Any) -> tuple[Volume, tuple[float, float]]:
    """The stored bytes of ``table[codes]`` and their ``(scale, offset)``; ``windowed`` records the window, holds the codes."""
    volume = windowed
    codes = table_codes(volume.array)
    extremes = np.array([volume.array.min(), volume.array.max()], volume.array.dtype)
    stored_table, (scale, offset) = _stored_table(table, extremes, volume.meta, store)
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
