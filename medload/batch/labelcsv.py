"""Labels and patients of a batch from a CSV or from class folders (:func:`medload.convert`'s
``labels=`` and ``patients=``), matched to the series a scan found.

A CSV names a series by the pseudonyms ``medload scan`` shows (``series_key``,
``study_key``, ``patient_key`` or ``key``) or, for 2D images and nnU-Net cases, by a file
column (:data:`IMAGE_KEY_COLUMNS`): the source folder's name and the path below it, the path
below the source, or the file name (the case id for nnU-Net). A row that names several
series is refused: labelling them alike would be a guess.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medload.errors import ConfigError
from medload.problems import ProblemKind

__all__ = ["IMAGE_KEY_COLUMNS", "read_labels", "class_folder_labels", "patients_from_csv"]

_PSEUDONYM = re.compile(r"^(pat|stu|ser)-[A-Za-z0-9._-]+$")

#: Label CSV columns that name an image file (its path below the source folder, or its name).
IMAGE_KEY_COLUMNS = ("file", "filename", "image", "path", "image index")


def _image_names(s: Any, roots: Sequence[str]) -> list[str]:
    """What a label CSV may call a 2D image: its source's name and path below it, its path below a
    source root, or its file name; an nnU-Net case: its dataset's name and case id, or its case id."""
    source = s.info.get("source_name") if getattr(s, "info", None) else None
    if getattr(s, "kind", "") == "nnunet":
        case = str(s.info.get("case"))
        return ([f"{source}/{case}"] if source else []) + [case]
    if getattr(s, "kind", "") != "image":
        return []
    file = os.path.realpath(s.files[0])
    names = [os.path.basename(file)]
    for root in roots:
        real = os.path.realpath(root)
        if file.startswith(real + os.sep):
            names.insert(0, os.path.relpath(file, real).replace(os.sep, "/"))
    if source and s.info.get("relative"):
        names.insert(0, f"{source}/{s.info['relative']}")
    return list(dict.fromkeys(names))


def _match_names(table: Any, series: Sequence[Any], names_of: Any, what: str) -> dict[str, str]:
    """``{source_hash: CSV key}``: each series' first name that is a key of ``table``.

    A key that names several series (``0001.png`` of two sources or two class folders) is
    refused: labelling them alike would be a guess. The error names the longer spellings that
    tell them apart.
    """
    matches: dict[str, list[tuple[str, list[str]]]] = {}
    out: dict[str, str] = {}
    for s in series:
        names = names_of(s)
        hit = next((k for k in names if k in table), None)
        if hit is not None:
            out[s.source_hash] = hit
            matches.setdefault(hit, []).append((s.source_hash, names))
    ambiguous = {k: v for k, v in matches.items() if len(v) > 1}
    if ambiguous:
        key, hits = sorted(ambiguous.items())[0]
        spellings = ", ".join(names[0] for _, names in hits[:4])
        raise ConfigError(
            f"{what}: the row {key!r} names {len(hits)} images ({spellings}{' ...' if len(hits) > 4 else ''})"
            f"{f' and {len(ambiguous) - 1} other row(s) name several too' if len(ambiguous) > 1 else ''}; "
            "write each file as its source folder's name and its path below it (as listed) so that each row "
            "names one image."
        )
    return out


