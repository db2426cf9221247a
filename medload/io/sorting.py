"""Arrange the 2D images of one volume in space and time, and find what is wrong with them.

Slices are sorted by their position along the slice normal, never by InstanceNumber or file
name. Images at the same position (:mod:`medload.io.positions` says which) are frames of a 4D
volume, in one order at every position (:mod:`medload.io.frameorder`), or copies of one another.
Every geometric problem is measured: duplicate positions, gaps against the median step,
uneven steps, gantry tilt (a step that is not along the normal), mixed pixel spacing.

Positions written with few decimals ("30.11", as some scanners and anonymizers write them)
make even steps read uneven (0.07, 0.08, 0.07 mm for a 0.075 mm step). Where the written
precision of the positions explains every deviation (each position within its rounding of one
even grid), the stack is even, its step the first-to-last distance over the steps; a missing
slice or a step beyond the rounding is still found (:func:`medload.io.rounding.grid_within_rounding`).
Where the written positions are coarser than the step itself (neighbours one unit of the last
decimal apart, and images sharing a written position that only InstanceNumber tells apart),
different slices read as one position: refused (``positions_rounded_together``), never stacked
as frames or compared as copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medload.geometry import positions_along_normal, slice_normal
from medload.io.frame import Frame
from medload.io.frame import frame_names as _names
from medload.io.frameorder import FrameOrder, order_frames
from medload.io.positions import POSITION_TOLERANCE_MM, group_positions, position_tolerance, told_apart
from medload.io.rounding import coarser_than_step, grid_within_rounding
from medload.problems import Problem, ProblemKind

__all__ = ["POSITION_TOLERANCE_MM", "SPACING_KINDS", "Layout", "arrange"]

#: A step may differ from the median step by this fraction before it counts as uneven
#: (scanners write positions rounded to ~1e-3 mm; 1% is far above that and far below a slice).
STEP_TOLERANCE = 0.01
#: Angle between the slice step and the normal above which the stack is tilted (degrees).
TILT_TOLERANCE_DEG = 0.1
#: The errors that are only missing or uneven slices: ``on_gap="interpolate"`` waives these
#: kinds, and only these.
SPACING_KINDS = frozenset({ProblemKind.SLICE_GAP, ProblemKind.UNEVEN_SPACING})


@dataclass
class Layout:
    """Where each image goes: ``grid[t][z]`` is the index (into the input list) of an image."""

    grid: list[list[int]]
    positions: np.ndarray  # (Z, 3) LPS of each slice (frame 0)
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    distances: np.ndarray  # (Z,) along the normal
    problems: list[Problem] = field(default_factory=list)  # documented, not fatal
    errors: list[Problem] = field(default_factory=list)  # the volume would be wrong: refuse
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (slice index before gap, missing count)
    uneven: bool = False
    tilt_deg: float = 0.0
    duplicates: list[list[int]] = field(default_factory=list)  # groups of images at one position to compare
    median_step: float = 0.0
    # positions (mm along the normal) whose frames cannot take the order of the others
    frame_order_conflicts: list[float] = field(default_factory=list)
    frame_order_error: str = ""  # the sentence saying so (also in errors)
    # How far each written position (LPS, per coordinate, mm) may be from the scanner's by the
    # rounding of its DS strings (the largest over the slices); None where not known or not
    # needed (worked out only where steps are off or the stack looks tilted).
    position_rounding: tuple[float, ...] | None = None
    # The steps vary only as far as that rounding explains: the slices lie on one even grid of
    # step median_step along the normal (io/rounding.py); the affine steps along it.
    even_within_rounding: bool = False

    @property
    def spacing_errors(self) -> list[Problem]:
        """The errors that are only missing or uneven slices (kinds :data:`SPACING_KINDS`)."""
        return [e for e in self.errors if e.kind in SPACING_KINDS]

    @property
    def rounding_along_normal(self) -> float:
        """How far a written position may be off along the slice normal by rounding (mm; 0 when unknown)."""
        if self.position_rounding is None or self.orientation is None:
            return 0.0
        return float(np.abs(slice_normal(self.orientation)) @ np.asarray(self.position_rounding))

    @property
    def grid_distances(self) -> np.ndarray:
        """Each slice's distance along the normal (mm): on its even grid point where the stack is
        even within rounding (filling a gap then moves no acquired slice), else as written.

        Examples
        --------
        >>> lay = Layout([[0, 1, 2]], np.zeros((3, 3)), None, None, np.array([0.0, 0.08, 0.22]))
        >>> lay.median_step, lay.even_within_rounding = 0.075, True
        >>> lay.grid_distances
        array([0.   , 0.075, 0.225])
        """
        d = self.distances
        if not self.even_within_rounding or len(d) < 2:
            return d
        return d[0] + np.round((d - d[0]) / self.median_step) * self.median_step

    def slice_step(self, first: np.ndarray, last: np.ndarray, n_z: int) -> np.ndarray:
        """The affine's step from slice to slice (LPS mm), ``first`` and ``last`` slices' positions apart.

        Along the normal where the stack is even within rounding (unless tilted): the written
        positions' sideways differences are rounding, not shear.
        """
        step = (np.asarray(last) - np.asarray(first)) / (n_z - 1)
        if self.even_within_rounding and not self.tilt_deg and self.orientation is not None:
            normal = slice_normal(self.orientation)
            return normal * float(step @ normal)
        return step

    @property
    def shape_zt(self) -> tuple[int, int]:
        return len(self.grid[0]) if self.grid else 0, len(self.grid)


def arrange(frames: list[Frame], *, label: str = "series") -> Layout:
    """Sort ``frames`` (one volume's images) into a ``(T, Z)`` grid and measure its geometry.

    Parameters
    ----------
    frames : list of Frame
        The images of one volume (one split group of :func:`medload.scan`).
    label : str
        Names the series in messages.

    Examples
    --------
    >>> from medload.io.frame import Frame
    >>> fs = [Frame(f"f{z}", -1, -1, (0.0, 0.0, float(z) * 2), (1, 0, 0, 0, 1, 0), (1.0, 1.0), 1.0, 0.0, (0.0,), (), str(z)) for z in (3, 0, 2, 1)]
    >>> lay = arrange(fs)
    >>> [fs[i].file for i in lay.grid[0]], lay.median_step
    (['f0', 'f1', 'f2', 'f3'], 2.0)
    """
    bare = [i for i, f in enumerate(frames) if f.position is None or f.orientation is None]
    if bare:
        return _stack_without_geometry(frames, label, bare)
    problems: list[Problem] = []
    errors: list[Problem] = []
    orients = np.array([f.orientation for f in frames], dtype=float)
    pixel_spacing = _check_plane(frames, orients, label, problems, errors)
    orientation = tuple(float(v) for v in orients[0])
    positions = np.array([f.position for f in frames], dtype=float)
    dist = positions_along_normal(positions, orientation)
    clusters = _cluster(frames, dist, position_tolerance(frames), label, problems, errors)
    order = order_frames(clusters, frames, dist, label)
    together = _rounded_together(frames, clusters, dist, label)
    if together is not None:  # not frames, nor copies: neither an order nor a pixel comparison helps
        order = FrameOrder(n_frames=order.n_frames, errors=[together])
    problems.extend(order.problems)
    errors.extend(order.errors)
    grid = [[c[min(t, len(c) - 1)] for c in clusters] for t in range(order.n_frames)]
    first = [c[0] for c in clusters]
    layout = Layout(
        grid=grid,
        positions=positions[first],
        orientation=orientation,
        pixel_spacing=pixel_spacing,
        distances=dist[first],
        problems=problems,
        errors=errors,
        duplicates=order.duplicates,
        frame_order_conflicts=order.conflicts,
        frame_order_error=order.order_error,
    )
    if len(clusters) < 2:
        return layout
    _measure_steps(layout, frames, first, label)
    _measure_tilt(layout, slice_normal(orientation), label, [frames[first[0]], frames[first[-1]]])
    return layout


def _stack_without_geometry(frames: list[Frame], label: str, bare: list[int]) -> Layout:
    """No geometry (a cine loop, an ultrasound clip, a secondary capture): a stack of 2D
    images in their stored order, unit spacing. Said so; never silently placed in space.

    Where only the ``bare`` frames lack it (an enhanced object whose per-frame plane position
    is empty for some frames), the others' geometry would be dropped: refused."""
    n = len(frames)
    problems: list[Problem] = []
    errors: list[Problem] = []
    if len(bare) < n:
        errors.append(
            Problem(
                ProblemKind.POSITION_INCOMPLETE,
                f"{label}: {len(bare)} of {n} images have no ImagePositionPatient/ImageOrientationPatient "
                f"({_names(frames, bare[:2])}) while the others have; they cannot be placed among them, and "
                "stacking all without geometry would drop the others'. Remove or re-export those files.",
            )
        )
    order = sorted(range(n), key=lambda i: (frames[i].time_key, frames[i].file, frames[i].frame))
    if n > 1 and not errors:
        problems.append(
            Problem(
                ProblemKind.NO_WORLD_GEOMETRY,
                f"{label}: {n} images without ImagePositionPatient/ImageOrientationPatient; stacked in "
                "acquisition order in DICOM's default axial plane, SpacingBetweenSlices (else SliceThickness, else "
                "1 mm) apart (no world geometry).",
            )
        )
    return Layout(
        grid=[order],
        positions=np.zeros((n, 3)),
        orientation=None,
        pixel_spacing=frames[0].pixel_spacing,
        distances=np.arange(n, dtype=float),
        problems=problems,
        errors=errors,
    )


def _check_plane(
    frames: list[Frame], orients: np.ndarray, label: str, problems: list[Problem], errors: list[Problem]
) -> tuple[float, ...] | None:
    """One orientation and one pixel spacing for every image; the volume's pixel spacing."""
    n = len(frames)
    if np.abs(orients - orients[0]).max() > 1e-3:
        bad = np.nonzero(np.abs(orients - orients[0]).max(axis=1) > 1e-3)[0]
        errors.append(
            Problem(
                ProblemKind.ORIENTATION_MIXED,
                f"{label}: image orientation differs between images (e.g. {_names(frames, [0])} vs "
                f"{_names(frames, bad[:2])}); expected one orientation per volume. Re-export the series "
                "or load the files of one orientation.",
            )
        )
    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing is not None]
    if spacings and len(spacings) < n:
        # Some images say their spacing and some do not (a damaged tag): 1 mm would be assumed
        # for the others, silently wrong; refuse.
        bare = [i for i, f in enumerate(frames) if f.pixel_spacing is None]
        errors.append(
            Problem(
                ProblemKind.PIXEL_SPACING_INCOMPLETE,
                f"{label}: {len(bare)} of {n} images have no PixelSpacing ({_names(frames, bare[:2])}) while the "
                f"others have {spacings[0]}; expected one spacing per volume. Remove or re-export those files.",
            )
        )
    elif not spacings:
        problems.append(
            Problem(
                ProblemKind.PIXEL_SPACING_ASSUMED,
                f"{label}: no PixelSpacing (nor ImagerPixelSpacing): an in-plane spacing of 1 mm was assumed, "
                "so in-plane distances are in pixels, not millimetres.",
            )
        )
    if spacings and np.abs(np.array(spacings) - np.array(spacings[0])).max() > 1e-4:
        errors.append(
            Problem(
                ProblemKind.PIXEL_SPACING_MIXED,
                f"{label}: PixelSpacing differs between images ({sorted(set(spacings))[:3]}); expected one "
                "spacing per volume. Load the images of each spacing separately.",
            )
        )
    return frames[0].pixel_spacing


