"""Label masks for a batch: find the NIfTI masks of a folder, pair them with series, load one.

A mask is paired with a series by file name (the series key, a NIfTI source's name, or the
sanitized description), else by grid alone when it is the only mask of the only series of
its shape. A mask is used only on the series' own grid (axes may be permuted or flipped,
:func:`medload.geometry.align_to_grid`), and only when it holds integer labels.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from medload.deid import sanitize_key
from medload.errors import ConfigError, GeometryError, ReadError, UnsupportedError
from medload.geometry import align_to_grid
from medload.problems import Problem, ProblemKind
from medload.volume import Volume

__all__ = ["MASK_SUFFIXES", "MaskFile", "mask_files", "match_masks", "load_mask"]

#: File name endings of the masks a masks folder is searched for.
MASK_SUFFIXES = (".nii.gz", ".nii")


# What nibabel raises on a file that is not (whole) NIfTI: not a medload bug, a bad file.
_NIBABEL_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error)


class MaskFile(NamedTuple):
    """One NIfTI mask of a masks folder: name without suffix, path, spatial shape ``(z, y, x)``."""

    stem: str
    path: str
    shape: tuple[int, ...]


def _stem(name: str) -> str | None:
    suffix = next((s for s in MASK_SUFFIXES if name.lower().endswith(s)), None)
    return None if suffix is None else name[: -len(suffix)]


def mask_files(folder: str | os.PathLike[str]) -> list[MaskFile]:
    """Every NIfTI mask under ``folder``, with its shape from the header (pixels are not read).

    A mask whose header does not read gets the shape ``()``; it is reported when (if) a series
    needs it.
    """
    import nibabel as nib

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"masks folder {folder} does not exist; expected a folder of NIfTI label files")
    found = []
    for path in sorted(folder.rglob("*")):
        stem = _stem(path.name)
        if stem is None or not path.is_file():
            continue
        try:
            image: Any = nib.load(str(path))  # a NIfTI image (nibabel types it as FileBasedImage)
            shape = tuple(int(n) for n in image.shape[:3])[::-1]
        except _NIBABEL_ERRORS:  # an unreadable mask is reported when (if) a series needs it
            shape = ()
        found.append(MaskFile(stem, str(path), shape))
    return found


def match_masks(series: Sequence[Any], candidates: Sequence[MaskFile]) -> dict[str, tuple[str, bool]]:
    """{source_hash: (mask path, matched by grid only)}: by name first, else a unique same-shape mask.

    Names are the series key, a NIfTI file's name and the description, each used only when no
    other series has it.
    """
    by_stem = {m.stem: m.path for m in candidates}
    out: dict[str, tuple[str, bool]] = {}
    names_of = {}
    for s in series:
        names = [s.series_key, sanitize_key(s.description or "")]
        if s.kind == "nifti" and s.files:
            base = os.path.basename(s.files[0])
            names.insert(1, _stem(base) or base)
        names_of[s.source_hash] = [n for n in dict.fromkeys(names) if n]
    # A name several series share (sub-01_T1w of two datasets, one description for many
    # series) pairs none of them: the mask would be a guess. Their series keys still pair.
    shared = Counter(n for names in names_of.values() for n in names)
    for s in series:
        hit = next((by_stem[n] for n in names_of[s.source_hash] if n in by_stem and shared[n] == 1), None)
        if hit:
            out[s.source_hash] = (hit, False)
    # By grid only one to one: the only mask of that shape for the only series of that shape.
    shapes = Counter(tuple(s.shape[-3:]) for s in series)
    for s in series:
        spatial = tuple(s.shape[-3:])
        if s.source_hash in out or shapes[spatial] != 1:
            continue
        same = [m.path for m in candidates if m.shape == spatial]
        if len(same) == 1 and os.path.realpath(same[0]) not in {os.path.realpath(f) for f in s.files}:
            out[s.source_hash] = (same[0], True)
    return out


def load_mask(path: str, volume: Volume, *, by_grid: bool) -> tuple[Volume | None, Problem | None]:
    """Load a NIfTI mask for ``volume``: ``(mask, None)``, or ``(None, problem)`` when one paired by grid does not fit.

    The problem is of kind :attr:`~medload.problems.ProblemKind.MASK_NOT_USED`; its message names
    the mask file (the caller scrubs it like every message it writes).

    Raises
    ------
    ReadError
        The file does not read as NIfTI, or holds non-integer values.
    GeometryError
        A mask paired by name lies on another grid.
    UnsupportedError
        A 4D mask, or a file nibabel opens as something without a voxel grid (CIFTI-2).
    """
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    name = os.path.basename(path)
    try:
        image = nib.load(path)
    except _NIBABEL_ERRORS as exc:
        raise ReadError(f"mask {name} could not be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if not isinstance(image, SpatialImage):
        raise UnsupportedError(
            f"mask {name} opens as a {type(image).__name__}, which has no voxel grid; expected a NIfTI label "
            "volume (.nii, .nii.gz) on the image's grid. Export the segmentation as a NIfTI volume."
        )
    try:
        mask = Volume.from_nifti(image)
    except _NIBABEL_ERRORS as exc:
        raise ReadError(f"mask {name} could not be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    data = mask.array
    if data.ndim == 4:
        raise UnsupportedError(f"mask {name} is 4D {data.shape}; expected one 3D label volume")
    aligned = align_to_grid(data, mask.affine, volume.affine, volume.spatial_shape)
    if aligned is None:
        why = (
            f"mask {name} has shape {data.shape} and origin {np.round(mask.origin, 2).tolist()}, "
            f"the series {volume.spatial_shape} and {np.round(volume.origin, 2).tolist()}"
        )
        if by_grid:
            return None, Problem(ProblemKind.MASK_NOT_USED, why + "; it was paired by its shape alone, so it is not used")
        raise GeometryError(why + "; resample the mask onto the series grid first")
    return Volume(_integer_labels(aligned, name), volume.affine, modality=volume.modality), None


def _integer_labels(data: np.ndarray, name: str) -> np.ndarray:
    """``data`` as the smallest unsigned integer type that holds it; refuses non-labels."""
    values = np.asarray(data, dtype=np.float64)
    labels = np.rint(values)
    # A probability map or a mask resampled with linear interpolation is not a label volume:
    # rounding it would store a silently different mask (and NaN would cast to garbage).
    off = ~np.isfinite(values) | (np.abs(values - labels) > 1e-3)
    if off.any():
        first = tuple(int(i) for i in np.argwhere(off)[0])
        raise ReadError(
            f"mask {name} holds {int(off.sum())} non-integer or NaN values (first "
            f"{values[first]!r} at index {first}); expected integer labels: threshold a probability "
            "map, or resample the mask with nearest-neighbour interpolation"
        )
    if labels.min() < 0 or labels.max() > np.iinfo(np.int32).max:
        raise ReadError(f"mask {name} holds values outside 0..2^31; expected integer labels")
    dtype = np.uint8 if labels.max() < 256 else np.uint16 if labels.max() < 65536 else np.int32
    return np.ascontiguousarray(labels.astype(dtype))
