"""Every page (IFD) of a multi-page TIFF against its first, from the IFDs' tags alone.

tifffile reads a file whose pages look alike as one "uniform" series, decoding every page with
the first page's layout; it tells them alike from a sample (pages 1, 7 and the last against
the first, ``TiffFile.is_uniform``), and medload read the Orientation tag of the first page
only. A page 37 of another type (uint8 among uint16 pages), of three samples among grey ones,
of float samples, or with an Orientation of its own came back silently wrong: its bytes read
with page 0's layout (a page that states no Orientation takes page 0's, as before). Reading the few layout tags of every IFD with ``struct`` costs microseconds a
page and no pixel; the walk is bounded by the page count tifffile found (itself bounded by
:data:`medload.io.tiff.MAX_TIFF_PAGES` unless the file is one stack) and stops at an IFD seen
before.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["LAYOUT_TAGS", "first_page_unlike_the_first"]

#: The tags that decide how a page's bytes become pixels (and how they are turned), with the
#: value TIFF gives a page that leaves the tag out.
# fmt: off
LAYOUT_TAGS: dict[int, tuple[str, tuple[int, ...]]] = {
    254: ("NewSubfileType", (0,)), 256: ("ImageWidth", ()), 257: ("ImageLength", ()),
    258: ("BitsPerSample", (1,)), 259: ("Compression", (1,)), 262: ("PhotometricInterpretation", ()),
    274: ("Orientation", ()), 277: ("SamplesPerPixel", (1,)), 284: ("PlanarConfiguration", (1,)),
    317: ("Predictor", (1,)), 322: ("TileWidth", ()), 323: ("TileLength", ()), 338: ("ExtraSamples", ()),
    339: ("SampleFormat", (1,)),
}
# fmt: on
_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q", 13: "I", 18: "Q"}
_MAX_VALUES = 64  # a layout tag holds one value per sample at most


def _values(fh: BinaryIO, order: str, kind: int, count: int, field: bytes) -> tuple[int, ...]:
    fmt = _FORMATS.get(kind)
    if fmt is None or count > _MAX_VALUES:
        return (-1, kind, count)  # not a layout any page of a readable stack has: compared as it is
    size = struct.calcsize(fmt) * count
    if size <= len(field):
        raw = field[:size]
    else:
        (offset,) = struct.unpack(order + ("I" if len(field) == 4 else "Q"), field)
        fh.seek(offset)
        raw = fh.read(size)
        if len(raw) < size:
            return (-2, offset)
    values = struct.unpack(f"{order}{count}{fmt}", raw)
    # BitsPerSample and SampleFormat repeat one value per sample: (16, 16, 16) says 16 as well
    return values[:1] if len(set(values)) == 1 else values


def _layout(fh: BinaryIO, order: str, big: bool, offset: int) -> tuple[dict[int, tuple[int, ...]], int]:
    """The layout tags of the IFD at ``offset`` and the offset of the next IFD."""
    count_fmt, entry_fmt, entry_size, next_fmt = ("Q", "HHQ8s", 20, "Q") if big else ("H", "HHI4s", 12, "I")
    fh.seek(offset)
    head = fh.read(struct.calcsize(count_fmt))
    if len(head) < struct.calcsize(count_fmt):
        raise ValueError("IFD past the end")
    (n,) = struct.unpack(order + count_fmt, head)
    if n > 4096:  # tifffile's own bound on tags per IFD: no read sized by the file
        raise ValueError("suspicious number of tags")
    block = fh.read(n * entry_size + struct.calcsize(next_fmt))
    if len(block) < n * entry_size + struct.calcsize(next_fmt):
        raise ValueError("IFD past the end")
    (following,) = struct.unpack_from(order + next_fmt, block, n * entry_size)
    layout = {tag: default for tag, (_, default) in LAYOUT_TAGS.items()}
    for tag, kind, count, field in struct.iter_unpack(order + entry_fmt, block[: n * entry_size]):
        if tag in LAYOUT_TAGS:
            layout[tag] = _values(fh, order, kind, count, field)
    if layout[274] and not 1 <= layout[274][0] <= 8:
        layout[274] = (1,)  # read as the stored order (medload.io.tiff.orientation_value)
    return layout, following


def first_page_unlike_the_first(path: Path, max_pages: int) -> tuple[int, str, Any, Any] | None:
    """``(page index, tag name, first page's value, that page's value)`` of the first page whose
    layout differs from page 0's, or ``None`` when all agree (or the IFDs cannot be walked:
    tifffile then refuses the file or reads it page by page).

    Examples
    --------
    >>> import io, numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "pages.tif")
    >>> with tifffile.TiffWriter(path) as tw:
    ...     for dtype in (np.uint16, np.uint16, np.uint8):
    ...         tw.write(np.zeros((4, 4), dtype), metadata=None)
    >>> first_page_unlike_the_first(path, 3)
    (2, 'BitsPerSample', (16,), (8,))
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None or len(head) < 16:
                return None
            (version,) = struct.unpack(order + "H", head[2:4])
            big = version == 43
            (offset,) = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])
            seen: set[int] = set()
            first: dict[int, tuple[int, ...]] | None = None
            for index in range(max_pages):
                if offset == 0 or offset in seen:
                    return None
                seen.add(offset)
                layout, offset = _layout(fh, order, big, offset)
                if first is None:
                    first = {**layout, 274: layout[274] or (1,)}
                    continue
                for tag, value in layout.items():
                    # A later page without an Orientation tag takes the first page's (writers
                    # such as tifffile's extratags state it once); one that states another is refused.
                    if value != first[tag] and not (tag == 274 and not value):
                        return index, LAYOUT_TAGS[tag][0], first[tag], value
    except (OSError, ValueError, struct.error):
        return None
    return None
