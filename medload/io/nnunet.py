"""nnU-Net and Medical Segmentation Decathlon datasets: one volume per case, channels stacked.

The layout (nnU-Net v2; v1 and the Decathlon differ only in ``dataset.json``'s keys)::

    Dataset001_X/dataset.json          channel names, labels, file ending
    Dataset001_X/imagesTr/case_0000.nii.gz, case_0001.nii.gz   one file per channel
    Dataset001_X/labelsTr/case.nii.gz  the case's label map
    Dataset001_X/imagesTs/...          test cases, no labels

Scanned file by file, each channel would be a volume and a patient of its own (channel 0 of
a case in train, channel 1 in val) and the labels images. :func:`scan_nnunet` reads the
layout instead: one :class:`~medload.io.series.Series` per case (``kind="nnunet"``) whose
files are its channels in order, its label file in ``info``, one patient per case (the
pseudonym of the case id), and the label files that match no case listed apart.
:func:`load_nnunet` stacks the channels into one ``(C, Z, Y, X)`` volume with
``meta["channels"]`` from ``dataset.json`` and ``meta["label_names"]`` (``{name: value}``).

Examples
--------
>>> import json, os, tempfile, numpy as np, nibabel as nib
>>> root = tempfile.mkdtemp()
>>> for sub in ("imagesTr", "labelsTr"):
...     os.mkdir(os.path.join(root, sub))
>>> for c in range(2):
...     nib.save(nib.Nifti1Image(np.full((4, 4, 3), c, np.int16), np.eye(4)), f"{root}/imagesTr/a_{c:04d}.nii.gz")
>>> nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)), f"{root}/labelsTr/a.nii.gz")
>>> with open(f"{root}/dataset.json", "w") as f:
...     json.dump({"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "lesion": 1},
...                "file_ending": ".nii.gz"}, f)
>>> found = scan_nnunet(root, phi_key="doc")
>>> [(s.info["case"], s.shape, s.modality) for s in found]
[('a', (2, 3, 4, 4), 'MR')]
>>> vol = load_nnunet(found[0])
>>> vol.shape, vol.meta["channels"], vol.meta["label_names"]
((2, 3, 4, 4), ['T2', 'ADC'], {'background': 0, 'lesion': 1})
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.deid import PhiKey, keyed_source_hash, pseudonym, resolve_key, text_bytes
from medload.errors import GeometryError, ReadError, UnsupportedError
from medload.io.nifti import load_nifti, scan_nifti
from medload.io.series import Series
from medload.io.sources import path_identity
from medload.volume import Volume

if TYPE_CHECKING:  # io.scan imports this module: imported where used
    from medload.io.scan import ScanResult

__all__ = ["NNUNET_ENDINGS", "is_nnunet", "load_nnunet", "read_dataset_json", "scan_nnunet"]

#: File endings medload reads in an nnU-Net dataset (NIfTI; 2D PNG datasets are not read as such).
NNUNET_ENDINGS = (".nii.gz", ".nii")
#: Channel names (upper case) that say MR; "CT" says CT; anything else leaves the modality unknown.
_MR_CHANNELS = frozenset(
    {"T1", "T1W", "T1C", "T1CE", "T1GD", "T2", "T2W", "FLAIR", "ADC", "DWI", "PD", "T2STAR", "MRI", "MR", "HBV", "SWI"}
)


def is_nnunet(path: str | os.PathLike[str]) -> bool:
    """A folder with a ``dataset.json`` and an ``imagesTr`` folder beside it.

    Examples
    --------
    >>> import tempfile
    >>> is_nnunet(tempfile.mkdtemp())
    False
    """
    root = Path(path)
    return root.is_dir() and (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()


def read_dataset_json(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"channels": [names by index], "labels": {name: value}, "file_ending": str}`` from ``dataset.json``.

    nnU-Net v2 keys (``channel_names``, ``labels`` as name -> value, ``file_ending``) and v1 /
    Decathlon keys (``modality``, ``labels`` as value -> name) are both read. Region-based
    labels (a name mapping to a list of values) keep their list.

    Raises
    ------
    ReadError
        The file is not JSON, or names no channels.
    """
    path = Path(root) / "dataset.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReadError(f"{path}: not a readable dataset.json ({exc}); expected nnU-Net's JSON description.") from None
    except RecursionError:
        raise ReadError(f"{path}: JSON nested too deeply to be a dataset.json; expected nnU-Net's JSON description.") from None
    if not isinstance(spec, dict):
        raise ReadError(
            f"{path}: holds a JSON {type(spec).__name__}, expected nnU-Net's JSON object (channel_names, labels, ...)."
        )
    names = spec.get("channel_names") or spec.get("modality")
    if not isinstance(names, dict) or not names:
        raise ReadError(f"{path}: names no channels (expected 'channel_names' or 'modality': {{\"0\": \"CT\", ...}}).")
    try:
        channels = [str(names[k]) for k in sorted(names, key=int)]
    except ValueError:
        raise ReadError(f"{path}: channel indices must be 0, 1, ...; found {sorted(names)}.") from None
    labels_in = spec.get("labels") or {}
    if not isinstance(labels_in, dict):
        raise ReadError(
            f"{path}: 'labels' is a {type(labels_in).__name__}, expected an object of name: value ({{\"background\": 0, ...}})."
        )
    labels: dict[str, Any] = {}
    for k, v in labels_in.items():
        if isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(v, str):
            labels[v] = _label_value(int(k), path, v)  # v1 / Decathlon: {"0": "background"}
        elif isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            labels[str(k)] = [_label_value(x, path, k) for x in v]  # a region: the labels it unites
        elif isinstance(v, int) and not isinstance(v, bool):
            labels[str(k)] = _label_value(v, path, k)
        elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
            labels[str(k)] = _label_value(int(v), path, k)
        else:
            raise ReadError(
                f"{path}: label {str(k)[:40]!r} is {str(v)[:40]!r}, expected a whole number (or a list of them for a region)."
            )
    ending = str(spec.get("file_ending") or ".nii.gz")
    return {"channels": channels, "labels": labels, "file_ending": ending}


