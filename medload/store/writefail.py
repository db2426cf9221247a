"""What a store write that failed tells the user: the path, why, and what to do."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from medload.errors import StoreError

__all__ = ["printable", "unwritable", "write_failed"]


def printable(text: str) -> str:
    """``text`` for a message: as it is, or with unprintable characters escaped (a NUL, a surrogate).

    >>> printable("ser-1"), printable("ser\\x00\\udcff")
    ('ser-1', 'ser\\\\x00\\\\udcff')
    """
    return text if text.isprintable() else ascii(text)[1:-1]


def unwritable(path: Path, exc: OSError) -> StoreError:
    # An output path the user chose (under a file, read-only, disk full): say so, not errno alone.
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return StoreError(
        f"cannot write the store {path}: {exc.strerror or exc}{where}; choose an output path in a "
        "writable folder with free space."
    )


def write_failed(path: Path, exc: OSError, doing: str) -> StoreError:
    """A write that failed (disk full above all), naming the shard and the free space left."""
    try:
        free = shutil.disk_usage(path.parent).free
        space = f"{free / 1024**2:.1f} MiB free on its disk"
    except OSError:
        space = "free space unknown"
    # The error number decides (h5py >= 3.2 sets it from HDF5's file driver), not the wording.
    full = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}.get(exc.errno or 0)
    if full:
        return StoreError(
            f"{path}: {full} ({space}) while {doing}; volumes completed before are intact. "
            "Free some space (or write to another disk) and run the same command again: it resumes."
        )
    return StoreError(
        f"{path}: write failed while {doing} ({type(exc).__name__}: {str(exc)[:300]}; {space}); run again to resume."
    )
