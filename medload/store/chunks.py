"""Direct chunk reads: a slice's bytes read with ``os.pread`` where HDF5 stores it one per chunk.

HDF5's fixed cost per read call and its filter pipeline dominated the
reading of small slices (~14k slices/s per core on the default uint8 + LZ4 store). Where a
dataset is stored one slice per chunk with no filter, or with only the LZ4 filter of
hdf5plugin, the reader looks up where each chunk lies once per dataset (one HDF5 call), then
reads a slice's bytes with ``os.pread`` on HDF5's own file descriptor and decodes them with the
``lz4`` package (:func:`medload.store._format.decode_lz4_chunk`). The bytes are those HDF5 would
return, so the result is the same bit for bit. Everything else (other filters, a chunk stored
unfiltered by HDF5, chunks other than one slice, an unwritten chunk, ``lz4`` not installed)
goes through h5py as before. Kept after measuring it under the batch loader (issue 15,
bench/loader.py): ``SliceDataset.loader`` on the default store reads 1.26-1.29x faster with
it than through h5py (uint8 batches, where the read is the whole cost), ``read_slices`` 1.6x;
h5py's ``read_direct`` into a preallocated batch measured 4x slower than plain slicing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

try:  # a speed-up, not a feature: without it LZ4 chunks are read through h5py
    from lz4.block import decompress as _lz4_decompress
except ImportError:  # pragma: no cover - lz4 is a dependency
    _lz4_decompress = None

from medload.store import _format as fmt

if TYPE_CHECKING:
    import h5py

__all__ = ["ChunkTable"]


class ChunkTable:
    """Where each slice's chunk of one dataset lies in its file, to read slices without HDF5.

    Built once per dataset and process by :meth:`of` (``None`` where the dataset does not
    qualify); :meth:`read` returns the stored values of a slice range, or ``None`` when a chunk
    of it must go through h5py (unwritten, stored without its filter, framing not as expected).
    The file descriptor is the one HDF5 itself opened (``get_vfd_handle``), so the offsets and
    the bytes come from the same file even if the path was replaced since; ``os.pread`` moves
    no shared file position, so HDF5's own reads are not disturbed.
    """

    __slots__ = ("fd", "offsets", "sizes", "lz4", "slice_shape", "dtype", "nbytes")

    def __init__(
        self, fd: int, offsets: np.ndarray, sizes: np.ndarray, *, lz4: bool, slice_shape: tuple[int, ...], dtype: np.dtype
    ) -> None:
        self.fd = fd
        self.offsets = offsets
        self.sizes = sizes
        self.lz4 = lz4
        self.slice_shape = slice_shape
        self.dtype = dtype
        self.nbytes = int(np.prod(slice_shape, dtype=np.int64)) * dtype.itemsize

    @classmethod
    def of(cls, ds: h5py.Dataset) -> ChunkTable | None:
        """The table of h5py dataset ``ds``, or ``None`` if only h5py can read it."""
        try:
            return cls._build(ds)
        except Exception:  # noqa: BLE001 - a speed-up only: anything unexpected means h5py reads it
            return None

    @classmethod
    def _build(cls, ds: h5py.Dataset) -> ChunkTable | None:
        shape, dtype = tuple(ds.shape), ds.dtype
        if len(shape) < 2 or shape[0] == 0 or ds.chunks != (1,) + shape[1:]:
            return None
        if dtype.kind not in "biuf" or not dtype.isnative:
            return None
        dcpl = ds.id.get_create_plist()
        n_filters = dcpl.get_nfilters()
        if n_filters == 0:
            lz4 = False
        elif n_filters == 1 and dcpl.get_filter(0)[0] == fmt.LZ4_FILTER_ID and _lz4_decompress is not None:
            lz4 = True
        else:
            return None
        f = ds.file
        if f.driver != "sec2" or not hasattr(os, "pread"):  # os.pread: POSIX only (not Windows)
            return None
        fd = f.id.get_vfd_handle()
        if not isinstance(fd, int) or fd < 0:
            return None
        table = cls(
            fd, np.full(shape[0], -1, np.int64), np.zeros(shape[0], np.int64), lz4=lz4, slice_shape=shape[1:], dtype=dtype
        )

        def visit(info: Any) -> None:  # h5py's StoreInfo of one chunk
            z, *rest = info.chunk_offset
            if info.filter_mask != 0 or info.byte_offset is None or any(rest) or not 0 <= z < shape[0]:
                return  # stored without its filter, unallocated or unexpected: h5py reads it
            if not lz4 and info.size != table.nbytes:
                return
            table.offsets[z] = info.byte_offset
            table.sizes[z] = info.size

        if hasattr(ds.id, "chunk_iter"):
            ds.id.chunk_iter(visit)  # one HDF5 call for the whole index
        else:  # pragma: no cover - HDF5 older than 1.12.3
            for i in range(ds.id.get_num_chunks()):
                visit(ds.id.get_chunk_info(i))
        return table

    def read(self, start: int, stop: int) -> np.ndarray | None:
        """Stored values of slices ``start:stop``, or ``None`` to use h5py.

        One LZ4 slice comes back as a read-only view of the decompressed bytes (its caller
        decodes it to float32, or copies it); everything else in a new writable array.
        """
        n = stop - start
        if n == 1:  # the common case (a dataset item), kept free of array arithmetic
            offset = int(self.offsets[start])
            if offset < 0:
                return None
            size = int(self.sizes[start])
            if self.lz4:
                data = self._decode(os.pread(self.fd, size, offset))
                return None if data is None else np.frombuffer(data, self.dtype).reshape(1, *self.slice_shape)
            out = np.empty((1, *self.slice_shape), self.dtype)
            return out if _pread_into(self.fd, out, offset) else None
        if n == 0:
            return np.empty((0, *self.slice_shape), self.dtype)
        offsets = self.offsets[start:stop]
        if (offsets < 0).any():
            return None
        ends = offsets + self.sizes[start:stop]
        # Runs of chunks lying back to back in the file (a volume written in order): one system call each.
        cuts = [0, *(np.flatnonzero(offsets[1:] != ends[:-1]) + 1).tolist(), n]
        out = np.empty((n, *self.slice_shape), self.dtype)
        if not self.lz4:
            for a, b in zip(cuts[:-1], cuts[1:]):
                if not _pread_into(self.fd, out[a:b], int(offsets[a])):
                    return None
            return out
        flat = out.reshape(n, -1)
        for a, b in zip(cuts[:-1], cuts[1:]):
            base = int(offsets[a])
            run = memoryview(os.pread(self.fd, int(ends[b - 1]) - base, base))
            for i in range(a, b):
                data = self._decode(run[int(offsets[i]) - base : int(ends[i]) - base])
                if data is None:
                    return None
                flat[i] = np.frombuffer(data, self.dtype)
        return out

    def _decode(self, chunk: bytes | memoryview) -> bytes | bytearray | None:
        return fmt.decode_lz4_chunk(chunk, self.nbytes, _lz4_decompress)


def _pread_into(fd: int, out: np.ndarray, offset: int) -> bool:
    """Fill contiguous ``out`` with the file's bytes at ``offset``; False if the file ends first."""
    if hasattr(os, "preadv"):  # straight into the array (Linux, BSD; not every macOS)
        buffer: Any = out  # a numpy array is a writable buffer (numpy's stubs do not say so)
        return os.preadv(fd, [buffer], offset) == out.nbytes
    data = os.pread(fd, out.nbytes, offset)
    if len(data) != out.nbytes:
        return False
    out.reshape(-1)[...] = np.frombuffer(data, out.dtype)
    return True
