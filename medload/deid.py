"""De-identification: keyed pseudonyms and the header fields that must never be written.

Patient, study and series keys are HMAC-SHA256 pseudonyms of the DICOM UIDs / IDs, keyed by a
secret (``--phi-key`` or the ``MEDLOAD_PHI_KEY`` environment variable) so that the same
patient gets the same pseudonym across runs, and nobody without the key can reverse it or
test a guess.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "pseudonym",
    "sanitize_key",
    "PHI_KEY_ENV",
    "IDENTIFYING_KEYWORDS",
    "DESCRIPTOR_KEYS",
    "relative_paths",
    "source_roots",
    "hidden_texts",
    "hide",
    "scrub_paths",
    "deidentified_meta",
    "report_summary",
]

PHI_KEY_ENV = "MEDLOAD_PHI_KEY"

# Without a key the pseudonym is still one-way, but a guess can be checked; the CLI warns.
_DEFAULT_KEY = b"medload-default-pseudonym-key"

#: DICOM keywords of PS3.15's basic profile that medload's meta never carries (unless
#: ``keep_phi``). Listed so tests and the converter can audit output against them.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
    "OtherPatientIDs", "OtherPatientNames", "PatientMotherBirthName", "PatientTelephoneNumbers",
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician", "StationName",
    "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate",
    "AcquisitionTime", "ContentDate", "ContentTime", "AcquisitionDateTime", "DeviceSerialNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "MedicalRecordLocator", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "RequestAttributesSequence", "ResponsiblePerson", "IssuerOfPatientID",
)


def _key(secret: str | bytes | None) -> bytes:
    if secret is None:
        secret = os.environ.get(PHI_KEY_ENV) or _DEFAULT_KEY
    return secret.encode() if isinstance(secret, str) else secret


def pseudonym(value: str | None, *, prefix: str = "", secret: str | bytes | None = None, length: int = 16) -> str:
    """Return a stable keyed pseudonym of ``value``.

    Parameters
    ----------
    value : str or None
        The identifying value (a UID, a patient ID). ``None`` or empty gives ``prefix + "none"``.
    prefix : str
        Kept in front, e.g. ``"pat-"``, so keys say what they are.
    secret : str or bytes, optional
        HMAC key; default ``$MEDLOAD_PHI_KEY``, else a fixed project key.
    length : int
        Hex digits kept (16 = 64 bits).

    Examples
    --------
    >>> pseudonym("12345", prefix="pat-", secret="k")
    'pat-3f5429540988d2d8'
    >>> pseudonym("12345", prefix="pat-", secret="k") == pseudonym("12345", prefix="pat-", secret="k")
    True
    """
    if not value:
        return prefix + "none"
    digest = hmac.new(_key(secret), str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return prefix + digest[:length]


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def sanitize_key(text: str, *, max_length: int = 120) -> str:
    """Make ``text`` safe as an HDF5 group name or a file name.

    No ``/``, no ``..``, no control or space characters; never empty.

    Examples
    --------
    >>> sanitize_key("../T1 MPRAGE/\\x00sag")
    'T1_MPRAGE_sag'
    """
    cleaned = _UNSAFE.sub("_", text).strip("._")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    return cleaned[:max_length] or "unnamed"


# --------------------------------------------------------------------------- free text
#: Meta keys holding descriptors that DICOM PS3.15 Table E.1-1's basic profile removes
#: (SeriesDescription, StudyDescription, ProtocolName, BodyPartExamined, comments, ...) and that
#: only its "Retain ... Clean Descriptors" option keeps: ``keep_descriptions=True``. For NIfTI
#: sources ``description`` is the file name (which can be a patient's name): same rule.
DESCRIPTOR_KEYS = frozenset({
    "description", "series_description", "study_description", "protocol_name", "body_part",
    "performed_procedure_step_description", "requested_procedure_description", "image_comments",
    "acquisition_comments", "derivation_description", "contrast_bolus_agent",
})

# A description shorter than this is not hidden inside message texts: replacing "ct" in
# every message would mangle them, and so short a text names nobody.
_MIN_HIDDEN = 4


def relative_paths(text: str, roots: Sequence[str]) -> str:
    """``text`` with paths under ``roots`` made relative to them (longest root first).

    A root must start a path in the text (not be the tail of a longer folder name), so a
    relative source such as ``data`` never eats the ``data/`` of ``/mnt/metadata/``.

    Examples
    --------
    >>> relative_paths("/mnt/Smith_John/ct/1.dcm is damaged", ["/mnt/Smith_John"])
    'ct/1.dcm is damaged'
    >>> relative_paths("/mnt/metadata/x", ["data"])
    '/mnt/metadata/x'
    """
    for root in roots:
        root = root.rstrip(os.sep) or os.sep
        text = re.sub(rf"(?<![\w.{re.escape(os.sep)}-]){re.escape(root)}(?:{re.escape(os.sep)}|(?![\w.-]))",
                      lambda m: "" if m.group(0).endswith(os.sep) else ".", text)
    return text


def source_roots(sources: Sequence[str | os.PathLike]) -> list[str]:
    """Every spelling of each source folder that can appear in a message, longest first.

    Paths in messages start with the source as the user gave it (``../shared/data/x``), its
    absolute form, or its real path (links resolved); each is made relative to the source.
    """
    roots: set[str] = set()
    for src in sources:
        text = os.fspath(src)
        for form in (text, os.path.normpath(text), os.path.abspath(text), os.path.realpath(text)):
            folder = form if os.path.isdir(text) else os.path.dirname(form)
            if folder and folder not in (".", os.curdir):
                roots.add(folder.rstrip(os.sep) or os.sep)
    return sorted(roots, key=len, reverse=True)


def hidden_texts(series: Any) -> list[str]:
    """Texts of ``series`` that a default report or store must not hold: its description
    and, for a NIfTI source, its file name (NIfTI descriptions are file names)."""
    texts = [str(series.description or "")]
    if getattr(series, "kind", "") == "nifti":
        texts += [os.path.basename(f) for f in series.files]
    return sorted({t for t in texts if len(t) >= _MIN_HIDDEN}, key=len, reverse=True)


def hide(value: Any, texts: Sequence[str]) -> Any:
    """``value`` with every string's occurrences of ``texts`` replaced by ``[description]``.

    Examples
    --------
    >>> hide({"reason": ["Smith head CT: gap"]}, ["Smith head CT"])
    {'reason': ['[description]: gap']}
    """
    if not texts:
        return value
    if isinstance(value, str):
        for t in texts:
            value = value.replace(t, "[description]")
        return value
    if isinstance(value, list):
        return [hide(v, texts) for v in value]
    if isinstance(value, dict):
        return {k: hide(v, texts) for k, v in value.items()}
    return value


def scrub_paths(value: Any, roots: Sequence[str]) -> Any:
    """Source folders out of every string in ``value`` (folder names can be patient names)."""
    if isinstance(value, str):
        return relative_paths(value, roots)
    if isinstance(value, list):
        return [scrub_paths(v, roots) for v in value]
    if isinstance(value, dict):
        return {k: scrub_paths(v, roots) for k, v in value.items()}
    return value


_IDENTIFYING = {k.lower() for k in IDENTIFYING_KEYWORDS} | {
    "".join("_" + c.lower() if c.isupper() else c for c in k).lstrip("_") for k in IDENTIFYING_KEYWORDS
}


def deidentified_meta(meta: dict[str, Any], roots: Sequence[str], keep_phi: bool,
                      keep_descriptions: bool = False, hidden: Sequence[str] = ()) -> dict[str, Any]:
    """A volume's meta as a store may hold it: paths relative, no identifying or descriptor keys.

    Examples
    --------
    >>> deidentified_meta({"patient_name": "X", "description": "Smith", "kvp": 120}, [], False)
    {'kvp': 120}
    """
    meta = scrub_paths(meta, roots)
    if keep_phi:
        return meta
    # The readers already leave these out; dropping them again here costs nothing and keeps a
    # reader bug from reaching a store.
    meta = {k: v for k, v in meta.items() if k != "phi" and k.lower() not in _IDENTIFYING}
    if not keep_descriptions:
        meta = hide({k: v for k, v in meta.items() if k.lower() not in DESCRIPTOR_KEYS}, hidden)
    return meta


def report_summary(series: Any, keep_descriptions: bool) -> dict[str, Any]:
    """``series.summary()`` for a report: without its description unless kept."""
    entry = series.summary()
    if not keep_descriptions:
        entry.pop("description", None)
        entry = hide(entry, hidden_texts(series))
    return entry
