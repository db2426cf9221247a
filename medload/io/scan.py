"""``scan``: find every volume under a folder from headers alone.

Files are recognised by content, never by name: a DICOM preamble (or a raw dataset) makes a
DICOM file, ``is_nifti`` (medload.io.nifti) a NIfTI file; anything else is counted and
ignored. DICOM images are grouped by SeriesInstanceUID and SeriesNumber, then split where
one "series" holds several volumes: image size, ImageType (localizers, derived maps),
echo number, mosaic or not, enhanced frame type, and orientation. Images of one volume
at the same position with different temporal keys become a frames axis (``sorting.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from medload.deid import PhiKey, keyed_source_hash, pseudonym, resolve_key
from medload.errors import MedloadError, ReadError
from medload.io.collect import Collector, FileProblem, collect
from medload.io.frame import Frame
from medload.io.headers import FileHeader, burned_in_annotation
from medload.io.series import Series
from medload.io.sorting import arrange
from medload.io.sources import source_name as _source_name
from medload.problems import Problem, ProblemKind

__all__ = ["scan", "ScanResult", "FileProblem", "group_frames", "series_from_headers"]

#: Two orientations closer than this (max abs difference of direction cosines) are one.
ORIENTATION_TOLERANCE = 1e-3


@dataclass
class ScanResult:
    """The :class:`Series` found, plus what was skipped and why.

    Iterating, ``len`` and indexing go over the series, so ``series = medload.scan(path)``
    reads as a list (``series[0]``, ``for s in series``); ``list(result)`` is a plain list.

    Attributes
    ----------
    series : list of Series
        What was found, in a stable order.
    skipped : collections.Counter
        Files not turned into volumes, counted by kind: ``"not DICOM"``, ``"DICOMDIR"``,
        ``"RT Structure Set"``, ``"non-image object ..."``.
    errors : list of FileProblem
        Files that look like DICOM (or NIfTI) but could not be read; never fatal.
    n_files : int
        Files looked at.
    fallbacks : collections.Counter
        DICOM headers read by pydicom instead of the fast walker, counted by reason (big
        endian, multi-frame, elements out of order, an unknown VR, ...; see
        ``medload.io.fastheader.FALLBACK_REASONS``). Normal files take the fast path; a
        count here tells how many were unusual.
    unmatched_masks : list of str
        Label files of a layout that pairs them (nnU-Net's ``labelsTr``) that match no image.

    Examples
    --------
    >>> r = ScanResult([])
    >>> len(r), r.n_files, dict(r.skipped), r.n_fallbacks
    (0, 0, {}, 0)
    """

    series: list[Series] = dataclasses.field(default_factory=list)
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: list[FileProblem] = dataclasses.field(default_factory=list)
    n_files: int = 0
    fallbacks: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Label files of a layout that pairs them (nnU-Net's labelsTr) that match no image.
    unmatched_masks: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.series = list(self.series)
        self.skipped = Counter(self.skipped or {})
        self.errors = list(self.errors or [])
        self.fallbacks = Counter(self.fallbacks or {})

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series)

    def __len__(self) -> int:
        return len(self.series)

    @overload
    def __getitem__(self, index: int) -> Series: ...

    @overload
    def __getitem__(self, index: slice) -> list[Series]: ...

    def __getitem__(self, index: int | slice) -> Series | list[Series]:  # an int gives a Series, a slice a list of them
        return self.series[index]

    @property
    def n_fallbacks(self) -> int:
        """Number of DICOM headers pydicom read because the fast walker would not."""
        return sum(self.fallbacks.values())

    def __repr__(self) -> str:
        return (
            f"ScanResult({len(self)} series from {self.n_files} files, skipped={dict(self.skipped)}, errors={len(self.errors)})"
        )


def _walk(path: str) -> Iterator[str]:
    """Files under ``path``, following symlinked folders and files.

    Exports are often assembled from links. Each real folder is entered once and each real
    file given once, so a link loop ends and a file reached by two paths is not counted twice.
    """
    if os.path.isfile(path):
        yield path
        return
    root_real = os.path.realpath(path)
    seen_dirs = {root_real}
    seen_files: set[str] = set()
    stack = [(path, root_real)]
    while stack:
        folder, folder_real = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith(".") and entry.name not in (".",):
                # hidden files (.DS_Store, ._AppleDouble, .git) are never scanner output
                continue
            try:
                link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows links; a dangling link is neither
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            # realpath only for links: a plain entry's real path is its real folder's plus its name.
            real = os.path.realpath(entry.path) if link else os.path.join(folder_real, entry.name)
            if is_dir:
                if real not in seen_dirs:
                    seen_dirs.add(real)
                    subdirs.append((entry.path, real))
            elif is_file and real not in seen_files:
                seen_files.add(real)
                yield entry.path
        stack.extend(reversed(subdirs))


def _orientation_groups(frames: list[Frame]) -> list[list[Frame]]:
    groups: list[tuple[np.ndarray | None, list[Frame]]] = []
    for f in frames:
        o = None if f.orientation is None else np.asarray(f.orientation)
        for ref, members in groups:
            if (ref is None and o is None) or (
                ref is not None and o is not None and np.abs(ref - o).max() <= ORIENTATION_TOLERANCE
            ):
                members.append(f)
                break
        else:
            groups.append((o, [f]))
    return [members for _, members in groups]


def split_label(key: tuple[Any, ...]) -> str:
    return json.dumps(key, default=str)


def volume_key(frame: Frame) -> str:
    """The key that puts ``frame`` in one volume (before orientation clustering)."""
    if frame.frame < 0 and (frame.position is None or frame.orientation is None):
        # A single image without a place in space (a radiograph, a secondary capture):
        # a volume of its own, never stacked with the other views of its series.
        return split_label(frame.split_key + ("file", os.path.basename(frame.file)))
    return split_label(frame.split_key)


def group_frames(headers: list[FileHeader]) -> list[tuple[str, list[Frame], list[FileHeader]]]:
    """Group the frames of ``headers`` into volumes: ``(split key, frames, headers)`` each.

    Deterministic: groups come in the order of (series number, series UID, split key).
    """
    by_key: dict[tuple[str, str], list[Frame]] = {}
    head_of: dict[str, FileHeader] = {h.path: h for h in headers}
    for h in headers:
        # Without a SeriesInstanceUID (some anonymisers blank it) the folder is what tells
        # one series from another; files of one folder still split by the usual keys.
        folder = "" if h.series_uid else os.path.dirname(h.path)
        for f in h.frames:
            by_key.setdefault((volume_key(f), folder), []).append(f)
    out = []
    for (key, _), frames in by_key.items():
        for sub in _orientation_groups(frames):
            files = sorted({f.file for f in sub})
            out.append((key, sub, [head_of[p] for p in files]))

    def order(item: tuple[str, list[Frame], list[FileHeader]]) -> tuple[Any, ...]:
        key, frames, heads = item
        h = heads[0]
        return (
            h.series_number if h.series_number is not None else 1 << 30,
            h.series_uid,
            key,
            tuple(np.round(frames[0].orientation, 3)) if frames[0].orientation else (),
        )

    out.sort(key=order)
    return out


def _identity(h: FileHeader, heads: list[FileHeader]) -> tuple[dict[str, str], Problem | None]:
    """What the patient, study and series keys are pseudonyms of, and a problem if the patient is unknown.

    Without a PatientID (anonymised exports) each study counts as its own patient, so that
    patient-level splits never pool every anonymous patient into one "pat-none". Without a
    StudyInstanceUID either, the study is what identifies the series best: its
    SeriesInstanceUID, else its folder (real path, so a symlinked export gives the same keys).
    Values that are present give the same keys as always (stores stay resumable).
    """
    folder = os.path.realpath(os.path.commonpath([os.path.dirname(hh.path) for hh in heads]))
    series = h.series_uid or f"folder:{folder}"
    if h.study_uid:
        study, study_from = h.study_uid, "StudyInstanceUID"
    elif h.series_uid:
        study, study_from = f"series:{h.series_uid}", "SeriesInstanceUID"
    else:
        study, study_from = f"folder:{folder}", "folder"
    if h.patient_id:
        return {"patient": h.patient_id, "study": study, "series": series}, None
    problem = Problem(
        ProblemKind.PATIENT_UNKNOWN,
        f"patient unknown: no PatientID; this series counts as a patient of its own per study, "
        f"keyed by its {study_from}"
        + ("" if h.study_uid else " (no StudyInstanceUID either)")
        + ". Series of one anonymous patient in different studies are not linked.",
    )
    return {"patient": f"study:{study}", "study": study, "series": series}, problem


def series_from_headers(
    key: str, frames: list[Frame], heads: list[FileHeader], *, phi_key: str | bytes | PhiKey | None = None
) -> Series:
    """Describe one volume from its frames' headers (no pixels)."""
    h = heads[0]
    # No description in the label: scan's problems reach reports and `scan --json`, where a
    # description is written only on request (PS3.15 basic profile removes it).
    label = f"series {h.series_number} ({len(heads)} files under {os.path.dirname(h.path)})"
    layout = arrange(frames, label=label)
    z, t = layout.shape_zt
    shape: tuple[int, ...] = (z, h.rows, h.columns)
    if h.samples > 1:
        shape = (h.samples, *shape)
    elif t > 1:
        shape = (t, *shape)
    if layout.median_step:
        dz = abs(layout.median_step)
        if layout.tilt_deg:
            step_vec = (layout.positions[-1] - layout.positions[0]) / max(z - 1, 1)
            dz = float(np.linalg.norm(step_vec))
    else:
        dz = h.slice_thickness or 1.0
    spacing = None
    if layout.pixel_spacing:
        spacing = (round(float(dz), 6), float(layout.pixel_spacing[0]), float(layout.pixel_spacing[1]))
    uids = sorted((f.uid, 0) for f in frames)
    sizes = sorted((hh.path.rsplit(os.sep, 1)[-1], hh.size) for hh in heads)
    # The digest of instances and sizes (what an earlier medload stored as it is), keyed: a plain
    # digest of the UIDs lets whoever holds them (the PACS) find the stored volume.
    digest = hashlib.sha256(json.dumps([uids, [s for _, s in sizes], key]).encode()).hexdigest()[:16]
    orientation = list(frames[0].orientation) if frames[0].orientation else None
    identity, unknown = _identity(h, heads)
    problems = list(layout.problems + layout.errors)
    if unknown is not None:
        problems.append(unknown)
    if burned_in_annotation(heads) == "YES":
        problems.append(
            Problem(
                ProblemKind.BURNED_IN_ANNOTATION,
                "BurnedInAnnotation YES: the pixels hold text (often names); load refuses the series "
                "unless allow_burned_in=True (medload convert --allow-burned-in).",
            )
        )
    return Series(
        kind="dicom",
        files=tuple(sorted(hh.path for hh in heads)),
        series_key=pseudonym(identity["series"] + "|" + key + "|" + json.dumps(orientation), prefix="ser-", secret=phi_key),
        study_key=pseudonym(identity["study"], prefix="stu-", secret=phi_key),
        patient_key=pseudonym(identity["patient"], prefix="pat-", secret=phi_key),
        modality=h.modality or "unknown",
        description=h.description,
        shape=shape,
        spacing=spacing,
        problems=tuple(problems),
        source_hash=keyed_source_hash("sha256:" + digest, phi_key),
        info={"split": key, "orientation": orientation, "series_number": h.series_number, "sop_class": h.sop_class},
        headers=tuple(sorted(heads, key=lambda hh: hh.path)),
        burned_in_annotation=burned_in_annotation(heads),
    )


def scan(
    path: str | os.PathLike[str],
    *,
    phi_key: str | bytes | PhiKey | None = None,
    patient_pattern: str | None = None,
    workers: int | None = None,
    source_name: str | None = None,
) -> ScanResult:
    """Find every DICOM series, NIfTI file and 2D image (PNG, JPEG, TIFF, BMP) under ``path``, reading headers only.

    Parameters
    ----------
    path : str or path-like
        A folder (walked recursively, hidden entries skipped) or one file.
    phi_key : str, bytes or PhiKey, optional
        Secret for the pseudonyms ``pat-``/``stu-``/``ser-``; default ``$MEDLOAD_PHI_KEY``, else
        the operator's key file, created on first use (:func:`medload.deid.resolve_key`).
    patient_pattern : str, optional
        2D images: a regular expression searched in each image's path relative to ``path``;
        what it finds is the patient (its ``patient`` group, else its first group). Without
        one, each image is a patient of its own (:mod:`medload.io.images`).
    workers : int, optional
        Processes that read headers (default: every core; ``0`` or ``1``: this process).
        Folders of fewer than :data:`medload.io.collect.PARALLEL_MIN_FILES` files are read in this process
        whatever the number. The result is the same either way: files are read in chunks and
        merged in the order of the walk. A file whose header read crashes its process (a
        codec's segfault) becomes an entry of ``.errors`` naming it; the scan goes on.
    source_name : str, optional
        The name NIfTI, 2D-image and nnU-Net keys are made in, with each file's path below
        ``path`` (:mod:`medload.io.sources`); default: the folder's own name (a file's folder's),
        symlinks resolved. DICOM keys come from the headers' UIDs and PatientID instead.
        ``medload.convert`` passes the names it gives its sources (two of one name get their
        parents' too).

    Returns
    -------
    ScanResult
        A list of :class:`Series` in a deterministic order (DICOM by series number, then NIfTI
        and 2D images by path), with ``.skipped`` (counts of files that are not volumes, by kind),
        ``.errors`` (unreadable files, each a :class:`FileProblem`) and ``.n_files``.

    Examples
    --------
    >>> import os, pydicom
    >>> folder = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    >>> found = scan(os.path.join(folder, "CT_small.dcm"))
    >>> found[0].modality, found[0].shape
    ('CT', (1, 128, 128))
    """
    root = os.fspath(path)
    if not os.path.exists(root):
        raise ReadError(f"{root}: no such file or folder; expected a folder of DICOM/NIfTI files or one file.")
    phi_key = resolve_key(phi_key)  # once: not a key file read per pseudonym
    from medload.io.nnunet import is_nnunet, scan_nnunet

    if is_nnunet(root):
        # An nnU-Net / Decathlon dataset: one volume per case (channels stacked), labels paired.
        return scan_nnunet(root, phi_key=phi_key, source_name=source_name)
    nifti_root = root if os.path.isdir(root) else os.path.dirname(root)
    pattern = _patient_regex(patient_pattern)
    # The source's name once, not per file (resolving the root costs system calls).
    name = source_name or _source_name(nifti_root)
    found = collect(list(_walk(root)), Collector(nifti_root, phi_key, pattern, name), workers)
    result = _dicom_series(found.headers, found.damaged, found.errors, phi_key)
    result.extend(sorted(found.nifti_series, key=lambda s: s.files))
    result.extend(sorted(found.image_series, key=lambda s: s.files))
    return ScanResult(result, skipped=found.skipped, errors=found.errors, n_files=found.n_files, fallbacks=found.fallbacks)


def _patient_regex(patient_pattern: str | None) -> re.Pattern[str] | None:
    if patient_pattern is None:
        return None
    try:
        return re.compile(patient_pattern)
    except re.error as exc:
        raise ReadError(f"patient pattern {patient_pattern!r} is not a valid regular expression ({exc}).") from None


def _dicom_series(
    headers: list[FileHeader], damaged: list[tuple[str, str]], errors: list[FileProblem], phi_key: PhiKey
) -> list[Series]:
    """The DICOM volumes of the headers found; a volume that cannot be made is an error per file."""
    result: list[Series] = []
    groups = group_frames(headers)
    damaged_of = _damaged_by_group(damaged, groups)
    for index, (key, frames, heads) in enumerate(groups):
        try:
            series = series_from_headers(key, frames, heads, phi_key=phi_key)
        except MedloadError as exc:
            for h in heads:
                errors.append(FileProblem(h.path, str(exc), type(exc).__name__))
            continue
        if damaged_of.get(index):
            series = _with_damaged(series, damaged_of[index])
        result.append(series)
    return result


def _damaged_by_group(
    damaged: list[tuple[str, str]], groups: list[tuple[str, list[Frame], list[FileHeader]]]
) -> dict[int, list[str]]:
    """Which volume each unreadable file belonged to: by the SeriesInstanceUID read before the
    damage, else by its folder when that folder holds files of one series only."""
    out: dict[int, list[str]] = {}
    if not damaged:
        return out
    by_uid: dict[str, list[int]] = {}
    by_folder: dict[str, set[str]] = {}
    groups_of_folder: dict[str, list[int]] = {}
    for index, (_, _, heads) in enumerate(groups):
        for h in heads:
            if h.series_uid:
                by_uid.setdefault(h.series_uid, []).append(index)
            folder = os.path.dirname(h.path)
            by_folder.setdefault(folder, set()).add(h.series_uid)
            groups_of_folder.setdefault(folder, []).append(index)
    for path, uid in damaged:
        targets = by_uid.get(uid) if uid else None
        if not targets:
            folder = os.path.dirname(path)
            if len(by_folder.get(folder, ())) == 1:
                targets = groups_of_folder[folder]
        for index in sorted(set(targets or ())):
            out.setdefault(index, []).append(path)
    return out


def _with_damaged(series: Series, paths: list[str]) -> Series:
    names = ", ".join(os.path.basename(p) for p in paths[:4]) + (" ..." if len(paths) > 4 else "")
    problem = Problem(
        ProblemKind.DAMAGED_FILES,
        f"{len(paths)} file(s) of this series cannot be read ({names}): the volume would be incomplete, "
        "so it is not loaded. Re-copy or re-export them, or remove them and scan again to load the rest.",
    )
    info = dict(series.info)
    info["damaged_files"] = sorted(paths)
    return dataclasses.replace(series, problems=series.problems + (problem,), info=info)