def _position_rounding(frames: list[Frame]) -> tuple[float, ...] | None:
    """The largest rounding of the written positions per coordinate, or None if any is unknown.

    Examples
    --------
    >>> from medload.io.frame import Frame
    >>> def frame(t): return Frame("f", -1, -1, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), None, 1.0, 0.0, (0.0,), (), "1", position_text=t)
    >>> _position_rounding([frame(("1.00", "2.00", "3.00")), frame(("1", "2.00", "3.000"))])
    (0.5, 0.005, 0.005)
    >>> _position_rounding([frame(("1.00", "2.00", "3.00")), frame(None)]) is None
    True
    """
    known = [f.position_rounding for f in frames]
    if not known or any(r is None or len(r) != 3 for r in known):
        return None
    return tuple(float(v) for v in np.max(np.array(known, dtype=float), axis=0))


def _cluster(
    frames: list[Frame], dist: np.ndarray, tolerance: float, label: str, problems: list[Problem], errors: list[Problem]
) -> list[list[int]]:
    """Group the images by slice position (:func:`medload.io.positions.group_positions`), drop
    identical copies, order each group in time."""
    undecided: list[list[int]] = []
    clusters = group_positions(frames, dist, tolerance, undecided)
    for group in undecided:
        errors.append(
            Problem(
                ProblemKind.SLICES_OR_FRAMES,
                f"{label}: slices or frames: {len(group)} images ({_names(frames, group)}) lie within {tolerance:.3g} mm "
                f"of one another along the slice normal, at {dist[group[0]]:.4f} to {dist[group[-1]]:.4f} mm, and only "
                "AcquisitionTime tells them apart: slices that close, or frames of one slice whose written positions "
                "jitter; nothing says which. Re-export them with TemporalPositionIdentifier if they are frames, or "
                "load them one file at a time.",
            )
        )
    # Identical copies (same SOPInstanceUID, e.g. a file exported twice) are dropped at once.
    dropped = 0
    for c in clusters:
        seen: dict[str, int] = {}
        keep = []
        for i in c:
            if frames[i].uid in seen:
                dropped += 1
                continue
            seen[frames[i].uid] = i
            keep.append(i)
        c[:] = keep
    if dropped:
        problems.append(
            Problem(
                ProblemKind.DUPLICATE_IMAGES_DROPPED,
                f"{label}: {dropped} image(s) were copies of another (same SOPInstanceUID) and were dropped.",
            )
        )
    for c in clusters:
        c.sort(key=lambda i: (frames[i].time_key, frames[i].file, frames[i].frame, frames[i].mosaic))
    return clusters


