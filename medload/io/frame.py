"""``Frame``: one 2D image of a DICOM file, and the value readers the header modules share.

A classic file holds one image; a Siemens mosaic holds ``n`` slices tiled in one image
(``mosaic.py``); an enhanced multi-frame object holds ``NumberOfFrames`` images
(``enhanced.py``). All become :class:`Frame` records with the same fields, so grouping and
sorting (``scan.py``, ``sorting.py``) never need to know which kind a file was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np

__all__ = [
    "Frame",
    "dicom_seconds",
    "element_value",
    "first_item",
    "frame_names",
    "image_type",
    "number",
    "position_text",
    "rounding_of_text",
    "vector",
]


@dataclass
class Frame:
    """One 2D image: where it lies and how to turn its stored values into real ones."""

    file: str
    frame: int  # index in a multi-frame file, -1 for a single-frame file
    mosaic: int  # tile index in a Siemens mosaic, -1 otherwise
    position: tuple[float, ...] | None  # LPS mm of the first pixel's centre (3 values)
    orientation: tuple[float, ...] | None  # 6 direction cosines (row, column)
    pixel_spacing: tuple[float, ...] | None  # (between rows, between columns)
    slope: float
    intercept: float
    time_key: tuple[float, ...]  # orders frames at one position (never used spatially)
    split_key: tuple[Any, ...]  # frames with different split keys are different volumes
    uid: str  # SOPInstanceUID (+ frame/tile) identifying identical copies
    # What makes this image one frame of the volume rather than another, in values that mean
    # the same at every slice position (temporal position, diffusion encoding, ...): the
    # sequence of these along the frames axis must be the same at every position.
    volume_id: tuple[Any, ...] = ()
    diffusion: tuple[float, float, float, float] | None = None  # (b, gx, gy, gz), gradient in LPS
    trigger: float | None = None  # TriggerTime (ms): ranks the same at every position
    acquisition_time: float | None = None  # AcquisitionTime (s since midnight): orders frames where nothing else does
    # Whether slope and intercept came from the header (RescaleSlope/Intercept, a dose scaling, a
    # modality LUT, per-frame groups) or are the defaults 1 and 0 of a file that states none: a
    # series mixing both would be silently off by the intercept (validate.check_rescale_stated).
    rescale_stated: bool = True
    # ImagePositionPatient as the file writes it (DS strings, "12.34"): its precision says how
    # far ``position`` may be from the scanner's by rounding alone. None where the position was
    # computed, not written (mosaic tiles, frame offsets).
    position_text: tuple[str, ...] | None = None

    @property
    def position_rounding(self) -> tuple[float, ...] | None:
        """Half a unit in the last written decimal of each coordinate of ``position`` (mm), or None.

        Examples
        --------
        >>> f = Frame("f", -1, -1, (1.0, 2.0, 3.5), None, None, 1.0, 0.0, (), (), "1", position_text=("1", "2.0", "3.50"))
        >>> f.position_rounding
        (0.5, 0.05, 0.005)
        """
        rounding = rounding_of_text(self.position_text)
        return rounding if rounding is not None and len(rounding) == 3 else None


def element_value(ds: Any, tag: int) -> Any:
    """Value of ``tag`` from a pydicom Dataset (which gives elements) or a LiteHeader (values)."""
    got = ds.get(tag)
    return getattr(got, "value", got)


@overload
def number(value: Any, default: float) -> float: ...


@overload
def number(value: Any, default: None = None) -> float | None: ...


def number(value: Any, default: float | None = None) -> float | None:
    """``value`` as a float, or ``default`` when it is missing or not a number.

    Examples
    --------
    >>> number("2.5"), number(""), number("abc", 0.0)
    (2.5, None, 0.0)
    """
    try:
        if value is None or value == "":
            return default
        return float(value)
    except (TypeError, ValueError):
        return default


def vector(value: Any, n: int) -> tuple[float, ...] | None:
    """``value`` as ``n`` finite floats, or ``None``.

    Examples
    --------
    >>> vector(["1", "0", "0"], 3), vector([1, 2], 3)
    ((1.0, 0.0, 0.0), None)
    """
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def first_item(seq_owner: Any, name: str | int) -> Any:
    """The first item of the sequence ``name`` (keyword or tag) in ``seq_owner``, or ``None``."""
    if seq_owner is None:
        return None
    if isinstance(name, int):
        elem = seq_owner.get(name)
        seq = getattr(elem, "value", None)
    else:
        seq = getattr(seq_owner, name, None)
    try:
        return seq[0] if seq else None
    except (TypeError, IndexError):
        return None


def image_type(ds: Any) -> tuple[str, ...]:
    """ImageType values, upper case (``()`` when absent)."""
    value = ds.get("ImageType")
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split("\\")
    return tuple(str(v).strip().upper() for v in value)


def dicom_seconds(value: Any) -> float | None:
    """Seconds since midnight of a DICOM TM value ("HHMMSS.FFFFFF", parts optional), or ``None``.

    Examples
    --------
    >>> dicom_seconds("101530.5"), dicom_seconds("1015"), dicom_seconds("")
    (36930.5, 36900.0, None)
    """
    text = str(value or "").strip().replace(":", "")
    if not text:
        return None
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) > 6 or (frac and not frac.isdigit()):
        return None
    whole = whole.ljust(6, "0") if len(whole) in (2, 4) else whole.zfill(6)
    h, m, sec = int(whole[:2]), int(whole[2:4]), int(whole[4:6])
    return h * 3600.0 + m * 60.0 + sec + (float("0." + frac) if frac else 0.0)


def rounding_of_text(texts: Any) -> tuple[float, ...] | None:
    """Half a unit in the last written decimal of each decimal string in ``texts`` (mm).

    DS is a decimal string of at most 16 characters; scanners and anonymizers write positions
    with 1 to 6 decimals or in exponent form. A value written ``"30.11"`` stands for anything
    in [30.105, 30.115]: its rounding is 0.005. ``None`` when a text is not a number.

    Examples
    --------
    >>> rounding_of_text(["30.11", "-2", "1.5e-3"])
    (0.005, 0.5, 5e-05)
    >>> rounding_of_text(["12.3456789"]), rounding_of_text(["abc"]), rounding_of_text(None)
    ((5e-08,), None, None)
    """
    if texts is None:
        return None
    out = []
    # scan calls this for every file: plain string arithmetic (a regex or a Decimal cost 5-10x)
    for value in texts if isinstance(texts, (list, tuple)) else [texts]:
        text = str(value).strip().lower()
        try:
            float(text)
        except ValueError:
            return None
        mantissa, _, exponent = text.partition("e")
        dot = mantissa.find(".")
        decimals = (0 if dot < 0 else len(mantissa) - dot - 1) - (int(exponent) if exponent else 0)
        out.append(0.5 * 10.0**-decimals)
    return tuple(out)


def position_text(ds: Any) -> tuple[str, ...] | None:
    """ImagePositionPatient of ``ds`` as the text written (for :attr:`Frame.position_rounding`).

    ``ds`` is a pydicom Dataset (its DS values keep their ``original_string``) or a
    :class:`~medload.io.fastheader.LiteHeader` (``written`` gives the text). ``None`` where the
    text is not known (a value set from floats).
    """
    written = getattr(ds, "written", None)
    if callable(written):
        texts = written(0x00200032)
    else:
        value = ds.get("ImagePositionPatient")
        texts = None if value is None else [getattr(v, "original_string", None) for v in value]
    if texts is None or any(t is None for t in texts):
        return None
    return tuple(texts)


def frame_names(frames: list[Frame], idx: Any) -> str:
    """The files (with frame or tile) of ``frames[i]`` for ``i`` in ``idx``, four at most, for messages.

    Examples
    --------
    >>> fs = [Frame(f"/d/f{k}", -1, -1, None, None, None, 1.0, 0.0, (), (), str(k)) for k in range(6)]
    >>> frame_names(fs, range(6))
    '/d/f0, /d/f1, /d/f2, /d/f3 and 2 more'
    """
    names = []
    for i in idx:
        f = frames[i]
        name = f.file + (f"[frame {f.frame}]" if f.frame >= 0 else "") + (f"[tile {f.mosaic}]" if f.mosaic >= 0 else "")
        names.append(name)
    shown = names[:4]
    more = f" and {len(names) - 4} more" if len(names) > 4 else ""
    return ", ".join(shown) + more
