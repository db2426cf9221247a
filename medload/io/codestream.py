"""A compressed frame's own image parameters against the DICOM header that describes it.

JPEG, JPEG-LS and JPEG 2000 codestreams state their own sample precision (and JPEG/JPEG-LS
their size and component count). A header that disagrees with them is a lie the decoders do
not all catch: a 16-bit JPEG 2000 frame under BitsAllocated 8 decoded to int8 values wrapped
around, a 16-bit JPEG-LS frame to all zeros, a JPEG-LS frame of 128 rows under Rows 64 to its
first half. pydicom reads these parameters itself (``get_j2k_parameters`` and the JPEG marker
parser its decoders use); this module compares them, on the first frame, before decoding.
"""

from __future__ import annotations

from typing import Any

from medload.errors import ReadError

__all__ = ["check_codestream"]

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


def check_codestream(ds: Any, path: str, ts: str) -> None:
    """Refuse a compressed image whose first frame's codestream contradicts the header.

    Checked: the codestream's sample precision fits BitsAllocated; for JPEG and JPEG-LS its
    rows, columns and components are Rows, Columns and SamplesPerPixel. A precision above
    BitsStored (but within BitsAllocated) is left alone: scanners write that, and pydicom
    decodes it right.

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
    if not (ts.startswith(_J2K_PREFIX) or ts in _JPEG_LS or ts in _JPEG) or "PixelData" not in ds:
        return
    frame = _first_frame(ds)
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
