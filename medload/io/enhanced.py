"""Enhanced (and classic) multi-frame objects: one :class:`Frame` per frame.

Each frame's position, orientation, spacing and rescale come from its per-frame functional
group, else from the shared one, else (rescale) from the top-level dataset. A value that is
there but NaN, infinite or malformed is a :class:`~medload.errors.ReadError` naming the file,
the frame and the tag, never read as absent (which would fall back to the shared group, a
default, or no geometry at all).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.io import philips
from medload.io.diffusion import enhanced_diffusion
from medload.errors import ReadError
from medload.deidmeta import shown_value
from medload.io.frame import Frame, first_item, number, position_text
from medload.io.validate import present_vector

__all__ = ["enhanced_frames", "has_philips_scale"]


def _frame_groups(ds: Any, index: int) -> tuple[Any, Any]:
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    item = per[index] if per is not None and index < len(per) else None
    return item, shared


def _from_groups(item: Any, shared: Any, name: str | int) -> Any:
    for owner in (item, shared):
        got = first_item(owner, name)
        if got is not None:
            return got
    return None


def _value(owner: Any, keyword: str) -> Any:
    return owner.get(keyword) if owner is not None else None


def _finite(where: str, owner: Any, keyword: str, tag: str, default: float) -> float:
    """``keyword`` of ``owner`` as a finite float, ``default`` when absent; refused naming ``where`` otherwise."""
    value = _value(owner, keyword)
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return default
    got = number(value)
    if got is None or not np.isfinite(got):
        raise ReadError(
            f"{where}: {keyword} {tag} is {shown_value(value) if got is None else repr(got)}; expected a finite number (read as absent, this frame would "
            "get another frame's or the default value). The header is damaged; re-export the file or remove it."
        )
    return float(got)


def has_philips_scale(ds: Any) -> bool:
    """A Philips private ScaleSlope in the first frame's groups or at the top level."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    item = per[0] if per else None
    private = _from_groups(item, first_item(ds, "SharedFunctionalGroupsSequence"), 0x2005140F) if item is not None else None
    return bool(philips.scale_slope(private) or philips.scale_slope(ds))


def _dimension_index(content: Any) -> tuple[int, ...]:
    if content is None:
        return ()
    value = content.get("DimensionIndexValues")
    if value is None or isinstance(value, int):
        return ()
    return tuple(int(v) for v in value)


