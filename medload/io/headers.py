"""Read one DICOM file's header into plain records, one per 2D image it holds.

A classic file holds one image; a Siemens mosaic holds ``n`` slices tiled in one image; an
enhanced multi-frame object holds ``NumberOfFrames`` images, each with its own position,
orientation, spacing and rescale in the per-frame (or shared) functional groups. All three
become :class:`Frame` records with the same fields, so grouping and sorting (``scan.py``,
``sorting.py``) never need to know which kind a file was.

Only headers are read here (``stop_before_pixels``); no pixel data, no pydicom objects leave
this module.
"""

from __future__ import annotations

import os
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medload.errors import ReadError
from medload.geometry import slice_normal
from medload.io.fastheader import KEYWORDS, fast_header

__all__ = ["Frame", "FileHeader", "read_header", "looks_like_dicom", "NON_IMAGE_SOP_CLASSES"]

# SOP classes that carry no image volume: structured reports, RT structure sets and plans,
# presentation states, key object selection, raw data, waveforms, encapsulated documents.
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.1.3.10": "Media Storage Directory (DICOMDIR)",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan",
    "1.2.840.10008.5.1.4.1.1.481.4": "RT Beams Treatment Record",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection",
}
_NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
)

# Header fields read by scan; everything else in the file is skipped while parsing.
_SCAN_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "StudyInstanceUID",
    "PatientID", "SeriesNumber", "SeriesDescription", "ProtocolName", "ImageType",
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
    "BitsStored", "PixelRepresentation", "NumberOfFrames", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "EchoNumbers", "EchoTime",
    "AcquisitionNumber", "InstanceNumber", "TemporalPositionIdentifier", "TriggerTime",
    "DiffusionBValue", "GantryDetectorTilt", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", "DirectoryRecordSequence",
    0x00190010, 0x00290010, 0x00290011,  # private creators: locate the Siemens blocks below
    0x0019100A,  # Siemens NumberOfImagesInMosaic
    0x00291010,  # Siemens CSA image header (slice normal, mosaic count)
    0x00291020,
    "KVP", "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength", "Exposure",
    "XRayTubeCurrent", "ManufacturerModelName", "ConvolutionKernel", "BodyPartExamined",
    "PatientPosition", "ScanningSequence", "WindowCenter", "WindowWidth", "RescaleType",
    "Manufacturer", 0x20050010, 0x2005100E,  # Philips private ScaleSlope ("precise" values)
]


@lru_cache(maxsize=1)
def _wanted() -> frozenset[int]:
    tags = {t if isinstance(t, int) else KEYWORDS[t][0] for t in _SCAN_TAGS}
    return frozenset(tags) | {0x00080005}


