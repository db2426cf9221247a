"""What a de-identified store's meta may hold: each allowed key, and the values it may take.

An allow-list twice over. :data:`META_KEYS` names the keys a reader may put in
``Volume.meta`` that a store may hold; :data:`VALUE_KINDS` says what each key's value may be.
A header or a sidecar is text that anyone at a console can type into: a name typed as a
PatientPosition, a field strength or a window was copied into stores because its key was
allowed. Now a number key keeps finite numbers only, a coded key (Modality, PatientPosition,
ScanningSequence, PhotometricInterpretation, ImageType) only DICOM's defined terms, a transfer
syntax only a DICOM transfer syntax UID. :func:`shown_value` is the same rule for header values
quoted in messages (which reach ``report.json`` and the QC page): numbers are shown, text is not.
:mod:`medload.deid` re-exports these names.
"""

from __future__ import annotations

import math
import re
from typing import Any

# fmt: off
__all__ = [
    "META_KEYS", "DESCRIPTOR_KEYS", "IMAGE_TYPE_TERMS", "MODALITY_TERMS", "CODED_TERMS", "VALUE_KINDS",
    "clean_image_type", "clean_modality", "allowed_meta", "shown_value",
]
# fmt: on

#: Every key a reader may put in ``Volume.meta`` that a de-identified store may hold: an
#: allow-list, so a field a reader starts to copy (a sidecar key, a header value) stays out of
#: stores until someone adds it here on purpose. None is in DICOM PS3.15 Table E.1-1's basic
#: profile; the descriptors (:data:`DESCRIPTOR_KEYS`) are dropped unless kept on request.
# fmt: off
META_KEYS = frozenset({
    # identity (pseudonyms) and provenance
    "source", "source_key", "series_key", "study_key", "patient_key", "source_hash", "intensity",
    "modality_tag", "n_files", "transfer_syntax", "format", "problems", "pixel_text", "class_name",
    # geometry and layout facts
    "channels", "label_names", "frames_axis", "stored_range", "monochrome1_mirrored", "mosaic_tiles",
    "gantry_tilt_deg", "philips_precise_scaling", "affine_source", "frame_interval_ms", "diffusion",
    # acquisition parameters (not in the basic profile; preprocessing needs them)
    "kvp", "echo_time", "repetition_time", "inversion_time", "flip_angle", "magnetic_field_strength",
    "slice_thickness", "spacing_between_slices", "exposure", "xray_tube_current", "tube_current",
    "manufacturer", "manufacturer_model", "convolution_kernel", "patient_position", "scanning_sequence",
    "photometric_interpretation", "window_center", "window_width", "image_type",
})
# fmt: on

#: Values of ImageType (DICOM PS3.3 C.7.6.1.1.2 and the modality modules' defined terms, and
#: the common vendor terms) that may be stored; any other value is free text and is dropped.
# fmt: off
IMAGE_TYPE_TERMS = frozenset({
    "ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "AXIAL", "LOCALIZER", "REFORMATTED", "MPR",
    "PROJECTION IMAGE", "MIP", "MINIP", "VOLUME", "CALCIUM SCORE", "SUBTRACTION", "PERFUSION",
    "T1 MAP", "T2 MAP", "T2* MAP", "DIFFUSION MAP", "DENSITY MAP", "PHASE MAP", "VELOCITY MAP",
    "IMAGE ADDITION", "PHASE SUBTRACT", "MODULUS SUBTRACT", "OTHER", "MIXED", "NONE",
    "M", "P", "R", "I", "MAG", "MAGNITUDE", "PHASE", "REAL", "IMAGINARY", "ND", "NORM", "DIS2D",
    "DIS3D", "MOSAIC", "FM", "FIL", "MFSPLIT", "DIFFUSION", "ADC", "TRACEW", "TRACE", "FA",
    "MOCO", "SUB", "CSA MPR", "CSA RESAMPLED", "CSAPARALLEL", "MPR_MPR", "SCREEN SAVE",
    "M_SE", "M_FFE", "M_IR", "M_PCA", "R_SE", "I_SE", "P_SE", "FFE", "SE", "IR", "PCA",
    "CINE", "DYNAMIC", "FLUOROSCOPY", "ANGIO", "ENDOVIEW", "ORIGINAL/PRIMARY", "EPI", "T1", "T2",
    "PD", "FLAIR", "SWI", "DWI", "TOF", "CT_SOM5 SPI", "CT_SOM5 SEQ", "SINGLE PLANE", "BIPLANE A",
    "BIPLANE B", "POST_PROCESSED", "POST_CONTRAST", "PRE_CONTRAST", "VOLUMETRIC", "FORMAT",
})
# fmt: on


