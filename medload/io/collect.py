"""What a scan finds file by file: headers read in this process or on worker processes.

:class:`Collector` reads one file at a time (DICOM header, NIfTI or 2D image, or a count of
what was skipped); :func:`collect` reads a list of files, on local processes
(:mod:`medload.pool`) when there are enough of them, in chunks merged in the order given, so
what it finds does not depend on the number of processes.
"""

from __future__ import annotations

import functools
import math
import multiprocessing as mp
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from medload.cores import resolve_workers
from medload.deid import PhiKey
from medload.errors import MedloadError
from medload.io.fastheader import damaged_series_uid
from medload.io.headers import FileHeader, read_header
from medload.io.images import image_format, is_image, scan_image
from medload.io.nifti import is_nifti, scan_nifti
from medload.io.series import Series
from medload.mainguard import unguarded_main_script
from medload.pool import Outcome, run_local

__all__ = ["Collector", "FileProblem", "collect", "PARALLEL_MIN_FILES", "CHUNK_FILES"]

#: Fewer files than this are read in this process: starting worker processes (about 0.3 s
#: each) costs more than reading them (about 1 ms a file; bench/scan.py).
PARALLEL_MIN_FILES = 500

#: Files per worker task, at most: small enough that 2 workers get many tasks each (a slow
#: folder does not leave one core waiting), large enough that the pipe carries few messages.
CHUNK_FILES = 256


@dataclass(frozen=True)
class FileProblem:
    """A file scan could not use: its path, why (one sentence, for people), and the error's class.

    Decide by ``error`` and ``internal``, never by ``message`` (it is reworded and de-identified).

    Attributes
    ----------
    error : str
        Class name of the error that refused the file: a :class:`~medload.errors.MedloadError`
        subclass (``ReadError``, ``LimitError``, ``UnsupportedError``, ...), ``"WorkerDied"`` when
        reading it ended the reading process, or a library's exception that scan caught for it.
    internal : bool
        True when ``error`` is not medload's own refusal (a library's exception, a crash): the
        file is damaged in a way no check of medload's names, or medload has a bug.
    """

    path: str
    message: str
    error: str
    internal: bool = False

    def to_json(self) -> dict[str, Any]:
        """``{"path", "error", "reason"}`` (and ``"internal": true`` when so), as ``medload scan --json`` prints it."""
        return {"path": self.path, "error": self.error, "reason": self.message, **({"internal": True} if self.internal else {})}


class Collector:
    """What a scan finds file by file: DICOM headers, NIfTI and 2D-image series, what was skipped."""

    def __init__(self, root: str, phi_key: PhiKey, pattern: re.Pattern[str] | None, source_name: str | None = None) -> None:
        # source_name: the name NIfTI and image keys are made in (medload.io.sources); None: root's own.
        self.root, self.phi_key, self.pattern, self.source_name = root, phi_key, pattern, source_name
        self.skipped: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.errors: list[FileProblem] = []
        self.damaged: list[tuple[str, str]] = []  # (path, SeriesInstanceUID read before the damage)
        self.headers: list[FileHeader] = []
        self.nifti_series: list[Series] = []
        self.image_series: list[Series] = []
        self.n_files = 0

    def empty(self) -> Collector:
        """A new collector with the same root, key and pattern, nothing found yet."""
        return Collector(self.root, self.phi_key, self.pattern, self.source_name)

    def merge(self, other: Collector) -> None:
        """Append what ``other`` found (the files after ours): as if we had read them."""
        self.n_files += other.n_files
        self.skipped.update(other.skipped)
        self.fallbacks.update(other.fallbacks)
        self.errors += other.errors
        self.damaged += other.damaged
        self.headers += other.headers
        self.nifti_series += other.nifti_series
        self.image_series += other.image_series

    def add(self, file: str) -> None:
        self.n_files += 1
        if is_nifti(file, check_magic=False):
            self.add_nifti(file)
        elif is_image(file, check_magic=False):
            self.add_image(file)
        else:
            self.add_dicom(file)

    def add_nifti(self, file: str) -> None:
        try:
            self.nifti_series.append(scan_nifti(file, phi_key=self.phi_key, root=self.root, source_name=self.source_name))
        except MedloadError as exc:
            self.errors.append(FileProblem(file, str(exc), type(exc).__name__))
        except Exception as exc:  # a damaged file must not end the scan
            self.errors.append(
                FileProblem(file, f"{file}: NIfTI header cannot be read ({type(exc).__name__}: {exc}).", type(exc).__name__, True)
            )

    def add_image(self, file: str) -> None:
        try:
            self.image_series.append(
                scan_image(file, root=self.root, phi_key=self.phi_key, patient_pattern=self.pattern, source_name=self.source_name)
            )
        except MedloadError as exc:
            self.errors.append(FileProblem(file, str(exc), type(exc).__name__))
        except Exception as exc:  # a damaged file must not end the scan
            self.errors.append(
                FileProblem(file, f"{file}: image header cannot be read ({type(exc).__name__}: {exc}).", type(exc).__name__, True)
            )

    def add_dicom(self, file: str) -> None:
        try:
            header = read_header(file)
        except MedloadError as exc:
            self.errors.append(FileProblem(file, str(exc), type(exc).__name__))
            self.damaged.append((file, damaged_series_uid(file)))
            return
        except Exception as exc:  # noqa: BLE001 - one file never ends the scan, whatever its header does
            self.errors.append(
                FileProblem(
                    file,
                    f"{file}: header cannot be read ({type(exc).__name__}: {exc}); the file is damaged, re-copy or re-export it.",
                    type(exc).__name__,
                    True,
                )
            )
            self.damaged.append((file, damaged_series_uid(file)))
            return
        if header is not None and header.fallback:
            self.fallbacks[header.fallback] += 1
        if header is None:
            # Names are not trusted: an uncompressed NIfTI without its suffix is found by magic.
            if is_nifti(file):
                self.add_nifti(file)
            elif image_format(file) is not None:
                self.add_image(file)
            else:
                self.skipped["not DICOM"] += 1
        elif not header.is_image:
            self.skipped[header.kind_name or "non-image object"] += 1
        elif not header.frames:
            self.skipped["image without frames"] += 1
        else:
            self.headers.append(header)


