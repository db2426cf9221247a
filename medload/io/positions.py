"""Which images of one volume share a slice position (and so are frames of a 4D volume).

Two images closer than the same-position tolerance along the slice normal
(:func:`position_tolerance`: 0.01 mm, or a tenth of the pixel where pixels are smaller) are
candidates for one position. That tolerance absorbs what scanners write differently for one
position (float noise, a float32 round trip, a Philips dynamic 0.1 um off); it must never merge
slices of a stack whose step is finer than it: a micro-CT series of 7.5 um steps written with
3 decimals (0.000, 0.008, 0.015, ...) with 0.5 mm pixels paired consecutive slices as two
"frames" of one position, a silently wrong 4D volume of half the slices.

The rule (:func:`group_positions`): a group of images within the tolerance of one another is
one slice position only where it stands apart from its neighbours, the spread of its own
positions at most a quarter of the distance to the next group on either side (the quarter
that :mod:`medload.io.sorting` also allows a step to be off). Images of one position scatter
by float noise, far under that; slices finer than the tolerance are as far from their
neighbour inside the group as from the next group. A group that does not stand apart is split
into its distinct written positions (:data:`SAME_POSITION_MM` apart at least), each a slice
(where one holds several images, those are its frames). A group without neighbours (every
image within the tolerance) is split unless its images carry frame identifiers (temporal
position, diffusion encoding, trigger time) that tell each one apart: several slices a few
micrometres apart are slices, a single-slice time series with jittered positions is frames.
Where only AcquisitionTime tells its images apart, nothing says which: a CT writes one per
slice, a single-slice dynamic one per frame. Such a group is left undecided (the caller
refuses it), never guessed.

Neither the number of images per position nor InstanceNumber order can tell: the paired
micro-CT slices gave two images at every position, and InstanceNumbers run 1, 2 at the first
position as they do in a 4D series stored frame after frame.
"""

from __future__ import annotations

import numpy as np

from medload.io.frame import Frame

__all__ = ["POSITION_TOLERANCE_MM", "SAME_POSITION_MM", "group_positions", "position_tolerance", "told_apart"]

#: Two images closer than this along the normal share one slice position (see position_tolerance).
POSITION_TOLERANCE_MM = 0.01
#: Written positions closer than this (0.1 um) are one position whatever else: float noise
#: (a float32 round trip of a 500 mm coordinate is 3e-5 mm), far under any slice step.
SAME_POSITION_MM = 1e-4
#: A group is one position only when its spread is at most this fraction of the distance to
#: its neighbouring groups.
APART_FRACTION = 0.25


def position_tolerance(frames: list[Frame]) -> float:
    """Two images closer than this (mm along the normal) may share a position.

    :data:`POSITION_TOLERANCE_MM`, or a tenth of the in-plane pixel where pixels are smaller
    (micro-CT): slices 5 um apart are slices, not frames of one position.

    Examples
    --------
    >>> from medload.io.frame import Frame
    >>> def frame(pixel): return Frame("f", -1, -1, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), pixel, 1.0, 0.0, (0.0,), (), "1")
    >>> position_tolerance([frame((0.3, 0.3))]), position_tolerance([frame((0.005, 0.005))]), position_tolerance([frame(None)])
    (0.01, 0.0005, 0.01)
    """
    pixel = min((min(f.pixel_spacing) for f in frames if f.pixel_spacing and min(f.pixel_spacing) > 0), default=None)
    return POSITION_TOLERANCE_MM if pixel is None else min(POSITION_TOLERANCE_MM, 0.1 * pixel)


def _chain(order: np.ndarray, dist: np.ndarray, tolerance: float) -> list[list[int]]:
    """``order`` (indices sorted by ``dist``) cut wherever the next image is over ``tolerance``
    from the group's first image."""
    groups: list[list[int]] = []
    for i in order:
        if groups and abs(dist[i] - dist[groups[-1][0]]) <= tolerance:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return groups


def told_apart(frames: list[Frame], group: list[int]) -> bool:
    """Whether frame identifiers (temporal position, diffusion encoding, trigger time) give each
    image of ``group`` an identity of its own."""
    ids = [(frames[i].volume_id, frames[i].trigger) for i in group]
    informative = any(v is not None for volume_id, trigger in ids for v in (*volume_id, trigger))
    return informative and len(set(ids)) == len(ids)


def _told_apart_by_time(frames: list[Frame], group: list[int]) -> bool:
    times = [frames[i].acquisition_time for i in group]
    return all(t is not None for t in times) and len(set(times)) == len(times)


def group_positions(
    frames: list[Frame], dist: np.ndarray, tolerance: float, undecided: list[list[int]] | None = None
) -> list[list[int]]:
    """The images (indices into ``frames``) of each slice position, positions in order along the normal.

    ``dist`` is each image's distance along the slice normal (mm); ``tolerance`` the largest
    distance between images of one position (:func:`position_tolerance`). See the module's
    docstring for when a group within the tolerance is still several slices. A group that
    may be either (only AcquisitionTime tells its images apart) is split, and appended to
    ``undecided`` for the caller to refuse.

    Examples
    --------
    >>> from medload.io.frame import Frame
    >>> fs = [Frame("f", -1, -1, None, None, (0.5, 0.5), 1.0, 0.0, (), (), str(k)) for k in range(6)]
    >>> group_positions(fs, np.array([0.0, 0.0, 3.0, 3.00001, 6.0, 6.0]), 0.01)       # 3 mm apart, 2 frames each
    [[0, 1], [2, 3], [4, 5]]
    >>> group_positions(fs, np.array([0.0, 0.008, 0.015, 0.023, 0.03, 0.038]), 0.01)  # 7.5 um steps, 3 decimals
    [[0], [1], [2], [3], [4], [5]]
    """
    groups = _chain(np.argsort(dist, kind="stable"), dist, tolerance)
    fine = min(SAME_POSITION_MM, tolerance)
    out: list[list[int]] = []
    for k, group in enumerate(groups):
        spread = float(dist[group[-1]] - dist[group[0]])
        if spread <= fine:
            out.append(group)
            continue
        apart = [float(dist[groups[j][0]] - dist[groups[j - 1][-1]]) for j in (k, k + 1) if 0 < j < len(groups)]
        if apart and spread <= APART_FRACTION * min(apart):
            out.append(group)
        elif not apart and told_apart(frames, group):
            out.append(group)
        else:
            if not apart and undecided is not None and _told_apart_by_time(frames, group):
                undecided.append(group)
            out.extend(_chain(np.array(group), dist, fine))
    return out
