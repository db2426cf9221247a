"""Identical copies at one slice position: a file exported twice under new UIDs.

Headers alone cannot tell a copy from another acquisition at the same position
(:func:`medload.io.sorting.arrange` reports both as duplicate positions); the pixels can.
"""

from __future__ import annotations

import numpy as np

from medload.io.codecs import decode
from medload.io.frame import Frame
from medload.io.sorting import Layout
from medload.problems import Problem, ProblemKind

__all__ = ["drop_identical"]


def drop_identical(frames: list[Frame], layout: Layout) -> tuple[list[Frame], Problem | None]:
    """``frames`` without the images that repeat another at the same position pixel for pixel,
    and the problem saying which were dropped (``None`` when none was).

    ``layout.duplicates`` (from :func:`medload.io.sorting.arrange`) lists the groups of images at
    one position; each candidate is decoded (a multi-frame file once) and compared byte for byte.
    """
    import pydicom

    drop: set[int] = set()
    multiframe: dict[str, np.ndarray] = {}  # a multi-frame file holds several candidates: decode it once
    for cluster in layout.duplicates:
        kept: list[tuple[int, bytes]] = []
        for i in cluster:
            f = frames[i]
            if f.file in multiframe:
                px = multiframe[f.file]
            else:
                ds = pydicom.dcmread(f.file, force=True)
                px = decode(ds, f.file)
                if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                    multiframe[f.file] = px
                else:
                    px = px[np.newaxis]  # one frame (also an enhanced file of one): frame 0 is the image
            if f.frame >= 0:
                px = px[f.frame]
            else:
                px = px[0]
            digest = np.ascontiguousarray(px).tobytes()
            if any(digest == d for _, d in kept):
                drop.add(i)
            else:
                kept.append((i, digest))
    if not drop:
        return frames, None
    names = sorted({frames[i].file for i in drop})
    note = Problem(
        ProblemKind.IDENTICAL_IMAGES_DROPPED,
        f"{len(drop)} image(s) identical to another at the same position were dropped: "
        f"{', '.join(names[:4])}{' ...' if len(names) > 4 else ''}.",
    )
    return [f for i, f in enumerate(frames) if i not in drop], note
