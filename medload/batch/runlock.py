"""One convert per output: an exclusive lock on the output, held for the whole run.

Each worker already holds its own shard's lock, but two converts into one folder would write
different shards and both run: a series twice in the store and a report of only the second
run (issue 11). The run lock is an ``flock`` on ``<out>/.medload-convert.lock`` (a folder
output) or ``<out>.convert.lock`` (a single file), taken before anything is scanned or
removed. The kernel drops it when its holder dies (even by SIGKILL), so a crashed run never
keeps the next one out: the lock of a dead holder is simply taken.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medload.errors import StoreError

__all__ = ["run_lock", "run_lock_path"]


def run_lock_path(out: Path, single: bool) -> Path:
    """Where the run lock of output ``out`` lives.

    Examples
    --------
    >>> run_lock_path(Path("out"), False).name, run_lock_path(Path("x.h5"), True).name
    ('.medload-convert.lock', 'x.h5.convert.lock')
    """
    return out.with_name(out.name + ".convert.lock") if single else out / ".medload-convert.lock"


@contextmanager
def run_lock(out: Path, single: bool) -> Iterator[Path]:
    """Hold the run lock of ``out`` for the ``with`` block; refuse at once if another run holds it.

    Raises
    ------
    StoreError
        Another convert (alive) writes to ``out``; the message names its process, whether it runs\n        on this machine, and its start.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "store"
    >>> with run_lock(out, False):
    ...     try:
    ...         with run_lock(out, False):
    ...             pass
    ...     except StoreError as exc:
    ...         print(str(exc).split(" (")[0].endswith("is being written by another medload convert"))
    True
    """
    try:
        import fcntl
    except ImportError:  # Windows: the shard locks are all there is
        yield out
        return
    path = run_lock_path(out, single)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise StoreError(
                f"{out} is being written by another medload convert ({holder}); one convert per output. "
                "Wait for it to finish (a re-run then resumes), or write to another output path."
            ) from None
        if _is_linked(fd, path):
            break
        # The holder removed this file between our open and our lock (it had finished): a lock
        # on a removed file keeps nobody out, so take the file that is there now.
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        salt = secrets.token_hex(8)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # A killed run leaves this file in the output folder: it says which machine holds the
        # lock without naming it (a host name can name the hospital): a salted hash of it.
        os.write(fd, json.dumps({"pid": os.getpid(), "host": _machine(salt), "salt": salt, "started": started}).encode())
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _is_linked(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one removed since it was opened)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _machine(salt: str) -> str:
    """This machine, as the lock file holds it: SHA-256 of ``salt``, the machine id and the host name.

    The machine id (``/etc/machine-id``, 128 random bits where systemd is) keeps a list of
    guessed host names from telling which machine it was.
    """
    try:
        machine_id = Path("/etc/machine-id").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        machine_id = ""
    return hashlib.sha256(f"{salt}|{machine_id}|{socket.gethostname()}".encode()).hexdigest()[:16]


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        where = "this machine" if info["host"] == _machine(str(info["salt"])) else "another machine"
        return f"process {info['pid']} on {where}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"