def enhanced_frames(ds: Any, path: str, base_split: tuple[Any, ...], sop_uid: str) -> list[Frame]:
    """The frames of a multi-frame object ``ds`` read from ``path``.

    ``base_split`` is the file's part of every frame's split key; frames of different type
    (magnitude/phase/field map), echo time, stack or rescale type become different volumes.
    """
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    stated = ds.get("NumberOfFrames") not in (None, "")
    if per is not None and (len(per) < n or (stated and len(per) > n)):
        # A frame without its item fell back to the shared group (no position: a series of its
        # own); extra items were ignored, whichever frames they describe. Without NumberOfFrames
        # the PixelData length has been checked to hold one frame, which the first item
        # describes (pydicom's liver_1frame.dcm: one frame cut from a SEG, three items kept).
        raise ReadError(
            f"{path}: PerFrameFunctionalGroupsSequence has {len(per)} item(s) but NumberOfFrames is {n}; "
            "expected one item per frame, so it cannot be told which item describes which frame. "
            "The header is damaged; re-export the file or remove it."
        )
    instance = float(number(ds.get("InstanceNumber"), 0.0) or 0.0)
    is_philips = philips.is_philips(ds)
    frames = []
    for i in range(n):
        item, shared = _frame_groups(ds, i)
        pos = _from_groups(item, shared, "PlanePositionSequence")
        ori = _from_groups(item, shared, "PlaneOrientationSequence")
        meas = _from_groups(item, shared, "PixelMeasuresSequence")
        trans = _from_groups(item, shared, "PixelValueTransformationSequence")
        content = first_item(item, "FrameContentSequence")
        ftype_seq = _from_groups(item, shared, "MRImageFrameTypeSequence") or _from_groups(
            item, shared, "CTImageFrameTypeSequence"
        )
        echo = _from_groups(item, shared, "MREchoSequence")
        diff = _from_groups(item, shared, "MRDiffusionSequence")
        frame_type = tuple(str(v).upper() for v in (ftype_seq.get("FrameType") or ())) if ftype_seq else ()
        where = f"{path}[frame {i}]"
        # A value present but NaN, infinite or malformed is refused, never read as absent: a
        # frame without a position became a volume without world geometry, one without an
        # orientation a series of its own.
        position = present_vector(where, _value(pos, "ImagePositionPatient"), 3, "ImagePositionPatient (0020,0032)")
        orientation = present_vector(where, _value(ori, "ImageOrientationPatient"), 6, "ImageOrientationPatient (0020,0037)")
        spacing = present_vector(where, _value(meas, "PixelSpacing"), 2, "PixelSpacing (0028,0030)")
        owner = trans if trans is not None else ds
        slope = _finite(where, owner, "RescaleSlope", "(0028,1053)", 1.0)
        intercept = _finite(where, owner, "RescaleIntercept", "(0028,1052)", 0.0)
        temporal = number(content.get("TemporalPositionIndex")) if content is not None else None
        stack = str(content.get("StackID", "")) if content is not None else ""
        echo_time = _finite(where, echo, "EffectiveEchoTime", "(0018,9082)", 0.0)
        diffusion = enhanced_diffusion(diff, where)
        dims = _dimension_index(content)
        # Rescale type differs between a magnitude and a field map in Hz (Philips fMAP).
        rescale_type = str(trans.get("RescaleType", "")) if trans is not None else ""
        if is_philips:
            private = _from_groups(item, shared, 0x2005140F) if item is not None else None
            slope, intercept = philips.precise(
                slope, intercept, philips.scale_slope(private, where) or philips.scale_slope(ds, path)
            )
        split = base_split + (frame_type, round(float(echo_time or 0.0), 3), stack, rescale_type)
        frames.append(
            Frame(
                file=path,
                frame=i,
                mosaic=-1,
                position=position,
                orientation=orientation,
                pixel_spacing=spacing,
                slope=float(slope),
                intercept=float(intercept),
                time_key=(instance, *dims, float(i)),
                split_key=split,
                uid=f"{sop_uid}#{i}",
                diffusion=diffusion,
                position_text=None if position is None else position_text(pos),
                volume_id=(
                    temporal,
                    None if diffusion is None else (round(diffusion[0], 1), *(round(v, 4) for v in diffusion[1:])),
                ),
            )
        )
    _order_as_dcm2niix(frames, _stack_item(ds))
    return frames


_IN_STACK_POSITION, _IMAGE_POSITION = 0x00209057, 0x00200032


def _stack_item(ds: Any) -> int:
    """Index of the slice position in DimensionIndexValues (0 when the file does not say)."""
    seq = ds.get("DimensionIndexSequence") if "DimensionIndexSequence" in ds else ds.get(0x00209222)
    seq = getattr(seq, "value", seq)
    item = 0
    if seq is None or isinstance(seq, (bytes, bytearray)):
        return item
    for k, entry in enumerate(seq):
        pointer = entry.get("DimensionIndexPointer") if hasattr(entry, "get") else None
        pointer = getattr(pointer, "value", pointer)
        if pointer is not None and int(pointer) in (_IN_STACK_POSITION, _IMAGE_POSITION):
            item = k
    return item


def _order_as_dcm2niix(frames: list[Frame], stack_item: int) -> None:
    """Make each frame's time key order frames as dcm2niix does (nii_dicom.cpp, compareTDCMdim).

    dcm2niix sorts an enhanced object's frames by DimensionIndexValues, the last item most
    significant when the slice position comes before the last item that varies (Philips,
    Siemens), else the first item most significant (Canon, Bruker).
    """
    dims = [f.time_key[1:-1] for f in frames]
    if not dims or not dims[0] or any(len(d) != len(dims[0]) for d in dims):
        return
    values = np.array(dims)
    varying = [k for k in range(values.shape[1]) if np.ptp(values[:, k]) > 0]
    if varying and stack_item < varying[-1]:
        for f in frames:
            f.time_key = (f.time_key[0], *reversed(f.time_key[1:-1]), f.time_key[-1])
