"""HDF5's LZ4 filter (id 32004, hdf5plugin ``src/LZ4/H5Zlz4.c``): the framing of one stored chunk, undone into a slice.

The reader's direct chunk path (:mod:`medload.store.chunks`) reads chunk bytes with
``os.preadv`` and decodes them here, straight into a row of the batch.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

__all__ = ["LZ4_FILTER_ID", "LZ4SizeError", "decode_lz4_chunk_into"]

#: HDF5's registered id of the LZ4 filter that ``hdf5plugin.LZ4`` writes.
LZ4_FILTER_ID = 32004

# Original size, block size, and the stored size of the first block (all big-endian).
_LZ4_HEADER = struct.Struct(">QII")


class LZ4SizeError(ValueError):
    """A stored LZ4 chunk says it holds another number of bytes than its slice (``original``: what it says)."""

    def __init__(self, original: int, expected: int) -> None:
        super().__init__(f"its LZ4 chunk says it holds {original} bytes, the slice has {expected}")
        self.original = original


def decode_lz4_chunk_into(chunk: bytes | memoryview, out: np.ndarray, decompress_into: Callable[..., int]) -> bool:
    """Undo HDF5's LZ4 filter (id 32004) on one stored chunk, writing the bytes into ``out``; False if its framing disagrees.

    The framing, as written by the filter (hdf5plugin ``src/LZ4/H5Zlz4.c``): the original size
    (8 bytes, big-endian), the block size (4 bytes, big-endian; the filter caps it at the
    original size), then per block its stored size (4 bytes, big-endian) and the block; a block
    whose stored size equals its original size was kept raw (compression saved nothing), the
    last block may be shorter. ``out`` is a writable 1-D uint8 array of the chunk's original
    size (a row of the batch being filled: no temporary, no copy). ``decompress_into`` is
    ``cramjam.lz4.decompress_block_into``, passed in so this module does not need ``cramjam``.
    Anything unexpected (another original size than ``out``'s, a zero block size, a truncated
    or over-long chunk, a block LZ4 rejects or that decodes to another length) gives False,
    ``out`` then holds garbage: the caller reads the chunk through HDF5, which decodes it or
    raises, never a wrong slice. A chunk whose original size is not ``out``'s raises
    :class:`LZ4SizeError` instead: it cannot hold this slice, and HDF5's filter would first
    allocate the size it claims (up to 2**64 bytes, from the file).

    Examples
    --------
    >>> import cramjam
    >>> raw = bytes(range(64)) * 4
    >>> block = bytes(cramjam.lz4.compress_block(raw, store_size=False))
    >>> chunk = (256).to_bytes(8, "big") + (256).to_bytes(4, "big") + len(block).to_bytes(4, "big") + block
    >>> out = np.zeros(256, np.uint8)
    >>> decode_lz4_chunk_into(chunk, out, cramjam.lz4.decompress_block_into), out.tobytes() == raw
    (True, True)
    >>> decode_lz4_chunk_into(chunk, np.zeros(512, np.uint8), cramjam.lz4.decompress_block_into)
    Traceback (most recent call last):
    medload.store.lz4frame.LZ4SizeError: its LZ4 chunk says it holds 256 bytes, the slice has 512
    """
    view = memoryview(chunk)
    total, nbytes = len(view), out.size
    if total < 16:
        return False
    original, block_size, first = _LZ4_HEADER.unpack_from(view)
    if original != nbytes:
        raise LZ4SizeError(original, nbytes)
    if block_size == 0:
        return False
    if block_size >= nbytes and 16 + first == total and first != nbytes:
        # One compressed block, every chunk medload writes: the loop below, without its Python.
        return _lz4_block_into(view[16:], out, decompress_into)
    block_size = min(block_size, nbytes)
    done, pos = 0, 12
    while done < nbytes:
        size = min(block_size, nbytes - done)
        if pos + 4 > total:
            return False
        stored = int.from_bytes(view[pos : pos + 4], "big")
        pos += 4
        if pos + stored > total:
            return False
        block = view[pos : pos + stored]
        if stored == size:
            out[done : done + size] = np.frombuffer(block, np.uint8)
        elif not _lz4_block_into(block, out[done : done + size], decompress_into):
            return False
        pos += stored
        done += size
    return pos == total


def _lz4_block_into(block: memoryview, out: np.ndarray, decompress_into: Callable[..., int]) -> bool:
    """One LZ4 block decoded into all of ``out``; False if LZ4 rejects it or it decodes to another length."""
    size = out.size
    # cramjam retries a block it cannot decode as one led by a 4-byte little-endian size; such a
    # retry can only fill ``out`` exactly when those 4 bytes say ``size``: leave that rare chunk
    # to HDF5 rather than risk a misread.
    if len(block) >= 4 and int.from_bytes(block[:4], "little") == size:
        return False
    try:
        return decompress_into(block, out, output_len=size) == size
    except Exception:  # noqa: BLE001 - cramjam.DecompressionError or a corrupt size: let HDF5 say
        return False