def _rounded_together(frames: list[Frame], clusters: list[list[int]], dist: np.ndarray, label: str) -> Problem | None:
    """The refusal of slices read as one position because their positions are rounded coarser than their step.

    Images that share a written position, with distinct InstanceNumbers and no temporal
    position, trigger time or diffusion encoding telling them apart, next to positions at most
    one unit of the written decimals away (:func:`medload.io.rounding.coarser_than_step`): the
    slices are closer than the positions' precision. Stacked as frames (every position holding
    two) they were a silently wrong 4D volume of half the slices; refused as duplicate
    positions, the message blamed copies. ``None`` where that is not so.
    """
    shared = [c for c in clusters if len(c) > 1]
    if not shared or len(clusters) < 2:
        return None
    for c in shared:
        if told_apart(frames, c) or len({frames[i].time_key[0] for i in c}) < len(c) or frames[c[0]].frame >= 0:
            return None  # frames of a 4D volume, copies to compare, or an enhanced object's frames
    # The finest rounding any image shows: writers drop trailing zeros ("0.0" beside "0.002"),
    # so one coarse-looking text does not make the series coarse.
    known = [f.position_rounding for f in frames]
    orientation = frames[0].orientation
    if any(r is None for r in known) or orientation is None:
        return None
    along = float(np.abs(slice_normal(orientation)) @ np.min(np.array(known, dtype=float), axis=0))
    written = np.array([float(dist[c[0]]) for c in clusters])
    if not coarser_than_step(written, along):
        return None
    return Problem(
        ProblemKind.POSITIONS_ROUNDED_TOGETHER,
        f"{label}: slice positions rounded together: ImagePositionPatient is written with few decimals (up to "
        f"{along:.4g} mm off along the normal by rounding) while neighbouring written positions are "
        f"{float(np.median(np.diff(written))):.4g} mm apart, so the slices lie closer together than their positions "
        f"say and different slices read as one position: {len(shared)} of {len(clusters)} positions hold "
        f"{max(len(c) for c in shared)} images that only InstanceNumber tells apart ({_names(frames, shared[0])}). "
        f"Neither frames nor copies; the {sum(len(c) for c in clusters)} slices cannot be placed. Re-export the series "
        "with ImagePositionPatient at full precision (an anonymizer or converter rounded it), or, if they are frames "
        "of a time series, with TemporalPositionIdentifier.",
    )