#: Label values a mask can hold: medload stores masks in at most int64, and nnU-Net's are small.
_LABEL_RANGE = (0, 2**31 - 1)


def _label_value(value: int, path: Path, name: Any) -> int:
    """``value`` when it is a label a mask can hold, else a ReadError naming the label."""
    if not _LABEL_RANGE[0] <= value <= _LABEL_RANGE[1]:
        raise ReadError(f"{path}: label {str(name)[:40]!r} is {value}, expected a value in {list(_LABEL_RANGE)}.")
    return value


def _modality(channels: list[str]) -> str:
    upper = [c.upper().replace(" ", "").replace("-", "") for c in channels]
    if all(c == "CT" for c in upper):
        return "CT"
    if all(c in _MR_CHANNELS for c in upper):
        return "MR"
    return "unknown"


def scan_nnunet(
    root: str | os.PathLike[str], *, phi_key: str | bytes | PhiKey | None = None, source_name: str | None = None
) -> ScanResult:
    """One :class:`Series` per case of ``imagesTr`` and ``imagesTs``, headers only.

    Keys are pseudonyms of the dataset's name and the case id (:mod:`medload.io.sources`): the
    name is ``source_name``, by default the dataset folder's own name (``Dataset001_X``), so
    case ``a`` of two datasets is two patients.

    Returns a :class:`~medload.io.scan.ScanResult` with, besides the series, ``.errors`` (a
    case missing a channel, channels on different grids, an unreadable header) and
    ``.unmatched_masks`` (label files of ``labelsTr`` whose case has no images).

    Raises
    ------
    ReadError
        ``dataset.json`` is unreadable.
    UnsupportedError
        Its ``file_ending`` is not NIfTI.
    """
    from medload.io.scan import FileProblem, ScanResult

    root = Path(root).resolve()
    spec = read_dataset_json(root)
    ending = spec["file_ending"]
    if ending not in NNUNET_ENDINGS:
        raise UnsupportedError(
            f"{root / 'dataset.json'}: file_ending {ending!r}; medload reads nnU-Net datasets of NIfTI files "
            f"({', '.join(NNUNET_ENDINGS)}). Convert the images folder as plain images instead."
        )
    key = resolve_key(phi_key)
    name = source_name or root.name
    n_channels = len(spec["channels"])
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    series: list[Series] = []
    errors: list[Any] = []
    n_files = 1
    label_dir = root / "labelsTr"
    labels_left = {p.name[: -len(ending)]: str(p) for p in sorted(label_dir.glob("*" + ending))} if label_dir.is_dir() else {}
    n_files += len(labels_left)
    for split in ("Tr", "Ts"):
        folder = root / f"images{split}"
        if not folder.is_dir():
            continue
        cases: dict[str, dict[int, str]] = {}
        for path in sorted(folder.iterdir()):
            n_files += 1
            match = pattern.match(path.name)
            if not match:
                continue
            cases.setdefault(match["case"], {})[int(match["channel"])] = str(path)
        for case, by_channel in sorted(cases.items()):
            files = [by_channel.get(c) for c in range(n_channels)]
            missing = [c for c, f in enumerate(files) if f is None]
            extra = sorted(set(by_channel) - set(range(n_channels)))
            if missing or extra:
                first = next(f for f in by_channel.values())
                what = (
                    f"lacks channel(s) {', '.join(f'{c:04d}' for c in missing)}"
                    if missing
                    else f"has channel(s) {extra} that dataset.json does not name"
                )
                errors.append(
                    FileProblem(
                        first,
                        f"{folder.name}/{case}: the case {what} (dataset.json names "
                        f"{n_channels}: {spec['channels']}); the case is skipped.",
                        "ReadError",
                    )
                )
                continue
            present = [by_channel[c] for c in range(n_channels)]
            try:
                # Unkeyed digests of the channels: the case's digest is keyed once (_case_series).
                heads = [scan_nifti(f, phi_key=key, root=root, keyed_hash=False) for f in present]
            except ReadError as exc:
                errors.append(FileProblem(present[0], str(exc), type(exc).__name__))
                continue
            shapes = {h.shape for h in heads}
            if len(shapes) != 1 or len(heads[0].shape) != 3:
                errors.append(
                    FileProblem(
                        present[0],
                        f"{folder.name}/{case}: its channels are not one 3D grid "
                        f"(shapes {[h.shape for h in heads]}); the case is skipped.",
                        "GeometryError",
                    )
                )
                continue
            label = labels_left.pop(case, None) if split == "Tr" else None
            series.append(_case_series(root, spec, split, case, present, heads, label, key, name))
    return ScanResult(series, errors=errors, n_files=n_files, unmatched_masks=sorted(labels_left.values()))


