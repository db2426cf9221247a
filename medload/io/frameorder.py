"""The order of the frames at every slice position of a 4D series, or why there is none.

Frame ``t`` must be the same acquisition at every slice position. Each position's images come
sorted as dcm2niix sorts them: InstanceNumber, then AcquisitionTime (DimensionIndexValues for
an enhanced object). That order is kept where it is the same at every position. It is not
where InstanceNumbers are shuffled between positions, or restart with every frame (then equal
at one position, and only file names, which mean nothing, ordered the frames). There the
frames are ordered by the first identifier that every image has and that tells the frames of
each position apart (:data:`ORDER_KEYS`): the temporal position (TemporalPositionIdentifier,
TemporalPositionIndex), TriggerTime (its rank: trigger times drift between slices), then
AcquisitionTime. A diffusion series says which frame is which by its encodings (b-value,
gradient) rather than when: every position takes the encodings' order of most positions.

Several frames of one encoding (two b=0 frames of a DTI) look alike: their encodings do not
say which is which, and where InstanceNumbers put the encodings in other orders at other
positions, InstanceNumber is shown not to be acquisition order, so it cannot either. They follow
an identifier of :data:`ORDER_KEYS` that puts the encodings in the same order at every position,
else the series is refused.

Where no identifier tells the frames apart, InstanceNumber (a multi-frame object's stored
order) alone orders them; it is kept where it runs in blocks, volume after volume or slice after
slice (:mod:`medload.io.storedorder`), and refused where it is shuffled between positions. Frames
without a temporal position beside frames with one are refused where InstanceNumbers order the
temporal positions differently between positions: nothing places them in time.

Refused, never stacked: images of one position that nothing but their file names orders
(equal InstanceNumber and AcquisitionTime, no identifier; identical copies are dropped at load
first, and counted once in the grid, so that scan reports the shape load returns), frames of
one encoding that nothing orders (above), positions holding frames found at no other position,
and positions holding fewer frames than the others (a missing frame would shift every later one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medload.io.frame import Frame, frame_names
from medload.io.storedorder import in_blocks
from medload.problems import Problem, ProblemKind

__all__ = ["ORDER_KEYS", "FrameOrder", "order_frames"]


def _temporal(frame: Frame) -> Any:
    value = frame.volume_id[0] if frame.volume_id else None
    return value if isinstance(value, (int, float)) else None


#: What orders frames where InstanceNumber does not, in order of preference: (name, value of a frame).
ORDER_KEYS: tuple[tuple[str, Callable[[Frame], Any]], ...] = (
    ("temporal position (TemporalPositionIdentifier/TemporalPositionIndex)", _temporal),
    ("TriggerTime", lambda f: f.trigger),
    ("AcquisitionTime", lambda f: f.acquisition_time),
)


@dataclass
class FrameOrder:
    """What :func:`order_frames` found: frames per position, problems, errors, groups to compare."""

    n_frames: int
    problems: list[Problem] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    duplicates: list[list[int]] = field(default_factory=list)  # images to compare pixel for pixel
    conflicts: list[float] = field(default_factory=list)  # positions (mm) without the common frame order
    order_error: str = ""  # the sentence saying so


def _where(dist: np.ndarray, clusters: list[list[int]], shown: list[float]) -> str:
    more = " ..." if len(shown) > 5 else ""
    return f"at {len(shown)} of {len(clusters)} slice positions ({', '.join(f'{d:.2f}' for d in shown[:5])}{more} mm)"


def order_frames(clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str) -> FrameOrder:
    """Put the images of every position (``clusters``, indices into ``frames``) in one frame order, in place.

    ``dist`` is each image's distance along the normal (mm), ``label`` names the series.

    Examples
    --------
    >>> def image(z, t, instance): return Frame(f"f{z}{t}", -1, -1, None, None, None, 1.0, 0.0, (instance, 0.0), (), f"{z}{t}", volume_id=(t + 1, None, None))
    >>> fs = [image(0, 0, 1), image(0, 1, 2), image(1, 0, 9), image(1, 1, 3)]   # shuffled InstanceNumbers
    >>> clusters = [[0, 1], [3, 2]]
    >>> found = order_frames(clusters, fs, np.array([0.0, 0.0, 3.0, 3.0]), "s")
    >>> clusters, found.n_frames, [p.kind.value for p in found.problems]
    ([[0, 1], [2, 3]], 2, ['frames_reordered'])
    """
    counts = [len(c) for c in clusters]
    found = FrameOrder(n_frames=min(counts))
    if max(counts) != min(counts):
        _uneven(clusters, frames, dist, label, found)
        return found
    if found.n_frames < 2:
        return found
    keyed = _order_by_identifier(clusters, frames, dist, label, found)
    if not keyed:
        unordered = _contradicted(clusters, frames, dist, label) or _partly_timed(clusters, frames, dist, label)
        if unordered is not None:
            found.conflicts, found.order_error = unordered
            found.errors.append(Problem(ProblemKind.FRAMES_UNORDERED, found.order_error))
            return found
    # Positions whose InstanceNumbers put the encodings in other orders: InstanceNumber is not
    # acquisition order, so it cannot say which of two frames of one encoding (two b=0) is which.
    repeats = _repeated(clusters, frames) if len({tuple(frames[i].volume_id for i in c) for c in clusters}) > 1 else []
    keyed = keyed or (bool(repeats) and _order_repeats(clusters, frames, dist, label, found, repeats[0]))
    reordered: list[Problem] = []
    found.conflicts, found.order_error = _one_frame_order(clusters, frames, dist, label, reordered)
    if found.order_error:
        found.problems.extend(reordered)
        found.errors.append(Problem(ProblemKind.FRAME_ORDER_CONFLICT, found.order_error))
        return found
    if repeats and not keyed:
        _refuse_repeats(clusters, frames, dist, label, found, repeats[0])
        return found
    found.problems.extend(reordered)
    if not _refuse_ties(clusters, frames, dist, label, found) and not keyed:
        _refuse_shuffled(clusters, frames, dist, label, found)
    return found


def _refuse_ties(clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str, found: FrameOrder) -> bool:
    """Images that nothing but their file names orders: copies to compare at load, else refused (True if any)."""
    ties = _ties(clusters, frames)
    if not ties:
        return False
    found.duplicates = ties
    found.n_frames = _count_ties_once(clusters, ties)
    at = sorted({float(dist[g[0]]) for g in ties})
    found.conflicts = at
    found.order_error = (
        f"{label}: frames without an order: {_where(dist, clusters, at)[3:]} hold images that nothing but their file "
        f"names orders ({frame_names(frames, ties[0])}: the same InstanceNumber and AcquisitionTime, no temporal "
        "position, TriggerTime or diffusion encoding), so which frame each belongs to is unknown. Identical copies "
        "are dropped at load (the shape counts them once); otherwise give the files InstanceNumbers or "
        "TemporalPositionIdentifiers in acquisition order, or load each acquisition separately."
    )
    found.errors.append(Problem(ProblemKind.FRAMES_UNORDERED, found.order_error))
    return True


def _fallback_ranks(clusters: list[list[int]], frames: list[Frame]) -> list[list[int]] | None:
    """Each position's frames' ranks in the order that alone orders them (:mod:`medload.io.storedorder`):
    InstanceNumber (then AcquisitionTime, file); a multi-frame object's frames by InstanceNumber and
    stored order. None where frame identifiers or DimensionIndexValues differing within a position order them.
    """
    members = [i for c in clusters for i in c]
    if any(v is not None for i in members for v in (*frames[i].volume_id, frames[i].trigger)):
        return None
    if any(frames[i].frame >= 0 for i in members):
        if any(len({frames[i].time_key[1:-1] for i in c}) > 1 for c in clusters):
            return None  # DimensionIndexValues order them, as dcm2niix
        key: Callable[[int], Any] = lambda i: (frames[i].time_key[0], frames[i].file, frames[i].frame)  # noqa: E731
    else:
        key = lambda i: (frames[i].time_key, frames[i].file, frames[i].mosaic)  # noqa: E731
    rank = {i: r for r, i in enumerate(sorted(members, key=key))}
    return [sorted(rank[i] for i in c) for c in clusters]


def _dimensions_disagree(clusters: list[list[int]], frames: list[Frame]) -> bool:
    """Whether a DimensionIndexValues item that sorts the frames of a position holds other values
    at other positions: then it is not a frame identifier (an in-stack position number changing
    from frame to frame of one slice position), and it cannot order the frames. Items are taken
    in the order they sort; one that tells every frame apart alike at every position decides.

    Examples
    --------
    >>> def frame(dims): return Frame("f", 0, -1, None, None, None, 1.0, 0.0, (1, *dims, 0), (), "u")
    >>> ok = [frame((1, 1)), frame((1, 2)), frame((2, 1)), frame((2, 2))]     # (in-stack, temporal)
    >>> bad = [frame((1, 1)), frame((2, 2)), frame((2, 1)), frame((3, 2))]    # in-stack changing within a position
    >>> _dimensions_disagree([[0, 1], [2, 3]], ok), _dimensions_disagree([[0, 1], [2, 3]], bad)
    (False, True)
    """
    dims = [[frames[i].time_key[1:-1] for i in c] for c in clusters]
    if any(frames[i].frame < 0 for c in clusters for i in c) or any(len(d) != len(dims[0][0]) for row in dims for d in row):
        return False
    for k in range(len(dims[0][0])):  # in the order they sort the frames
        values = [Counter(d[k] for d in row) for row in dims]
        if all(len(v) == 1 for v in values):
            continue  # the same for every frame of a position: orders nothing here
        if any(v != values[0] for v in values):
            return True
        if all(max(v.values()) == 1 for v in values):
            return False  # tells every frame apart, alike at every position: later items order nothing
    return False


def _refuse_shuffled(clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str, found: FrameOrder) -> None:
    """Frames that only InstanceNumber (or a multi-frame object's stored order) orders, shuffled between positions: refused."""
    members = [i for c in clusters for i in c]
    identified = any(v is not None for i in members for v in (*frames[i].volume_id, frames[i].trigger))
    ranks = _fallback_ranks(clusters, frames)
    multi = frames[clusters[0][0]].frame >= 0
    if not identified and multi and ranks is None and _dimensions_disagree(clusters, frames):
        what = "DimensionIndexValues that change between the frames of a position and hold other values at other positions"
    elif ranks is None or in_blocks(ranks):
        return
    else:
        what = "their stored order in the multi-frame object" if multi else "InstanceNumber"
    found.conflicts = [float(dist[c[0]]) for c in clusters]
    found.order_error = (
        f"{label}: frames without an order: nothing but {what} orders the frames at each slice position (no "
        "temporal position, TriggerTime, AcquisitionTime or diffusion encoding), and it does not run volume after "
        f"volume nor slice after slice alike at every position ({frame_names(frames, clusters[0][:2])} ...), so "
        "stacking by it would mix acquisitions between slices. Re-export the series with InstanceNumbers in "
        "acquisition order, or with TemporalPositionIdentifier (TemporalPositionIndex) in every image."
    )
    found.errors.append(Problem(ProblemKind.FRAMES_UNORDERED, found.order_error))


def _partly_timed(clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str) -> tuple[list[float], str] | None:
    """Frames of which some have a temporal position and some not, where InstanceNumbers order the
    frames differently between positions: nothing places those frames in time (None if not so)."""
    timed = [[_temporal(frames[i]) is not None for i in c] for c in clusters]
    if all(all(t) for t in timed) or not any(any(t) for t in timed):
        return None
    runs = [[_temporal(frames[i]) for i in c if _temporal(frames[i]) is not None] for c in clusters]
    longest = max(runs, key=len)
    if all(_subsequence(run, longest) for run in runs):
        return None  # InstanceNumber orders the temporal positions alike at every position: kept, as dcm2niix keeps it
    bad = [c for c, t in zip(clusters, timed) if not all(t)]
    at = [float(dist[c[0]]) for c in bad]
    untimed = [i for i in bad[0] if _temporal(frames[i]) is None]
    return at, (
        f"{label}: frames without an order: {len(untimed)} frame(s) have no temporal position "
        f"(TemporalPositionIdentifier/TemporalPositionIndex) {_where(dist, clusters, at)} ({frame_names(frames, untimed[:2])}) "
        "while the others have one, and InstanceNumbers order the frames differently between positions, so nothing "
        "places those frames in time. Give every image its temporal position, or re-export the series with "
        "InstanceNumbers in acquisition order."
    )


def _subsequence(run: list[Any], longest: list[Any]) -> bool:
    """Whether ``run`` holds values of ``longest`` in the same order."""
    remaining = iter(longest)
    return all(any(v == w for w in remaining) for v in run)


def _repeated(clusters: list[list[int]], frames: list[Frame]) -> list[tuple[Any, ...]]:
    """The frame identifiers (encodings) held by several frames of the first position."""
    return [v for v, n in Counter(frames[i].volume_id for i in clusters[0]).items() if n > 1 and any(x is not None for x in v)]


def _order_repeats(
    clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str, found: FrameOrder, repeated: tuple[Any, ...]
) -> bool:
    """Order every position by an identifier that orders the encodings alike at every position.

    Called where InstanceNumbers put the encodings in different orders at different positions
    and some encoding is held by several frames (two b=0 frames of a DTI; one temporal position
    in each of two acquisitions): the encodings would
    give every position one sequence (:func:`_one_frame_order`), but the frames of one encoding
    would stay in InstanceNumber order, shown not to be acquisition order: swapped between
    slices. The first of :data:`ORDER_KEYS` that every image has, distinct within each
    position, and that puts the encodings in the same order at every position orders them.
    False when none does.
    """
    for name, value in ORDER_KEYS:
        rows = [[value(frames[i]) for i in c] for c in clusters]
        if any(None in row or len(set(row)) < len(row) for row in rows):
            continue
        ordered = [sorted(c, key=lambda i: value(frames[i])) for c in clusters]
        if len({tuple(frames[i].volume_id for i in c) for c in ordered}) > 1:
            continue  # it orders the encodings differently between positions: not acquisition order either
        moved = [float(dist[c[0]]) for c, o in zip(clusters, ordered) if c != o]
        for c, o in zip(clusters, ordered):
            c[:] = o
        found.problems.append(
            Problem(
                ProblemKind.FRAMES_REORDERED,
                f"{label}: InstanceNumbers order the frames' identifiers (temporal position, diffusion encoding) "
                f"differently between positions, so they do not say which of the frames with one identifier "
                f"({_identity(repeated)}) is which; the frames at every position were put in the order of their {name}, "
                f"which orders the identifiers alike at every position (which changed the order "
                f"{_where(dist, clusters, moved)}).",
            )
        )
        return True
    return False


def _refuse_repeats(
    clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str, found: FrameOrder, repeated: tuple[Any, ...]
) -> None:
    """Frames of one encoding that nothing orders where InstanceNumber is shown not to: refused."""
    found.conflicts = [float(dist[c[0]]) for c in clusters]
    n_same = Counter(frames[i].volume_id for i in clusters[0])[repeated]
    found.order_error = (
        f"{label}: frames without an order: InstanceNumbers order the frames' identifiers (temporal position, "
        f"diffusion encoding) differently between positions, so they are not in acquisition order, and {n_same} "
        f"frames at every position share one identifier ({_identity(repeated)}; "
        f"{frame_names(frames, clusters[0][:2])} ...): nothing tells which of them is which "
        "(no temporal position, TriggerTime or AcquisitionTime that orders the frames alike at every position), so "
        "stacking them could swap those frames between slices. Re-export the series with InstanceNumbers in "
        "acquisition order, or with AcquisitionTime or TemporalPositionIdentifier in every image."
    )
    found.errors.append(Problem(ProblemKind.FRAMES_UNORDERED, found.order_error))


def _ties(clusters: list[list[int]], frames: list[Frame]) -> list[list[int]]:
    """Groups of single-frame images at one position that nothing but their file names tells apart.

    Frames of multi-frame files and mosaic tiles are left out: one such file is one volume, so
    its file is what keeps its frames together at every position.
    """
    groups: list[list[int]] = []
    for c in clusters:
        by_key: dict[Any, list[int]] = {}
        for i in c:
            f = frames[i]
            if f.frame < 0 and f.mosaic < 0:
                by_key.setdefault((f.time_key, f.volume_id, f.trigger), []).append(i)
        groups.extend(g for g in by_key.values() if len(g) > 1)
    return groups


def _count_ties_once(clusters: list[list[int]], ties: list[list[int]]) -> int:
    """Move the images that tie with an earlier one to the end of their position; the frames
    per position counting each tie once (the grid takes that many from every position).

    Tied images are copies or a refusal: load compares their pixels and drops identical ones,
    so the shape scan reports from this grid is the shape load returns (or load refuses).
    """
    extra = {i for group in ties for i in group[1:]}
    for c in clusters:
        c[:] = [i for i in c if i not in extra] + [i for i in c if i in extra]
    return min(sum(i not in extra for i in c) for c in clusters)


def _order_key(clusters: list[list[int]], frames: list[Frame]) -> tuple[str, Callable[[Frame], Any]] | None:
    """The first of :data:`ORDER_KEYS` that every image has and that differs within every position.

    Where diffusion encodings (or Philips gradient numbers) say which frame is which, only the
    temporal position may order them: TriggerTime and AcquisitionTime do not override them.
    """
    encoded = any(v is not None for c in clusters for i in c for v in frames[i].volume_id[1:])
    for k, (name, value) in enumerate(ORDER_KEYS):
        if k > 0 and encoded:
            break
        rows = [[value(frames[i]) for i in c] for c in clusters]
        if all(v is not None for row in rows for v in row) and all(len(set(row)) == len(row) for row in rows):
            return name, value
    return None


def _order_by_identifier(clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str, found: FrameOrder) -> bool:
    """Order every position by the identifier of :func:`_order_key`, where InstanceNumber order
    is not the same at every position (or ties); said in ``found.problems``. False without one."""
    key = _order_key(clusters, frames)
    if key is None:
        return False
    name, value = key
    patterns = {tuple(np.argsort([value(frames[i]) for i in c], kind="stable")) for c in clusters}
    tied = any(len({frames[i].time_key for i in c}) < len(c) for c in clusters)
    if len(patterns) == 1 and not tied:
        return True  # InstanceNumber orders every position alike: kept, as dcm2niix keeps it
    moved = []
    for c in clusters:
        ordered = sorted(c, key=lambda i: value(frames[i]))
        if ordered != c:
            c[:] = ordered
            moved.append(float(dist[c[0]]))
    if moved:
        found.problems.append(
            Problem(
                ProblemKind.FRAMES_REORDERED,
                f"{label}: InstanceNumber/AcquisitionTime {'tie at some positions' if tied else 'order the frames differently between positions'}; "
                f"the frames at every position were put in the order of their {name} (which changed the order "
                f"{_where(dist, clusters, moved)}).",
            )
        )
    return True


def _contradicted(clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str) -> tuple[list[float], str] | None:
    """Positions that nothing orders where InstanceNumber is shown not to: an identifier of
    :data:`ORDER_KEYS` orders the frames of some positions, InstanceNumber ranks them otherwise
    between those positions, and at the others the identifier is missing or ties (None if not so).
    """
    encoded = any(v is not None for c in clusters for i in c for v in frames[i].volume_id[1:])
    for k, (name, value) in enumerate(ORDER_KEYS):
        if k > 0 and encoded:
            break
        rows = [[value(frames[i]) for i in c] for c in clusters]
        known = [None not in row and len(set(row)) == len(row) for row in rows]
        patterns = {tuple(np.argsort(row, kind="stable")) for row, ok in zip(rows, known) if ok}
        if all(known) or known.count(True) < 2 or len(patterns) < 2:
            continue
        bad = [c for c, ok in zip(clusters, known) if not ok]
        at = [float(dist[c[0]]) for c in bad]
        return at, (
            f"{label}: frames without an order: InstanceNumbers rank the frames differently between positions (their "
            f"{name} says so where it orders them), and {name} is missing or equal {_where(dist, clusters, at)} "
            f"({frame_names(frames, bad[0])}), so nothing orders the frames there. Give every image its {name}, or "
            "re-export the series with InstanceNumbers in acquisition order."
        )
    return None


def _uneven(clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str, found: FrameOrder) -> None:
    """Positions holding more images than the fewest (copies to compare) and fewer than most (missing frames)."""
    counts = Counter(len(c) for c in clusters)
    usual = max(counts, key=lambda n: (counts[n], n))
    # Copies with new UIDs are checked on pixels at load wherever a position holds more than the fewest.
    found.duplicates = [c for c in clusters if len(c) > found.n_frames]
    fewer = [c for c in clusters if len(c) < usual]
    more = [c for c in clusters if len(c) > usual]
    if fewer:
        reference = Counter(frames[i].volume_id for i in next(c for c in clusters if len(c) == usual))
        at = []
        for c in fewer[:3]:
            absent = reference - Counter(frames[i].volume_id for i in c)
            said = [v for v in absent.elements() if any(x is not None for x in v)]
            what = f"; missing: {', '.join(_identity(v) for v in said[:3])}" if said else ""
            at.append(f"{dist[c[0]]:.2f} mm holds {len(c)} ({frame_names(frames, c)}{what})")
        found.errors.append(
            Problem(
                ProblemKind.FRAMES_MISSING,
                f"{label}: missing frames: {len(fewer)} of {len(clusters)} slice position(s) hold fewer images than "
                f"the others ({usual} each): {'; '.join(at)}{' ...' if len(fewer) > 3 else ''}. Stacking the rest "
                "would shift every later frame; re-export the complete series, or remove the incomplete frame from "
                "every position to load the others.",
            )
        )
    if more or not fewer:
        shown = more or found.duplicates
        at = [f"{dist[c[0]]:.2f} mm ({len(c)} images: {frame_names(frames, c)})" for c in shown[:3]]
        found.errors.append(
            Problem(
                ProblemKind.DUPLICATE_POSITIONS,
                f"{label}: duplicate positions: {len(shown)} slice position(s) hold more images than the "
                f"others ({usual if more else found.n_frames}): {'; '.join(at)}. Expected the same number of images at "
                "every position. Identical copies are dropped at load; otherwise remove the extra files or load each "
                "acquisition separately.",
            )
        )


def _identity(volume_id: tuple[Any, ...]) -> str:
    """A frame identifier in words (temporal position, diffusion encoding)."""
    temporal, encoding = volume_id[0], volume_id[-1]
    parts = [f"temporal position {temporal:g}"] if isinstance(temporal, (int, float)) else []
    if isinstance(encoding, tuple):
        parts.append(f"b={encoding[0]:g} gradient {list(encoding[1:])}")
    return " ".join(parts) or str(volume_id)


def _one_frame_order(
    clusters: list[list[int]], frames: list[Frame], dist: np.ndarray, label: str, problems: list[Problem]
) -> tuple[list[float], str]:
    """Give every position the same sequence of frame identifiers; return the positions where
    that is impossible and the sentence saying so ("" when every position takes one order).

    Each frame's ``volume_id`` (temporal position, Philips gradient number, b-value and gradient
    direction) must read the same at every position. Where a position reads otherwise but holds
    the same frames, its images are put in the order of the most common sequence (said in
    problems); where it holds other frames, no order can be right: the position is reported.
    """
    ids = [tuple(frames[i].volume_id for i in c) for c in clusters]
    counts = Counter(ids)
    if len(counts) == 1:
        return [], ""
    reference = counts.most_common(1)[0][0]
    reordered: list[float] = []
    conflicts: list[float] = []
    for c, seq in zip(clusters, ids):
        if seq == reference:
            continue
        where = float(dist[c[0]])
        if Counter(seq) != Counter(reference):
            conflicts.append(where)
            continue
        pool: dict[Any, list[int]] = {}
        for i in c:
            pool.setdefault(frames[i].volume_id, []).append(i)
        c[:] = [pool[v].pop(0) for v in reference]
        reordered.append(where)
    if reordered:
        problems.append(
            Problem(
                ProblemKind.FRAMES_REORDERED,
                f"{label}: {_where(dist, clusters, reordered)} InstanceNumber/AcquisitionTime order the frames differently "
                "from the other positions; their frames were put in the order of the others by temporal position and "
                "diffusion encoding (b-value, gradient).",
            )
        )
    if not conflicts:
        return [], ""
    bad = set(conflicts)
    shown = "; ".join(
        [f"{float(dist[c[0]]):.2f} mm ({frame_names(frames, c[:2])})" for c in clusters if float(dist[c[0]]) in bad][:4]
    )
    return conflicts, (
        f"{label}: no single frame order: {len(conflicts)} of {len(clusters)} slice positions hold "
        f"frames of other temporal positions or diffusion encodings than the rest ({shown}"
        f"{' ...' if len(conflicts) > 4 else ''}). Expected the same frames at every position; "
        "check that the export is complete, or load the frames of one acquisition separately."
    )
