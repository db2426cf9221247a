"""A compressed frame's own image parameters against the DICOM header that describes it.

JPEG, JPEG-LS and JPEG 2000 codestreams state their own sample precision (and JPEG/JPEG-LS
their size and component count). A header that disagrees with them is a lie the decoders do
not all catch: a 16-bit JPEG 2000 frame under BitsAllocated 8 decoded to int8 values wrapped
around, a 16-bit JPEG-LS frame to all zeros, a JPEG-LS frame of 128 rows under Rows 64 to its
first half. pydicom reads these parameters itself (``get_j2k_parameters`` and the JPEG marker
parser its decoders use); this module compares them, on the first frame, before decoding. An
RLE frame states no size: its segments' decoded lengths are counted from their run headers.
"""

from __future__ import annotations

import struct
from typing import Any

from medload.errors import ReadError

__all__ = ["check_codestream", "rle_segment_lengths"]

_J2K_PREFIX = "1.2.840.10008.1.2.4.9"  # .90, .91 (JPEG 2000), .92, .93 (multi-component)
_JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")


def _first_frame(ds: Any) -> bytes | None:
    from pydicom.encaps import get_frame

    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
        return get_frame(ds.PixelData, 0, number_of_frames=n)
    except Exception:  # noqa: BLE001 - unparsable fragments: the decoder refuses them, naming why
        return None


def _parameters(ts: str, frame: bytes) -> dict[str, Any]:
    from pydicom.pixels.utils import _get_jpg_parameters, get_j2k_parameters

    try:
        if ts.startswith(_J2K_PREFIX):
            return dict(get_j2k_parameters(frame))
        if ts in _JPEG_LS or ts in _JPEG:
            return dict(_get_jpg_parameters(frame))
    except Exception:  # noqa: BLE001 - a garbled marker segment: the decoder refuses it
        return {}
    return {}


_RLE = "1.2.840.10008.1.2.5"


def rle_segment_lengths(frame: bytes) -> list[int]:
    """The decoded length of each segment of an RLE frame, from its header and run bytes alone.

    pydicom decodes a segment longer than Rows x Columns with a warning and keeps its start:
    under a Rows or Columns that lies, a silently cut or sheared image. Walking the run
    headers (PS3.5 G.3.1) gives each length without building the output.

    Examples
    --------
    >>> header = struct.pack("<16I", 1, 64, *[0] * 14)
    >>> rle_segment_lengths(header + bytes([2, 1, 2, 3]) + bytes([253, 9]) + bytes([128, 0]))
    [7]
    """
    count = struct.unpack_from("<I", frame, 0)[0] if len(frame) >= 64 else 0
    offsets = list(struct.unpack_from("<15I", frame, 4))[: min(count, 15)] if count else []
    lengths = []
    for k, start in enumerate(offsets):
        end = offsets[k + 1] if k + 1 < len(offsets) else len(frame)
        segment, pos, out = frame[start:end], 0, 0
        n = len(segment)
        while pos < n:
            h = segment[pos]
            # Only bytes present count (pydicom's decoder as well): a segment padded to an even
            # length ends in a run header with nothing after it.
            if h < 128:  # a literal run of h + 1 bytes
                out += min(h + 1, n - pos - 1)
                pos += h + 2
            elif h > 128:  # the next byte 257 - h times
                out += 257 - h if pos + 1 < n else 0
                pos += 2
            else:
                pos += 1
        lengths.append(out)
    return lengths


def _check_rle(ds: Any, path: str, frame: bytes) -> None:
    expected = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    for k, length in enumerate(rle_segment_lengths(frame)):
        # One byte more is an odd segment's padding some encoders decode; fewer bytes pydicom refuses.
        if length > expected + 1:
            raise ReadError(
                f"{path}: RLE segment {k} of frame 0 decodes to {length} bytes, but Rows x Columns is "
                f"{ds.get('Rows')} x {ds.get('Columns')} = {expected}; the header does not describe the pixels or "
                "they are damaged, so they would be decoded wrong; re-export the file."
            )


def check_codestream(ds: Any, path: str, ts: str) -> None:
    """Refuse a compressed image whose first frame's codestream contradicts the header.

    Checked: the codestream's sample precision fits BitsAllocated; for JPEG and JPEG-LS its
    rows, columns and components are Rows, Columns and SamplesPerPixel; an RLE segment decodes
    to no more than Rows x Columns bytes (one byte of padding aside). A precision above
    BitsStored (but within BitsAllocated) is left alone: scanners write that; the decoded
    values are then masked to BitsStored as for every codec (:func:`medload.io.codecs.stored_bits`).

    Examples
    --------
    >>> import pydicom
    >>> from pydicom.data import get_testdata_file
    >>> p = get_testdata_file("JPEG2000.dcm")
    >>> ds = pydicom.dcmread(p)
    >>> check_codestream(ds, p, ds.file_meta.TransferSyntaxUID)
    >>> ds.BitsAllocated = 8
    >>> try:
    ...     check_codestream(ds, "x.dcm", ds.file_meta.TransferSyntaxUID)
    ... except ReadError as exc:
    ...     print(str(exc)[:82])
    x.dcm: the JPEG 2000 codestream of frame 0 holds 16-bit samples, but BitsAllocated
    """
    if not (ts.startswith(_J2K_PREFIX) or ts in _JPEG_LS or ts in _JPEG or ts == _RLE) or "PixelData" not in ds:
        return
    frame = _first_frame(ds)
    if ts == _RLE:
        if frame:
            _check_rle(ds, path, frame)
        return
    got = _parameters(ts, frame) if frame else {}
    if not got:
        return
    kind = "JPEG 2000" if ts.startswith(_J2K_PREFIX) else "JPEG-LS" if ts in _JPEG_LS else "JPEG"
    fix = "the header does not describe the pixels, so they would be decoded wrong; re-export the file."
    bits = int(ds.get("BitsAllocated", 0) or 0)
    precision = got.get("precision")
    if precision and bits and int(precision) > bits:
        raise ReadError(
            f"{path}: the {kind} codestream of frame 0 holds {precision}-bit samples, but BitsAllocated is {bits}; {fix}"
        )
    stated = {
        "height": ("Rows", ds.get("Rows")),
        "width": ("Columns", ds.get("Columns")),
        "components": ("SamplesPerPixel", ds.get("SamplesPerPixel", 1)),
    }
    for key, (name, value) in stated.items():
        # A JPEG height of 0 is allowed (a DNL marker gives it later): nothing to compare.
        if got.get(key) and value is not None and int(got[key]) != int(value):
            raise ReadError(f"{path}: the {kind} codestream of frame 0 has {key} {got[key]}, but {name} is {value}; {fix}")