def _measure_steps(layout: Layout, frames: list[Frame], first: list[int], label: str) -> None:
    """The median step between slices, and the gaps and uneven steps against it (spacing errors)."""
    steps = np.diff(layout.distances)
    median = float(np.median(steps))
    layout.median_step = median
    # 0.01 mm, but never over a quarter of the step: with a fixed 0.01 mm, 5 um micro-CT steps
    # with one slice missing (one step of 10 um) were an even stack of the wrong spacing. Steps
    # of 0.04 mm and more keep the 0.01 mm (positions written to 2 decimals stay even).
    tol = max(min(POSITION_TOLERANCE_MM, 0.25 * median), STEP_TOLERANCE * median)
    off = np.abs(steps - median) > tol
    if not off.any():
        return
    layout.position_rounding = _position_rounding([frames[i] for i in first])
    rounding = layout.rounding_along_normal
    # Only where rounding explains more than the tolerance does: positions written with full
    # precision are judged exactly as before.
    grid = grid_within_rounding(layout.distances, median, rounding) if 4 * rounding > tol else None
    if grid is not None:
        layout.median_step, layout.gaps = grid
        layout.even_within_rounding = True
        layout.problems.append(
            Problem(
                ProblemKind.POSITIONS_ROUNDED,
                f"{label}: slice positions are written with few decimals (up to {rounding:.4g} mm off along "
                f"the normal by rounding): steps of {steps.min():.4g} to {steps.max():.4g} mm are the rounding of "
                f"one even step of {layout.median_step:.6g} mm (first to last slice over the steps), which the "
                "affine uses.",
            )
        )
        odd: list[str] = []
    else:
        odd = _classify_steps(layout, steps, median, tol)
    _report_spacing(layout, frames, first, label, steps, odd)


