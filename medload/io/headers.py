"""Read one DICOM file's header into a :class:`FileHeader`: plain values and one Frame per image.

Which kind of object the file holds is decided in ``sopclass.py``; the images of an enhanced
multi-frame object come from ``enhanced.py``, those of a Siemens mosaic from ``mosaic.py``,
Philips precise scaling from ``philips.py``. Only headers are read here
(``stop_before_pixels``); no pixel data, no pydicom objects leave this module.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from medload.deid import clean_image_type, clean_modality, shown_value
from medload.errors import ReadError
from medload.io import philips
from medload.io.diffusion import DIFFUSION_TAGS, classic_diffusion
from medload.io.enhanced import enhanced_frames, has_philips_scale
from medload.io.fastheader import KEYWORDS, Damaged, pixel_data_location, read_fast
from medload.io.frame import Frame, dicom_seconds, element_value, position_text
from medload.io.frameitems import check_functional_groups
from medload.io.frame import image_type as _image_type
from medload.io.frame import number as _num
from medload.io.gediffusion import GE_DIFFUSION_TAGS, ge_diffusion, has_ge_diffusion
from medload.io.mosaic import mosaic_frames, mosaic_tiles, tiles_per_side
from medload.io.multiframe import (
    GRID_TAGS,
    RT_DOSE_STORAGE,
    dose_intensity,
    dose_scaling,
    grid_frames,
    has_frame_grid,
)
from medload.io.sopclass import looks_like_dicom, non_image_kind
from medload.io.validate import check_frame_count, check_header, present_vector, stated_number

__all__ = [
    "FileHeader",
    "Frame",
    "burned_in_annotation",
    "diffusion_facts",
    "header_from_dataset",
    "looks_like_dicom",
    "read_header",
]

# Header fields read by scan; everything else in the file is skipped while parsing.
_SCAN_TAGS: list[str | int] = [
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "SeriesNumber",
    "SeriesDescription",
    "ProtocolName",
    "ImageType",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "NumberOfFrames",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "EchoNumbers",
    "EchoTime",
    "AcquisitionNumber",
    "InstanceNumber",
    "TemporalPositionIdentifier",
    "TriggerTime",
    "DiffusionBValue",
    "GantryDetectorTilt",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "DirectoryRecordSequence",
    "BurnedInAnnotation",
    0x00190010,
    0x00290010,
    0x00290011,  # private creators: locate the Siemens blocks below
    0x0019100A,  # Siemens NumberOfImagesInMosaic
    0x00291010,  # Siemens CSA image header (slice normal, mosaic count)
    0x00291020,
    "KVP",
    "RepetitionTime",
    "InversionTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "Exposure",
    "XRayTubeCurrent",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "BodyPartExamined",
    "PatientPosition",
    "ScanningSequence",
    "WindowCenter",
    "WindowWidth",
    "RescaleType",
    "Manufacturer",
    0x20050010,
    0x2005100E,  # Philips private ScaleSlope ("precise" values)
    0x00080032,  # AcquisitionTime: orders frames with equal InstanceNumber (as dcm2niix)
    0x20010010,
    0x20051413,  # Philips MRImageGradientOrientationNumber: which DTI volume
    0x00209222,  # DimensionIndexSequence: which DimensionIndexValues item is the slice position
    0x00191029,
    0x00181310,
    0x00180089,
    0x0051100B,
    0x00210010,
    0x00211158,  # mosaic count without CSA
    *DIFFUSION_TAGS,
    *GE_DIFFUSION_TAGS,
    *GRID_TAGS,
    0x00283000,  # ModalityLUTSequence: values through a lookup table instead of a rescale
]


@lru_cache(maxsize=1)
def _wanted() -> frozenset[int]:
    tags = {t if isinstance(t, int) else KEYWORDS[t][0] for t in _SCAN_TAGS}
    return frozenset(tags) | {0x00080005}


@dataclass
class FileHeader:
    """What scan needs to know about one DICOM file."""

    path: str
    size: int
    mtime_ns: int
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
    intensity: str = ""  # what a value means, when the object says (RT Dose, Modality LUT)
    modality_lut: bool = False  # values go through the Modality LUT Sequence (pydicom applies it)
    #: BurnedInAnnotation as written ("YES", "NO"), "" when absent (see medload.deid).
    burned_in_annotation: str = ""
    fallback: str = ""  # why pydicom read this header instead of the fast walker ("" if it did not)
    pixel_bytes: int | None = None  # length of PixelData when the fast walker found it
    #: byte offset of PixelData's value when the walker found it (native little-endian files):
    #: load reads the pixels there without walking the header again (``codecs.read_native``).
    pixel_offset: int | None = None


def burned_in_annotation(heads: list[FileHeader]) -> str:
    """A series' BurnedInAnnotation: "YES" if any file says YES, "NO" if every file says NO, else "".

    Examples
    --------
    >>> from dataclasses import replace
    >>> h = FileHeader("a.dcm", 0, 0, "", "CT", "", "", "", None, "", 1, 1, 1, "MONOCHROME2", 12, True, 16, "")
    >>> burned_in_annotation([h]), burned_in_annotation([replace(h, burned_in_annotation="YES"), h])
    ('', 'YES')
    """
    values = {h.burned_in_annotation for h in heads}
    if "YES" in values:
        return "YES"
    return "NO" if values == {"NO"} else ""


def _params(ds: Any) -> dict[str, Any]:
    """Acquisition parameters that matter for preprocessing (JSON-able, never identifying)."""
    out: dict[str, Any] = {}
    for key, name in (
        ("kvp", "KVP"),
        ("echo_time", "EchoTime"),
        ("repetition_time", "RepetitionTime"),
        ("inversion_time", "InversionTime"),
        ("flip_angle", "FlipAngle"),
        ("magnetic_field_strength", "MagneticFieldStrength"),
        ("slice_thickness", "SliceThickness"),
        ("spacing_between_slices", "SpacingBetweenSlices"),
        ("exposure", "Exposure"),
        ("xray_tube_current", "XRayTubeCurrent"),
    ):
        value = _num(ds.get(name))
        if value is not None and abs(value) < float("inf"):  # NaN/inf: absent (meta is JSON)
            out[key] = value
    for key, name in (
        ("manufacturer", "Manufacturer"),
        ("manufacturer_model", "ManufacturerModelName"),
        ("convolution_kernel", "ConvolutionKernel"),
        ("body_part", "BodyPartExamined"),
        ("patient_position", "PatientPosition"),
        ("scanning_sequence", "ScanningSequence"),
        ("photometric_interpretation", "PhotometricInterpretation"),
    ):
        value = ds.get(name)
        if value not in (None, ""):
            out[key] = str(value) if isinstance(value, str) else "\\".join(str(v) for v in value)
    for key, name in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        value = ds.get(name)
        if value is not None:
            try:
                vals = (
                    [float(v) for v in value]
                    if not isinstance(value, (int, float, str)) and hasattr(value, "__iter__")
                    else [float(value)]
                )
                # NaN/inf: absent (meta is JSON); so are thousands of values (a damaged header, which
                # pydicom leaves as undecoded UN bytes past 64 KB) where scanners write 1 to 3.
                if len(vals) <= 64 and not isinstance(value, bytes) and all(math.isfinite(v) for v in vals):
                    out[key] = vals[0] if len(vals) == 1 else vals
            except (TypeError, ValueError):
                pass
    image_type = _image_type(ds)
    if image_type:
        # Only defined terms: vendors and consoles put free text (even names) in later values.
        defined = clean_image_type(image_type)
        if defined:
            out["image_type"] = defined
    return out


def read_header(path: str, *, specific: bool = True) -> FileHeader | None:
    """Read the header of ``path``; ``None`` if it is not a DICOM file.

    Parameters
    ----------
    path : str
        Any file.
    specific : bool
        Read only the elements scan needs (fast path); False reads the whole header.

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
    # The fast walker first, always: it refuses a damaged file (an element running past the
    # end), and hands anything unusual to pydicom with the reason, which scan counts.
    try:
        lite = read_fast(path, _wanted() if specific else frozenset())
    except Damaged as exc:
        if not looks_like_dicom(path):
            return None
        raise ReadError(f"{path}: DICOM file is damaged: {exc.reason}. Re-copy or re-export it.") from exc
    except OSError as exc:
        raise ReadError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); check that it exists and is readable.") from exc
    # The fast walker stops before group 3004 (except for Philips files): an RT Dose's
    # DoseGridScaling and GridFrameOffsetVector lie there, so pydicom reads those.
    rt_dose = not isinstance(lite, str) and str(lite.get("SOPClassUID") or "") == RT_DOSE_STORAGE
    if specific and not isinstance(lite, str) and not rt_dose:
        return header_from_dataset(lite, path)
    # pydicom parses every item of a sequence of undefined length (its reader must find the end):
    # count the functional groups' items first, at most one more than NumberOfFrames.
    check_functional_groups(path)
    header = _read_with_pydicom(path, specific)
    if header is not None:
        header.fallback = lite if isinstance(lite, str) else ("RT Dose (group 3004)" if rt_dose else "whole header asked for")
    return header


