"""A grey-scale DICOM series looked up slice by slice from its stored values, through each slice's rescale.

:func:`~medload.io.dicom.load_dicom` rescales every slice into one volume (int16 HU for CT),
and a converter that windows it into uint8 reads every voxel of that volume again. Yet the
stored value of a voxel and its slice's RescaleSlope/Intercept alone decide the rescaled value,
so any function of the rescaled value (a window and its quantization to a store's bytes) is
a lookup table over the slice's stored codes. :func:`look_up` composes such a table with each
distinct rescale once (4,096 entries for 12-bit codes, 65,536 for 16-bit) and looks every slice
up as soon as it is read, from one reused buffer while it is in the processor's cache: no
rescaled volume is made, and no page of memory is touched for the codes but that buffer's
(fresh pages for every slice's codes cost more than reading them, measured).

The table may depend on the volume's range of rescaled values (a store's uint8 scale is its
min..max): ``table_for(None)`` is a first guess made before any pixel is read, and
``table_for((low, high))`` the table for the range found. Where they differ the files are
read and looked up a second time. ``load_dicom_stored`` decides which series can be read so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medload.io.frame import Frame
from medload.io.headers import FileHeader
from medload.io.sorting import Layout
from medload.volume import Volume

__all__ = ["LookedUp", "TableFor", "look_up", "fits", "stored_range"]

#: ``table_for(shell, value_range)``: a table over the rescaled type's values (``2 ** bits``
#: entries on its last axis, indexed by a value's bit pattern read as unsigned, see
#: :func:`medload.transforms.ct.table_codes`), or ``None`` (then the series is read as usual).
#: ``shell`` is a one-voxel Volume of the rescaled type with the series' affine, modality and
#: meta; ``value_range`` is ``None`` before the volume is read, then its ``(low, high)``.
TableFor = Callable[[Volume, "tuple[int, int] | None"], "np.ndarray | None"]


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest value BitsStored bits can hold (two's complement if signed).

    Examples
    --------
    >>> stored_range(12, False), stored_range(12, True)
    ((0, 4095), (-2048, 2047))
    """
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def fits(dtype: np.dtype, a: float, b: float) -> bool:
    """Whether ``a`` and ``b`` are whole numbers that the integer ``dtype`` holds.

    Examples
    --------
    >>> fits(np.dtype(np.int16), -1024.0, 3071.0), fits(np.dtype(np.int16), 0.0, 70000.0)
    (True, False)
    """
    info = np.iinfo(dtype)
    return info.min <= min(a, b) and max(a, b) <= info.max and float(a).is_integer() and float(b).is_integer()


@dataclass
class LookedUp:
    """A series' volume whose voxels are a table's values at the rescaled values (see :func:`look_up`).

    Attributes
    ----------
    volume : Volume
        ``table[..., rescaled]``: ``(Z, Y, X)``, or ``(C, Z, Y, X)`` for a table with a leading
        axis, in the type of the table; the affine, modality and meta of ``load_dicom``'s Volume.
    table : numpy.ndarray
        The table looked up: ``table_for(shell, value_range)``.
    value_range : (int, int)
        The smallest and largest rescaled value of the volume.
    rescaled_dtype : numpy.dtype
        The type of ``load_dicom``'s volume (int16 for CT in HU).
    """

    volume: Volume
    table: np.ndarray
    value_range: tuple[int, int]
    rescaled_dtype: np.dtype

    @property
    def meta(self) -> dict[str, Any]:
        return self.volume.meta


