"""Direct chunk reads: a slice's bytes read with ``os.pread`` where HDF5 stores it one per chunk.

HDF5's fixed cost per read call and its filter pipeline dominated the reading of small
slices (~14k slices/s per core on the default uint8 + LZ4 store). Where a dataset is stored
one slice per chunk with no filter, or with only the LZ4 filter of hdf5plugin, the reader
looks up where each chunk lies once per dataset and process (one HDF5 call), then reads a
slice's bytes with ``os.preadv`` on HDF5's own file descriptor into a reused buffer and
decodes them with ``cramjam`` straight into the caller's array, a row of the batch being
filled (:func:`medload.store.lz4frame.decode_lz4_chunk_into`); unfiltered chunks are read
straight into it. The bytes are those HDF5 would return, so the result is the same bit for
bit. Everything else (other filters, a chunk stored unfiltered by HDF5, chunks other than one
slice, an unwritten chunk, framing not as expected, ``cramjam`` not installed) goes through
h5py as before, which decodes it or raises a StoreError naming the file.

Measured (issue 15, bench/loader.py, 256x256 uint8 slices of ~43 kB LZ4): LZ4 into a
preallocated row takes ~20 us a slice where ``lz4.block.decompress``, which returns a new
``bytes`` (allocated, page-faulted, then copied into the batch), took ~55 us; the chunk's
bytes read into a reused buffer ~5 us against ~7 us for ``os.pread``'s new ``bytes``.
h5py's ``read_direct`` into a preallocated batch measured 4x slower than plain slicing.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import StoreError
from medload.store import lz4frame

_lz4_block_into: Callable[..., int] | None
try:  # a speed-up, not a feature: without it LZ4 chunks are read through h5py
    import cramjam

    _lz4_block_into = cramjam.lz4.decompress_block_into  # cramjam.lz4 is no importable module
except ImportError:  # pragma: no cover - cramjam is a dependency
    _lz4_block_into = None

if TYPE_CHECKING:
    import h5py

__all__ = ["ChunkTable", "FileMap", "scratch_array"]

# Buffers reused from read to read, one set per thread: tf.data's parallel map reads batches
# from several threads at once, and os.preadv and cramjam both run outside the GIL.
_per_thread = threading.local()
_preadv = getattr(os, "preadv", None)  # Linux, BSD; not every macOS


def scratch_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """This thread's reused array of ``shape`` and ``dtype``, valid until its next call in the thread.

    For stored values on their way to float32: a fresh array per read page-faulted afresh.

    Examples
    --------
    >>> a = scratch_array((2, 3), np.dtype(np.uint8))
    >>> a.shape, a.dtype, np.shares_memory(a, scratch_array((3,), np.dtype(np.int16)))
    ((2, 3), dtype('uint8'), True)
    """
    nbytes = math.prod(shape) * dtype.itemsize
    buffer = getattr(_per_thread, "scratch", None)
    if buffer is None or buffer.size < nbytes:
        buffer = _per_thread.scratch = np.empty(nbytes, np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def _chunk_buffer(size: int) -> memoryview:
    """This thread's reused buffer for a read of ``size`` stored bytes."""
    buffer = getattr(_per_thread, "chunks", None)
    if buffer is None or len(buffer) < size:
        buffer = _per_thread.chunks = bytearray(size)
    return memoryview(buffer)[:size]


