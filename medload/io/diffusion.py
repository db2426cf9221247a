"""Diffusion encoding of one image: b-value and gradient direction, and FSL-style bvecs.

Where the values come from (the first found wins): the public MR Diffusion attributes
(DiffusionBValue (0018,9087), DiffusionGradientOrientation (0018,9089); in an enhanced
object inside MRDiffusionSequence), then Siemens (0019,100C)/(0019,100E), then Philips
(2001,1003)/(2005,10B0-10B2). Gradients are in the patient (LPS) frame, as DICOM stores
them. GE's private elements, whose gradients are along the image, are read by
:mod:`medload.io.gediffusion` instead of these on a GE file that has them
(:func:`~medload.io.gediffusion.has_ge_diffusion`; dcm2niix lets them win too).

``.bvec`` convention (:func:`bvecs_for_affine`, the one FSL and dcm2niix use): each gradient
is expressed along the NIfTI image's own voxel axes (unit vectors of the affine's columns),
and the first component is negated when the affine's determinant is positive. dcm2niix
writes its NIfTI with rows flipped (negative determinant), so its bvec for a gradient ``g``
(LPS) is ``(g.row, -g.col, g.normal)``; medload keeps the DICOM row order (positive
determinant), so its bvec for the same gradient is ``(-g.row, g.col, g.normal)``. Both name
the same direction in the world once read with their own affine (the tests check this
against dcm2niix on real data).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from medload.errors import ReadError
from medload.io.frame import element_value, first_item, number

__all__ = ["DIFFUSION_TAGS", "bvecs_for_affine", "classic_diffusion", "enhanced_diffusion", "public_gradient"]

_SIEMENS_B, _SIEMENS_G = 0x0019100C, 0x0019100E
_PHILIPS_B = 0x20011003
_PHILIPS_G = (0x200510B0, 0x200510B1, 0x200510B2)
_PUBLIC_B, _PUBLIC_G = 0x00189087, 0x00189089

#: Header elements the classic reader needs (scan reads them with the rest).
DIFFUSION_TAGS = [_PUBLIC_B, _PUBLIC_G, _SIEMENS_B, _SIEMENS_G, _PHILIPS_B, *_PHILIPS_G]


def _floats(value: Any) -> list[float] | None:
    """Numbers of an element value; private elements read without a VR come as raw bytes."""
    if value is None or value == "":
        return None
    if isinstance(value, (bytes, bytearray)):
        fmt = {4: "<f", 8: "<d", 12: "<3f", 24: "<3d"}.get(len(value))
        if fmt is None:
            return None
        return [float(v) for v in struct.unpack(fmt, bytes(value))]
    if isinstance(value, (int, float, str)):
        got = number(value)
        return None if got is None else [got]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out or None


def _direction(values: list[float] | None) -> tuple[float, float, float] | None:
    if values is None or len(values) != 3 or not np.all(np.isfinite(values)):
        return None
    return (float(values[0]), float(values[1]), float(values[2]))


def _encoding(
    b: list[float] | None, values: list[float] | None, where: str | None, tags: str
) -> tuple[float, float, float, float] | None:
    """``(b, gx, gy, gz)`` from a b-value and gradient values as read; ``where`` refuses what is present but not finite.

    Read as absent, a NaN b-value made its frame a b=0 frame of the table, and a NaN gradient a
    "derived trace" frame: a silently wrong .bval/.bvec.
    """
    if b is None:
        return None
    g = _direction(values)
    if where is not None and (not np.isfinite(b[0]) or (values is not None and g is None)):
        raise ReadError(
            f"{where}: diffusion encoding {tags} is b={b[0]}, gradient {values}; expected a finite b-value "
            "and three finite gradient components. The header is damaged; re-export the file or remove it."
        )
    if not np.isfinite(b[0]):
        return None
    gx, gy, gz = g if g is not None else (0.0, 0.0, 0.0)
    return (float(b[0]), gx, gy, gz)


_TAG_TEXT = {
    _PUBLIC_B: "DiffusionBValue (0018,9087) / DiffusionGradientOrientation (0018,9089)",
    _SIEMENS_B: "Siemens (0019,100C) / (0019,100E)",
    _PHILIPS_B: "Philips (2001,1003) / (2005,10B0-10B2)",
}


def classic_diffusion(ds: Any, where: str | None = None) -> tuple[float, float, float, float] | None:
    """``(b, gx, gy, gz)`` of a single-frame image (gradient in LPS; zeros when none), or ``None``.

    With ``where`` (the file), a b-value or gradient that is present but not finite is a
    :class:`~medload.errors.ReadError` naming it and the tags.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.DiffusionBValue = 1000.0; ds.DiffusionGradientOrientation = [0.0, 1.0, 0.0]
    >>> classic_diffusion(ds)
    (1000.0, 0.0, 1.0, 0.0)
    >>> ds.DiffusionGradientOrientation = [0.0, float("nan"), 0.0]
    >>> classic_diffusion(ds, "a.dcm")
    Traceback (most recent call last):
    ...
    medload.errors.ReadError: a.dcm: diffusion encoding DiffusionBValue (0018,9087) / ...
    """
    for b_tag, g_tags in ((_PUBLIC_B, (_PUBLIC_G,)), (_SIEMENS_B, (_SIEMENS_G,)), (_PHILIPS_B, _PHILIPS_G)):
        b = _floats(element_value(ds, b_tag))
        if b is None:
            continue
        parts = [_floats(element_value(ds, t)) for t in g_tags]
        values = parts[0] if len(parts) == 1 else (None if any(p is None for p in parts) else [p[0] for p in parts if p])
        return _encoding(b, values, where, _TAG_TEXT[b_tag])
    return None


def public_gradient(ds: Any, where: str | None = None) -> tuple[float, float, float] | None:
    """DiffusionGradientOrientation (0018,9089) of a single-frame image (LPS, as DICOM defines it), or ``None`` when absent.

    With ``where`` (the file), a value that is present but not three finite numbers is a
    :class:`~medload.errors.ReadError` naming it.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.DiffusionGradientOrientation = [0.0, 0.6, 0.8]
    >>> public_gradient(ds), public_gradient(Dataset())
    ((0.0, 0.6, 0.8), None)
    """
    values = _floats(element_value(ds, _PUBLIC_G))
    g = _direction(values)
    if values is not None and g is None and where is not None:
        raise ReadError(
            f"{where}: DiffusionGradientOrientation (0018,9089) is {values}; expected three finite numbers. "
            "The header is damaged; re-export the file or remove it."
        )
    return g


def enhanced_diffusion(diff: Any, where: str | None = None) -> tuple[float, float, float, float] | None:
    """``(b, gx, gy, gz)`` of one frame's MRDiffusionSequence item, or ``None`` (``where``: as :func:`classic_diffusion`)."""
    if diff is None:
        return None
    b = _floats(diff.get("DiffusionBValue"))
    direction = first_item(diff, "DiffusionGradientDirectionSequence")
    values = _floats(direction.get("DiffusionGradientOrientation")) if direction is not None else None
    return _encoding(
        b, values, where, "MRDiffusionSequence DiffusionBValue (0018,9087) / DiffusionGradientOrientation (0018,9089)"
    )


def bvecs_for_affine(gradients_lps: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """FSL-style bvecs (3, T) of LPS gradients (T, 3) for a NIfTI grid (affine in RAS, x,y,z axes).

    Examples
    --------
    >>> aff = np.diag([-2.0, 2.0, 2.0, 1.0])  # dcm2niix's kind of grid: determinant negative
    >>> bvecs_for_affine(np.array([[0.0, -1.0, 0.0]]), aff).ravel().tolist()
    [0.0, 1.0, 0.0]
    """
    g = np.asarray(gradients_lps, dtype=float).reshape(-1, 3) * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
    axes = np.asarray(affine, dtype=float)[:3, :3]
    units = axes / np.linalg.norm(axes, axis=0)
    out = g @ units  # (T, 3): components along the voxel axes
    if np.linalg.det(axes) > 0:
        out[:, 0] = -out[:, 0]
    out[np.abs(out) < 1e-12] = 0.0
    return out.T
