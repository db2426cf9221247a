"""GE diffusion encoding from GE's private elements, read as dcm2niix reads them.

GE MR scanners (before the public MR Diffusion attributes) keep the b-value in (0043,1039)
(``GEMS_PARM_01``) and the gradient in (0019,10BB), (0019,10BC), (0019,10BD)
(``GEMS_ACQU_01``). The rules are dcm2niix's (nii_dicom.cpp ``set_bValGE``, nii_dicom_batch.cpp
``geCorrectBvecs`` and ``nii_saveDTI``; the ROW swap after the plane's flips as dcm2niix does it
since its PR #971, v1.0.20250826), because its output is medload's reference:

* b-value: the first number of (0043,1039), modulo 10^9 (many versions add 10^9: "1000001000\\8\\0\\0");
* a gradient of length between 0.03 and 0.97 means a smaller b-value on a multi-shell scan:
  b becomes ``b |g|^2`` rounded to 5 (at least 5) and the gradient is made unit length;
* b > 0 with a zero gradient is a b=0 image on a DTI scan (GE writes the nominal b there) and a
  derived trace/ADC image on a non-DTI scan: (0019,10E0) NumberOfDiffusionDirection 0, or the
  diffusion type in (0043,1030) / (0021,105A) other than DTI (16, or 14 for the first b=0);
* the gradient is along the image, not the patient: dcm2niix turns it into its own NIfTI's
  voxel axes by the in-plane phase encoding direction (0018,1312, ROW or COL) and the plane
  (sagittal, coronal, axial by the slice normal's largest component). medload turns the same
  vector into LPS with dcm2niix's voxel axes (+row, -column, +normal), so its .bvec names the
  same world direction as dcm2niix's (``tests/test_io_ge_diffusion.py``).

* no private gradient elements but the public DiffusionGradientOrientation (0018,9089): that
  gradient, in the patient frame as DICOM defines it (as dcm2niix reads such a series when its
  first file carries the element too; it uses GE's image-frame rules when that file does not,
  for whichever element a gradient came from: docs/validation.md).

dcm2niix itself calls the non-axial and ROW cases "limited validation"; medload records that
as ``meta["diffusion_gradients_validated"] = False``. Without an orientation or a ROW/COL phase
direction the gradient cannot be placed: the b-values are then not read either, and
``meta["diffusion_unknown"]`` says why (a typed fact; no half table).
"""

from __future__ import annotations

import math
import struct
from typing import Any

from medload.deidmeta import shown_value
from medload.io.diffusion import public_gradient
from medload.io.frame import element_value, number

__all__ = ["GE_DIFFUSION_TAGS", "ge_diffusion", "has_ge_diffusion", "is_ge"]

_B, _GX, _GY, _GZ = 0x00431039, 0x001910BB, 0x001910BC, 0x001910BD
_N_DIRECTIONS, _VAS_COLLAPSE, _SERIES_TYPE = 0x001910E0, 0x00431030, 0x0021105A
_PHASE = 0x00181312  # InPlanePhaseEncodingDirection

#: Header elements GE diffusion needs (scan reads them with the rest).
GE_DIFFUSION_TAGS = [0x00430010, _B, _GX, _GY, _GZ, _N_DIRECTIONS, _VAS_COLLAPSE, _SERIES_TYPE, _PHASE]

# dcm2niix's flips of the image-frame gradient, by plane (1 sagittal, 2 coronal, 3 axial).
_FLIP = {1: (True, True, False), 2: (False, True, True), 3: (False, False, True)}
_DTI_TYPES = (14, 16)  # DiffusionT2 (the first b=0), DiffusionDti


def is_ge(ds: Any) -> bool:
    """Manufacturer starts with "GE" (``GE MEDICAL SYSTEMS``, ``GE Healthcare``)."""
    return str(ds.get("Manufacturer", "") or "").upper().startswith("GE")


def _first_number(value: Any) -> float | None:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace").strip("\0 ").split("\\")[0]
    elif not isinstance(value, (str, int, float)) and value is not None:
        try:
            value = list(value)[0]
        except (TypeError, IndexError):
            return None
    got = number(value)
    return got if got is not None and math.isfinite(got) else None


def _value(ds: Any, tag: int) -> float | None:
    return _first_number(element_value(ds, tag))


def _integer(ds: Any, tag: int, fmt: str) -> int | None:
    """A binary integer element (SS, SL); raw bytes when read without its VR (implicit VR, fast path)."""
    value = element_value(ds, tag)
    if isinstance(value, (bytes, bytearray)):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, bytes(value[:size]))[0] if len(value) >= size else None
    got = _first_number(value)
    return None if got is None else int(got)


def has_ge_diffusion(ds: Any) -> bool:
    """A GE file with a b-value in (0043,1039): its diffusion encoding is read from GE's private elements.

    They win over the public MR Diffusion attributes where a file has both (GE software 27 on
    writes DiffusionBValue (0018,9087) beside them, without a gradient, and leaves it out
    where b is 0), as in dcm2niix, whose reader lets the private values, later in the file,
    overwrite the public ones (nii_dicom.cpp ``set_bValGE`` after ``set_bVal``).

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.Manufacturer = "GE MEDICAL SYSTEMS"; ds.DiffusionBValue = 1000.0
    >>> has_ge_diffusion(ds)
    False
    >>> ds.add_new(0x00431039, "IS", ["1000001000", "8", "0", "0"])
    >>> has_ge_diffusion(ds)
    True
    """
    return is_ge(ds) and _value(ds, _B) is not None


