"""Whether a DICOM image's pixels may hold identifying text, from its header (BurnedInAnnotation, modality, SOP class)."""

from __future__ import annotations

__all__ = ["PIXEL_TEXT_MODALITIES", "SECONDARY_CAPTURE_SOP_PREFIX", "pixel_text_risk"]

#: Modalities whose pixels often hold text (names, dates, IDs) or a face even when no header
#: says so: ultrasound (the vendor's text overlay is part of the image), photographs and video
#: (external camera, endoscopy, ophthalmic, microscopy), "other" and document captures.
PIXEL_TEXT_MODALITIES = frozenset({"US", "IVUS", "XC", "ES", "OP", "GM", "SM", "OT", "DOC"})
#: SOP classes of Secondary Capture images (screenshots, scanned film, exported reports).
SECONDARY_CAPTURE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


def pixel_text_risk(burned_in_annotation: str, modality: str, sop_class: str = "") -> str:
    """How likely a DICOM image's pixels hold identifying text: ``"burned-in"``, ``"possible"`` or ``""``.

    ``"burned-in"``: the header says so (BurnedInAnnotation YES); readers refuse such series
    unless allowed. ``"possible"``: nothing says there is none (BurnedInAnnotation absent) and
    the image is of a kind that often carries text (:data:`PIXEL_TEXT_MODALITIES`, a Secondary
    Capture screenshot); converted, with a problem note. ``""``: BurnedInAnnotation NO, or a
    modality that does not usually carry text (CT, MR, PT, CR, DX, ...).

    Examples
    --------
    >>> pixel_text_risk("YES", "CT"), pixel_text_risk("", "US"), pixel_text_risk("NO", "US")
    ('burned-in', 'possible', '')
    >>> pixel_text_risk("", "OT", "1.2.840.10008.5.1.4.1.1.7"), pixel_text_risk("", "CT")
    ('possible', '')
    """
    value = (burned_in_annotation or "").strip().upper()
    if value == "YES":
        return "burned-in"
    if value == "NO":
        return ""
    if (modality or "").upper() in PIXEL_TEXT_MODALITIES or (sop_class or "").startswith(SECONDARY_CAPTURE_SOP_PREFIX):
        return "possible"
    return ""
