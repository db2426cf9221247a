"""Where a QC page goes: a folder that holds nothing but an earlier page, replaced whole.

:func:`medload.qc.report.write_qc` builds the page in a folder beside ``out`` and moves it into
place when whole, replacing ``out``. ``out`` may be a folder the user named (``--out``), so it is
replaced only when it holds nothing but an earlier page (``index.html`` and ``thumbs/``) or
nothing at all: a folder of the user's (``--out ~/reports``, ``--out .``) is refused, never deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from medload.errors import ConfigError

__all__ = ["PAGE_ENTRIES", "check_replaceable", "move_into_place"]

#: What a QC page folder holds.
PAGE_ENTRIES = frozenset({"index.html", "thumbs"})


def check_replaceable(final: Path) -> None:
    """Refuse ``final`` when it exists and holds anything but an earlier page.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> check_replaceable(folder / "new")  # absent: fine
    >>> _ = (folder / "notes.txt").write_text("mine")
    >>> check_replaceable(folder)
    Traceback (most recent call last):
    ...
    medload.errors.ConfigError: ... exists and is not a medload QC page (it holds notes.txt); ...
    """
    if not final.exists() and not final.is_symlink():
        return
    entries = sorted(p.name for p in final.iterdir()) if final.is_dir() and not final.is_symlink() else None
    if entries is None or not set(entries) <= PAGE_ENTRIES:
        held = "a file or link" if entries is None else ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"{final} exists and is not a medload QC page (it holds {held}); the page replaces its folder "
            "whole, so give a new or empty folder (--out), or move that one away."
        )


def move_into_place(building: Path, final: Path) -> None:
    """Replace ``final`` (absent, empty or an earlier page: checked again) by the finished ``building``."""
    check_replaceable(final)
    if final.exists():
        shutil.rmtree(final)
    building.rename(final)