class ChunkTable:
    """Where each slice's chunk of one dataset lies in its file, to read slices without HDF5.

    Built once per dataset and process by :meth:`of` (``None`` where the dataset does not
    qualify); :meth:`read_into` fills an array with the stored values of a slice range, or
    says False when a chunk of it must go through h5py (unwritten, stored without its filter,
    framing not as expected). The file descriptor is the one HDF5 itself opened
    (``get_vfd_handle``), so the offsets and the bytes come from the same file even if the path
    was replaced since; ``os.pread`` moves no shared file position, so HDF5's own reads are
    not disturbed.
    """

    __slots__ = ("fd", "offsets", "sizes", "lz4", "slice_shape", "dtype", "nbytes", "what", "file_map", "_where", "_decoder")

    def __init__(
        self,
        fd: int,
        offsets: np.ndarray,
        sizes: np.ndarray,
        *,
        lz4: bool,
        slice_shape: tuple[int, ...],
        dtype: np.dtype,
        what: str = "a dataset",
        file_map: FileMap | None = None,
    ) -> None:
        self.fd = fd
        #: The file's bytes mapped read-only (shared by the tables of one file), for :meth:`FileMap.decode_rows`.
        self.file_map = file_map
        self.what = what
        self.offsets = offsets
        self.sizes = sizes
        self.lz4 = lz4
        self.slice_shape = slice_shape
        self.dtype = dtype
        self.nbytes = int(np.prod(slice_shape, dtype=np.int64)) * dtype.itemsize
        self._decoder: Callable[..., int] = _lz4_block_into or _no_decoder
        # (offset, size) per slice as Python ints: a single slice's lookup without numpy scalars.
        self._where = list(zip(offsets.tolist(), sizes.tolist()))

    @classmethod
    def of(cls, ds: h5py.Dataset, what: str = "a dataset", maps: dict[int, FileMap | None] | None = None) -> ChunkTable | None:
        """The table of h5py dataset ``ds``, or ``None`` if only h5py can read it; ``what`` names it in errors.

        ``maps``: the caller's :class:`FileMap` per file descriptor, for the tables of LZ4
        datasets (made here on a file's first table; kept as long as the caller keeps the
        file open). Without it the table reads with ``os.preadv`` alone.
        """
        try:
            return cls._build(ds, what, maps)
        except Exception:  # noqa: BLE001 - a speed-up only: anything unexpected means h5py reads it
            return None

    @classmethod
    def _build(cls, ds: h5py.Dataset, what: str, maps: dict[int, FileMap | None] | None = None) -> ChunkTable | None:
        shape, dtype = tuple(ds.shape), ds.dtype
        if len(shape) < 2 or shape[0] == 0 or ds.chunks != (1,) + shape[1:]:
            return None
        if dtype.kind not in "biuf" or not dtype.isnative:
            return None
        dcpl = ds.id.get_create_plist()
        n_filters = dcpl.get_nfilters()
        if n_filters == 0:
            lz4 = False
        elif n_filters == 1 and dcpl.get_filter(0)[0] == lz4frame.LZ4_FILTER_ID and _lz4_block_into is not None:
            lz4 = True
        else:
            return None
        f = ds.file
        if f.driver != "sec2" or not hasattr(os, "pread"):  # os.pread: POSIX only (not Windows)
            return None
        fd = f.id.get_vfd_handle()
        if not isinstance(fd, int) or fd < 0:
            return None
        offsets, sizes = np.full(shape[0], -1, np.int64), np.zeros(shape[0], np.int64)
        nbytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

        def visit(info: Any) -> None:  # h5py's StoreInfo of one chunk
            z, *rest = info.chunk_offset
            if info.filter_mask != 0 or info.byte_offset is None or any(rest) or not 0 <= z < shape[0]:
                return  # stored without its filter, unallocated or unexpected: h5py reads it
            if not lz4 and info.size != nbytes:
                return
            offsets[z] = info.byte_offset
            sizes[z] = info.size

        if hasattr(ds.id, "chunk_iter"):
            ds.id.chunk_iter(visit)  # one HDF5 call for the whole index
        else:  # pragma: no cover - HDF5 older than 1.12.3
            for i in range(ds.id.get_num_chunks()):
                visit(ds.id.get_chunk_info(i))
        file_map = None
        if lz4 and maps is not None:
            if fd not in maps:
                maps[fd] = FileMap.of(fd)
            file_map = maps[fd]
        return cls(fd, offsets, sizes, lz4=lz4, slice_shape=shape[1:], dtype=dtype, what=what, file_map=file_map)

    def read(self, start: int, stop: int) -> np.ndarray | None:
        """Stored values of slices ``start:stop`` in a new array, or ``None`` to use h5py."""
        out = np.empty((stop - start, *self.slice_shape), self.dtype)
        return out if self.read_into(start, stop, out) else None

    def read_into(self, start: int, stop: int, out: np.ndarray) -> bool:
        """Write the stored values of slices ``start:stop`` into ``out``; False to use h5py.

        ``out``: the stored dtype, shape ``(stop - start, *slice_shape)``, C-contiguous (else
        False). On False its contents are undefined (the caller overwrites them with h5py's read).
        """
        n = stop - start
        if not out.flags.c_contiguous:
            return False  # a reshape below would copy, not fill, it
        if n == 1:  # the common case (a shuffled batch), kept free of array arithmetic
            offset, size = self._where[start]
            if offset < 0:
                return False
            if not self.lz4:
                return _pread_into(self.fd, out, offset)
            chunk = self._read_chunks(offset, size)
            return chunk is not None and self._decode(chunk, out.reshape(-1).view(np.uint8), start)
        if n == 0:
            return True
        offsets = self.offsets[start:stop]
        if (offsets < 0).any():
            return False
        ends = offsets + self.sizes[start:stop]
        # Runs of chunks lying back to back in the file (a volume written in order): one system call each.
        cuts = [0, *(np.flatnonzero(offsets[1:] != ends[:-1]) + 1).tolist(), n]
        if not self.lz4:
            return all(_pread_into(self.fd, out[a:b], int(offsets[a])) for a, b in zip(cuts[:-1], cuts[1:]))
        rows = out.reshape(n, -1).view(np.uint8)
        for a, b in zip(cuts[:-1], cuts[1:]):
            base = int(offsets[a])
            run = self._read_chunks(base, int(ends[b - 1]) - base)
            if run is None:
                return False
            for i in range(a, b):
                chunk = run[int(offsets[i]) - base : int(ends[i]) - base]
                if not self._decode(chunk, rows[i], start + i):
                    return False
        return True

    def read_one_into(self, z: int, row: np.ndarray) -> bool:
        """Slice ``z``'s stored bytes into ``row``, a contiguous 1-D uint8 view of ``nbytes``; False to use h5py.

        :meth:`read_into` for one slice of a batch, with the caller's checks made once per batch.
        """
        offset, size = self._where[z]
        if offset < 0:
            return False
        if not self.lz4:
            return _pread_into(self.fd, row, offset)
        if _preadv is None:
            chunk = self._read_chunks(offset, size)
            return chunk is not None and self._decode(chunk, row, z)
        # _read_chunks and _decode inlined: this runs once per slice of every shuffled batch.
        view = _chunk_buffer(size)
        if _preadv(self.fd, [view], offset) != size:
            return False
        try:
            return lz4frame.decode_lz4_chunk_into(view, row, self._decoder)
        except lz4frame.LZ4SizeError as exc:
            raise self._damaged(exc, z) from None

    def _decode(self, chunk: memoryview, row: np.ndarray, z: int) -> bool:
        """Slice ``z``'s LZ4 chunk into ``row``; False to use h5py; a StoreError for a chunk that cannot be this slice."""
        try:
            return lz4frame.decode_lz4_chunk_into(chunk, row, self._decoder)
        except lz4frame.LZ4SizeError as exc:
            raise self._damaged(exc, z) from None

    def _damaged(self, exc: lz4frame.LZ4SizeError, z: int) -> StoreError:
        # Not left to h5py: HDF5's LZ4 filter would first allocate the size the chunk claims.
        return StoreError(f"{self.what}, slice {z}: {exc}; the file is damaged, write it again.")

    def _read_chunks(self, offset: int, size: int) -> memoryview | None:
        """``size`` bytes of the file at ``offset``, in this thread's reused buffer (valid until its next read); None if the file ends first."""
        view = _chunk_buffer(size)
        if hasattr(os, "preadv"):
            done = os.preadv(self.fd, [view], offset)
        else:  # no os.preadv (macOS before 11)
            data = os.pread(self.fd, size, offset)
            done = len(data)
            view[:done] = data
        return view if done == size else None


