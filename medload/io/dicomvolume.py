"""What ``load_dicom`` makes of a decoded DICOM array beside its pixels: its leading axis and its meta.

``load_dicom`` decodes every image into ``(T, Z, Y, X[, samples])``; :func:`frames_axis` makes
that the Volume's array and says what its leading axis holds (time frames, colour channels, or
none; the diffusion table), :func:`dicom_meta` writes what the headers say of the volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload.errors import UnsupportedError
from medload.io.frame import Frame
from medload.io.headers import FileHeader, diffusion_facts
from medload.io.series import Series
from medload.io.stored import stored_range
from medload.io.sorting import Layout
from medload.problems import Problem, ProblemKind

__all__ = ["frames_axis", "diffusion_table", "dicom_meta"]


def frames_axis(
    array: np.ndarray, h: FileHeader, frames: list[Frame], layout: Layout, label: str, problems: list[Problem]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The leading axis made time, colour channels, or none; with the diffusion table."""
    meta_extra: dict[str, Any] = {}
    if array.shape[0] > 1 and all(np.array_equal(array[0], array[t]) for t in range(1, array.shape[0])):
        if h.samples > 1:
            # A colour Volume has no frames axis (scan reports (3, Z, Y, X) for it): keep one.
            problems.append(
                Problem(
                    ProblemKind.IDENTICAL_FRAMES_DROPPED,
                    f"{array.shape[0] - 1} identical copies of every slice were dropped (same pixels at the same position).",
                )
            )
            array = array[:1]
        else:
            # Kept, as dcm2niix keeps them, so that load gives the shape scan reported (scan
            # reads no pixels and cannot know); said so, for whoever wants one: vol.array[0].
            problems.append(
                Problem(
                    ProblemKind.IDENTICAL_FRAMES_KEPT,
                    f"the {array.shape[0]} frames at every slice position are identical pixel for pixel "
                    "(copies of one acquisition with new UIDs); all kept as frames, as dcm2niix does.",
                )
            )
    diffusion = diffusion_table([frames[row[0]] for row in layout.grid])
    if diffusion:
        meta_extra["diffusion"] = diffusion
        derived = [t for t, (b, g) in enumerate(zip(diffusion["bvals"], diffusion["gradients_lps"])) if b > 0 and not any(g)]
        if derived:
            problems.append(
                Problem(
                    ProblemKind.DIFFUSION_DERIVED_FRAMES,
                    f"frame(s) {derived} are diffusion-weighted (b > 0) without a gradient direction: derived "
                    "isotropic/trace (or ADC) images, kept as frames; dcm2niix leaves them out of the DWI "
                    "volume. Drop them before fitting a tensor.",
                )
            )
    if h.samples > 1:
        if array.shape[0] > 1:
            # The leading axis holds the colour channels: a colour time series has no place
            # in a Volume, and keeping only the first time point would be a silently wrong volume.
            raise UnsupportedError(
                f"{label}: {array.shape[0]} different colour images at each slice position (time "
                "points or acquisitions); medload reads one colour image per position. Load the "
                "files of one time point (or acquisition) on their own."
            )
        array = np.moveaxis(array[0], -1, 0)  # (Z, Y, X, 3) -> (3, Z, Y, X)
        meta_extra["channels"] = ["R", "G", "B"]
    elif array.shape[0] > 1:
        meta_extra["frames_axis"] = "time"
    else:
        array = array[0]
    return np.ascontiguousarray(array), meta_extra


def diffusion_table(first_of_each_frame: list[Frame]) -> dict[str, Any] | None:
    """b-values and LPS gradient directions per frame, in the volume's frame order (or None).

    Every position holds the same encodings in the same order (``sorting`` checked), so the
    frames at the first position say it for all.
    """
    encodings = [f.diffusion for f in first_of_each_frame]
    if all(e is None or e[0] <= 0 for e in encodings):
        return None  # no diffusion weighting (some scanners write b=0 on every image)
    table = [e if e is not None else (0.0, 0.0, 0.0, 0.0) for e in encodings]
    return {
        "bvals": [round(float(e[0]), 4) for e in table],
        "gradients_lps": [[round(float(v), 6) for v in e[1:]] for e in table],
    }


def dicom_meta(
    series: Series,
    heads: list[FileHeader],
    frames: list[Frame],
    layout: Layout,
    modality_out: str,
    meta_extra: dict[str, Any],
    problems: list[Problem],
) -> dict[str, Any]:
    """The Volume's meta: the series' keys, what a voxel means, the header parameters, the problems."""
    h = heads[0]
    slopes = {(f.slope, f.intercept) for f in frames}
    rescaled = slopes != {(1.0, 0.0)}
    meta: dict[str, Any] = {
        **series.volume_meta(),
        "intensity": _intensity(h, modality_out, rescaled),
        "modality_tag": h.modality,
        "n_files": len(heads),
        "transfer_syntax": h.transfer_syntax,
        **h.params,
        **meta_extra,
        "problems": problems,
    }
    if h.photometric == "MONOCHROME1":
        # A fact, not a sentence: RadiographWindow reads this flag (a message can be reworded,
        # or have a description hidden inside it by de-identification).
        meta["monochrome1_mirrored"] = True
        # The stored range in output units, so a header window (given for the un-mirrored
        # values) can be mirrored the same way: center' = lo + hi - center.
        signed_lo, signed_hi = stored_range(max(hh.bits_stored for hh in heads), h.signed)  # as _invert mirrored
        slope, intercept = frames[0].slope, frames[0].intercept
        meta["stored_range"] = sorted([signed_lo * slope + intercept, signed_hi * slope + intercept])
    meta.update(diffusion_facts(heads))
    if h.mosaic_tiles:
        meta["mosaic_tiles"] = h.mosaic_tiles
    if layout.tilt_deg:
        meta["gantry_tilt_deg"] = round(layout.tilt_deg, 3)
    return meta


def _intensity(h: FileHeader, modality: str, rescaled: bool) -> str:
    """What a voxel value means, in words (the store's ``intensity`` attribute)."""
    if h.intensity:  # the object says: RT Dose, Modality LUT
        return h.intensity
    if modality == "CT" and (rescaled or h.signed):
        return "HU"
    if h.params.get("philips_precise_scaling"):
        return "scanner units (Philips precise values: stored / private ScaleSlope, as dcm2niix)"
    return "scanner units"