def looks_like_dicom(path: str) -> bool:
    """Cheap test on the first bytes: a DICOM preamble, or a raw dataset starting at group 0008.

    File names and extensions are ignored on purpose (exports name files anything).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "notes.txt"); _ = open(p, "w").write("hello")
    >>> looks_like_dicom(p)
    False
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # No preamble (old ACR-NEMA style exports): a little-endian tag of group 0x0002 or 0x0008.
    if len(head) < 8:
        return False
    little = head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00"
    big = head[:2] in (b"\x00\x02", b"\x00\x08") and head[2:3] == b"\x00"
    return little or big


@dataclass
class Frame:
    """One 2D image: where it lies and how to turn its stored values into real ones."""

    file: str
    frame: int  # index in a multi-frame file, -1 for a single-frame file
    mosaic: int  # tile index in a Siemens mosaic, -1 otherwise
    position: tuple[float, float, float] | None  # LPS mm of the first pixel's centre
    orientation: tuple[float, ...] | None  # 6 direction cosines (row, column)
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns)
    slope: float
    intercept: float
    time_key: tuple[float, ...]  # orders frames at one position (never used spatially)
    split_key: tuple[Any, ...]  # frames with different split keys are different volumes
    uid: str  # SOPInstanceUID (+ frame/tile) identifying identical copies


@dataclass
class FileHeader:
    """What scan needs to know about one DICOM file."""

    path: str
    size: int
    sop_class: str
    modality: str
    series_uid: str
    study_uid: str
    patient_id: str
    series_number: int | None
    description: str
    rows: int
    columns: int
    samples: int
    photometric: str
    bits_stored: int
    signed: bool
    bits_allocated: int
    transfer_syntax: str
    stored_rows: int = 0  # Rows/Columns as stored (a whole mosaic); rows/columns are one image
    stored_columns: int = 0
    frames: list[Frame] = field(default_factory=list)
    mosaic_tiles: int = 0
    slice_thickness: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    is_image: bool = True
    kind_name: str = ""


def _num(value: Any, default: float | None = None) -> float | None:
    try:
        if value is None or value == "":
            return default
        return float(value)
    except (TypeError, ValueError):
        return default


def _vec(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _first(seq_owner: Any, name: str | int) -> Any:
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


def _image_type(ds: Any) -> tuple[str, ...]:
    value = ds.get("ImageType")
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split("\\")
    return tuple(str(v).strip().upper() for v in value)


def _params(ds: Any) -> dict[str, Any]:
    """Acquisition parameters that matter for preprocessing (JSON-able, never identifying)."""
    out: dict[str, Any] = {}
    for key, name in (
        ("kvp", "KVP"), ("echo_time", "EchoTime"), ("repetition_time", "RepetitionTime"),
        ("inversion_time", "InversionTime"), ("flip_angle", "FlipAngle"),
        ("magnetic_field_strength", "MagneticFieldStrength"), ("slice_thickness", "SliceThickness"),
        ("spacing_between_slices", "SpacingBetweenSlices"), ("exposure", "Exposure"),
        ("xray_tube_current", "XRayTubeCurrent"),
    ):
        value = _num(ds.get(name))
        if value is not None:
            out[key] = value
    for key, name in (
        ("manufacturer", "Manufacturer"), ("manufacturer_model", "ManufacturerModelName"),
        ("convolution_kernel", "ConvolutionKernel"), ("body_part", "BodyPartExamined"),
        ("patient_position", "PatientPosition"), ("scanning_sequence", "ScanningSequence"),
        ("photometric_interpretation", "PhotometricInterpretation"),
    ):
        value = ds.get(name)
        if value not in (None, ""):
            out[key] = str(value) if isinstance(value, str) else "\\".join(str(v) for v in value)
    for key, name in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        value = ds.get(name)
        if value is not None:
            try:
                vals = [float(v) for v in value] if not isinstance(value, (int, float, str)) and hasattr(value, "__iter__") else [float(value)]
                out[key] = vals[0] if len(vals) == 1 else vals
            except (TypeError, ValueError):
                pass
    image_type = _image_type(ds)
    if image_type:
        out["image_type"] = list(image_type)
    return out


def _mosaic_tiles(ds: Any, image_type: tuple[str, ...]) -> tuple[int, Any]:
    """Number of slices tiled in a Siemens mosaic (0 if not a mosaic) and its CSA header."""
    if "MOSAIC" not in image_type:
        return 0, None
    csareader = _csareader()

    csa = None
    try:
        csa = csareader.get_csa_header(ds, "image")
    except Exception:  # a damaged private header: fall back on the public tag below
        csa = None
    n = None
    if csa is not None:
        try:
            n = csareader.get_n_mosaic(csa)
        except Exception:
            n = None
    if not n:
        n = _num(ds.get(0x0019100A).value if 0x0019100A in ds else None)
    return (int(n) if n else 0), csa


def _csareader():
    import warnings

    with warnings.catch_warnings():
        # nibabel.nicom warns about its DICOM *readers* on import; we use only the CSA parser.
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader
    return csareader


def _frame_groups(ds: Any, index: int) -> tuple[Any, Any]:
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    item = per[index] if per is not None and index < len(per) else None
    return item, shared


def _from_groups(item: Any, shared: Any, name: str) -> Any:
    for owner in (item, shared):
        got = _first(owner, name)
        if got is not None:
            return got
    return None


def _philips_scale_slope(owner: Any) -> float | None:
    """Philips private ScaleSlope (2005,100E): stored value / SS is the "precise" value."""
    if owner is None or 0x2005100E not in owner:
        return None
    value = owner[0x2005100E].value
    if isinstance(value, bytes):
        value = np.frombuffer(value[:4], "<f4")[0] if len(value) >= 4 else None
    elif isinstance(value, (list, tuple)):
        value = value[0] if value else None
    value = _num(value)
    return value if value and np.isfinite(value) else None


def _any_philips_scale(ds: Any) -> bool:
    per = ds.get("PerFrameFunctionalGroupsSequence")
    item = per[0] if per else None
    private = _from_groups(item, _first(ds, "SharedFunctionalGroupsSequence"), 0x2005140F) if item is not None else None
    return bool(_philips_scale_slope(private) or _philips_scale_slope(ds))


def _precise(slope: float, intercept: float, scale_slope: float | None) -> tuple[float, float]:
    # Philips: FP = (PV * RS + RI) / (RS * SS), dcm2niix's default ("-p y"), which makes values
    # comparable between scans; the rescale alone gives display values.
    if scale_slope is None or slope == 0:
        return slope, intercept
    return 1.0 / scale_slope, intercept / (slope * scale_slope)


def _enhanced_frames(ds: Any, path: str, base_split: tuple, sop_uid: str) -> list[Frame]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    philips = str(ds.get("Manufacturer", "")).lower().startswith("philips")
    frames = []
    for i in range(n):
        item, shared = _frame_groups(ds, i)
        pos = _from_groups(item, shared, "PlanePositionSequence")
        ori = _from_groups(item, shared, "PlaneOrientationSequence")
        meas = _from_groups(item, shared, "PixelMeasuresSequence")
        trans = _from_groups(item, shared, "PixelValueTransformationSequence")
        content = _first(item, "FrameContentSequence")
        ftype_seq = _from_groups(item, shared, "MRImageFrameTypeSequence") or _from_groups(
            item, shared, "CTImageFrameTypeSequence"
        )
        echo = _from_groups(item, shared, "MREchoSequence")
        diff = _from_groups(item, shared, "MRDiffusionSequence")
        frame_type = tuple(str(v).upper() for v in (ftype_seq.get("FrameType") or ())) if ftype_seq else ()
        position = _vec(pos.get("ImagePositionPatient"), 3) if pos is not None else None
        orientation = _vec(ori.get("ImageOrientationPatient"), 6) if ori is not None else None
        spacing = _vec(meas.get("PixelSpacing"), 2) if meas is not None else None
        slope = _num(trans.get("RescaleSlope"), 1.0) if trans is not None else _num(ds.get("RescaleSlope"), 1.0)
        intercept = _num(trans.get("RescaleIntercept"), 0.0) if trans is not None else _num(ds.get("RescaleIntercept"), 0.0)
        temporal = _num(content.get("TemporalPositionIndex"), 0.0) if content is not None else 0.0
        stack = str(content.get("StackID", "")) if content is not None else ""
        echo_time = _num(echo.get("EffectiveEchoTime"), 0.0) if echo is not None else 0.0
        bvalue = _num(diff.get("DiffusionBValue"), 0.0) if diff is not None else 0.0
        dims = tuple(int(v) for v in (content.get("DimensionIndexValues") or ())) if content is not None and content.get("DimensionIndexValues") is not None and not isinstance(content.get("DimensionIndexValues"), int) else ()
        # Frames of different type (magnitude/phase/field map) or echo are different volumes;
        # different temporal positions or b-values of one type stay together as frames.
        # Rescale type differs between a magnitude and a field map in Hz (Philips fMAP).
        rescale_type = str(trans.get("RescaleType", "")) if trans is not None else ""
        if philips:
            private = _from_groups(item, shared, 0x2005140F) if item is not None else None
            slope, intercept = _precise(float(slope), float(intercept), _philips_scale_slope(private) or _philips_scale_slope(ds))
        split = base_split + (frame_type, round(echo_time, 3), stack, rescale_type)
        frames.append(
            Frame(
                file=path, frame=i, mosaic=-1, position=position, orientation=orientation,
                pixel_spacing=spacing, slope=float(slope), intercept=float(intercept),
                time_key=(temporal, bvalue, *dims, float(i)), split_key=split,
                uid=f"{sop_uid}#{i}",
            )
        )
    return frames


def read_header(path: str, *, specific: bool = True, use_cache: bool = False) -> FileHeader | None:
    """Read the header of ``path``; ``None`` if it is not a DICOM file.

    Parameters
    ----------
    path : str
        Any file.
    specific : bool
        Read only the elements scan needs (fast path); False reads the whole header.
    use_cache : bool
        Reuse the header read last time if the file's modification time and size are
        unchanged (``load`` after ``scan``); every read refreshes the cache.

    Raises
    ------
    ReadError
        The file claims to be DICOM but its header cannot be parsed.

    Examples
    --------
    >>> import glob, os, pydicom
    >>> ct = glob.glob(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm"))[0]
    >>> h = read_header(ct)
    >>> h.modality, h.rows, len(h.frames)
    ('CT', 128, 1)
    """
    key = None
    if specific:
        try:
            st = os.stat(path)
            key = (path, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if use_cache and key is not None and key in _CACHE:
            return _CACHE[key]
        lite = fast_header(path, _wanted())
        if lite is not None:
            header = header_from_dataset(lite, path)
            _remember(key, header)
            return header
    header = _read_with_pydicom(path, specific)
    _remember(key, header)
    return header


# scan then load reads every header twice; a small cache of the latest headers (keyed by path,
# modification time and size, so a changed file is read again) halves that.
_CACHE: dict[tuple, FileHeader | None] = {}
_CACHE_SIZE = 20000


def _remember(key: tuple | None, header: FileHeader | None) -> None:
    if key is None:
        return
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[key] = header


def _read_with_pydicom(path: str, specific: bool) -> FileHeader | None:
    if not looks_like_dicom(path):
        return None
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, force=True,
            specific_tags=_SCAN_TAGS if specific else None,
        )
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, NotImplementedError, OverflowError, UnicodeError) as exc:
        raise ReadError(f"{path}: DICOM header cannot be read ({type(exc).__name__}: {exc}); the file is damaged or truncated, remove it or re-export the series.") from exc
    return header_from_dataset(ds, path)


def header_from_dataset(ds: Any, path: str) -> FileHeader | None:
    """Build a :class:`FileHeader` from a pydicom dataset (header only is enough)."""
    try:
        return _header(ds, path)
    except ReadError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed values
        raise ReadError(f"{path}: DICOM header has malformed values ({type(exc).__name__}: {exc}); remove the file or re-export it.") from exc


def _header(ds: Any, path: str) -> FileHeader | None:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""))
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    is_image = True
    kind = ""
    if "DirectoryRecordSequence" in ds or sop_class in NON_IMAGE_SOP_CLASSES:
        is_image, kind = False, NON_IMAGE_SOP_CLASSES.get(sop_class, "DICOMDIR")
    elif sop_class.startswith(_NON_IMAGE_PREFIXES):
        is_image, kind = False, "non-image object " + sop_class
    elif ds.get("Rows") is None or ds.get("Columns") is None:
        if not sop_class and len(ds) == 0:
            return None
        if sop_class.startswith("1.2.840.10008.5.1.4.1.1.") and len(ds) < 8:
            # An image storage class whose dataset stops after a few elements: truncated.
            raise ReadError(
                f"{path}: DICOM image ({sop_class}) whose header ends after {len(ds)} element(s), "
                "without Rows/Columns: the file is truncated or damaged; re-copy or re-export it."
            )
        is_image, kind = False, "object without image (no Rows/Columns)"
    header = FileHeader(
        path=path,
        size=size,
        sop_class=sop_class,
        modality=str(ds.get("Modality", "") or "unknown"),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        series_number=int(_num(ds.get("SeriesNumber"), -1)) if _num(ds.get("SeriesNumber")) is not None else None,
        description=str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        # a palette image becomes RGB at load (pydicom's apply_color_lut)
        samples=3 if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR" else int(ds.get("SamplesPerPixel", 1) or 1),
        photometric=str(ds.get("PhotometricInterpretation", "") or ""),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        signed=int(ds.get("PixelRepresentation", 0) or 0) == 1,
        bits_allocated=int(ds.get("BitsAllocated", 16) or 16),
        transfer_syntax=transfer_syntax,
        is_image=is_image,
        kind_name=kind,
    )
    header.stored_rows, header.stored_columns = header.rows, header.columns
    if not is_image:
        return header
    header.slice_thickness = _num(ds.get("SpacingBetweenSlices")) or _num(ds.get("SliceThickness"))
    header.params = _params(ds)
    image_type = _image_type(ds)
    sop_uid = str(ds.get("SOPInstanceUID", "") or path)
    echo = _num(ds.get("EchoNumbers"), 0.0)
    if isinstance(ds.get("EchoNumbers"), (list, tuple)) or (hasattr(ds.get("EchoNumbers"), "__len__") and not isinstance(ds.get("EchoNumbers"), str)):
        echo = _num(ds.get("EchoNumbers")[0], 0.0)
    # Localizers, derived images and the like differ in ImageType; echoes in EchoNumbers.
    # The mosaic flag keeps a mosaic apart from single slices of the same series.
    split_type = tuple(t for t in image_type if t not in ("ORIGINAL", "PRIMARY", "SECONDARY", "DERIVED")) if image_type else ()
    base_split = (
        header.series_uid, header.series_number, header.rows, header.columns, header.samples,
    )
    if ds.get("NumberOfFrames") not in (None, "") and _num(ds.get("NumberOfFrames")) is None:
        raise ReadError(
            f"{path}: NumberOfFrames is {ds.get('NumberOfFrames')!r}, not a number; cannot tell how many "
            "images the file holds. Fix the header or re-export the file."
        )
    n_frames = int(_num(ds.get("NumberOfFrames"), 1) or 1)
    if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        header.frames = _enhanced_frames(ds, path, base_split + (split_type,), sop_uid)
        if str(ds.get("Manufacturer", "")).lower().startswith("philips") and _any_philips_scale(ds):
            header.params["philips_precise_scaling"] = True
        # A multi-frame object without plane positions (e.g. a cine loop, an ultrasound clip):
        # frames keep their order, flagged by a missing position.
        return header
    position = _vec(ds.get("ImagePositionPatient"), 3)
    orientation = _vec(ds.get("ImageOrientationPatient"), 6)
    spacing = _vec(ds.get("PixelSpacing"), 2) or _vec(ds.get("ImagerPixelSpacing"), 2)
    time_key = (
        _num(ds.get("TemporalPositionIdentifier"), 0.0),
        _num(ds.get("AcquisitionNumber"), 0.0),
        _num(ds.get("TriggerTime"), 0.0),
        _num(ds.get("DiffusionBValue"), 0.0),
        _num(ds.get("InstanceNumber"), 0.0),
    )
    tiles, csa = _mosaic_tiles(ds, image_type)
    # Echo time too: multi-echo series without EchoNumbers differ only there (as dcm2niix splits).
    echo_time = round(float(_num(ds.get("EchoTime"), 0.0)), 2)
    split = base_split + (split_type, echo, echo_time, tiles)
    if tiles:
        header.mosaic_tiles = tiles
        header.frames = _mosaic_frames(ds, path, csa, tiles, position, orientation, spacing, time_key, split, sop_uid)
        side = int(np.ceil(np.sqrt(tiles)))
        header.rows, header.columns = header.rows // side, header.columns // side  # one tile
        return header
    slope, intercept = float(_num(ds.get("RescaleSlope"), 1.0)), float(_num(ds.get("RescaleIntercept"), 0.0))
    if str(ds.get("Manufacturer", "")).lower().startswith("philips") and _philips_scale_slope(ds):
        slope, intercept = _precise(slope, intercept, _philips_scale_slope(ds))
        header.params["philips_precise_scaling"] = True
    header.frames = [
        Frame(
            file=path, frame=-1, mosaic=-1, position=position, orientation=orientation,
            pixel_spacing=spacing, slope=slope, intercept=intercept, time_key=time_key,
            split_key=split, uid=sop_uid,
        )
    ]
    return header


def _mosaic_frames(ds, path, csa, tiles, position, orientation, spacing, time_key, split, sop_uid) -> list[Frame]:
    """Positions of the ``tiles`` slices of a Siemens mosaic.

    The header's ImagePositionPatient is that of the whole mosaic image's first pixel, not of
    the first slice; the correction (as nibabel's MosaicWrapper and dcm2niix do) shifts it by
    half the difference between the mosaic and the tile size along rows and columns. Slices
    then follow the CSA SliceNormalVector, whose sign gives the acquisition order.
    """
    if position is None or orientation is None or spacing is None:
        raise ReadError(f"{path}: Siemens mosaic without ImagePositionPatient/ImageOrientationPatient/PixelSpacing; cannot place its slices.")
    side = int(np.ceil(np.sqrt(tiles)))
    rows, cols = int(ds.Rows), int(ds.Columns)
    tile_rows, tile_cols = rows // side, cols // side
    iop = np.asarray(orientation).reshape(2, 3)
    row_cos, col_cos = iop[0], iop[1]  # column index grows along row_cos, row index along col_cos
    csareader = _csareader()
    normal = None
    if csa is not None:
        try:
            normal = np.asarray(csareader.get_slice_normal(csa), dtype=float)
        except Exception:
            normal = None
    if normal is None or normal.shape != (3,) or not np.all(np.isfinite(normal)):
        normal = slice_normal(orientation)
    normal = normal / np.linalg.norm(normal)
    pos = np.asarray(position, dtype=float)
    shift = (cols - tile_cols) / 2.0 * spacing[1] * row_cos + (rows - tile_rows) / 2.0 * spacing[0] * col_cos
    first = pos + shift
    step = _num(ds.get("SpacingBetweenSlices")) or _num(ds.get("SliceThickness")) or 1.0
    frames = []
    for i in range(tiles):
        p = first + i * step * normal
        frames.append(
            Frame(
                file=path, frame=-1, mosaic=i, position=tuple(float(v) for v in p),
                orientation=orientation, pixel_spacing=spacing,
                slope=float(_num(ds.get("RescaleSlope"), 1.0)),
                intercept=float(_num(ds.get("RescaleIntercept"), 0.0)), time_key=time_key,
                split_key=split, uid=f"{sop_uid}@{i}",
            )
        )
    return frames