def _processes(workers: int | None, n_files: int) -> int:
    """How many processes read the headers of ``n_files`` files; 0: this process alone."""
    n = resolve_workers(workers)
    if n < 2 or n_files < PARALLEL_MIN_FILES or mp.current_process().daemon:
        # A daemonic process (another pool's worker) may not start processes of its own.
        return 0
    return n


def _chunks(files: list[str], n: int) -> list[list[str]]:
    """``files`` in consecutive chunks: at least 4 per process, at most :data:`CHUNK_FILES` each."""
    count = max(4 * n, math.ceil(len(files) / CHUNK_FILES))
    size = math.ceil(len(files) / count)
    return [files[i : i + size] for i in range(0, len(files), size)]


class _HeaderReader:
    """A :mod:`medload.pool` worker: reads the headers of a chunk of files into a collector."""

    def __init__(self, template: Collector, slot: str) -> None:
        self.template = template

    def __call__(self, task: list[str]) -> Collector:
        found = self.template.empty()
        for file in task:
            found.add(file)
        return found

    def close(self) -> None:
        pass


def collect(files: list[str], found: Collector, workers: int | None) -> Collector:
    """Read ``files`` into ``found`` (empty), on ``workers`` processes when there are enough files.

    Examples
    --------
    >>> import os, pydicom
    >>> from medload.deid import PhiKey
    >>> folder = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    >>> found = collect([os.path.join(folder, "CT_small.dcm")], Collector(folder, PhiKey(b"k", "argument"), None), 2)
    >>> found.n_files, len(found.headers), found.headers[0].modality
    (1, 1, 'CT')
    """
    n = _processes(workers, len(files))
    if n and workers is None and unguarded_main_script() is not None:
        # A script calling scan outside its main guard: with the default, read here quietly
        # (worker processes would re-run the script); an explicit workers=N is warned about.
        n = 0
    if n:
        return _read_in_processes(files, found, n)
    for file in files:
        found.add(file)
    return found


def _read_in_processes(files: list[str], found: Collector, n: int) -> Collector:
    """Read ``files`` on ``n`` processes in chunks; merge what each found in file order.

    A chunk whose process died (a crash in a library) is read again one file per task, so the
    file that crashes it is named in ``errors`` and its neighbours are read. A chunk that failed
    otherwise (no worker could start) is read in this process, as a serial scan would.
    """
    chunks = _chunks(files, n)
    factory = functools.partial(_HeaderReader, found.empty())
    summary = run_local(factory, [(str(i), chunk) for i, chunk in enumerate(chunks)], n)
    if summary.interrupted:
        raise KeyboardInterrupt
    outcome = {o.task_id: o for o in summary.outcomes}
    died = [i for i in range(len(chunks)) if outcome[str(i)].error_type == "WorkerDied"]
    one_by_one = {}
    if died:
        tasks = [(f"{i}/{j}", [file]) for i in died for j, file in enumerate(chunks[i])]
        again = run_local(factory, tasks, min(n, len(tasks)), check_main=False)
        if again.interrupted:
            raise KeyboardInterrupt
        one_by_one = {o.task_id: o for o in again.outcomes}
    for i, chunk in enumerate(chunks):
        if i in died:
            for j, file in enumerate(chunk):
                found.merge(_part(one_by_one[f"{i}/{j}"], [file], found))
        else:
            found.merge(_part(outcome[str(i)], chunk, found))
    return found


def _part(outcome: Outcome, files: list[str], found: Collector) -> Collector:
    """What a task found: its value; a file whose process died, an error naming it; else read here."""
    if outcome.ok:
        part: Collector = outcome.value
        return part
    part = found.empty()
    if outcome.error_type == "WorkerDied" and len(files) == 1:
        file = files[0]
        part.n_files = 1
        part.errors.append(
            FileProblem(
                file,
                f"{file}: reading its header ended the reading process ({outcome.error_message}); a "
                "library crashed on it, so the file is damaged or of a kind that crashes it: re-copy "
                "or re-export it, or move it out of the folder.",
                "WorkerDied",
                True,
            )
        )
        # Its series is not read from it (reading it again could crash this process): the
        # series of its folder, when that folder holds one, is marked incomplete.
        part.damaged.append((file, ""))
        return part
    for file in files:
        part.add(file)
    return part