#: Modality (0008,0060) defined terms, PS3.3 C.7.3.1.1.1 (with the retired ones), and
#: medload's ``unknown``. Any other value is free text: :func:`clean_modality` makes it ``unknown``.
# fmt: off
MODALITY_TERMS = frozenset({
    "ANN", "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CR", "CT", "CTPROTOCOL", "DMS", "DG", "DOC",
    "DX", "ECG", "EEG", "EMG", "EOG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS",
    "KER", "KO", "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV",
    "OPTENF", "OPV", "OSS", "OT", "PA", "PLAN", "POS", "PR", "PT", "PX", "REG", "RESP", "RF", "RTDOSE",
    "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SM",
    "SMR", "SR", "SRF", "STAIN", "TEXTUREMAP", "TG", "US", "VA", "XA", "XAPROTOCOL", "XC",
    "AS", "CD", "CF", "CP", "CS", "DD", "DF", "DM", "DS", "EC", "FA", "FS", "LP", "MA", "MS", "OPR", "ST", "VF",
    "unknown",
})

#: Defined terms of the coded (CS) header values meta keeps, by meta key (PS3.3 C.7.3.1.1.2
#: PatientPosition, C.8.3.1.1.4 ScanningSequence, C.7.6.3.1.2 PhotometricInterpretation).
CODED_TERMS: dict[str, frozenset[str]] = {
    "modality_tag": MODALITY_TERMS - {"unknown"},
    "patient_position": frozenset({
        "HFP", "HFS", "HFDR", "HFDL", "FFDR", "FFDL", "FFP", "FFS", "LFP", "LFS", "RFP", "RFS",
        "AFDR", "AFDL", "PFDR", "PFDL",
    }),
    "scanning_sequence": frozenset({"SE", "IR", "GR", "EP", "RM"}),
    "photometric_interpretation": frozenset({
        "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL",
        "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
    }),
}

#: Meta keys whose values come from a header or sidecar and are numbers (or lists of numbers).
_NUMBER_KEYS = frozenset({
    "kvp", "echo_time", "repetition_time", "inversion_time", "flip_angle", "magnetic_field_strength",
    "slice_thickness", "spacing_between_slices", "exposure", "xray_tube_current", "tube_current",
    "window_center", "window_width", "gantry_tilt_deg", "frame_interval_ms", "n_files", "stored_range",
})
# fmt: on

#: What each checked key's value may be: ``"number"`` (finite, or a list of finite numbers),
#: ``"terms"`` (:data:`CODED_TERMS`; ``\\``-separated values each checked), ``"image_type"``,
#: ``"transfer_syntax"`` (a DICOM transfer syntax UID, 1.2.840.10008.1.2...). Keys not named
#: here are made by medload itself (pseudonyms, ``intensity``, ``problems``, geometry facts) or
#: are free text kept on purpose (``manufacturer``, ``manufacturer_model``, ``convolution_kernel``,
#: docs/deidentification.md).
VALUE_KINDS: dict[str, str] = {
    **{k: "number" for k in _NUMBER_KEYS},
    **{k: "terms" for k in CODED_TERMS},
    "image_type": "image_type",
    "transfer_syntax": "transfer_syntax",
}

_TRANSFER_SYNTAX = re.compile(r"1\.2\.840\.10008\.1\.2(\.[0-9]+)*")


def clean_modality(value: Any) -> str:
    """A Modality value as a volume may carry it: a defined term (:data:`MODALITY_TERMS`), else ``unknown``.

    Examples
    --------
    >>> clean_modality("CT"), clean_modality(" mr "), clean_modality("SMITHSON"), clean_modality(None)
    ('CT', 'MR', 'unknown', 'unknown')
    """
    text = str(value or "").strip().upper()
    return text if text in MODALITY_TERMS else "unknown"