class FileMap:
    """A store file's bytes mapped read-only, to decode LZ4 chunks of a batch straight from the page cache.

    Why: ``os.preadv`` copies each chunk from the page cache into a buffer before LZ4 reads it
    (~5 us of a slice's ~35 us, measured on 256x256 uint8 slices), and a call per slice made
    of Python costs as much again; decoding from the mapping needs neither copy nor system
    call, and :meth:`decode_rows` checks the framing of a whole batch's chunks in a few numpy
    operations. The mapping is the file's page cache, shared with every process reading the
    file: its pages count in a process's resident size as ``numpy.memmap``'s do, and the
    kernel reclaims them as it does cached file pages. A page of a mapping past the end of its
    file ends the process with SIGBUS, so each batch first asks the file's size (one
    ``os.fstat``): a chunk past it (a file cut short after it was opened) is left to the
    other path, which raises a StoreError naming the file. Only a file cut short in the
    milliseconds of a batch's decoding escapes that check; medload never truncates a store in
    place (it writes under a temporary name and renames the file when whole).
    """

    __slots__ = ("fd", "bytes", "size", "_view")

    def __init__(self, fd: int, mapping: mmap.mmap) -> None:
        self.fd = fd
        self.bytes = np.frombuffer(mapping, np.uint8)
        self.size = int(self.bytes.size)
        self._view = memoryview(mapping)

    @classmethod
    def of(cls, fd: int) -> FileMap | None:
        """The whole file open as ``fd``, mapped read-only; None where it cannot be (empty, no mmap)."""
        try:
            return cls(fd, mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
        except (OSError, ValueError, AttributeError):
            return None

    def decode_rows(self, offsets: list[int], sizes: list[int], rows: list[int], out: np.ndarray) -> list[int]:
        """Decode the one-block LZ4 chunk at ``offsets[k]`` (``sizes[k]`` bytes) into ``out[rows[k]]`` for every ``k``.

        ``out``: ``(n, nbytes)`` uint8, a batch's rows as bytes. Returns the rows left for
        :meth:`ChunkTable.read_one_into` (which decodes other framings through the file, or
        raises for a chunk that cannot be its slice): a chunk outside the mapping or past the
        file's end now, a header that is not one block (LZ4, or kept raw) of exactly ``nbytes`` (:func:`~medload.store.lz4frame.decode_lz4_chunk_into`'s
        fast case), a block LZ4 rejects or that decodes to another length. Their rows may hold
        garbage. Chunks are decoded in file order.

        Examples
        --------
        >>> import cramjam, os, tempfile
        >>> raw = bytes(range(64)) * 4
        >>> block = bytes(cramjam.lz4.compress_block(raw, store_size=False))
        >>> chunk = (256).to_bytes(8, "big") + (256).to_bytes(4, "big") + len(block).to_bytes(4, "big") + block
        >>> fd, name = tempfile.mkstemp()
        >>> _ = os.write(fd, b"HEAD" + chunk + chunk[:-1])
        >>> out = np.zeros((3, 256), np.uint8)
        >>> FileMap.of(fd).decode_rows([4, 4, 4 + len(chunk)], [len(chunk), len(chunk), len(chunk) - 1], [2, 0, 1], out)
        [1]
        >>> out[0].tobytes() == raw == out[2].tobytes(), bool(out[1].any())
        (True, False)
        >>> os.close(fd); os.remove(name)
        """
        nbytes = int(out.shape[1])
        start = np.array(offsets, np.int64)
        end = start + np.array(sizes, np.int64)
        try:
            size = min(self.size, os.fstat(self.fd).st_size)
        except OSError:
            return list(rows)
        fits = (start >= 0) & (end - start >= 20) & (end <= size)
        # Each chunk's framing (lz4frame): original size (8 bytes), block size, first block's
        # stored size (4 bytes each, big-endian), then the block, whose first 4 bytes must not
        # read as the slice's size (little-endian; cramjam would retry it as size-prefixed).
        head = self.bytes[(np.where(fits, start, 0)[:, None] + _HEAD).ravel()].reshape(-1, 20)
        big = head[:, :16].copy().view(">u4").astype(np.int64)
        lead = head[:, 16:20].copy().view("<u4")[:, 0].astype(np.int64)
        fits &= (big[:, 0] == 0) & (big[:, 1] == nbytes) & (big[:, 2] >= nbytes) & (big[:, 3] == end - start - 16)
        # A block LZ4 could not shrink is stored as it is (its stored size is the slice's).
        kept = fits & (big[:, 3] == nbytes)
        fits &= (big[:, 3] != nbytes) & (lead != nbytes)
        left = [row for row, good, copy in zip(rows, fits.tolist(), kept.tolist()) if not (good or copy)]
        data = self.bytes
        for k, a in zip(np.flatnonzero(kept).tolist(), (start[kept] + 16).tolist()):
            out[rows[k]] = data[a : a + nbytes]
        order = np.flatnonzero(fits)
        order = order[np.argsort(start[order], kind="stable")]
        view, decode = self._view, _lz4_block_into
        if decode is None:  # pragma: no cover - tables are LZ4 only where cramjam is
            return list(rows)
        for k, a, b in zip(order.tolist(), (start[order] + 16).tolist(), end[order].tolist()):
            row = rows[k]
            try:
                if decode(view[a:b], out[row], output_len=nbytes) == nbytes:
                    continue
            except Exception:  # noqa: BLE001 - cramjam.DecompressionError: the slow path says what is wrong
                pass
            left.append(row)
        return left


_HEAD = np.arange(20, dtype=np.int64)


def _no_decoder(*args: Any, **kwargs: Any) -> int:
    """The decoder of a table of unfiltered chunks, which never decodes."""
    raise RuntimeError("no LZ4 decoder: the table reads unfiltered chunks only")


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
