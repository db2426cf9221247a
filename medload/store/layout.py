"""Where a store's files lie: shard names, the writer's side files, finding and resuming shards.

A store is one file (``out.h5``) or a folder of shards (``out/shard-0000.h5``, ...). While a
file is written it is ``<name>.partial`` (renamed into place when whole), its crash salvage
is built in ``<name>.partial.salvage``, and ``<name>.lock`` holds the one writer's lock. These
names are defined here alone; the writer, the reader and the batch job ask for them.

Examples
--------
>>> from pathlib import Path
>>> partial_path(Path("out/shard-0001.h5")).name, lock_path(Path("x.h5")).name
('shard-0001.h5.partial', 'x.h5.lock')
>>> shard_path(Path("out"), "0003").name
'shard-0003.h5'
"""

from __future__ import annotations

import re
import errno
import os
from pathlib import Path
from typing import Any

from medload.errors import StoreError
from medload.problems import Problem
from medload.store._format import PARTIAL_SUFFIX

__all__ = [
    "SHARD_PREFIX",
    "SINGLE_SUFFIXES",
    "PARTIAL_SUFFIX",
    "SALVAGE_SUFFIX",
    "LOCK_SUFFIX",
    "is_single_file",
    "partial_path",
    "salvage_path",
    "lock_path",
    "shard_path",
    "shard_paths",
    "written_files",
    "store_files",
    "resume_shards",
    "WriterLock",
    "is_lock_error",
    "HDF5_SIGNATURE",
    "not_hdf5_head",
    "hdf5_says_truncated",
]

#: Shards of a folder store are named ``shard-<slot>.h5``.
SHARD_PREFIX = "shard-"
#: An output path with one of these suffixes is one file, not a folder of shards.
SINGLE_SUFFIXES = (".h5", ".hdf5")
SALVAGE_SUFFIX = ".salvage"
LOCK_SUFFIX = ".lock"


_OWN_SHARD = re.compile(
    re.escape(SHARD_PREFIX)
    + r"[^/\\]+?\.h5"
    + "("
    + re.escape(PARTIAL_SUFFIX)
    + "("
    + re.escape(SALVAGE_SUFFIX)
    + ")?|"
    + re.escape(LOCK_SUFFIX)
    + ")?"
)


def is_single_file(out: Path) -> bool:
    """True when ``out`` names one store file (``.h5``/``.hdf5``) rather than a folder of shards."""
    return out.suffix.lower() in SINGLE_SUFFIXES


def partial_path(path: Path) -> Path:
    """The name a store file has while it is written."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def salvage_path(path: Path) -> Path:
    """Where the complete volumes of a crashed partial file are copied to (``path``: the store)."""
    partial = partial_path(path)
    return partial.with_name(partial.name + SALVAGE_SUFFIX)


def lock_path(path: Path) -> Path:
    """The file the writer of ``path`` holds its lock on."""
    return path.with_name(path.name + LOCK_SUFFIX)


def shard_path(out: Path, slot: str) -> Path:
    """The shard a writer in ``slot`` writes in the folder store ``out``."""
    return out / f"{SHARD_PREFIX}{slot}.h5"


def shard_paths(out: Path, single: bool) -> list[Path]:
    """Finished and partial shards (each as the finished name a ``Store.create`` resumes)."""
    if single:
        return [out] if out.exists() or partial_path(out).exists() else []
    if not out.is_dir():
        return []
    names = set()
    for p in out.iterdir():
        if not p.name.startswith(SHARD_PREFIX):
            continue
        if p.name.endswith(".h5"):
            names.add(p.name)
        elif p.name.endswith(".h5" + PARTIAL_SUFFIX):
            names.add(p.name[: -len(PARTIAL_SUFFIX)])
    return [out / n for n in sorted(names)]


def written_files(out: Path, single: bool) -> list[Path]:
    """Every file of the store ``out`` that exists: shards, partial, salvage and lock files."""
    if single:
        names = [out, partial_path(out), salvage_path(out), lock_path(out)]
        return [p for p in names if p.exists()]
    if not out.is_dir():
        return []
    # Only names medload writes, and only plain files: a user's folder or file that merely
    # starts with "shard-" (shard-2023-batch/) is never touched by --overwrite.
    return [p for p in out.iterdir() if _OWN_SHARD.fullmatch(p.name) and _written_by_medload(p)]


def store_files(path: Path) -> list[Path]:
    """The files a reader opens for the store at ``path``: the file itself, or a folder's shards.

    Raises :class:`~medload.StoreError` naming what is there instead: no file, a folder without
    shards, or only the ``.partial`` files of a writer still running or interrupted.
    """
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix in (".h5", ".hdf5") and p.is_file())
        if not shards:
            partial = sorted(p.name for p in path.iterdir() if p.name.endswith(PARTIAL_SUFFIX))
            hint = (
                (
                    f"; unfinished shards {partial[:3]} exist: a writer is still running or was interrupted "
                    "(run the conversion again to finish them)"
                )
                if partial
                else ""
            )
            raise StoreError(f"{path} is a folder with no store shards (*.h5){hint}.")
        return shards
    if not path.exists():
        partial_file = path.with_name(path.name + PARTIAL_SUFFIX)
        if partial_file.exists():
            raise StoreError(
                f"{path} is not finished: only {partial_file.name} exists (a writer is still running or was "
                "interrupted); run the conversion again to finish it."
            )
        raise StoreError(f"{path} does not exist; expected a medload store file or a folder of shards.")
    return [path]


#: The 8 bytes every HDF5 file has at offset 0, or at 512, 1024, 2048, ... after a user block.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def not_hdf5_head(path: Path) -> bytes | None:
    """The first 16 bytes of ``path`` when it has no HDF5 signature where one can be, else None.

    Decided from the file's own bytes (the HDF5 format's signature), not from HDF5's message.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "notes.h5"
    >>> _ = path.write_bytes(b"patient list")
    >>> not_hdf5_head(path)
    b'patient list'
    >>> _ = path.write_bytes(bytes(512) + HDF5_SIGNATURE)  # after a 512-byte user block
    >>> not_hdf5_head(path) is None
    True
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            size = os.fstat(handle.fileno()).st_size
            offset = 512
            while head[:8] != HDF5_SIGNATURE and offset + 8 <= size:
                handle.seek(offset)
                if handle.read(8) == HDF5_SIGNATURE:
                    return None
                offset *= 2
    except OSError:
        return None  # unreadable: HDF5's own message says more
    return None if head[:8] == HDF5_SIGNATURE else head


