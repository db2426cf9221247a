"""Per-volume class labels: stored in the store, from a CSV, a mapping, or a field (ImageFolder).

Every form ends in the same thing: one integer per volume of the store (``-1`` = no label)
and, when the labels were names, the list of class names (``classes[i]`` is the name of
label ``i``, sorted alphabetically as torchvision's ``ImageFolder`` does).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medload.errors import ConfigError, MedloadError

__all__ = ["LabelFrom", "label_from", "read_label_csv", "read_label_table", "resolve_labels", "LABEL_KEYS"]

#: What a label can be keyed by: the VolumeRecord attribute of each.
LABEL_KEYS = {"patient": "patient_key", "study": "study_key", "series": "series_key", "volume": "key"}


@dataclass(frozen=True)
class LabelFrom:
    """Labels taken from a field of each volume, ImageFolder style (see :func:`label_from`)."""

    field: str
    pattern: str | None = None
    classes: tuple[str, ...] | None = None


def label_from(field: str, *, pattern: str | None = None, classes: Sequence[str] | None = None) -> LabelFrom:
    """Take each volume's class from one of its fields, the way ImageFolder uses folder names.

    Parameters
    ----------
    field : str
        A volume record attribute (``"key"``, ``"series_key"``, ``"modality"``, ...) or a key
        of the volume's ``meta`` (e.g. ``"description"``, or a ``"folder"`` field the
        converter recorded).
    pattern : str, optional
        Regular expression searched in the field's text; its first group (or the whole match)
        is the class name, e.g. ``r"^([^/]+)/"`` for the first folder of a relative path or
        ``r"^(\\w+?)-"`` for a key prefix.
    classes : sequence of str, optional
        Class names in label order. Default: the sorted distinct names found.

    Examples
    --------
    >>> spec = label_from("key", pattern=r"^(\\w+?)-")
    >>> spec.field, spec.pattern
    ('key', '^(\\\\w+?)-')
    """
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise MedloadError(f"label_from(pattern={pattern!r}) is not a valid regular expression: {exc}") from exc
    return LabelFrom(str(field), pattern, tuple(classes) if classes is not None else None)


def _field_text(rec: Any, field: str) -> str | None:
    if field != "meta" and hasattr(rec, field):
        value = getattr(rec, field)
    else:
        value = (getattr(rec, "meta", None) or {}).get(field)
    return None if value is None else str(value)


def _names_to_ints(names: Sequence[str | None], classes: Sequence[str] | None, where: str) -> tuple[np.ndarray, list[str] | None]:
    """Class names to integers: all-integer names are used as given, other names are indexed."""
    present = [n for n in names if n is not None]
    if classes is None and all(_is_int(n) for n in present):
        return np.array([int(n) if n is not None else -1 for n in names], np.int64), None
    classes = list(classes) if classes is not None else sorted(set(present))
    lookup = {name: i for i, name in enumerate(classes)}
    unknown = sorted({n for n in present if n not in lookup})
    if unknown:
        raise MedloadError(f"{where}: class names {unknown[:5]} are not in classes={classes}; add them or fix the labels.")
    return np.array([lookup[n] if n is not None else -1 for n in names], np.int64), classes


def _stored_classes(records: Sequence[Any], store_name: str) -> list[str] | None:
    """Class names stored with the labels (``meta["class_name"]``), ``classes[i]`` for label ``i``."""
    from medload.store.records import class_names

    return class_names(records, store_name)


def _is_int(text: Any) -> bool:
    try:
        int(str(text))
    except ValueError:
        return False
    return True


def read_label_table(
    path: str | os.PathLike[str], key_columns: Sequence[str], label_columns: Sequence[str] = ("label", "class")
) -> tuple[str, dict[str, tuple[str, int]]]:
    """The one reader of label CSVs (``SliceDataset(labels=)`` and ``convert --labels`` alike).

    Rules: UTF-8 (a BOM is allowed) with a header; the key column is the first of
    ``key_columns`` the header names (case and spaces ignored); the label column is the first
    of ``label_columns`` (``label`` or ``class``; another column such as ``patient_id`` when the
    same CSV gives the patient of each image); blank lines are skipped; a row without a key or a label, and a key given two
    different labels, are refused with the line.

    Raises
    ------
    ConfigError
        The file is missing, not UTF-8, lacks the columns, or has a bad row (the line named).

    Returns
    -------
    (key column, {key: (label text, line number)})

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> _ = open(path, "w").write("Series_Key,label\\nser-1,tumor\\n\\nser-2,normal\\n")
    >>> read_label_table(path, ("series_key", "key"))
    ('series_key', {'ser-1': ('tumor', 2), 'ser-2': ('normal', 4)})
    """
    path = Path(path)
    expected = f"a header with a {' or '.join(repr(c) for c in label_columns)} column and a key column ({', '.join(key_columns)})"
    if not path.is_file():
        raise ConfigError(f"label CSV {path} does not exist; pass the path of a CSV with {expected}.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(
            f"label CSV {path} is not a UTF-8 CSV ({type(exc).__name__}: {exc}); save it as CSV UTF-8 with {expected}."
        ) from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    key_name = next((n for n in key_columns if n in header), None)
    label_name = next((n for n in label_columns if n in header), None)
    if key_name is None or label_name is None:
        raise ConfigError(f"label CSV {path}: expected {expected}; found columns {header}.")
    key_col, label_col = header.index(key_name), header.index(label_name)
    out: dict[str, tuple[str, int]] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        key = row[key_col].strip() if len(row) > key_col else ""
        label = row[label_col].strip() if len(row) > label_col else ""
        if not key or not label:
            raise ConfigError(f"label CSV {path} line {lineno}: expected a {key_name} and a {label_name}, found {row}.")
        if key in out and out[key][0] != label:
            raise ConfigError(
                f"label CSV {path}: key {key!r} has label {out[key][0]!r} on line {out[key][1]} "
                f"and {label!r} on line {lineno}; keep one."
            )
        out[key] = (label, lineno)
    return key_name, out


def read_label_csv(path: str | Path, *, label_key: str = "patient") -> dict[str, tuple[str, int]]:
    """Read a label CSV into ``{key: (label text, line number)}`` (rules: :func:`read_label_table`).

    The key column is the one named ``<label_key>_key``, ``<label_key>`` or ``key``; the
    label column is ``label`` or ``class``.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> _ = open(path, "w").write("patient_key,label\\npat-1,tumor\\npat-2,normal\\n")
    >>> read_label_csv(path)
    {'pat-1': ('tumor', 2), 'pat-2': ('normal', 3)}
    """
    return read_label_table(path, (f"{label_key}_key", label_key, "key"))[1]


def resolve_labels(
    records: Sequence[Any],
    labels: Any = None,
    *,
    label_key: str = "patient",
    store_name: str = "the store",
) -> tuple[np.ndarray, list[str] | None]:
    """One integer label per volume record (``-1`` = none) and the class names, if named.

    Parameters
    ----------
    records : sequence of VolumeRecord
        ``StoreReader.volumes``.
    labels : None, str, Path, mapping or LabelFrom
        ``None``: the labels stored with each volume, with the class names stored beside
        them (``meta["class_name"]``: class folders, a CSV of names). A CSV path or a mapping
        ``{key: label}``: keyed by ``label_key``; a key that matches no volume is an error
        (it is usually a typo, or keys of another kind). :func:`label_from`: from a field.
    label_key : {"patient", "study", "series", "volume"}
        What the CSV or mapping keys are.

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> recs = [R(key="a", patient_key="p1", label=None), R(key="b", patient_key="p2", label=None)]
    >>> resolve_labels(recs, {"p1": "tumor", "p2": "normal"})
    (array([1, 0]), ['normal', 'tumor'])
    """
    if label_key not in LABEL_KEYS:
        raise MedloadError(f"label_key must be one of {sorted(LABEL_KEYS)}, found {label_key!r}.")
    if labels is None:
        values = [getattr(r, "label", None) for r in records]
        return np.array([int(v) if v is not None and int(v) >= 0 else -1 for v in values], np.int64), _stored_classes(
            records, store_name
        )
    if isinstance(labels, LabelFrom):
        names = []
        for rec in records:
            text = _field_text(rec, labels.field)
            if text is None:
                raise MedloadError(
                    f"labels from field {labels.field!r}: volume {rec.key!r} has no such field "
                    f"(record attributes or meta keys); choose another field."
                )
            if labels.pattern is not None:
                match = re.search(labels.pattern, text)
                if match is None:
                    raise MedloadError(
                        f"labels from field {labels.field!r}: pattern {labels.pattern!r} does not match "
                        f"{text!r} of volume {rec.key!r}."
                    )
                text = match.group(1) if match.groups() else match.group(0)
            names.append(text)
        return _names_to_ints(names, labels.classes, f"labels from field {labels.field!r}")

    attr = LABEL_KEYS[label_key]
    keys = [str(getattr(r, attr)) for r in records]
    if isinstance(labels, (str, Path)):
        table = read_label_csv(labels, label_key=label_key)
        where = f"label CSV {labels}"
        line = {k: f"line {ln}" for k, (_, ln) in table.items()}
        mapping = {k: v for k, (v, _) in table.items()}
    elif isinstance(labels, Mapping):
        where, mapping = "labels mapping", {str(k): str(v) for k, v in labels.items()}
        line = {k: "" for k in mapping}
    else:
        raise MedloadError(
            f"labels must be None (stored labels), a CSV path, a mapping key -> label or "
            f"medload.datasets.label_from(...), found {type(labels).__name__}."
        )
    known = set(keys)
    unknown = [k for k in mapping if k not in known]
    if unknown:
        shown = ", ".join(f"{k!r} ({line[k]})" if line[k] else repr(k) for k in unknown[:5])
        hint = ""
        for other, other_attr in LABEL_KEYS.items():
            if other != label_key and set(unknown) <= {str(getattr(r, other_attr)) for r in records}:
                hint = f" They are {other} keys: pass label_key={other!r}."
                break
        raise MedloadError(
            f"{where}: {len(unknown)} {label_key} key(s) match no volume in {store_name}: {shown}"
            f"{' ...' if len(unknown) > 5 else ''}.{hint} Remove those rows or use the store they belong to."
        )
    return _names_to_ints([mapping.get(k) for k in keys], None, where)
