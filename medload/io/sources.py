"""Which source a file came from: the name that NIfTI, 2D-image and nnU-Net keys are made in.

A DICOM file names its patient, study and series (UIDs, PatientID); a NIfTI or PNG file does
not, so their keys are pseudonyms of where the file lies. The path below the scanned folder
alone is not enough: two datasets both hold ``sub-01/anat/sub-01_T1w.nii.gz`` (BIDS subject
labels restart at 01 in every dataset) or ``0001.png``, and those are different people. So a
path-derived key stands for **the source's name plus the path below it**
(:func:`path_identity`), the way nnU-Net keys always stood for the dataset folder's name plus
the case id:

- the source's name is its folder's own name, symlinks resolved (:func:`source_name`): the
  same folder moved elsewhere, given through a link or given twice keeps its keys; a renamed
  folder gets new ones;
- two different sources of one batch with the same name (``/a/data``, ``/b/data``) are told
  apart by as many parent folders as it takes (``a/data``, ``b/data``: :func:`source_names`);
- one source is one namespace of subject labels: ``sub-01`` (or an nnU-Net case id) in two
  sources is two people. Sessions of one person kept in two folders are one patient only when
  converted from their common parent folder;
- a ``patient_pattern``'s match is the user's own patient id, one id space across the sources
  (as a ``--patients`` CSV is): NIH ChestX-ray14 ships one patient's films spread over
  ``images_001/`` ... ``images_012/``, and scoping ``00012`` to each folder would put that
  patient in two splits.

Keys are keyed pseudonyms of these strings (:func:`medload.deid.pseudonym`): no folder name
reaches an output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from medload.deid import PhiKey, pseudonym, resolve_key
from medload.errors import ReadError
from medload.io.bids import entities, subject_folder
from medload.problems import Problem, ProblemKind

__all__ = [
    "source_name",
    "source_names",
    "path_identity",
    "source_root",
    "relative_path",
    "nifti_keys",
    "image_keys",
    "patient_from_path",
]

Secret = str | bytes | PhiKey | None


def source_root(path: str | os.PathLike[str]) -> str:
    """The folder a scan of ``path`` is rooted at, symlinks resolved: ``path`` itself, or a file's folder.

    Examples
    --------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "a.png"), "wb").close()
    >>> source_root(os.path.join(folder, "a.png")) == source_root(folder) == os.path.realpath(folder)
    True
    """
    path = os.path.abspath(os.fspath(path))
    # A file's folder as given (scan roots a file's keys there), then resolved.
    return os.path.realpath(path if not os.path.isfile(path) else os.path.dirname(path))


def source_name(path: str | os.PathLike[str]) -> str:
    """The name path-derived keys below ``path`` are made in: its folder's own name (a file's folder's).

    Examples
    --------
    >>> import tempfile, os
    >>> folder = os.path.join(tempfile.mkdtemp(), "ds001")
    >>> os.mkdir(folder)
    >>> source_name(folder)
    'ds001'
    """
    return os.path.basename(source_root(path)) or os.sep


def source_names(paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """``{source root: name}`` for the sources of one batch; sources of one name get their parents'.

    Each distinct root (:func:`source_root`) is named by its last folder, or by as many of its
    last folders as it takes to differ from every other root's (``/a/data`` and ``/b/data`` ->
    ``a/data`` and ``b/data``), or by its whole path. A source given twice is one root, one name.
    The result does not depend on the order of ``paths``.

    Examples
    --------
    >>> import tempfile, os
    >>> base = tempfile.mkdtemp()
    >>> for p in ("a/data", "b/data", "c/ds002"):
    ...     os.makedirs(os.path.join(base, p))
    >>> names = source_names([os.path.join(base, p) for p in ("a/data", "b/data", "c/ds002", "a/data")])
    >>> sorted(names.values())
    ['a/data', 'b/data', 'ds002']
    """
    roots = sorted({source_root(p) for p in paths})
    parts = {root: [p for p in root.split(os.sep) if p] for root in roots}
    names: dict[str, str] = {}
    for root in roots:
        mine = parts[root]
        for depth in range(1, len(mine) + 1):
            tail = mine[-depth:]
            if all(other == root or parts[other][-depth:] != tail for other in roots):
                names[root] = "/".join(tail)
                break
        else:
            names[root] = root.replace(os.sep, "/") or "/"
    return names


def path_identity(source: str, relative: str) -> str:
    """What a path-derived key is a pseudonym of: the source's name and the path below it.

    Examples
    --------
    >>> path_identity("ds001", "sub-01/anat/sub-01_T1w.nii.gz")
    'ds001/sub-01/anat/sub-01_T1w.nii.gz'
    """
    return f"{source}/{relative}"


def relative_path(path: Path, root: str | os.PathLike[str] | None) -> str:
    """``path`` (resolved) below ``root`` (a file's folder when a file), as posix; absolute when outside.

    Examples
    --------
    >>> relative_path(Path("/data/ds001/sub-01/a.nii"), None)
    '/data/ds001/sub-01/a.nii'
    """
    # Without a root the absolute path is used: unique (two exports may both hold
    # "image.nii.gz"), though not stable when the files move; scan passes its root.
    if root is None:
        return path.as_posix()
    base = _root_folder(root)
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _root_folder(root: str | os.PathLike[str]) -> Path:
    base = Path(root).resolve()
    return base.parent if base.is_file() else base


def _key_source(root: str | os.PathLike[str] | None, source: str | None) -> str | None:
    return (source or source_name(_root_folder(root))) if root is not None else None


def nifti_keys(
    path: Path, root: str | os.PathLike[str] | None, *, source: str | None = None, secret: Secret = None
) -> dict[str, str]:
    """The keys of a NIfTI file: pseudonyms of the source's name and the path below it, and for
    a BIDS subject of its dataset and its label (:func:`~medload.io.bids.subject_folder`).

    ``path`` is resolved; without a ``root`` the absolute path is the identity (it names its
    folders already); ``source`` defaults to ``root``'s own name.

    Examples
    --------
    >>> a = nifti_keys(Path("/x/ds001/sub-01/anat/sub-01_T1w.nii.gz"), "/x/ds001", secret="k")
    >>> b = nifti_keys(Path("/x/ds002/sub-01/anat/sub-01_T1w.nii.gz"), "/x/ds002", secret="k")
    >>> a["patient_key"] != b["patient_key"], a["patient_key"] == pseudonym("ds001/sub-01", prefix="pat-", secret="k")
    (True, True)
    """
    relative = relative_path(path, root)
    secret = resolve_key(secret)
    subject, session = entities(Path(relative))
    where = _key_source(root, source)
    series_id = path_identity(where, relative) if where is not None else relative
    if subject:
        # sub-01 is one person within its dataset only (every BIDS dataset starts at sub-01).
        space = _subject_space(subject_folder(path, subject), None if root is None else _root_folder(root), where)
        patient_id = path_identity(space, subject)
        study_id = path_identity(space, f"{subject}/{session or ''}")
    else:
        patient_id = study_id = series_id
    return {
        "series_key": pseudonym(series_id, prefix="ser-", secret=secret),
        "study_key": pseudonym(study_id, prefix="stu-", secret=secret),
        "patient_key": pseudonym(patient_id, prefix="pat-", secret=secret),
    }


def _subject_space(dataset: Path, base: Path | None, where: str | None) -> str:
    """The name a BIDS dataset folder's subjects are keyed in: the source's name and the path
    below it when the dataset lies in the source (two sources of one name are told apart);
    its own name when it holds the source (a subject folder or one file scanned alone)."""
    if base is not None and where is not None and (dataset == base or base in dataset.parents):
        below = dataset.relative_to(base).as_posix()
        return where if below == "." else path_identity(where, below)
    return dataset.name or dataset.as_posix()


def image_keys(
    file: Path,
    relative: str,
    root: str | os.PathLike[str] | None,
    *,
    source: str | None = None,
    patient_pattern: str | re.Pattern[str] | None = None,
    secret: Secret = None,
) -> tuple[dict[str, str], list[Problem]]:
    """The keys of a 2D image at ``relative`` below ``root``, and the problem of an unknown patient.

    Series and study: the source's name and the path; patient: what ``patient_pattern`` finds
    in the path (:func:`patient_from_path`; one id space across sources, so one patient's images
    spread over several folders stay one patient), else the image's own (source and path).

    Raises
    ------
    ReadError
        ``patient_pattern`` finds nothing in ``relative``.

    Examples
    --------
    >>> keys, problems = image_keys(Path("/x/site_a/7_1.png"), "7_1.png", "/x/site_a", patient_pattern=r"(\\d+)_", secret="k")
    >>> keys["patient_key"] == pseudonym("7", prefix="pat-", secret="k"), problems
    (True, [])
    """
    patient = relative
    problems: list[Problem] = []
    if patient_pattern is not None:
        found = patient_from_path(relative, patient_pattern)
        if found is None:
            pattern = patient_pattern if isinstance(patient_pattern, str) else patient_pattern.pattern
            raise ReadError(
                f"{file}: patient pattern {pattern!r} finds nothing in {relative!r}; every image needs a "
                "patient so that splits keep patients apart. Fix the pattern or the file name."
            )
        patient = found
    else:
        problems.append(Problem(ProblemKind.PATIENT_UNKNOWN, "no patient pattern: this image counts as a patient of its own."))
    where = _key_source(root, source)
    identity = path_identity(where, relative) if where is not None else relative
    if patient_pattern is None:  # the image is its own patient: where it lies, as its series
        patient = identity
    keys = {
        "series_key": pseudonym(identity, prefix="ser-", secret=secret),
        "study_key": pseudonym(identity, prefix="stu-", secret=secret),
        "patient_key": pseudonym(patient, prefix="pat-", secret=secret),
    }
    return keys, problems


def patient_from_path(relative: str, pattern: str | re.Pattern[str]) -> str | None:
    """What ``pattern`` finds in ``relative``: its ``patient`` group, else its first group, else the whole match.

    Examples
    --------
    >>> patient_from_path("pneumonia/00012_003.png", r"(?P<patient>\\d+)_")
    '00012'
    >>> patient_from_path("normal/scan.png", r"(\\d+)_") is None
    True
    """
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    match = rx.search(relative)
    if match is None:
        return None
    if "patient" in rx.groupindex:
        return match.group("patient")
    return match.group(1) if rx.groups else match.group(0)