def read_labels(
    path: str | os.PathLike[str], series: Sequence[Any], roots: Sequence[str] = ()
) -> tuple[dict[str, int], dict[str, Any]]:
    """labels.csv -> {source_hash: int label}, plus what the report says about it.

    The CSV is read by :func:`medload.datasets.labels.read_label_table` (the same rules as
    ``SliceDataset(labels=)``); integer labels are used as given, class names become 0..n-1
    in sorted order (``info["classes"]``). Keys are the pseudonyms ``medload scan`` shows or,
    for 2D images, a ``file`` column (:data:`IMAGE_KEY_COLUMNS`): the source folder's name and
    the path below it (``ds_a/normal/0001.png``), the path below the source folder, or the file
    name; a row that names several images is refused (ConfigError). nnU-Net cases: the case id,
    or the dataset folder's name and the case id.
    """
    from medload.datasets.labels import read_label_table

    key_col, table = read_label_table(path, ("series_key", "study_key", "patient_key", "key") + IMAGE_KEY_COLUMNS)
    values = [label for label, _ in table.values()]
    try:
        as_int = [int(v) for v in values]
        classes = None
    except ValueError:
        classes = sorted(set(values))
        as_int = [classes.index(v) for v in values]
    by_key = dict(zip(table, as_int))
    fields = ("series_key", "study_key", "patient_key") if key_col == "key" else (key_col,)
    if key_col in IMAGE_KEY_COLUMNS:
        hits = _match_names(by_key, series, lambda s: _image_names(s, roots), f"labels {Path(path).name}")
    else:
        hits = {}
        for s in series:
            k = next((getattr(s, f) for f in fields if getattr(s, f) in by_key), None)
            if k is not None:
                hits[s.source_hash] = k
    out = {h: by_key[k] for h, k in hits.items()}
    used = set(hits.values())
    unknown = sorted(set(by_key) - used)
    # Listed only when they look like medload's pseudonyms: a CSV keyed by MRNs by mistake
    # must not put them in the report (they are counted).
    unknown = [k for k in unknown if _PSEUDONYM.match(k)]
    info = {
        "key": key_col,
        "classes": classes,
        "rows": len(table),
        "matched_series": len(out),
        "unknown_keys": unknown[:50],
        "n_unknown_keys": len(set(by_key) - used),
    }
    return out, info


def class_folder_labels(series: Sequence[Any], pseudonym_key: Any = None) -> tuple[dict[str, int], dict[str, Any]]:
    """ImageFolder's rule: each 2D image's first folder below its source is its class.

    Returns ``{source_hash: label}`` (class names sorted, label = position) and the report's
    ``labels`` entry. Images directly in a source folder get no label. With ``pseudonym_key``
    the class names written are keyed pseudonyms of the folder names (``class-`` + 16 hex):
    folders taken for classes without the operator saying so may be patients' folders
    (``DOE^JOHN/``), whose names no output may hold; the labels are the same.
    """
    images = [s for s in series if getattr(s, "kind", "") == "image"]
    named = [s for s in images if s.info.get("class_folder")]
    classes = sorted({s.info["class_folder"] for s in named})
    out = {s.source_hash: classes.index(s.info["class_folder"]) for s in named}
    info: dict[str, Any] = {"from": "class folders"}
    if pseudonym_key is not None:
        from medload.deid import pseudonym

        info["class_names"] = "pseudonyms of the folder names; pass --labels folders (labels='folders') to store the names"
        classes = [pseudonym(c, prefix="class-", secret=pseudonym_key) for c in classes]
    info.update(classes=classes, matched_series=len(out), unlabelled_images=len(images) - len(named))
    return out, info


def patients_from_csv(
    path: str | os.PathLike[str], series: Sequence[Any], roots: Sequence[str], phi_key: Any
) -> tuple[list[Any], dict[str, Any]]:
    """2D images re-keyed by the patient a CSV gives each file (columns ``file`` and ``patient_id``).

    Read by the one label CSV reader with ``patient_id`` (or ``patient``) as its value column;
    the patient becomes a keyed pseudonym (:func:`medload.deid.pseudonym`), as a DICOM PatientID does.
    """
    import dataclasses

    from medload.datasets.labels import read_label_table
    from medload.deid import file_key, pseudonym, resolve_key

    _, table = read_label_table(path, IMAGE_KEY_COLUMNS, label_columns=("patient_id", "patient"))
    key = resolve_key(phi_key)  # once, not per image
    hits = _match_names(table, series, lambda s: _image_names(s, roots), f"patients {Path(path).name}")
    out, matched = [], 0
    for s in series:
        found = table[hits[s.source_hash]][0] if s.source_hash in hits else None
        if found is not None:
            matched += 1
            problems = tuple(p for p in s.problems if p.kind is not ProblemKind.PATIENT_UNKNOWN)
            s = dataclasses.replace(s, patient_key=pseudonym(found, prefix="pat-", secret=key), problems=problems)
        out.append(s)
    # The table's name is a file_key, as every file an output names: a name the operator chose can name a patient.
    return out, {"file": file_key(path, key), "rows": len(table), "matched_images": matched}