def hdf5_says_truncated(exc: OSError) -> bool:
    """Whether HDF5 refused to open a file because it is shorter than its superblock records.

    The one place where medload reads an error's text, and why: h5py turns every failure to
    open a file into a plain ``OSError`` without an ``errno`` (HDF5's minor code
    ``H5E_TRUNCATED`` is not passed on), so HDF5's wording (``"truncated file: eof = ..."``, from
    its superblock check) is the only fact left. Only the message shown depends on it: a reword
    in a later HDF5 makes the message less precise ("a file HDF5 cannot open"), never wrong.

    Examples
    --------
    >>> hdf5_says_truncated(OSError("Unable to synchronously open file (truncated file: eof = 41024, "
    ...                             "sblock->base_addr = 0, stored_eof = 82048)"))
    True
    >>> hdf5_says_truncated(OSError("Unable to synchronously open file (file signature not found)"))
    False
    """
    return "truncated file" in str(exc)


def _written_by_medload(path: Path) -> bool:
    """A plain file medload writes: a lock file, or an HDF5 file (a crashed partial shard may
    hold no root attributes yet, so the signature is what is checked)."""
    if path.is_symlink() or not path.is_file():
        return False
    if path.name.endswith(LOCK_SUFFIX):
        return path.stat().st_size < 4096
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def resume_shards(
    out: Path, single: bool, pipeline: Any, store_options: dict[str, Any]
) -> tuple[dict[str, tuple[str, str]], list[Problem]]:
    """Finish what an interrupted run left partial; return ``({source_hash: (key, shard)}, notes)``.

    Every shard is opened for resuming with ``pipeline`` (which salvages a crashed partial file
    and refuses a shard written with another pipeline), then closed; the volumes of the whole
    store are what is already done.

    Raises
    ------
    StoreError
        A shard that cannot be resumed (another pipeline, another schema, locked by a writer).
    """
    from medload.store.reader import open as open_store
    from medload.store.writer import Store

    notes: list[Problem] = []
    shards = shard_paths(out, single)
    for shard in shards:
        store = Store.create(shard, pipeline=pipeline, resume=True, **store_options)
        notes.extend(store.problems)
        store.close()
    if not shards:
        return {}, notes
    with open_store(out) as reader:
        done = {rec.source_hash: (rec.key, rec.shard) for rec in reader.volumes}
    return done, notes


def is_lock_error(exc: BaseException) -> bool:
    """Whether HDF5 refused to open a file because another process holds its lock.

    h5py raises ``BlockingIOError`` (errno EAGAIN/EWOULDBLOCK) for it: the error number, not the
    message's wording, decides.
    """
    return isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)


class WriterLock:
    """An exclusive ``flock`` on ``<store>.lock``: one writer per store file, even across a fork.

    HDF5's own file lock does not protect a file against a forked child of its writer (the
    child shares the parent's open file), so the writer takes this lock first. The lock file
    is removed on close; one left by a killed writer is harmless (the kernel drops its lock).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # Windows: rely on HDF5's own locking
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            store = path.with_suffix("")
            raise StoreError(
                f"{store} is being written by another process (it holds {path.name}); each parallel "
                "writer needs its own shard file (e.g. out/shard-0001.h5, out/shard-0002.h5)."
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