def _case_series(
    root: Path,
    spec: dict[str, Any],
    split: str,
    case: str,
    present: list[str],
    heads: list[Series],
    label: str | None,
    key: PhiKey,
    name: str,
) -> Series:
    """The :class:`Series` of one complete nnU-Net case (headers of its channels in ``heads``)."""
    # The case id is part of it: two cases whose files have equal headers and sizes (a
    # synthetic dataset) are not duplicates of each other.
    digest = hashlib.sha256(text_bytes("|".join([split, case, *(h.source_hash for h in heads)]))).hexdigest()[:32]
    return Series(
        kind="nnunet",
        files=tuple(present),
        series_key=pseudonym(path_identity(name, f"{split}/{case}"), prefix="ser-", secret=key),
        study_key=pseudonym(path_identity(name, case), prefix="stu-", secret=key),
        patient_key=pseudonym(path_identity(name, case), prefix="pat-", secret=key),
        modality=_modality(spec["channels"]),
        description=case,
        shape=(len(spec["channels"]), *heads[0].shape),
        spacing=heads[0].spacing,
        source_hash=keyed_source_hash(f"nnunet-{digest}", key),
        info={
            "case": case,
            "split": split,
            "channels": list(spec["channels"]),
            "label_file": label,
            "label_names": dict(spec["labels"]),
            "root": str(root),
            "source_name": name,
        },
    )


def load_nnunet(series: Series, *, modality: str | None = None) -> Volume:
    """The case's channels stacked into one ``(C, Z, Y, X)`` volume.

    Raises
    ------
    GeometryError
        The channels lie on different grids (affines differ by more than 0.01 mm).
    ReadError
        A channel file does not read.
    """
    if series.kind != "nnunet":
        raise ReadError(f"load_nnunet needs a Series from scan_nnunet; found kind={series.kind!r}.")
    chosen = modality or (series.modality if series.modality != "unknown" else None)
    volumes = [
        load_nifti(dataclasses.replace(series, kind="nifti", files=(f,), info={"root": series.info.get("root")}), modality=chosen)
        for f in series.files
    ]
    first = volumes[0]
    for f, vol in zip(series.files[1:], volumes[1:]):
        if vol.shape != first.shape or not np.allclose(vol.affine, first.affine, atol=0.01):
            raise GeometryError(
                f"{f}: channel on another grid than {os.path.basename(series.files[0])} (shape {vol.shape} vs "
                f"{first.shape}, affines differ); nnU-Net expects the channels of a case co-registered."
            )
    array = np.stack([v.array for v in volumes]).astype(np.result_type(*[v.array.dtype for v in volumes]), copy=False)
    meta = dict(first.meta)
    meta["channels"] = list(series.info["channels"])
    meta["label_names"] = dict(series.info.get("label_names") or {})
    meta["source_hash"] = series.source_hash
    for k in ("series_key", "study_key", "patient_key"):
        meta[k] = getattr(series, k)
    return Volume(array, first.affine, modality=first.modality, meta=meta)
