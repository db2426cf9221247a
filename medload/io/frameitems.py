"""Count a multi-frame object's functional group items before pydicom parses them.

pydicom parses a sequence of undefined length eagerly, item by item, whatever
``specific_tags`` asks (its reader must find the sequence's end): a PerFrameFunctionalGroupsSequence
of 20,000 items (27 MB, an enhanced MR's items copied) cost 31 s CPU and 760 MB before
:func:`medload.io.enhanced.enhanced_frames` refused it for holding more items than frames. This
walk reads only element headers (:mod:`medload.io.dicomwalk`, the fast header pass's walker), up to one item more
than NumberOfFrames, so the work is bounded by what the header declares, and NumberOfFrames is
checked against the file's size first (:func:`medload.io.validate.check_frame_count`).

A file the walker cannot walk (an unknown VR, elements it cannot parse) is left to pydicom,
which reads or refuses it as before.
"""

from __future__ import annotations

import os
import struct

from medload.errors import ReadError
from medload.io.dicomwalk import STOP, UNDEFINED, Buffer, Damaged, Giveup, file_meta, next_element, tag_implicit, u16, u32
from medload.io.validate import check_frame_count
from medload.limits import MAX_FUNCTIONAL_GROUP_ITEMS

__all__ = ["check_functional_groups"]

_SHARED, _PER_FRAME = 0x52009229, 0x52009230
_NUMBER_OF_FRAMES = 0x00280008
_IMAGE = {0x00280002: "samples", 0x00280010: "rows", 0x00280011: "columns", 0x00280100: "bits_allocated"}
_NAMES = {_SHARED: "SharedFunctionalGroupsSequence (5200,9229)", _PER_FRAME: "PerFrameFunctionalGroupsSequence (5200,9230)"}


def _count_items(buf: Buffer, pos: int, implicit: bool, bound: int) -> int:
    """Items of the sequence whose element header is at ``pos``, counted up to ``bound + 1``."""
    buf.need(pos + 12)
    if implicit:
        length, start, inner = u32(buf.data, pos + 4)[0], pos + 8, True
    else:
        vr = bytes(buf.data[pos + 4 : pos + 6])
        if vr not in (b"SQ", b"UN"):
            return 0  # not a sequence: pydicom decides what it is
        length, start, inner = u32(buf.data, pos + 8)[0], pos + 12, vr == b"UN"
    end = None if length == UNDEFINED else start + length
    count, p = 0, start
    while end is None or p < end:
        buf.need(p + 8)
        group, elem, item_length = tag_implicit(buf.data, p)
        p += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        if (group, elem) != (0xFFFE, 0xE000):
            raise Giveup("bad sequence item")
        count += 1
        if count > bound:
            return count
        if item_length != UNDEFINED:
            buf.need(p + item_length)
            p += item_length
            continue
        while True:  # an item of undefined length: its elements up to the item delimiter
            buf.need(p + 8)
            if u16(buf.data, p)[0] == 0xFFFE and u16(buf.data, p + 2)[0] == 0xE00D:
                p += 8
                break
            p = next_element(buf, p, inner, 1)[4]
    return count


def _integer_string(raw: bytes) -> int | None:
    """An IS value (NumberOfFrames) as an int, None when it is not one (pydicom then says why)."""
    try:
        return int(raw.rstrip(b"\x00 ").strip().decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def check_functional_groups(path: str) -> None:
    """Refuse a multi-frame file whose functional group sequences hold more items than it may have.

    The per-frame sequence may hold one item per frame (NumberOfFrames; without it,
    :data:`~medload.limits.MAX_FUNCTIONAL_GROUP_ITEMS`), the shared one a single item (the
    same limit, for files that repeat it). NumberOfFrames is checked against the file's size
    first. Cheap for any file: element headers are walked, values skipped, and at most one
    item more than allowed is counted.

    Raises
    ------
    ReadError
        A sequence holds more items than allowed, or NumberOfFrames claims more frames than
        the file can hold.

    Examples
    --------
    >>> import os, pydicom
    >>> check_functional_groups(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm"))
    """
    found: dict[int, int | None] = {}
    try:
        with open(path, "rb") as fh:
            buf = Buffer(fh)
            if len(buf.data) < 144 or buf.data[128:132] != b"DICM":
                return
            pos, _meta, ts, implicit = file_meta(buf)
            while pos + 8 <= buf.size:
                buf.need(pos + 8)
                tag = (u16(buf.data, pos)[0] << 16) | u16(buf.data, pos + 2)[0]
                if tag in STOP:
                    return
                if tag in (_SHARED, _PER_FRAME):
                    _check_sequence(path, buf, pos, implicit, tag, found, ts)
                    if tag == _PER_FRAME:
                        return
                tag, _vr, start, length, after = next_element(buf, pos, implicit)
                if (tag == _NUMBER_OF_FRAMES or tag in _IMAGE) and 0 < length <= 16:
                    raw = bytes(buf.data[start : start + length])
                    found[tag] = _integer_string(raw) if tag == _NUMBER_OF_FRAMES else (u16(raw, 0)[0] if length >= 2 else None)
                pos = after
    except (Giveup, Damaged, struct.error, OSError, ValueError, RecursionError):
        return  # the walker stops here; pydicom reads (or refuses) the file as before


def _check_sequence(path: str, buf: Buffer, pos: int, implicit: bool, tag: int, found: dict[int, int | None], ts: str) -> None:
    frames = found.get(_NUMBER_OF_FRAMES)
    if tag == _PER_FRAME and frames is not None and frames >= 1:
        image = {name: found.get(t) for t, name in _IMAGE.items()}
        if image["rows"] and image["columns"] and image["bits_allocated"]:
            check_frame_count(
                path,
                n_frames=frames,
                rows=int(image["rows"]),
                columns=int(image["columns"]),
                samples=int(image["samples"] or 1),
                bits_allocated=int(image["bits_allocated"]),
                transfer_syntax=ts,
                file_size=os.path.getsize(path),
            )
        bound, allowed = frames, f"NumberOfFrames is {frames}"
    else:
        bound = MAX_FUNCTIONAL_GROUP_ITEMS
        allowed = (
            "the standard allows one item" if tag == _SHARED else "NumberOfFrames is not stated (one frame)"
        ) + f"; medload reads at most {bound}"
    count = _count_items(buf, pos, implicit, bound)
    if count > bound:
        raise ReadError(
            f"{path}: {_NAMES[tag]} holds more than {bound} item(s) but {allowed}; expected one item per frame, "
            "so it cannot be told which item describes which frame (and parsing them all would take "
            "time in proportion to the file, not to its frames). The header is damaged; re-export the file or remove it."
        )