def diffusion_facts(heads: list[FileHeader]) -> dict[str, Any]:
    """What the diffusion-weighted files of a series say about its GE diffusion encoding (not its b=0 files).

    ``diffusion_gradients_validated`` (every such file in a case dcm2niix validated) and
    ``diffusion_unknown`` (why the encoding was not read), from :func:`medload.io.gediffusion.ge_diffusion`.

    Examples
    --------
    >>> from types import SimpleNamespace as H
    >>> diffusion_facts([H(params={}), H(params={"diffusion_gradients_validated": False})])
    {'diffusion_gradients_validated': False}
    """
    facts: dict[str, Any] = {}
    for key in ("diffusion_gradients_validated", "diffusion_unknown"):
        found = [h.params[key] for h in heads if key in h.params]
        if found:
            facts[key] = all(found) if isinstance(found[0], bool) else found[0]
    return facts


def unchanged(header: FileHeader) -> bool:
    """Is the file ``header`` was read from still the same (modification time and size)?

    ``load`` reuses the headers scan read (carried on the :class:`Series`) when this holds,
    and reads the file again when it does not.
    """
    try:
        st = os.stat(header.path)
    except OSError:
        return False
    return (st.st_mtime_ns, st.st_size) == (header.mtime_ns, header.size)


def _read_with_pydicom(path: str, specific: bool) -> FileHeader | None:
    if not looks_like_dicom(path):
        return None
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            force=True,
            # pydicom documents a list mixing keywords and int tags (it converts each with Tag());
            # its TagListType alias admits only lists of one kind.
            specific_tags=_SCAN_TAGS if specific else None,  # type: ignore[arg-type]
        )
    except Exception as exc:  # pydicom raises many kinds on damaged files (struct.error, RecursionError, ...)
        if isinstance(exc, InvalidDicomError) and not looks_like_dicom(path):
            return None
        raise ReadError(
            f"{path}: DICOM header cannot be read ({type(exc).__name__}: {exc}); the file is damaged or truncated, remove it or re-export the series."
        ) from exc
    # Where the walker can find native PixelData, its length is checked as on the fast path.
    located = pixel_data_location(path)
    return header_from_dataset(ds, path, pixel_data=located[:2] if located else None)