def _classify_steps(layout: Layout, steps: np.ndarray, median: float, tol: float) -> list[str]:
    """Gaps (steps near a multiple of the median) into ``layout.gaps``; the other odd steps, as text."""
    off = np.abs(steps - median) > tol
    ratio = steps / median
    multiple = np.abs(ratio - np.round(ratio)) * median <= tol
    odd = []
    for k in np.nonzero(off)[0]:
        if multiple[k] and round(ratio[k]) >= 2:
            layout.gaps.append((int(k), int(round(ratio[k])) - 1))
        else:
            layout.uneven = True
            odd.append(f"{steps[k]:.3f}")
    return odd


def _report_spacing(layout: Layout, frames: list[Frame], first: list[int], label: str, steps: np.ndarray, odd: list[str]) -> None:
    """The spacing errors (missing slices, uneven steps) of the measured layout, as sentences."""
    median = layout.median_step
    if layout.gaps:
        missing = sum(m for _, m in layout.gaps)
        where = "; ".join(
            f"{m} between {_names(frames, [first[k]])} and {_names(frames, [first[k + 1]])}" for k, m in layout.gaps[:3]
        )
        layout.errors.append(
            Problem(
                ProblemKind.SLICE_GAP,
                f"{label}: missing slices: {missing} slice(s) absent against the median step of "
                f"{median:.3f} mm ({where}). Re-export the complete series, or pass "
                "on_gap='interpolate' (medload convert --on-gap interpolate) to fill the gaps linearly from "
                "their neighbours.",
            )
        )
    if layout.uneven:
        layout.errors.append(
            Problem(
                ProblemKind.UNEVEN_SPACING,
                f"{label}: uneven slice spacing: steps of {', '.join(odd[:5])} mm against a median of "
                f"{median:.3f} mm (files {_names(frames, first)}). A single affine cannot describe these "
                "slices; pass on_gap='interpolate' (medload convert --on-gap interpolate) to resample them "
                "linearly onto an even grid, or "
                "load the evenly spaced part.",
            )
        )


def _measure_tilt(layout: Layout, normal: np.ndarray, label: str, ends: list[Frame]) -> None:
    """Gantry tilt: the step from slice to slice (``ends``: the first and last slice) is not along the normal."""
    pos0 = layout.positions
    step_vec = (pos0[-1] - pos0[0]) / (len(pos0) - 1)
    cos = abs(float(step_vec @ normal)) / max(float(np.linalg.norm(step_vec)), 1e-12)
    tilt = float(np.degrees(np.arccos(min(1.0, cos))))
    if tilt <= TILT_TOLERANCE_DEG:
        return
    # Across the normal, the first and last written positions may each be off by their rounding:
    # a sideways step within that is rounding, not tilt (1-decimal oblique positions read 1.5 deg).
    across = float(np.linalg.norm(step_vec - (step_vec @ normal) * normal))
    rounding = _position_rounding(ends)
    if rounding is None or across > 2 * float(np.linalg.norm(rounding)) / (len(pos0) - 1):
        layout.tilt_deg = tilt
        layout.problems.append(
            Problem(
                ProblemKind.GANTRY_TILT,
                f"{label}: gantry tilt of {tilt:.2f} degrees: slices are stacked obliquely to their plane. "
                "The affine keeps the true shear (every voxel is at its scanner position); dcm2niix instead "
                "resamples to an orthogonal grid. Resample before using tools that assume orthogonal axes.",
            )
        )
