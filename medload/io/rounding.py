"""Slice positions written with few decimals: which uneven-looking steps are only rounding.

DS is a decimal string of at most 16 characters; scanners and anonymizers write
ImagePositionPatient with 0 to 6 decimals. A 0.075 mm step written with 2 decimals reads 0.07,
0.08, 0.07 mm. Each written position stands for any position within half a unit of its last
decimal (:func:`medload.io.frame.rounding_of_text`); a stack is even when one even grid lies
within that rounding of every written position. dcm2niix instead accepts any step within
0.2 mm of the first (``kSliceTolerance`` in nii_dicom_batch.cpp) and stacks at that first step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coarser_than_step", "fits_even_grid", "grid_within_rounding"]


def grid_within_rounding(distances: np.ndarray, median: float, rounding: float) -> tuple[float, list[tuple[int, int]]] | None:
    """The even grid that the written positions are the rounding of: (step, gaps), or None.

    Each written position lies within ``rounding`` (mm along the normal) of the scanner's. The
    slices are numbered on the line through the first and last written positions (a whole
    number of steps; a missing slice skips a number), and the stack is even when one grid
    ``origin + number * step`` lies within ``rounding`` of every written position
    (:func:`fits_even_grid`, exact). The step is then the first-to-last distance over the
    steps. None when no such grid exists (not rounding: the usual checks decide), and where the
    rounding is too coarse to number the slices (``4 * rounding`` over the median step: the
    positions cannot say whether a slice is missing).

    Examples
    --------
    >>> import numpy as np
    >>> d = np.round(np.arange(6) * 0.075, 2)     # 0.075 mm steps written with 2 decimals
    >>> d, grid_within_rounding(d, 0.075, 0.005)
    (array([0.  , 0.08, 0.15, 0.22, 0.3 , 0.38]), (0.076, []))
    >>> grid_within_rounding(np.delete(d, 3), 0.075, 0.005)    # one slice missing: a gap after slice 2
    (0.076, [(2, 1)])
    >>> print(grid_within_rounding(np.array([0.0, 2.0, 4.0, 7.0]), 2.0, 0.005))    # really uneven
    None
    >>> print(grid_within_rounding(np.array([0.0, 0.05, 0.12, 0.17, 0.22]), 0.055, 0.005))   # 2-decimal, yet no grid
    None
    """
    bound = 2.0 * rounding
    steps = np.diff(distances)
    single = steps[np.abs(steps - median) <= 2.0 * bound]
    if 2.0 * bound >= median or single.size == 0:
        return None
    span = float(distances[-1] - distances[0])
    n_steps = int(round(span / float(single.mean())))
    if n_steps < len(distances) - 1:
        return None
    step = span / n_steps
    index = np.round((distances - distances[0]) / step)
    jumps = np.diff(index).astype(int)
    if (jumps < 1).any() or not fits_even_grid(distances, index, rounding):
        return None
    return step, [(k, int(j) - 1) for k, j in enumerate(jumps) if j > 1]


def fits_even_grid(distances: np.ndarray, index: np.ndarray, rounding: float) -> bool:
    """Whether some ``origin + index * step`` lies within ``rounding`` of every distance.

    Eliminating the origin leaves, for every pair ``k < l``, ``|d_l - d_k - (i_l - i_k) step|
    <= 2 rounding``: an interval of steps per pair, and a grid exists exactly when they
    intersect. One pass per slice keeps memory linear (5000 slices: ~0.1 s).

    Examples
    --------
    >>> import numpy as np
    >>> fits_even_grid(np.array([0.0, 0.08, 0.15, 0.22, 0.3]), np.arange(5.0), 0.005)   # 0.075 mm, 2 decimals
    True
    >>> fits_even_grid(np.array([0.0, 0.05, 0.12, 0.17, 0.22]), np.arange(5.0), 0.005)  # each within 0.01 of 0.055 k
    False
    """
    slack = 2.0 * rounding * (1.0 + 1e-9) + 1e-9  # float error of the distances (nm)
    low, high = -np.inf, np.inf
    for k in range(1, len(distances)):
        apart = index[k] - index[:k]
        low = max(low, float(((distances[k] - distances[:k] - slack) / apart).max()))
        high = min(high, float(((distances[k] - distances[:k] + slack) / apart).min()))
        if low > high:
            return False
    return True


def coarser_than_step(written: np.ndarray, rounding: float) -> bool:
    """Whether neighbouring written positions are at most one unit of their last decimal apart.

    ``written`` holds the distinct written positions (mm along the normal, in order) and
    ``rounding`` how far each may be from the scanner's (half a unit of the last decimal). Where
    the median step between them is one unit (``2 * rounding``) or less, the slices lie closer
    together than the positions can say: two slices 7.5 um apart written with 2 decimals both
    read 30.13, as one position. Steps of two units or more cannot come from rounding slices
    together (their step would be over a unit, so no two round alike).

    Examples
    --------
    >>> import numpy as np
    >>> written = np.unique(np.round(np.arange(20) * 0.0075, 2))    # 7.5 um slices, 2 decimals
    >>> written[:5], coarser_than_step(written, 0.005)
    (array([0.  , 0.01, 0.02, 0.03, 0.04]), True)
    >>> coarser_than_step(np.arange(5) * 3.0, 0.005), coarser_than_step(np.arange(5) * 0.02, 0.005)   # 3 mm, 20 um
    (False, False)
    """
    if len(written) < 2 or rounding <= 0:
        return False
    step = float(np.median(np.diff(written)))
    return step <= 2.0 * rounding * (1.0 + 1e-6) + 1e-9  # float error of the distances (nm)
