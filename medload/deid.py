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

__all__ = ["pseudonym", "sanitize_key", "PHI_KEY_ENV", "IDENTIFYING_KEYWORDS"]

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