def header_from_dataset(ds: Any, path: str, *, pixel_data: tuple[int, int] | None = None) -> FileHeader | None:
    """Build a :class:`FileHeader` from a pydicom dataset (header only is enough)."""
    try:
        header = _header(ds, path, pixel_data if pixel_data is not None else getattr(ds, "pixel_data", None))
        if header is not None and header.is_image:
            check_header(header)
        return header
    except ReadError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed values
        raise ReadError(
            f"{path}: DICOM header has malformed values ({type(exc).__name__}: {exc}); remove the file or re-export it."
        ) from exc


def _header(ds: Any, path: str, located: tuple[int, int] | None = None) -> FileHeader | None:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""))
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    try:
        st = os.stat(path)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime_ns = 0, 0
    kind = non_image_kind(sop_class, "DirectoryRecordSequence" in ds) or ""
    is_image = not kind
    if is_image and (ds.get("Rows") is None or ds.get("Columns") is None):
        if not sop_class and len(ds) == 0:
            return None
        if sop_class.startswith("1.2.840.10008.5.1.4.1.1.") and len(ds) < 8:
            # An image storage class whose dataset stops after a few elements: truncated.
            raise ReadError(
                f"{path}: DICOM image ({sop_class}) whose header ends after {len(ds)} element(s), "
                "without Rows/Columns: the file is truncated or damaged; re-copy or re-export it."
            )
        is_image, kind = False, "object without image (no Rows/Columns)"
    header = _plain_header(ds, path, size, mtime_ns, sop_class, transfer_syntax, is_image, kind)
    if not is_image:
        return header
    # Only a finite, positive thickness places a single slice (a NaN one made a NaN affine).
    header.slice_thickness = next(
        (
            v
            for v in (_num(ds.get("SpacingBetweenSlices")), _num(ds.get("SliceThickness")))
            if v is not None and 0 < v < float("inf")
        ),
        None,
    )
    header.params = _params(ds)
    image_type = _image_type(ds)
    sop_uid = str(ds.get("SOPInstanceUID", "") or path)
    echo = _echo_number(ds)
    # Localizers, derived images and the like differ in ImageType; echoes in EchoNumbers.
    # The mosaic flag keeps a mosaic apart from single slices of the same series.
    split_type = tuple(t for t in image_type if t not in ("ORIGINAL", "PRIMARY", "SECONDARY", "DERIVED")) if image_type else ()
    base_split = (
        header.series_uid,
        header.series_number,
        header.rows,
        header.columns,
        header.samples,
    )
    if ds.get("NumberOfFrames") not in (None, "") and _num(ds.get("NumberOfFrames")) is None:
        raise ReadError(
            f"{path}: NumberOfFrames is {shown_value(ds.get('NumberOfFrames'))}, not a number; cannot tell how many "
            "images the file holds. Fix the header or re-export the file."
        )
    n_frames = int(_num(ds.get("NumberOfFrames"), 1) or 1)
    header.pixel_bytes = located[1] if located else None
    header.pixel_offset = located[0] if located else None
    check_frame_count(
        path,
        n_frames=n_frames,
        rows=header.stored_rows,
        columns=header.stored_columns,
        samples=int(_num(ds.get("SamplesPerPixel"), 1) or 1),
        bits_allocated=header.bits_allocated,
        transfer_syntax=transfer_syntax,
        file_size=size,
        pixel_bytes=header.pixel_bytes,
        pixel_offset=located[0] if located else None,
    )
    header.intensity = dose_intensity(ds)
    if n_frames > 1 and has_frame_grid(ds):
        header.frames = grid_frames(ds, path, base_split + (split_type,), sop_uid)
        return header
    if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        header.frames = enhanced_frames(ds, path, base_split + (split_type,), sop_uid)
        if philips.is_philips(ds) and has_philips_scale(ds):
            header.params["philips_precise_scaling"] = True
        # A multi-frame object without plane positions (e.g. a cine loop, an ultrasound clip):
        # frames keep their order, flagged by a missing position.
        return header
    _classic_frames(header, ds, path, image_type, base_split + (split_type,), echo, sop_uid)
    return header


