"""BIDS names and sidecars: what a NIfTI file's name and its ``.json`` beside it say.

The modality a file name's suffix implies (``sub-01_T1w.nii.gz`` -> MR), the subject and
session entities that link files of one patient, and the whitelisted sidecar fields that may
reach ``meta`` (no names, dates or institutions).

Examples
--------
>>> from pathlib import Path
>>> suffix_modality(Path("sub-01_ses-2_T1w.nii.gz")), entities(Path("sub-01/ses-2/anat/x.nii.gz"))
('MR', ('sub-01', 'ses-2'))
>>> sidecar_meta({"EchoTime": 0.03, "PatientName": "X"})
{'echo_time': 30.0}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medload.deid import clean_image_type

__all__ = ["file_stem", "read_sidecar", "suffix_modality", "entities", "subject_folder", "sidecar_meta"]

#: BIDS folders inside a dataset that repeat its subjects (``derivatives/<pipeline>/sub-01`` is
#: the dataset's ``sub-01``): a subject folder below one belongs to the folder above it.
_INNER_FOLDERS = ("derivatives", "sourcedata")

# BIDS suffixes (the last "_" entity of a file name) and the modality they imply.
# fmt: off
_BIDS_MR = {
    "t1w", "t2w", "t2starw", "flair", "pdw", "pd", "t1map", "t2map", "t2star", "inplanet1",
    "inplanet2", "angio", "bold", "cbv", "dwi", "sbref", "epi", "phasediff", "phase1", "phase2",
    "magnitude", "magnitude1", "magnitude2", "fieldmap", "asl", "m0scan", "unit1", "mp2rage",
    "megre", "mese", "uniden", "tb1tfl", "tb1epi", "tb1srge", "trace", "chimap",
}
# fmt: on
_BIDS_SUFFIX_MODALITY = {**{s: "MR" for s in _BIDS_MR}, "ct": "CT", "pet": "PT"}

# Sidecar fields kept in meta: (BIDS key, meta key, factor). BIDS times are seconds; medload
# keeps DICOM's milliseconds so DICOM and NIfTI volumes of one scanner compare directly.
_SIDECAR_FIELDS = (
    ("EchoTime", "echo_time", 1000.0),
    ("RepetitionTime", "repetition_time", 1000.0),
    ("InversionTime", "inversion_time", 1000.0),
    ("FlipAngle", "flip_angle", None),
    ("MagneticFieldStrength", "magnetic_field_strength", None),
    ("Manufacturer", "manufacturer", None),
    ("ManufacturersModelName", "manufacturer_model", None),
    ("KVP", "kvp", None),
    ("XRayTubeCurrent", "tube_current", None),
    ("SliceThickness", "slice_thickness", None),
    ("SeriesDescription", "description", None),
    ("ProtocolName", "protocol_name", None),
    ("ConvolutionKernel", "convolution_kernel", None),
    ("ImageType", "image_type", None),
    ("BodyPartExamined", "body_part", None),
    ("WindowCenter", "window_center", None),
    ("WindowWidth", "window_width", None),
)

_SUB = re.compile(r"^sub-([A-Za-z0-9]+)")
_SES = re.compile(r"^ses-([A-Za-z0-9]+)")


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The BIDS sidecar ``.json`` beside ``path`` as a dict, or ``None`` (absent, unreadable or not an object)."""
    json_path = path.with_name(file_stem(path) + ".json")
    if not json_path.is_file():
        return None
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # a broken sidecar must not stop the image from loading; modality falls back
    return data if isinstance(data, dict) else None


def file_stem(path: Path) -> str:
    """``path``'s name without ``.nii.gz`` or its one suffix."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def suffix_modality(path: Path) -> str | None:
    """The modality a BIDS file name's suffix implies (``sub-01_T1w`` -> MR), or ``None``."""
    stem = file_stem(path)
    if not _SUB.match(stem):
        return None  # not a BIDS file name; a suffix like "_ct" elsewhere means nothing
    return _BIDS_SUFFIX_MODALITY.get(stem.rsplit("_", 1)[-1].lower())


def entities(path: Path) -> tuple[str | None, str | None]:
    """The BIDS ``sub-XX`` and ``ses-YY`` found in ``path``'s folders and file name (``None`` when absent)."""
    subject = session = None
    for part in path.parts:
        sub = _SUB.match(part)
        if sub:
            subject = "sub-" + sub.group(1)
        ses = _SES.match(part)
        if ses:
            session = "ses-" + ses.group(1)
        for entity in part.split("_")[1:]:
            ses = _SES.match(entity)
            if ses:
                session = "ses-" + ses.group(1)
    return subject, session


def subject_folder(path: Path, subject: str) -> Path:
    """The folder whose subject labels name ``path``'s subject: the BIDS dataset holding it.

    That is the folder holding its ``sub-XX`` folder of label ``subject`` (above
    ``derivatives/`` and ``sourcedata/``, whose subjects are the dataset's), or, when no folder
    carries it (only the file name), the file's folder. ``sub-01`` names one person within
    this folder only: two datasets both number their subjects from 01.

    Examples
    --------
    >>> str(subject_folder(Path("/data/ds001/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"), "sub-01"))
    '/data/ds001'
    >>> str(subject_folder(Path("/data/ds001/derivatives/fmriprep/sub-01/anat/sub-01_desc-brain_mask.nii.gz"), "sub-01"))
    '/data/ds001'
    >>> str(subject_folder(Path("/home/sub-lab/flat/sub-01_T1w.nii.gz"), "sub-01"))
    '/home/sub-lab/flat'
    """
    folders = path.parent.parts
    holding = [i for i, part in enumerate(folders) if (m := _SUB.match(part)) and "sub-" + m.group(1) == subject]
    if not holding:
        return path.parent
    above = folders[: holding[-1]]
    for i, part in enumerate(above):
        if part in _INNER_FOLDERS:
            above = above[:i]
            break
    return Path(*above) if above else Path(path.anchor or ".")


def sidecar_meta(sidecar: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sidecar fields medload keeps in ``meta`` (times in ms, ImageType defined terms only)."""
    meta: dict[str, Any] = {}
    for bids_key, meta_key, factor in _SIDECAR_FIELDS:
        value = (sidecar or {}).get(bids_key)
        if value is None:
            continue
        if factor is not None:  # a time in seconds: a finite number, else dropped (a string's unit is unknown)
            value = _finite(value, factor)
            if value is None:
                continue
        # Kept only as plain finite values: a NaN, an infinity or an integer beyond float range
        # (JSON allows all three) is dropped, so that a sidecar's quirk never stops its image.
        if (
            isinstance(value, (str, bool))
            or _finite(value) is not None
            or (isinstance(value, list) and all(isinstance(v, str) or _finite(v) is not None for v in value))
        ):
            meta[meta_key] = value
    if "image_type" in meta:  # only defined terms: the rest is free text (even names)
        meta["image_type"] = clean_image_type(meta["image_type"])
        if not meta["image_type"]:
            del meta["image_type"]
    return meta


def _finite(value: Any, factor: float = 1.0) -> float | None:
    """``value * factor`` rounded to 6 decimals when ``value`` is a number and the result finite, else ``None``.

    Examples
    --------
    >>> _finite(0.03, 1000.0), _finite(float("nan")), _finite(10**400), _finite(1e308, 1000.0), _finite("1")
    (30.0, None, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = round(float(value) * factor, 6)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None
