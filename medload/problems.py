"""Problems: what was found wrong with a source and what medload did about it, as typed records.

A problem does not stop the work (the volume loaded with a documented fix, the store opened,
the QC page was drawn); a user should still know it. Each is a :class:`Problem`: a ``kind``
from the closed vocabulary :class:`ProblemKind`, which code decides by, and a ``message``,
the sentence for people. Messages are de-identified (file and folder names become
pseudonyms, descriptions ``[description]``) and may be reworded in any release: no code
decides anything by reading one.

Where problems are written as JSON (``Volume.meta["problems"]``, the store's ``meta``
attribute, ``report.json``, ``medload scan --json``) each is the object
``{"kind": "slice_gap", "message": "..."}``. :meth:`Problem.from_json` reads that, and the
plain strings that stores and reports written before kinds existed hold (kind
``"unclassified"``).

Examples
--------
>>> p = Problem(ProblemKind.GANTRY_TILT, "gantry tilt of 14.00 degrees: ...")
>>> p.to_json()
{'kind': 'gantry_tilt', 'message': 'gantry tilt of 14.00 degrees: ...'}
>>> Problem.from_json(p.to_json()) == p
True
>>> Problem.from_json("a sentence from an older store").kind is ProblemKind.UNCLASSIFIED
True
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from medload.errors import ConfigError

__all__ = ["Problem", "ProblemKind", "KIND_MEANINGS", "read_problems", "problems_json", "is_problem_record"]


class ProblemKind(enum.StrEnum):
    """The closed vocabulary of problem kinds (:data:`KIND_MEANINGS` says what each means).

    A string enum: ``ProblemKind.SLICE_GAP == "slice_gap"``, and the value is what JSON holds.
    """

    # --- DICOM geometry, found from headers (io/sorting.py; reported by scan and load)
    NO_WORLD_GEOMETRY = "no_world_geometry"
    PIXEL_SPACING_ASSUMED = "pixel_spacing_assumed"
    ORIENTATION_MIXED = "orientation_mixed"
    PIXEL_SPACING_INCOMPLETE = "pixel_spacing_incomplete"
    POSITION_INCOMPLETE = "position_incomplete"
    PIXEL_SPACING_MIXED = "pixel_spacing_mixed"
    DUPLICATE_IMAGES_DROPPED = "duplicate_images_dropped"
    DUPLICATE_POSITIONS = "duplicate_positions"
    FRAMES_REORDERED = "frames_reordered"
    FRAME_ORDER_CONFLICT = "frame_order_conflict"
    FRAMES_UNORDERED = "frames_unordered"
    FRAMES_MISSING = "frames_missing"
    SLICES_OR_FRAMES = "slices_or_frames"
    SLICE_GAP = "slice_gap"
    UNEVEN_SPACING = "uneven_spacing"
    GANTRY_TILT = "gantry_tilt"
    POSITIONS_ROUNDED = "positions_rounded"
    POSITIONS_ROUNDED_TOGETHER = "positions_rounded_together"
    # --- DICOM series found by scan (io/scan.py)
    PATIENT_UNKNOWN = "patient_unknown"
    BURNED_IN_ANNOTATION = "burned_in_annotation"
    DAMAGED_FILES = "damaged_files"
    # --- DICOM pixels (io/dicom.py)
    IDENTICAL_IMAGES_DROPPED = "identical_images_dropped"
    IDENTICAL_FRAMES_DROPPED = "identical_frames_dropped"
    IDENTICAL_FRAMES_KEPT = "identical_frames_kept"
    MONOCHROME1_MIRRORED = "monochrome1_mirrored"
    SLICES_INTERPOLATED = "slices_interpolated"
    DIFFUSION_DERIVED_FRAMES = "diffusion_derived_frames"
    PIXEL_TEXT_POSSIBLE = "pixel_text_possible"
    # --- NIfTI (io/nifti.py)
    SFORM_QFORM_DISAGREE = "sform_qform_disagree"
    UNITS_CONVERTED = "units_converted"
    MODALITY_OVERRIDDEN = "modality_overridden"
    # --- 2D image files (io/images.py)
    PALETTE_EXPANDED = "palette_expanded"
    ONE_BIT_EXPANDED = "one_bit_expanded"
    ALPHA_DROPPED = "alpha_dropped"
    COLOUR_CONVERTED = "colour_converted"
    EXIF_ORIENTATION_APPLIED = "exif_orientation_applied"
    # --- masks (io/masks.py, batch/worker.py)
    MASK_NOT_USED = "mask_not_used"
    # --- the store writer, on opening for resume (store/writer.py)
    STORE_STARTED_OVER = "store_started_over"
    STORE_RESUMED = "store_resumed"
    # --- a store continued by medload.convert (batch/plan.py)
    UNKEYED_SOURCE_HASHES = "unkeyed_source_hashes"
    # --- the QC page, from stored slices (qc/report.py)
    NONFINITE_VALUES = "nonfinite_values"
    CONSTANT_IMAGE = "constant_image"
    EMPTY_MASK = "empty_mask"
    NO_THUMBNAILS = "no_thumbnails"
    # --- a plain sentence from a store or report written before problems had kinds
    UNCLASSIFIED = "unclassified"


_K = ProblemKind
#: What each kind means and where it comes from (``docs/problems.md`` shows this table).
KIND_MEANINGS: dict[ProblemKind, str] = {
    _K.NO_WORLD_GEOMETRY: "no world position/orientation: DICOM images without ImagePositionPatient/"
    "ImageOrientationPatient stacked in acquisition order (1 mm, identity), or a "
    "NIfTI file with neither sform nor qform (voxel sizes only)",
    _K.PIXEL_SPACING_ASSUMED: "no in-plane pixel size in the file (DICOM PixelSpacing, image resolution): 1 mm assumed",
    _K.ORIENTATION_MIXED: "images of one volume have different orientations (load refuses it)",
    _K.PIXEL_SPACING_INCOMPLETE: "some images state PixelSpacing and some do not (load refuses it)",
    _K.POSITION_INCOMPLETE: "some images (frames of an enhanced object) state ImagePositionPatient/ImageOrientationPatient "
    "and some do not (load refuses it)",
    _K.PIXEL_SPACING_MIXED: "PixelSpacing differs between images (load refuses it)",
    _K.DUPLICATE_IMAGES_DROPPED: "copies of an image (same SOPInstanceUID) were dropped",
    _K.DUPLICATE_POSITIONS: "some slice positions hold more images than the others (load drops identical copies, else refuses)",
    _K.FRAMES_REORDERED: "frames put in one order at every slice position: where InstanceNumber orders them "
    "differently between positions (or ties), by temporal position, TriggerTime or AcquisitionTime; else in the "
    "other positions' order of diffusion encodings (repeated encodings by an identifier that orders the encodings "
    "alike at every position)",
    _K.FRAME_ORDER_CONFLICT: "some slice positions hold other frames than the rest (load refuses it)",
    _K.FRAMES_UNORDERED: "images at one slice position that only their file names order (equal InstanceNumber and "
    "AcquisitionTime, no temporal position, trigger time or diffusion encoding; load drops identical copies, else "
    "refuses; scan's shape counts them once), or frames of one diffusion encoding or temporal position (two b=0) "
    "that only shuffled InstanceNumbers order, frames without a temporal position beside frames with one where "
    "InstanceNumbers are shuffled, or frames that only InstanceNumber (a multi-frame object's stored order) orders "
    "running neither volume after volume nor slice after slice (load refuses it)",
    _K.FRAMES_MISSING: "some slice positions hold fewer frames than the others (load refuses it)",
    _K.SLICES_OR_FRAMES: "images closer than the same-position tolerance, every one of them, that only AcquisitionTime "
    "tells apart: slices that close or frames with jittered positions (load refuses it)",
    _K.SLICE_GAP: "slices missing against the median step (load refuses it unless on_gap='interpolate')",
    _K.UNEVEN_SPACING: "uneven slice steps (load refuses it unless on_gap='interpolate')",
    _K.GANTRY_TILT: "slices stacked obliquely to their plane; the affine keeps the true shear",
    _K.POSITIONS_ROUNDED: "slice positions written with few decimals: steps uneven by their rounding only; "
    "the even step from first to last slice is used",
    _K.POSITIONS_ROUNDED_TOGETHER: "slice positions written with fewer decimals than the slices' step needs: several "
    "slices read as one position, told apart by nothing but InstanceNumber (load refuses it)",
    _K.PATIENT_UNKNOWN: "no PatientID (DICOM) or no patient pattern (image files): the series or image "
    "counts as a patient of its own",
    _K.BURNED_IN_ANNOTATION: "BurnedInAnnotation YES: load refuses it unless allow_burned_in=True",
    _K.DAMAGED_FILES: "files of the series cannot be read, so it is not loaded",
    _K.IDENTICAL_IMAGES_DROPPED: "images identical pixel for pixel to another at the same position were dropped",
    _K.IDENTICAL_FRAMES_DROPPED: "identical copies of every colour slice were dropped",
    _K.IDENTICAL_FRAMES_KEPT: "the frames at every position are identical (copies with new UIDs); kept, as dcm2niix does",
    _K.MONOCHROME1_MIRRORED: "MONOCHROME1 pixels were mirrored within the stored range (higher is brighter); "
    "meta['monochrome1_mirrored'] is the flag transforms read",
    _K.SLICES_INTERPOLATED: "slices interpolated onto an even grid (on_gap='interpolate')",
    _K.DIFFUSION_DERIVED_FRAMES: "diffusion-weighted frames without a gradient direction (trace/ADC) kept as frames",
    _K.PIXEL_TEXT_POSSIBLE: "a kind of image that often holds burned-in text, without BurnedInAnnotation NO",
    _K.SFORM_QFORM_DISAGREE: "NIfTI sform and qform disagree; the sform was used",
    _K.UNITS_CONVERTED: "NIfTI spatial units other than mm; the affine was converted to mm",
    _K.MODALITY_OVERRIDDEN: "the caller's modality differs from the BIDS sidecar's or file name's; the caller's was used",
    _K.PALETTE_EXPANDED: "palette image expanded to grey or RGB (transparency dropped)",
    _K.ONE_BIT_EXPANDED: "1-bit image read as 8-bit (0 and 255)",
    _K.ALPHA_DROPPED: "alpha channel (or extra samples) dropped",
    _K.COLOUR_CONVERTED: "CMYK, YCbCr, LAB or HSV image converted to RGB",
    _K.EXIF_ORIENTATION_APPLIED: "EXIF orientation (or a TIFF's Orientation tag) applied to rows and columns",
    _K.MASK_NOT_USED: "a mask paired with the series by its grid's shape alone lies elsewhere in the world; "
    "the volume was stored without a mask",
    _K.STORE_STARTED_OVER: "a partial store left by an interrupted run could not be used; it was deleted",
    _K.STORE_RESUMED: "a partial store left by an interrupted run was resumed (complete volumes kept)",
    _K.UNKEYED_SOURCE_HASHES: "volumes of the continued store carry an earlier medload's unkeyed source_hash "
    "(a digest of the source files): matched by it, kept as they are",
    _K.NONFINITE_VALUES: "stored values that are NaN or infinite (QC page)",
    _K.CONSTANT_IMAGE: "every stored value is the same (QC page)",
    _K.EMPTY_MASK: "the stored mask has no labelled voxel (QC page)",
    _K.NO_THUMBNAILS: "the stored volume could not be read for thumbnails (QC page)",
    _K.UNCLASSIFIED: "a plain sentence from a store or report written before problems had kinds",
}


@dataclass(frozen=True)
class Problem:
    """One problem: its ``kind`` (decide by this) and its ``message`` (show this).

    Parameters
    ----------
    kind : ProblemKind or str
        A :class:`ProblemKind` or its value; anything else is a :class:`~medload.errors.ConfigError`.
    message : str
        The full sentence: what was found, what was done, what to do.

    Examples
    --------
    >>> Problem("slice_gap", "2 slice(s) absent").kind is ProblemKind.SLICE_GAP
    True
    """

    kind: ProblemKind
    message: str

    def __post_init__(self) -> None:
        try:
            kind = ProblemKind(self.kind)
        except ValueError:
            raise ConfigError(
                f"problem kind {self.kind!r} is not one of medload.problems.ProblemKind "
                f"({', '.join(k.value for k in ProblemKind)})."
            ) from None
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "message", str(self.message))

    def to_json(self) -> dict[str, str]:
        """The JSON object stores, meta and reports hold: ``{"kind": ..., "message": ...}``."""
        return {"kind": self.kind.value, "message": self.message}

    @classmethod
    def from_json(cls, value: Any) -> Problem:
        """A :class:`Problem` from its JSON object, a plain string (an older store or report:
        kind ``"unclassified"``), or a :class:`Problem`.

        A kind this medload does not know (written by a newer one) reads as ``"unclassified"``
        with its message kept.

        Examples
        --------
        >>> Problem.from_json({"kind": "gantry_tilt", "message": "tilt"}).kind.value
        'gantry_tilt'
        >>> Problem.from_json({"kind": "from_the_future", "message": "m"}).kind.value
        'unclassified'
        """
        if isinstance(value, Problem):
            return value
        if isinstance(value, str):
            return cls(ProblemKind.UNCLASSIFIED, value)
        if is_problem_record(value):
            kind = value["kind"] if value["kind"] in _VALUES else ProblemKind.UNCLASSIFIED
            return cls(kind, value["message"])
        raise ConfigError(
            f"a problem is a {{'kind': ..., 'message': ...}} object or a string, found {type(value).__name__} {value!r:.80}."
        )

    def with_message(self, change: Callable[[str], str]) -> Problem:
        """The same kind with ``change(message)`` (relative paths, de-identified names).

        Examples
        --------
        >>> Problem("gantry_tilt", "/data/x: tilt").with_message(lambda m: m.replace("/data/", "")).message
        'x: tilt'
        """
        return Problem(self.kind, change(self.message))


_VALUES = frozenset(k.value for k in ProblemKind)


def is_problem_record(value: Any) -> bool:
    """Whether ``value`` is a problem's JSON object (a dict of exactly ``kind`` and ``message``, both text).

    Examples
    --------
    >>> is_problem_record({"kind": "slice_gap", "message": "m"}), is_problem_record({"kind": "dicom"})
    (True, False)
    """
    return (
        isinstance(value, dict)
        and set(value) == {"kind", "message"}
        and isinstance(value["kind"], str)
        and isinstance(value["message"], str)
    )


def read_problems(value: Any) -> tuple[Problem, ...]:
    """The problems in ``value``: a list of JSON objects, strings or Problems (``None``: none).

    Examples
    --------
    >>> [p.kind.value for p in read_problems(["old sentence", {"kind": "gantry_tilt", "message": "m"}])]
    ['unclassified', 'gantry_tilt']
    """
    if value is None:
        return ()
    if isinstance(value, str | dict) or not isinstance(value, Iterable):
        raise ConfigError(f"problems must be a list of problems, found {type(value).__name__} {value!r:.80}.")
    return tuple(Problem.from_json(v) for v in value)


def problems_json(value: Any) -> list[dict[str, str]]:
    """``value`` (see :func:`read_problems`) as the list of JSON objects meta and stores hold.

    Examples
    --------
    >>> problems_json([Problem("gantry_tilt", "m"), "old"])
    [{'kind': 'gantry_tilt', 'message': 'm'}, {'kind': 'unclassified', 'message': 'old'}]
    """
    return [p.to_json() for p in read_problems(value)]