def _non_dti(ds: Any) -> bool:
    """dcm2niix's test for a GE diffusion scan without directions (its b>0, g=0 images are trace/ADC)."""
    directions = _value(ds, _N_DIRECTIONS)
    image_type, series_type = _integer(ds, _VAS_COLLAPSE, "<h"), _integer(ds, _SERIES_TYPE, "<i")
    return (
        (directions is not None and round(directions) == 0)
        or (image_type is not None and image_type > 0 and image_type not in _DTI_TYPES)
        or (series_type is not None and series_type > 0 and series_type != 16)
    )


def _shell(b: float, g: tuple[float, float, float]) -> tuple[float, tuple[float, float, float]]:
    """dcm2niix's multi-shell rule: a gradient shorter than 1 scales the b-value (issues 163, 245)."""
    length = math.sqrt(sum(v * v for v in g))
    if not 0.03 < length < 0.97:
        return b, g
    scaled = b * length * length
    new_b = 5.0 if 0 < scaled < 5 else float(int((scaled + 2.5) / 5) * 5)
    factor = 0.0 if new_b == 0 else math.sqrt(b / new_b)
    return new_b, (g[0] * factor, g[1] * factor, g[2] * factor)


def _plane(orientation: tuple[float, ...]) -> tuple[int, tuple[float, float, float]]:
    """The plane as dcm2niix numbers it (1 sagittal, 2 coronal, 3 axial: the normal's largest component) and the normal."""
    row, col = orientation[:3], orientation[3:]
    normal = (
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    )
    return max(range(3), key=lambda k: abs(normal[k])) + 1, normal


def _to_lps(g: tuple[float, float, float], orientation: tuple[float, ...], column_phase: bool) -> tuple[float, float, float]:
    """GE's image-frame gradient in LPS, through dcm2niix's ``geCorrectBvecs`` and its voxel axes."""
    row, col = orientation[:3], orientation[3:]
    plane, normal = _plane(orientation)
    v = [-x if flip else x for x, flip in zip(g, _FLIP[plane])]
    v[1] = -v[1]
    if not column_phase:  # after the plane's flips since dcm2niix PR #971 (coronal + ROW was wrong before)
        v[0], v[1] = -v[1], v[0]
    v = [-x for x in v]
    # dcm2niix's NIfTI voxel axes in LPS: along the row, against the column, along the normal.
    out = [v[0] * row[k] - v[1] * col[k] + v[2] * normal[k] for k in range(3)]
    return (out[0] + 0.0, out[1] + 0.0, out[2] + 0.0)  # + 0.0: no negative zeros


def ge_diffusion(
    ds: Any, orientation: tuple[float, ...] | None, params: dict[str, Any], where: str | None = None
) -> tuple[float, float, float, float] | None:
    """``(b, gx, gy, gz)`` (gradient in LPS) of a GE image from its private elements, or ``None``.

    ``None`` for a b=0 image (as an image without diffusion), for files of other makers and
    when (0043,1039) is absent. Facts for the Volume's meta go into ``params``:
    ``diffusion_gradients_validated`` (False where dcm2niix says its own rule has limited
    validation) and ``diffusion_unknown`` (why a diffusion-weighted image got no encoding). Where
    :func:`has_ge_diffusion`, the caller uses this and not the public attributes.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.Manufacturer = "GE MEDICAL SYSTEMS"; ds.InPlanePhaseEncodingDirection = "COL"
    >>> ds.add_new(0x00431039, "IS", ["1000001000", "8", "0", "0"])
    >>> for tag, value in ((0x001910BB, "1"), (0x001910BC, "0"), (0x001910BD, "0")):
    ...     ds.add_new(tag, "DS", value)
    >>> ge_diffusion(ds, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), {})  # axial: along -row, as dcm2niix
    (1000.0, -1.0, 0.0, 0.0)
    """
    if not is_ge(ds):
        return None
    raw_b = _value(ds, _B)
    if raw_b is None:
        return None
    b = float(raw_b % 1_000_000_000)
    if b <= 0:  # every image of a GE fMRI or anatomical EPI: nothing more to read
        return None
    if all(element_value(ds, tag) is None for tag in (_GX, _GY, _GZ)):
        # No private gradient at all, but the public one (software that writes the MR Diffusion
        # attributes): in the patient frame, as DICOM defines it, beside GE's b-value. Before,
        # such a DW image counted as a b=0 image and the series lost its whole table, unsaid.
        public = public_gradient(ds, where)
        if public is not None and any(abs(v) > 1e-7 for v in public):
            return (b, *public)
    g = (_value(ds, _GX) or 0.0, _value(ds, _GY) or 0.0, _value(ds, _GZ) or 0.0)
    if all(abs(v) <= 1e-7 for v in g):
        # The nominal b on a DTI scan's b=0 image; a derived trace/ADC image otherwise.
        return (b, 0.0, 0.0, 0.0) if _non_dti(ds) else None
    b, g = _shell(b, g)
    phase = str(element_value(ds, _PHASE) or "").strip().upper()
    if orientation is None or phase not in ("ROW", "COL"):
        params["diffusion_unknown"] = (
            "GE gradient directions (0019,10BB-10BD) are along the image; placing them needs "
            f"ImageOrientationPatient and InPlanePhaseEncodingDirection ROW or COL (found {shown_value(phase) if phase else repr('none')}), "
            "so b-values and directions were not read."
        )
        return None
    hfs = str(ds.get("PatientPosition", "") or "").strip().upper() in ("", "HFS")
    params["diffusion_gradients_validated"] = phase == "COL" and _plane(orientation)[0] == 3 and hfs
    return (b, *_to_lps(g, orientation, phase == "COL"))