def look_up(
    frames: list[Frame],
    layout: Layout,
    heads: list[FileHeader],
    dtype: np.dtype,
    read_native: Callable[..., np.ndarray | None],
    table_for: Callable[[tuple[int, int] | None], np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """``(looked up volume, table, value range)`` of a one-frame-per-position series, or ``None``.

    ``None`` (the caller decodes the series the usual way) where ``table_for`` gives none, a
    file is not native, an image is of another size or not integers of at most 16 bits,
    signedness is mixed, or a slice's rescaled values leave ``dtype`` (where ``load_dicom``
    widens the volume). ``read_native(head, placed, into=buffer)`` reads one file's pixels.
    """
    h = heads[0]
    if any(hh.signed != h.signed for hh in heads):
        return None
    table = table_for(None)
    if table is None:
        return None
    where: dict[str, list[_Placed]] = {}
    for z, i in enumerate(layout.grid[0]):
        where.setdefault(frames[i].file, []).append(_Placed(frames[i], z))
    rows, columns, n_z = h.rows, h.columns, len(layout.grid[0])
    out = np.empty((int(np.prod(table.shape[:-1])), n_z, rows, columns), table.dtype)
    pass_ = _Pass(where, {hh.path: hh for hh in heads}, dtype, read_native, rows, columns)
    value_range = pass_.run(table, out)
    if value_range is None:
        return None
    final = table_for(value_range)
    if final is None:
        return None
    if not np.array_equal(final, table):  # the first guess of the range was wrong: read again
        table = final
        if pass_.run(table, out) is None:
            return None
    return out.reshape(table.shape[:-1] + (n_z, rows, columns)), table, value_range


@dataclass
class _Placed:
    """A frame and the slice it fills."""

    frame: Frame
    z: int


@dataclass
class _Pass:
    """One read of the series' files, each slice looked up at once."""

    where: dict[str, list[_Placed]]
    head_of: dict[str, FileHeader]
    dtype: np.dtype
    read_native: Callable[..., np.ndarray | None]
    rows: int
    columns: int

    def run(self, table: np.ndarray, out: np.ndarray) -> tuple[int, int] | None:
        """Fill ``out[:, z]`` with ``table`` at every slice's rescaled values; the volume's value range."""
        flat = table.reshape(-1, table.shape[-1])
        composed: dict[tuple[float, float, str, int], np.ndarray] = {}
        index = np.empty(self.rows * self.columns, np.intp)
        buffer = np.empty(self.rows * self.columns * 2, np.uint8)  # one slice of 16-bit codes
        low, high = None, None
        for path in sorted(self.where):
            head, placed = self.head_of[path], self.where[path]
            pixels = self.read_native(head, [(0, p.z, p.frame) for p in placed], into=buffer)
            if pixels is None or pixels.dtype.kind not in "iu" or pixels.dtype.itemsize > 2:
                return None
            for p in placed:
                f = p.frame
                image = pixels[f.frame] if f.frame >= 0 and pixels.ndim >= 3 else pixels
                if image.shape != (self.rows, self.columns):
                    return None  # the usual decode refuses it, naming the file
                ends = sorted((int(image.min()) * f.slope + f.intercept, int(image.max()) * f.slope + f.intercept))
                if not fits(self.dtype, *ends):
                    return None
                low = ends[0] if low is None else min(low, ends[0])
                high = ends[1] if high is None else max(high, ends[1])
                n = _table_size(image.dtype, head)
                key = (f.slope, f.intercept, image.dtype.str, n)
                if key not in composed:
                    composed[key] = _compose(flat, f.slope, f.intercept, image.dtype, n, self.dtype)
                # numpy gathers through intp indices: converting the slice's codes once, into a
                # buffer reused for every slice and channel, is what makes the lookup cheap.
                index[:] = image.view(f"u{image.dtype.itemsize}").reshape(-1)
                for channel, lookup in enumerate(composed[key]):
                    np.take(lookup, index, out=out[channel, p.z].reshape(-1))
        assert low is not None and high is not None
        return int(low), int(high)


def _table_size(code_type: np.dtype, head: FileHeader) -> int:
    """Entries a composed table needs for the codes of one file: every code ``read_native`` can give."""
    bits = 8 * code_type.itemsize
    if code_type.kind == "u" and 0 < head.bits_stored < bits:
        return 1 << head.bits_stored  # unused high bits cleared: 4,096 entries for 12 bits
    return 1 << bits  # sign-extended codes sit at both ends of the unsigned view


def _compose(flat: np.ndarray, slope: float, intercept: float, code_type: np.dtype, n: int, dtype: np.dtype) -> np.ndarray:
    """``flat[:, rescaled value of every code]`` for codes ``0 .. n - 1`` (unsigned bit patterns)."""
    codes = np.arange(n, dtype=f"u{code_type.itemsize}").view(code_type).astype(np.int64)
    # Codes a slice never holds may wrap here; those entries are never looked up.
    rescaled = (codes * int(slope) + int(intercept)).astype(dtype)
    return np.ascontiguousarray(flat[:, rescaled.view(f"u{dtype.itemsize}")])
