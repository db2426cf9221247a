"""Where a QC page goes: a folder that holds nothing but an earlier page, replaced whole.

:func:`medload.qc.report.write_qc` builds the page in a folder beside ``out`` and moves it into
place when whole, replacing ``out``. ``out`` may be a folder the user named (``--out``), so it is
replaced only when it holds nothing but an earlier page (an ``index.html`` titled "medload QC"
and a ``thumbs/`` of thumbnails) or nothing at all: a folder of the user's (``--out ~/reports``, ``--out .``) is refused, never deleted.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from medload.errors import ConfigError

__all__ = ["PAGE_ENTRIES", "check_replaceable", "move_into_place"]

#: What a QC page folder holds.
PAGE_ENTRIES = frozenset({"index.html", "thumbs"})
#: What every page's index.html holds near its start (medload.qc.page.page writes the title).
_PAGE_MARK = "<title>medload QC"
#: A thumbnail's name: volume number, plane, channel suffix (medload.qc.report._thumbnails).
_THUMB_NAME = re.compile(r"[0-9]{6,}_[a-z]+(_c[0-9]+)?\.(png|jpg)")


def _foreign(final: Path, entries: list[str]) -> list[str]:
    """What in page folder ``final`` (entries within :data:`PAGE_ENTRIES`) a QC page did not write.

    A folder of the user's may hold an ``index.html`` (a web page) or a ``thumbs/`` of its own:
    the names alone do not make it a page.
    """
    foreign = []
    if "index.html" in entries:
        index = final / "index.html"
        try:
            with open(index, encoding="utf-8", errors="replace") as fh:
                head = fh.read(4096)
        except OSError:
            head = ""
        if index.is_symlink() or not index.is_file() or _PAGE_MARK not in head:
            foreign.append("index.html (not a medload QC page)")
    if "thumbs" in entries:
        thumbs = final / "thumbs"
        names = sorted(p.name for p in thumbs.iterdir()) if thumbs.is_dir() and not thumbs.is_symlink() else None
        if names is None:
            foreign.append("thumbs (not a folder)")
        else:
            odd = [n for n in names if not _THUMB_NAME.fullmatch(n) or not (thumbs / n).is_file()]
            foreign += [f"thumbs/{n}" for n in odd[:3]]
    return foreign


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
    >>> site = Path(tempfile.mkdtemp())
    >>> _ = (site / "index.html").write_text("<html><title>My site</title></html>")
    >>> check_replaceable(site)
    Traceback (most recent call last):
    ...
    medload.errors.ConfigError: ... exists and is not a medload QC page (it holds index.html (not a medload QC page)); ...
    """
    if not final.exists() and not final.is_symlink():
        return
    entries = sorted(p.name for p in final.iterdir()) if final.is_dir() and not final.is_symlink() else None
    foreign = [] if entries is None or not set(entries) <= PAGE_ENTRIES else _foreign(final, entries)
    if entries is None or not set(entries) <= PAGE_ENTRIES or foreign:
        held = "a file or link" if entries is None else ", ".join((foreign or entries)[:3]) + (" ..." if len(entries) > 3 else "")
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
