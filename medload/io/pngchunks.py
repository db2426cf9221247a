"""PNG chunk lengths checked against the file before Pillow reads a chunk.

Pillow reads a PNG chunk with one ``read(length)`` of the length the chunk's header states
(the image data, at the end of a load): a length of 2 GiB in a 1 KB file makes a 2 GiB
allocation the file chose, a MemoryError under a memory cap. :func:`check_png_chunks` walks
the chunk headers first (8 bytes each, up to IEND) and refuses a length past the file's end.
"""

from __future__ import annotations

import os
import struct

from medload.errors import ReadError

__all__ = ["check_png_chunks"]

_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Largest chunk length the PNG specification allows (2^31 - 1).
_PNG_MAX_CHUNK = 2**31 - 1


def check_png_chunks(path: str | os.PathLike[str]) -> None:
    """Refuse a PNG whose chunk lengths claim more bytes than the file holds, before Pillow reads one.

    Pillow reads a chunk with one ``read(length)`` of the length its header states (the image
    data at the end of a load): a length of 2 GB in a 1 KB file allocates 2 GB first. The walk
    reads 8 bytes per chunk, up to IEND.

    Raises
    ------
    ReadError
        Naming the file, the chunk, its claimed length and the bytes left.

    Examples
    --------
    >>> import tempfile, os, struct, zlib
    >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> ihdr = struct.pack(">II5B", 4, 4, 8, 0, 0, 0, 0)
    >>> chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    >>> bomb = struct.pack(">I", 2**31 - 1) + b"IDAT"
    >>> _ = open(path, "wb").write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk + bomb)
    >>> try:
    ...     check_png_chunks(path)
    ... except ReadError as exc:
    ...     print(str(exc).split(": ", 1)[1][:51])
    PNG chunk 'IDAT' at byte 33 claims 2147483647 bytes
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if fh.read(8) != _MAGIC:
            return  # not a PNG: nothing to check
        pos = 8
        while pos + 8 <= size:
            fh.seek(pos)
            head = fh.read(8)
            if len(head) < 8:
                return
            (length,) = struct.unpack(">I", head[:4])
            kind = head[4:8].decode("latin-1")
            left = size - pos - 12
            if length > _PNG_MAX_CHUNK or length > left:
                raise ReadError(
                    f"{path}: PNG chunk {kind!r} at byte {pos} claims {length} bytes, but {max(left, 0)} bytes "
                    "(before its checksum) are left in the file: the file is truncated or damaged. Re-export or re-copy it."
                )
            if head[4:8] == b"IEND":
                return
            pos += 12 + length
