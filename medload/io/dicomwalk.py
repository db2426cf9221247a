"""The element walk under medload's fast header pass: element headers read with ``struct``, values skipped.

:mod:`medload.io.fastheader` reads the elements ``scan`` wants with it and
:mod:`medload.io.frameitems` counts a functional group sequence's items with it before pydicom
parses them. Little-endian files only: the file meta group (always explicit VR) gives the
transfer syntax; big endian or deflated data makes :func:`file_meta` give up (:class:`Giveup`),
and an element that runs past the end of the file raises :class:`Damaged`.
"""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO

# fmt: off
__all__ = [
    "CHUNK", "EXPLICIT_LONG", "EXPLICIT_SHORT", "IMPLICIT", "LITTLE_EXPLICIT", "MAX_NESTING", "PIXEL_DATA", "STOP",
    "UNDEFINED", "Buffer", "Damaged", "Giveup", "file_meta", "next_element", "skip_undefined", "tag_explicit",
    "tag_implicit", "u16", "u32",
]
# fmt: on

EXPLICIT_LONG = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"}
EXPLICIT_SHORT = {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FL",
    b"FD",
    b"IS",
    b"LO",
    b"LT",
    b"PN",
    b"SH",
    b"SL",
    b"SS",
    b"ST",
    b"TM",
    b"UI",
    b"UL",
    b"US",
}
IMPLICIT = "1.2.840.10008.1.2"
LITTLE_EXPLICIT = {"1.2.840.10008.1.2.1"}
UNDEFINED = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
STOP = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})  # float, double float, pixel data
CHUNK = 16384
#: Undefined-length sequences nested deeper than this go to pydicom (which refuses them
#: with a RecursionError that scan reports); real headers nest 3-4 levels.
MAX_NESTING = 32

u16 = struct.Struct("<H").unpack_from
u32 = struct.Struct("<I").unpack_from
tag_explicit = struct.Struct("<HH2sH").unpack_from
tag_implicit = struct.Struct("<HHI").unpack_from


class Giveup(Exception):
    """The fast path does not handle this file; use pydicom. The message (a FALLBACK_REASONS entry) says why."""


class Damaged(Exception):
    """The file starts as DICOM but its structure ends early or lies about a length.

    ``found`` holds the wanted elements read before the damage (so that scan can tell which
    series a truncated file belonged to).
    """

    def __init__(self, reason: str, found: dict[int, tuple[str | None, bytes]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.found = found or {}


class Buffer:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.data = bytearray(fh.read(CHUNK))
        self.eof = len(self.data) < CHUNK
        try:
            self.size = os.fstat(fh.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            self.size = 1 << 62
        self.found: dict[int, tuple[str | None, bytes]] = {}

    def need(self, end: int) -> None:
        if end > self.size:
            raise Damaged(f"an element runs to byte {end}, past the end of the file ({self.size} bytes)", self.found)
        while len(self.data) < end:
            if self.eof:
                raise Damaged(f"the file ends at byte {len(self.data)} inside an element", self.found)
            more = self.fh.read(max(CHUNK, end - len(self.data)))
            if len(more) == 0:
                self.eof = True
                raise Damaged(f"the file ends at byte {len(self.data)} inside an element", self.found)
            self.data += more


def skip_undefined(buf: Buffer, pos: int, implicit: bool, depth: int = 0) -> int:
    """Position after a sequence of undefined length whose items start at ``pos``."""
    if depth > MAX_NESTING:
        raise Giveup("deep nesting")
    while True:
        buf.need(pos + 8)
        group, elem, length = tag_implicit(buf.data, pos)
        pos += 8
        if group != 0xFFFE:
            raise Giveup("bad sequence item")
        if elem == 0xE0DD:  # sequence delimiter
            return pos
        if elem != 0xE000:
            raise Giveup("bad sequence item")
        if length != UNDEFINED:
            buf.need(pos + length)
            pos += length
            continue
        # item of undefined length: elements until the item delimiter
        while True:
            buf.need(pos + 8)
            g, e = u16(buf.data, pos)[0], u16(buf.data, pos + 2)[0]
            if g == 0xFFFE and e == 0xE00D:
                pos += 8
                break
            pos = next_element(buf, pos, implicit, depth + 1)[4]


def next_element(buf: Buffer, pos: int, implicit: bool, depth: int = 0) -> tuple[int, Any, int, int, int]:
    """(tag, VR bytes or None, value start, value length, position after) of the element at pos."""
    buf.need(pos + 8)
    if implicit:
        group, elem, length = tag_implicit(buf.data, pos)
        vr = None
        start = pos + 8
    else:
        group, elem, vr, short = tag_explicit(buf.data, pos)
        if vr in EXPLICIT_LONG:
            buf.need(pos + 12)
            length = u32(buf.data, pos + 8)[0]
            start = pos + 12
        elif vr in EXPLICIT_SHORT:
            length = short
            start = pos + 8
        else:
            raise Giveup("unknown VR")
    tag = (group << 16) | elem
    if length == UNDEFINED:
        if tag == PIXEL_DATA:
            return tag, vr, start, -1, start
        end = skip_undefined(buf, start, implicit, depth)
        return tag, vr, start, -1, end
    buf.need(start + length)
    return tag, vr, start, length, start + length


def file_meta(buf: Buffer) -> tuple[int, dict[str, str], str, bool]:
    """The file meta group: where the dataset starts, its meta elements, transfer syntax, implicit VR."""
    pos = 132
    meta: dict[str, str] = {}
    ts = None
    while True:  # the file meta group is always explicit VR little endian
        buf.need(pos + 8)
        if u16(buf.data, pos)[0] != 0x0002:  # the group
            break
        tag, vr, start, length, pos = next_element(buf, pos, implicit=False)
        if length < 0:
            raise Giveup("odd file meta")
        if tag in (0x00020010, 0x00020002, 0x00020003):
            value = bytes(buf.data[start : start + length]).rstrip(b"\x00 ").decode("ascii", "replace")
            if tag == 0x00020010:
                ts = value
                meta["TransferSyntaxUID"] = value
            elif tag == 0x00020002:
                meta["MediaStorageSOPClassUID"] = value
            else:
                meta["MediaStorageSOPInstanceUID"] = value
    if ts is None:
        raise Giveup("odd file meta")
    if ts == IMPLICIT:
        return pos, meta, ts, True
    if ts in LITTLE_EXPLICIT or (ts.startswith("1.2.840.10008.1.2.4.") or ts in ("1.2.840.10008.1.2.5",)):
        return pos, meta, ts, False  # compressed syntaxes encode the header as explicit VR little endian
    raise Giveup("big endian or deflated")
