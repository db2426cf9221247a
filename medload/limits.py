"""Size limits checked from headers, before any voxel is read or any array allocated.

A header may claim any size (Rows = Columns = 65535, a billion NIfTI voxels in a 1 KB file,
a ``.nii.gz`` that inflates to gigabytes of zeros). Readers check every claimed size here
first: against the file's real size where the format fixes it (uncompressed data), and
against a per-volume limit on the bytes of the array ``load`` would return. The store checks
the shape its catalog declares against the same limit before it allocates a volume
(``medload.store``); this module stands left of both layers (it imports only the errors).

The limit is ``MEDLOAD_MAX_VOLUME_BYTES`` (environment; plain bytes or with a ``K``/``M``/
``G``/``T`` suffix, powers of 1024), default :data:`DEFAULT_MAX_VOLUME_BYTES`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from medload.errors import LimitError, MedloadError

__all__ = [
    "DEFAULT_MAX_VOLUME_BYTES",
    "MAX_FUNCTIONAL_GROUP_ITEMS",
    "check_volume_size",
    "format_bytes",
    "max_volume_bytes",
]

#: 16 GiB: five times a 1,000-slice 512 x 512 CT in float32, far above any single volume we
#: met in exports, and far below what a header bomb asks for.
DEFAULT_MAX_VOLUME_BYTES = 16 * 1024**3
#: Items a functional group sequence may hold where the header gives no count for it: the shared
#: one (the standard allows one item) and a per-frame one without NumberOfFrames (one frame;
#: pydicom's liver_1frame.dcm, one frame cut from a SEG, keeps 3). With NumberOfFrames, the
#: per-frame sequence may hold that many (:mod:`medload.io.frameitems`).
MAX_FUNCTIONAL_GROUP_ITEMS = 64
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def max_volume_bytes() -> int:
    """The per-volume limit in bytes (``$MEDLOAD_MAX_VOLUME_BYTES``, else the default).

    Examples
    --------
    >>> import os
    >>> os.environ["MEDLOAD_MAX_VOLUME_BYTES"] = "2G"
    >>> max_volume_bytes()
    2147483648
    >>> del os.environ["MEDLOAD_MAX_VOLUME_BYTES"]
    >>> max_volume_bytes() == DEFAULT_MAX_VOLUME_BYTES
    True
    """
    text = os.environ.get("MEDLOAD_MAX_VOLUME_BYTES", "").strip().upper()
    if not text:
        return DEFAULT_MAX_VOLUME_BYTES
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)I?B?", text)
    if match is None:
        raise LimitError(f"MEDLOAD_MAX_VOLUME_BYTES={text!r} is not a size; expected bytes such as 8000000000 or 8G.")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest unit that keeps it above 1 (powers of 1024).

    Examples
    --------
    >>> format_bytes(3 * 1024**3), format_bytes(512)
    ('3.0 GiB', '512 B')
    """
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_volume_size(
    what: str, shape: Sequence[int], itemsize: int, *, claimed_by: str = "its header", error: type[MedloadError] = LimitError
) -> int:
    """Refuse a volume whose array would exceed the limit; return its size in bytes.

    Parameters
    ----------
    what : str
        Names the file or series in the message.
    shape : sequence of int
        The array shape the header claims.
    itemsize : int
        Bytes per voxel of the array that would be allocated.
    claimed_by : str
        What claims the shape, for the message ("its header"; the store says "its catalog").
    error : type
        The error raised: :class:`~medload.errors.LimitError` for a reader, the store's
        :class:`~medload.errors.StoreError` for a store.

    Raises
    ------
    LimitError
        The array would be larger than :func:`max_volume_bytes`, or a dimension is not positive
        (``error``, when given).

    Examples
    --------
    >>> check_volume_size("ct/", (100, 512, 512), 2)
    52428800
    >>> try:
    ...     check_volume_size("bomb.nii", (65535, 65535, 65535), 4)
    ... except LimitError as exc:
    ...     print(str(exc)[:90])
    bomb.nii: its header claims a volume of shape (65535, 65535, 65535) x 4 bytes = 1024.0 TiB
    """
    dims = [int(v) for v in shape]
    if any(d <= 0 for d in dims):
        raise error(
            f"{what}: {claimed_by} claims a volume of shape {tuple(dims)}, with an empty dimension; {claimed_by} is damaged, "
            "re-export the file."
        )
    n = itemsize
    for d in dims:
        n *= d
    limit = max_volume_bytes()
    if n > limit:
        raise error(
            f"{what}: {claimed_by} claims a volume of shape {tuple(dims)} x {itemsize} bytes = {format_bytes(n)}, "
            f"above the per-volume limit of {format_bytes(limit)}. If the volume is real, raise the limit "
            f"(environment variable MEDLOAD_MAX_VOLUME_BYTES, e.g. MEDLOAD_MAX_VOLUME_BYTES={n // 1024**3 + 1}G); "
            f"otherwise {claimed_by} is damaged."
        )
    return n
