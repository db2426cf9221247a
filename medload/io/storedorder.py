"""Whether the order that alone orders a 4D series' frames is an acquisition order at all.

Where no identifier (temporal position, diffusion encoding, trigger time, acquisition time)
tells the frames of a slice position apart, InstanceNumber orders them (a multi-frame
object's stored order, where its DimensionIndexValues do not differ between them), as dcm2niix
orders them. Nothing can check that order frame by frame, but an export writes its images in
blocks: volume after volume (every frame ``t`` before every frame ``t + 1``) or slice after
slice (the frames of one position one after another). Numbers shuffled between positions
(an anonymizer renumbering, a merge of exports) form neither, and the frames they would stack
mix acquisitions between slices; dcm2niix then warns "Check sorted order" and stacks them
anyway.
"""

from __future__ import annotations

__all__ = ["in_blocks"]


def in_blocks(ranks: list[list[int]]) -> bool:
    """Whether each position's frames, by their rank in the series' order, form blocks.

    ``ranks[z][t]`` is the rank (0 to N-1, each once) of frame ``t`` at position ``z``, each
    position's ranks increasing. True when the frames come volume after volume (the largest
    rank of frame ``t`` under the smallest of frame ``t + 1``, whatever the slice order within
    a volume) or slice after slice (every position's ranks consecutive).

    Examples
    --------
    >>> in_blocks([[0, 3], [1, 4], [2, 5]]), in_blocks([[0, 1], [2, 3], [4, 5]])   # volume-wise, slice-wise
    (True, True)
    >>> in_blocks([[2, 3], [0, 5], [1, 4]])   # an interleaved slice order within each volume
    True
    >>> in_blocks([[0, 4], [1, 2], [3, 5]])   # shuffled
    False
    """
    n_frames = len(ranks[0]) if ranks else 0
    volume_wise = all(max(r[t] for r in ranks) < min(r[t + 1] for r in ranks) for t in range(n_frames - 1))
    slice_wise = all(r[-1] - r[0] == n_frames - 1 for r in ranks)
    return volume_wise or slice_wise