def _plain_header(
    ds: Any, path: str, size: int, mtime_ns: int, sop_class: str, transfer_syntax: str, is_image: bool, kind: str
) -> FileHeader:
    """The fields every file has, image or not (from the dataset's plain attributes)."""
    header = FileHeader(
        path=path,
        size=size,
        mtime_ns=mtime_ns,
        sop_class=sop_class,
        # A defined term or "unknown": free text typed here went into keys, stores and reports.
        modality=clean_modality(ds.get("Modality")),
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
        burned_in_annotation=str(ds.get("BurnedInAnnotation", "") or "").strip().upper(),
    )
    header.stored_rows, header.stored_columns = header.rows, header.columns
    return header


def _echo_number(ds: Any) -> float | None:
    echo = _num(ds.get("EchoNumbers"), 0.0)
    if isinstance(ds.get("EchoNumbers"), (list, tuple)) or (
        hasattr(ds.get("EchoNumbers"), "__len__") and not isinstance(ds.get("EchoNumbers"), str)
    ):
        echo = _num(ds.get("EchoNumbers")[0], 0.0)
    return echo


def _classic_frames(
    header: FileHeader, ds: Any, path: str, image_type: Any, type_split: tuple[Any, ...], echo: float | None, sop_uid: str
) -> None:
    """The frames of a classic (one image, or one mosaic) file: its geometry, timing, split key, scaling."""
    position = present_vector(path, ds.get("ImagePositionPatient"), 3, "ImagePositionPatient")
    orientation = present_vector(path, ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient")
    spacing, spacing_from = _pixel_spacing(ds, path)
    if spacing_from:
        header.params["pixel_spacing_from"] = spacing_from
    # Frames at one position are ordered as dcm2niix orders them: InstanceNumber, then
    # AcquisitionTime. AcquisitionNumber is not used: scanners change it between positions of
    # one series (Philips DTI: 19 at some positions, 22 at others), which scrambled frames.
    acquisition_time = dicom_seconds(element_value(ds, 0x00080032))
    time_key = (_num(ds.get("InstanceNumber"), 0.0), acquisition_time or 0.0)
    # GE's private elements win where GE wrote the public ones too (software 27 on writes
    # DiffusionBValue, without a gradient): dcm2niix reads both and the private ones, later in
    # the file, overwrite the public (nii_dicom.cpp set_bValGE after set_bVal).
    if has_ge_diffusion(ds):
        diffusion = ge_diffusion(ds, orientation, header.params, path)
    else:
        diffusion = classic_diffusion(ds, path)
    volume_id = _classic_volume_id(ds, diffusion)
    tiles, csa, tiles_from = mosaic_tiles(ds, image_type, path)
    # Echo time too: multi-echo series without EchoNumbers differ only there (as dcm2niix splits).
    echo_time = round(float(_num(ds.get("EchoTime"), 0.0)), 2)
    split = type_split + (echo, echo_time, tiles)
    if tiles:
        header.mosaic_tiles = tiles
        header.params["mosaic_tiles_from"] = tiles_from
        header.frames = mosaic_frames(ds, path, csa, tiles, position, orientation, spacing, time_key, split, sop_uid)
        for f in header.frames:
            f.volume_id, f.diffusion, f.acquisition_time = volume_id, diffusion, acquisition_time
        side = tiles_per_side(tiles)
        header.rows, header.columns = header.rows // side, header.columns // side  # one tile
        return
    slope, intercept, stated = _rescale(ds, header)
    header.frames = [
        Frame(
            file=path,
            frame=-1,
            mosaic=-1,
            position=position,
            orientation=orientation,
            pixel_spacing=spacing,
            slope=slope,
            intercept=intercept,
            time_key=time_key,
            split_key=split,
            uid=sop_uid,
            volume_id=volume_id,
            diffusion=diffusion,
            trigger=_num(ds.get("TriggerTime")),
            acquisition_time=acquisition_time,
            rescale_stated=stated,
            position_text=None if position is None else position_text(ds),
        )
    ]


def _rescale(ds: Any, header: FileHeader) -> tuple[float, float, bool]:
    """Slope, intercept, and whether the file states them (RT Dose scaling, Modality LUT, Philips precise values)."""
    slope = stated_number(header.path, ds.get("RescaleSlope"), "RescaleSlope (0028,1053)", 1.0)
    intercept = stated_number(header.path, ds.get("RescaleIntercept"), "RescaleIntercept (0028,1052)", 0.0)
    stated = ds.get("RescaleSlope") is not None or ds.get("RescaleIntercept") is not None
    if dose_scaling(ds) is not None:
        slope, intercept, stated = float(dose_scaling(ds) or 1.0), 0.0, True
    if 0x00283000 in ds:
        # Modality LUT Sequence: values go through the table (pydicom's apply_modality_lut at
        # load), which replaces RescaleSlope/Intercept.
        slope, intercept, stated = 1.0, 0.0, True
        header.modality_lut = True
        header.intensity = "Modality LUT Sequence (0028,3000) applied to the stored values"
    if philips.is_philips(ds) and philips.scale_slope(ds):
        slope, intercept = philips.precise(slope, intercept, philips.scale_slope(ds))
        header.params["philips_precise_scaling"] = True
    return slope, intercept, stated


def _classic_volume_id(ds: Any, diffusion: tuple[float, float, float, float] | None) -> tuple[Any, ...]:
    """What says which frame of the volume a classic image is, in values equal at every position."""
    grad_number = _num(element_value(ds, 0x20051413)) if philips.is_philips(ds) else None
    encoding = None if diffusion is None else (round(diffusion[0], 1), *(round(v, 4) for v in diffusion[1:]))
    return (_num(ds.get("TemporalPositionIdentifier")), grad_number, encoding)


def _positive(value: tuple[float, ...] | None) -> bool:
    return value is not None and all(v > 0 for v in value)


def _pixel_spacing(ds: Any, path: str) -> tuple[tuple[float, ...] | None, str]:
    """Row and column spacing (mm), and where it came from when not PixelSpacing.

    PixelSpacing (calibrated or not) first; when it is absent or not positive (radiographs
    written "0\\0"), ImagerPixelSpacing, the detector's spacing, said so. A PixelSpacing that
    is present but not positive with nothing to replace it is returned as it is, and
    :func:`medload.io.validate.check_header` refuses it naming the file.
    """
    pixel = present_vector(path, ds.get("PixelSpacing"), 2, "PixelSpacing")
    if _positive(pixel):
        return pixel, ""
    imager = present_vector(path, ds.get("ImagerPixelSpacing"), 2, "ImagerPixelSpacing")
    if _positive(imager):
        why = f"PixelSpacing is {list(pixel)}" if pixel is not None else "PixelSpacing absent"
        return imager, f"ImagerPixelSpacing (0018,1164), the detector plane ({why})"
    return pixel, ""
