"""What kind of DICOM object a file holds: a DICOM file at all, and an image or not.

Scan skips objects that carry no image volume (structured reports, RT structure sets and
plans, presentation states, key object selection, raw data, waveforms, encapsulated
documents, DICOMDIR) and counts them by kind.
"""

from __future__ import annotations

__all__ = ["NON_IMAGE_SOP_CLASSES", "looks_like_dicom", "non_image_kind"]

#: SOP classes that carry no image volume, by UID, with the name scan reports them under.
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


def non_image_kind(sop_class: str, is_directory: bool = False) -> str | None:
    """The kind of a non-image object, or ``None`` when ``sop_class`` may hold an image.

    Examples
    --------
    >>> non_image_kind("1.2.840.10008.5.1.4.1.1.481.3")
    'RT Structure Set'
    >>> non_image_kind("1.2.840.10008.5.1.4.1.1.2") is None  # CT Image Storage
    True
    """
    if is_directory or sop_class in NON_IMAGE_SOP_CLASSES:
        return NON_IMAGE_SOP_CLASSES.get(sop_class, "DICOMDIR")
    if sop_class.startswith(_NON_IMAGE_PREFIXES):
        return "non-image object " + sop_class
    return None


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