#: Meta keys holding descriptors that DICOM PS3.15 Table E.1-1's basic profile removes
#: (SeriesDescription, StudyDescription, ProtocolName, BodyPartExamined, comments, ...) and that
#: only its "Retain ... Clean Descriptors" option keeps: ``keep_descriptions=True``. For NIfTI
#: sources ``description`` is the file name (which can be a patient's name): same rule.
# fmt: off
DESCRIPTOR_KEYS = frozenset({
    "description", "series_description", "study_description", "protocol_name", "body_part",
    "performed_procedure_step_description", "requested_procedure_description", "image_comments",
    "acquisition_comments", "derivation_description", "contrast_bolus_agent", "class_folder",
})
# fmt: on


def clean_image_type(values: Any) -> list[str]:
    """ImageType values that are defined terms (:data:`IMAGE_TYPE_TERMS`); free text is dropped.

    Examples
    --------
    >>> clean_image_type(["ORIGINAL", "PRIMARY", "AXIAL", "SMITHSON JOHN"])
    ['ORIGINAL', 'PRIMARY', 'AXIAL']
    """
    if isinstance(values, str):
        values = values.split("\\")
    try:
        items = [str(v).strip().upper() for v in values]
    except TypeError:
        return []
    return [v for v in items if v in IMAGE_TYPE_TERMS]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _checked(kind: str, key: str, value: Any) -> Any:
    """``value`` if it is of ``kind`` (:data:`VALUE_KINDS`), its allowed part, or ``None``."""
    if kind == "number":
        if _is_number(value):
            return value
        if isinstance(value, list | tuple) and value and all(_is_number(v) for v in value):
            return list(value)
        return None
    if kind == "image_type":
        return clean_image_type(value) or None
    if kind == "transfer_syntax":
        return value if isinstance(value, str) and _TRANSFER_SYNTAX.fullmatch(value) else None
    if not isinstance(value, str):
        return None
    terms = [t.strip().upper() for t in value.split("\\")]
    kept = [t for t in terms if t in CODED_TERMS[key]]
    return "\\".join(kept) or None


def allowed_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with only the :data:`META_KEYS` and :data:`DESCRIPTOR_KEYS`, each checked
    value of its kind (:data:`VALUE_KINDS`): what is not is dropped, an allowed part is kept.

    Examples
    --------
    >>> allowed_meta({"kvp": 120.0, "ImageComments": "John's scan", "image_type": ["DERIVED", "JOHN"]})
    {'kvp': 120.0, 'image_type': ['DERIVED']}
    >>> allowed_meta({"magnetic_field_strength": "Smithson", "patient_position": "HFS", "scanning_sequence": "SE\\\\JOHN"})
    {'patient_position': 'HFS', 'scanning_sequence': 'SE'}
    """
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key not in META_KEYS and key not in DESCRIPTOR_KEYS:
            continue
        kind = VALUE_KINDS.get(key)
        value = value if kind is None else _checked(kind, key, value)
        if value is not None:
            out[key] = value
    return out


_NUMERIC_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?(nan|inf|infinity)\s*", re.IGNORECASE)


def shown_value(value: Any) -> str:
    """A header value as a message may quote it: numbers as they are, any text as its length.

    Messages reach ``report.json``, the QC page and ``scan --json``; a header value they quote
    can be a name typed into the wrong field. The operator opens the file to see the text.

    Examples
    --------
    >>> shown_value("0.5\\\\0.5"), shown_value(["SMITHSON", "1"]), shown_value(b"12"), shown_value(None)
    ("['0.5', '0.5']", "['<text of 8 characters>', '1']", "'12'", 'None')
    """
    if value is None or _is_number(value) or isinstance(value, bool):
        return repr(value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        items: list[Any] = value.split("\\")
        single = len(items) == 1
    else:
        try:
            items, single = list(value), False
        except TypeError:
            items, single = [value], True
    shown = [v if _is_number(v) else _shown_text(str(v)) for v in items]
    return repr(shown[0]) if single else repr(shown)


def _shown_text(text: str) -> str:
    return text if not text.strip() or _NUMERIC_TEXT.fullmatch(text) else f"<text of {len(text)} characters>"
