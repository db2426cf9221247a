"""The batch job: scan sources, then per series load, preprocess and write; report everything.

``medload.convert(sources, out)`` (and ``medload convert SRC... -o OUT``) turns whole scanner
exports into one store. What it promises:

- **Output layout.** ``out`` is a folder of shards, ``out/shard-0000.h5``, ``shard-0001.h5``,
  ... (one per local worker process; on Dask one per series, ``shard-t-<hash>.h5``), which
  :func:`medload.open` reads as one store, plus ``out/report.json``. An ``out`` ending in
  ``.h5``/``.hdf5`` is one file written by one worker process, with the report beside it
  (``x.h5`` -> ``x.report.json``).
- **Nothing stops the batch.** A series that fails to read, to preprocess or to write (and a
  worker process that crashes on it) becomes a ``"failed"`` entry with its reason; the rest
  goes on. :attr:`ConversionReport.ok` (and the command's exit status) says if anything failed.
- **Resumable.** Shards are written atomically by :class:`medload.Store`; a re-run first
  finishes shards an interrupted run left partial (keeping their complete volumes), then skips
  every series already in the store (same ``source_hash``). Ctrl-C stops feeding series,
  lets the running ones finish and closes every shard, so nothing already written is lost.
- **De-identified by default.** Volumes carry only pseudonymous keys (``--phi-key`` /
  ``$MEDLOAD_PHI_KEY``); no field of DICOM PS3.15's basic profile is written. Folder paths in
  messages are made relative to the source (rename folders that are themselves names).
  ``keep_phi=True`` keeps the identifying fields on purpose, under ``meta["phi"]``.
  Descriptions (SeriesDescription, ProtocolName, BodyPartExamined, a NIfTI file's name: see
  :data:`DESCRIPTOR_KEYS`) are free text that can hold names; the basic profile removes them,
  so they are written to neither the store nor the report unless ``keep_descriptions=True``
  (PS3.15's "Retain ... Clean Descriptors" option: the user judged them clean), which
  ``keep_phi=True`` implies.
- **Preprocessing.** ``pipeline=None`` picks a preset by modality (``medload.transforms.
  default_preset``: CT -> ``ct-abdomen``, MR -> ``mr-body``, CR/DX/MG -> ``xray``; any other
  modality is stored as read, with no intensity step). ``size`` appends
  ``ResizeSlices(size, mode="resize")`` (interpolated; the affine records the new spacing).
"""

from __future__ import annotations

import csv
import re
import datetime
import json
import os
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medload.deid import IDENTIFYING_KEYWORDS, sanitize_key
from medload.errors import MedloadError, ReadError, StoreError, TransformError
from medload.volume import Volume

__all__ = ["convert", "ConversionReport", "resolve_pipelines", "REPORT_NAME"]

REPORT_NAME = "report.json"
SHARD_PREFIX = "shard-"
_SINGLE_SUFFIXES = (".h5", ".hdf5")
#: Modalities with their own entry when presets are chosen by modality.
_AUTO_MODALITIES = ("CT", "MR", "CR", "DX", "MG")
_MASK_SUFFIXES = (".nii.gz", ".nii")


class ConversionReport(dict):
    """What :func:`convert` did, JSON-able (it is a dict), also written as ``report.json``.

    Keys: ``counts`` (series found, converted, already converted, failed, not run; files
    skipped and unreadable; slices written), ``series`` (one entry per series: keys,
    modality, description, shape, ``status`` and ``reason``, ``key``/``shard`` in the store),
    ``files`` (files that are not volumes or could not be read, with why), ``output``,
    ``shards``, ``report_path``, ``pipeline``, ``options``, ``interrupted``, ``elapsed_s``.

    Examples
    --------
    >>> r = ConversionReport(counts={"failed": 0}, interrupted=False)
    >>> r.ok
    True
    """

    @property
    def ok(self) -> bool:
        """True when nothing failed and the run was not interrupted."""
        counts = self.get("counts", {})
        return not self.get("interrupted") and counts.get("failed", 0) == 0 and counts.get("unreadable_files", 0) == 0

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The entries of series that failed."""
        return [s for s in self.get("series", []) if s.get("status") == "failed"]

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.get("counts", {}))


# --------------------------------------------------------------------------- pipelines
def _as_config(spec: Any, where: str) -> dict[str, Any]:
    """One pipeline spec (None/"none", preset name, file path, Pipeline, config dict) -> config."""
    from medload.transforms import Pipeline, preset

    if spec is None or (isinstance(spec, str) and spec.lower() in ("none", "raw")):
        return Pipeline([]).to_config()
    if isinstance(spec, Pipeline):
        return spec.to_config()
    if isinstance(spec, Mapping):
        return Pipeline.from_config(spec).to_config()
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text.endswith((".json", ".toml")) or os.path.sep in text:
            return Pipeline.load(text).to_config()
        return preset(text).to_config()
    raise TransformError(
        f"{where}: expected a preset name, a .json/.toml pipeline file, a Pipeline or a config dict; "
        f"found {type(spec).__name__}"
    )


def resolve_pipelines(pipeline: Any = None, *, size: int | Sequence[int] | None = None,
                      resize_mode: str = "resize") -> dict[str, Any]:
    """Turn the user's ``pipeline`` argument into the JSON-able spec recorded in the store.

    Parameters
    ----------
    pipeline : None, str, path, Pipeline, dict, or mapping of modality -> one of these
        ``None``: by modality (see the module doc). A preset name, a ``.json``/``.toml`` file,
        a :class:`~medload.transforms.Pipeline` or its config: the same for every series.
        ``{"CT": "ct-brain", "MR": "pipe.toml", "*": "none"}``: by modality, ``"*"`` for the
        rest; modalities not named keep their default.
    size : int or (int, int), optional
        Append ``ResizeSlices(size, mode=resize_mode)`` to every pipeline.
    resize_mode : {"resize", "pad-crop"}
        How slices reach ``size``.

    Returns
    -------
    dict
        Either one pipeline config (``{"medload_pipeline": 1, "steps": [...]}``) or
        ``{"medload_pipelines": 1, "by_modality": {mod: config}, "other": config}``.

    Examples
    --------
    >>> spec = resolve_pipelines("ct-brain", size=64)
    >>> [s["name"] for s in spec["steps"]]
    ['window', 'resize_slices']
    >>> sorted(resolve_pipelines(None)["by_modality"])
    ['CR', 'CT', 'DX', 'MG', 'MR']
    """
    from medload.transforms import Pipeline, ResizeSlices, default_preset

    def finish(config: dict[str, Any]) -> dict[str, Any]:
        if size is None:
            return config
        steps = Pipeline.from_config(config) + ResizeSlices(size, mode=resize_mode)
        return steps.to_config()

    is_mapping = isinstance(pipeline, Mapping) and "steps" not in pipeline
    if pipeline is not None and not is_mapping:
        return finish(_as_config(pipeline, "pipeline"))
    chosen = {str(k).upper() if k != "*" else "*": v for k, v in (pipeline or {}).items()}
    by_modality = {}
    for modality in sorted(set(_AUTO_MODALITIES) | (set(chosen) - {"*"})):
        spec = chosen[modality] if modality in chosen else default_preset(modality)
        by_modality[modality] = finish(_as_config(spec, f"pipeline for {modality}"))
    other = finish(_as_config(chosen.get("*"), "pipeline for other modalities"))
    return {"medload_pipelines": 1, "by_modality": by_modality, "other": other}


def _pipeline_for(spec: Mapping[str, Any], modality: str) -> dict[str, Any]:
    if "by_modality" not in spec:
        return dict(spec)
    return dict(spec["by_modality"].get(modality, spec["other"]))


# --------------------------------------------------------------------------- worker side
#: Meta keys holding descriptors that DICOM PS3.15 Table E.1-1's basic profile removes
#: (SeriesDescription, StudyDescription, ProtocolName, BodyPartExamined, comments, ...) and that
#: only its "Retain ... Clean Descriptors" option keeps: ``keep_descriptions=True``. For NIfTI
#: sources ``description`` is the file name (which can be a patient's name): same rule.
DESCRIPTOR_KEYS = frozenset({
    "description", "series_description", "study_description", "protocol_name", "body_part",
    "performed_procedure_step_description", "requested_procedure_description", "image_comments",
    "acquisition_comments", "derivation_description", "contrast_bolus_agent",
})

# A description shorter than this is not hidden inside message texts: replacing "ct" in
# every message would mangle them, and so short a text names nobody.
_MIN_HIDDEN = 4


def _relative(text: str, roots: Sequence[str]) -> str:
    """``text`` with paths under ``roots`` made relative to them (longest root first).

    A root must start a path in the text (not be the tail of a longer folder name), so a
    relative source such as ``data`` never eats the ``data/`` of ``/mnt/metadata/``.
    """
    for root in roots:
        root = root.rstrip(os.sep) or os.sep
        text = re.sub(rf"(?<![\w.{re.escape(os.sep)}-]){re.escape(root)}(?:{re.escape(os.sep)}|(?![\w.-]))",
                      lambda m: "" if m.group(0).endswith(os.sep) else ".", text)
    return text


def _source_roots(sources: Sequence[str | os.PathLike]) -> list[str]:
    """Every spelling of each source folder that can appear in a message, longest first.

    Paths in messages start with the source as the user gave it (``../shared/data/x``), its
    absolute form, or its real path (links resolved); each is made relative to the source.
    """
    roots: set[str] = set()
    for src in sources:
        text = os.fspath(src)
        for form in (text, os.path.normpath(text), os.path.abspath(text), os.path.realpath(text)):
            folder = form if os.path.isdir(text) else os.path.dirname(form)
            if folder and folder not in (".", os.curdir):
                roots.add(folder.rstrip(os.sep) or os.sep)
    return sorted(roots, key=len, reverse=True)


def _hidden_texts(series: Any) -> list[str]:
    """Texts of ``series`` that a default report or store must not hold: its description
    and, for a NIfTI source, its file name (NIfTI descriptions are file names)."""
    texts = [str(series.description or "")]
    if getattr(series, "kind", "") == "nifti":
        texts += [os.path.basename(f) for f in series.files]
    return sorted({t for t in texts if len(t) >= _MIN_HIDDEN}, key=len, reverse=True)


def _hide(value: Any, texts: Sequence[str]) -> Any:
    """``value`` with every string's occurrences of ``texts`` replaced by ``[description]``."""
    if not texts:
        return value
    if isinstance(value, str):
        for t in texts:
            value = value.replace(t, "[description]")
        return value
    if isinstance(value, list):
        return [_hide(v, texts) for v in value]
    if isinstance(value, dict):
        return {k: _hide(v, texts) for k, v in value.items()}
    return value


def _scrub(value: Any, roots: Sequence[str]) -> Any:
    """Source folders out of every string in meta (folder names can be patient names)."""
    if isinstance(value, str):
        return _relative(value, roots)
    if isinstance(value, list):
        return [_scrub(v, roots) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, roots) for k, v in value.items()}
    return value


_IDENTIFYING = {k.lower() for k in IDENTIFYING_KEYWORDS} | {
    "".join("_" + c.lower() if c.isupper() else c for c in k).lstrip("_") for k in IDENTIFYING_KEYWORDS
}


def _deidentified_meta(meta: dict[str, Any], roots: Sequence[str], keep_phi: bool,
                       keep_descriptions: bool = False, hidden: Sequence[str] = ()) -> dict[str, Any]:
    meta = _scrub(meta, roots)
    if keep_phi:
        return meta
    # The readers already leave these out; dropping them again here costs nothing and keeps a
    # reader bug from reaching a store.
    meta = {k: v for k, v in meta.items() if k != "phi" and k.lower() not in _IDENTIFYING}
    if not keep_descriptions:
        meta = _hide({k: v for k, v in meta.items() if k.lower() not in DESCRIPTOR_KEYS}, hidden)
    return meta


def _summary(series: Any, keep_descriptions: bool) -> dict[str, Any]:
    """``series.summary()`` for the report: without its description unless kept."""
    entry = series.summary()
    if not keep_descriptions:
        entry.pop("description", None)
        entry = _hide(entry, _hidden_texts(series))
    return entry


def _mask_volume(path: str, volume: Volume, *, by_grid: bool) -> tuple[Volume | None, str]:
    """Load a NIfTI mask for ``volume``; (None, why) when a grid-matched one does not fit."""
    import nibabel as nib

    try:
        image = nib.load(path)
        mask = Volume.from_nifti(image)
    except Exception as exc:
        raise ReadError(f"mask {os.path.basename(path)} could not be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    data = mask.array
    if data.ndim == 4:
        raise MedloadError(f"mask {os.path.basename(path)} is 4D {data.shape}; expected one 3D label volume")
    aligned = _same_grid(data, mask.affine, volume)
    if aligned is not None:
        data = aligned
    else:
        why = (f"mask {os.path.basename(path)} has shape {data.shape} and origin {np.round(mask.origin, 2).tolist()}, "
               f"the series {volume.spatial_shape} and {np.round(volume.origin, 2).tolist()}")
        if by_grid:
            return None, why + "; not used"
        raise MedloadError(why + "; resample the mask onto the series grid first")
    values = np.asarray(data, dtype=np.float64)
    labels = np.rint(values)
    # A probability map or a mask resampled with linear interpolation is not a label volume:
    # rounding it would store a silently different mask (and NaN would cast to garbage).
    off = ~np.isfinite(values) | (np.abs(values - labels) > 1e-3)
    if off.any():
        first = tuple(int(i) for i in np.argwhere(off)[0])
        raise MedloadError(
            f"mask {os.path.basename(path)} holds {int(off.sum())} non-integer or NaN values (first "
            f"{values[first]!r} at index {first}); expected integer labels: threshold a probability "
            "map, or resample the mask with nearest-neighbour interpolation"
        )
    if labels.min() < 0 or labels.max() > np.iinfo(np.int32).max:
        raise MedloadError(f"mask {os.path.basename(path)} holds values outside 0..2^31; expected integer labels")
    dtype = np.uint8 if labels.max() < 256 else np.uint16 if labels.max() < 65536 else np.int32
    return Volume(np.ascontiguousarray(labels.astype(dtype)), volume.affine, modality=volume.modality), ""


def _same_grid(data: np.ndarray, affine: np.ndarray, volume: Volume) -> np.ndarray | None:
    """``data`` in ``volume``'s array order when both hold the same voxels in world space, else None.

    Masks written by other tools often store the same grid with axes flipped or permuted
    (e.g. rows bottom-up); that is the same mask, so it is reordered, never resampled.
    """
    to_mask = np.linalg.inv(affine) @ volume.affine  # volume index -> mask index
    rot, shift = to_mask[:3, :3], to_mask[:3, 3]
    perm = np.rint(rot)
    if not (np.allclose(rot, perm, atol=1e-3) and np.allclose(shift, np.rint(shift), atol=1e-3)):
        return None
    if sorted(np.abs(perm).sum(axis=0)) != [1, 1, 1] or sorted(np.abs(perm).sum(axis=1)) != [1, 1, 1]:
        return None
    axes = [int(np.argmax(np.abs(perm[:, a]))) for a in range(3)]  # mask axis of each volume axis
    out = data.transpose(axes)
    if out.shape != volume.spatial_shape:
        return None
    for a, b in enumerate(axes):
        sign, start = perm[b, a], int(np.rint(shift[b]))
        if sign > 0 and start != 0 or sign < 0 and start != out.shape[a] - 1:
            return None
        if sign < 0:
            out = np.flip(out, axis=a)
    return out


@dataclass
class _Job:
    """Everything a worker needs, picklable (sent once per worker process or Dask task)."""

    out: str
    single_file: bool
    pipelines: dict[str, Any]
    store_options: dict[str, Any]
    keep_phi: bool
    roots: list[str] = field(default_factory=list)
    keep_descriptions: bool = False

    def __call__(self, slot: str) -> _Worker:
        return _Worker(self, slot)


class _Worker:
    """One writer: converts series one after another into its own shard."""

    def __init__(self, job: _Job, slot: str) -> None:
        self.job = job
        self.slot = slot
        self.store = None
        self.pipes: dict[str, Any] = {}

    @property
    def shard_path(self) -> Path:
        if self.job.single_file:
            return Path(self.job.out)
        return Path(self.job.out) / f"{SHARD_PREFIX}{self.slot}.h5"

    def _store(self):
        if self.store is None:
            from medload.store import Store

            self.store = Store.create(self.shard_path, pipeline=self.job.pipelines, resume=True,
                                      **self.job.store_options)
        return self.store

    def _pipeline(self, modality: str):
        from medload.transforms import Pipeline

        config = _pipeline_for(self.job.pipelines, modality)
        name = json.dumps(config, sort_keys=True)
        if name not in self.pipes:
            self.pipes[name] = Pipeline.from_config(config)
        return self.pipes[name]

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        from medload.io import load

        series = task["series"]
        started = time.perf_counter()
        entry: dict[str, Any] = {"slot": self.slot}
        stage = "read"
        try:
            volume = load(series, keep_phi=self.job.keep_phi)
            hidden = [] if self.job.keep_descriptions else _hidden_texts(series)
            meta = _deidentified_meta(volume.meta, self.job.roots, self.job.keep_phi,
                                      self.job.keep_descriptions, hidden)
            meta.setdefault("source_hash", series.source_hash)
            volume = Volume(volume.array, volume.affine, modality=volume.modality, meta=meta, history=volume.history)
            entry["problems"] = list(meta.get("problems", []))
            mask = None
            if task.get("mask"):
                stage = "mask"
                mask, why = _mask_volume(task["mask"], volume, by_grid=task.get("mask_by_grid", False))
                entry["mask"] = os.path.basename(task["mask"]) if mask is not None else None
                if why:
                    entry.setdefault("notes", []).append(why)
            stage = "preprocess"
            pipe = self._pipeline(volume.modality)
            if mask is not None:
                out, mask = pipe(volume, mask=mask)
            else:
                out = pipe(volume)
            stage = "write"
            store = self._store()
            key = store.add(out, mask=mask, label=task.get("label"))
        except MedloadError as exc:
            entry.update(status="failed", stage=stage, error=type(exc).__name__,
                         reason=_relative(str(exc), self.job.roots))
        except Exception as exc:  # a library bug on one series must not stop the batch
            entry.update(status="failed", stage=stage, error=type(exc).__name__,
                         reason=_relative(f"unexpected {type(exc).__name__} while {stage}ing: {exc}", self.job.roots),
                         traceback=_relative(traceback.format_exc(limit=6), self.job.roots))
        else:
            entry.update(status="converted", key=key, shard=self.shard_path.name, stored_shape=list(out.shape),
                         slices=int(out.spatial_shape[0]), intensity=out.meta.get("intensity", ""),
                         label=task.get("label"))
        entry["seconds"] = round(time.perf_counter() - started, 3)
        return entry

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


# --------------------------------------------------------------------------- inputs
def _read_labels(path: str | os.PathLike, series: Sequence[Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """labels.csv -> {source_hash: int label}, plus what the report says about it."""
    path = Path(path)
    if not path.is_file():
        raise MedloadError(f"labels file {path} does not exist; expected a CSV with a key column "
                           "(series_key, study_key or patient_key) and a 'label' column")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MedloadError(f"labels file {path} is not a UTF-8 CSV ({type(exc).__name__}: {exc}); "
                           "save it as CSV UTF-8 with a 'label' column and a key column") from None
    columns = list(rows[0]) if rows else []
    key_col = next((c for c in ("series_key", "study_key", "patient_key", "key") if c in columns), None)
    if key_col is None or "label" not in columns:
        raise MedloadError(f"labels file {path}: expected columns 'label' and one of series_key, study_key, "
                           f"patient_key; found {columns}")
    for line, row in enumerate(rows, start=2):
        # csv gives None for the cells a short row lacks
        if not (row.get(key_col) or "").strip() or not (row.get("label") or "").strip():
            raise MedloadError(f"labels file {path} line {line}: expected a {key_col} and a label, found "
                               f"{key_col}={row.get(key_col)!r}, label={row.get('label')!r}")
    values = [r["label"].strip() for r in rows]
    try:
        as_int = [int(v) for v in values]
        classes = None
    except ValueError:
        classes = sorted(set(values))
        as_int = [classes.index(v) for v in values]
    by_key: dict[str, int] = {}
    for line, (row, value) in enumerate(zip(rows, as_int), start=2):
        key = row[key_col].strip()
        if key in by_key and by_key[key] != value:
            raise MedloadError(f"labels file {path} line {line}: {key} has label {row['label']!r} and an earlier, different one")
        by_key[key] = value
    fields = ("series_key", "study_key", "patient_key") if key_col == "key" else (key_col,)
    out: dict[str, int] = {}
    used: set[str] = set()
    for s in series:
        for f in fields:
            k = getattr(s, f)
            if k in by_key:
                out[s.source_hash] = by_key[k]
                used.add(k)
                break
    unknown = sorted(set(by_key) - used)
    info = {"file": path.name, "key": key_col, "classes": classes, "rows": len(rows), "matched_series": len(out),
            "unknown_keys": unknown[:50], "n_unknown_keys": len(unknown)}
    return out, info


def _mask_candidates(folder: str | os.PathLike) -> list[tuple[str, str, tuple[int, ...]]]:
    """(stem, path, medload spatial shape) of every NIfTI mask under ``folder``; headers only."""
    import nibabel as nib

    folder = Path(folder)
    if not folder.is_dir():
        raise MedloadError(f"masks folder {folder} does not exist; expected a folder of NIfTI label files")
    found = []
    for path in sorted(folder.rglob("*")):
        name = path.name
        suffix = next((s for s in _MASK_SUFFIXES if name.lower().endswith(s)), None)
        if suffix is None or not path.is_file():
            continue
        try:
            shape = tuple(int(n) for n in nib.load(str(path)).shape[:3])[::-1]
        except Exception:  # an unreadable mask is reported when (if) a series needs it
            shape = ()
        found.append((name[: -len(suffix)], str(path), shape))
    return found


def _match_masks(series: Sequence[Any], candidates) -> dict[str, tuple[str, bool]]:
    """{source_hash: (mask path, matched by grid only)}: by name first, else a unique same-shape mask."""
    by_stem = {stem: path for stem, path, _ in candidates}
    out: dict[str, tuple[str, bool]] = {}
    for s in series:
        names = [s.series_key, sanitize_key(s.description or "")]
        if s.kind == "nifti" and s.files:
            base = os.path.basename(s.files[0])
            names.insert(1, next((base[: -len(x)] for x in _MASK_SUFFIXES if base.lower().endswith(x)), base))
        hit = next((by_stem[n] for n in names if n in by_stem), None)
        if hit:
            out[s.source_hash] = (hit, False)
            continue
    # By grid only one to one: the only mask of that shape for the only series of that shape.
    shapes = Counter(tuple(s.shape[-3:]) for s in series)
    for s in series:
        spatial = tuple(s.shape[-3:])
        if s.source_hash in out or shapes[spatial] != 1:
            continue
        same = [path for _, path, shape in candidates if shape == spatial]
        if len(same) == 1 and os.path.realpath(same[0]) not in {os.path.realpath(f) for f in s.files}:
            out[s.source_hash] = (same[0], True)
    return out


# --------------------------------------------------------------------------- output
def _layout(out: Path, workers: int | None, dask: str | None) -> bool:
    """True for a single-file output; refuses combinations that cannot work."""
    single = out.suffix.lower() in _SINGLE_SUFFIXES
    if single and ((workers or 1) > 1 or dask):
        raise MedloadError(
            f"{out} is one file, written by one process; for {'Dask' if dask else f'{workers} workers'} "
            f"give a folder (-o {out.with_suffix('')}/), which gets one shard per worker"
        )
    if single and out.is_dir():
        raise MedloadError(f"{out} is a folder; a single-file output must be a file path")
    if not single and out.is_file():
        raise MedloadError(f"{out} is a file; give a folder for a sharded store, or a path ending in .h5 for one file")
    return single


def _report_path(out: Path, single: bool) -> Path:
    return out.with_name(out.stem + ".report.json") if single else out / REPORT_NAME


def _our_files(out: Path, single: bool) -> list[Path]:
    if single:
        names = [out, out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.salvage"),
                 out.with_name(out.name + ".lock"), _report_path(out, True)]
        return [p for p in names if p.exists()]
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if p.name.startswith(SHARD_PREFIX) or p.name == REPORT_NAME]


def _shard_paths(out: Path, single: bool) -> list[Path]:
    """Finished and partial shards (as the finished name a Store.create resumes)."""
    if single:
        partial = out.with_name(out.name + ".partial")
        return [out] if out.exists() or partial.exists() else []
    if not out.is_dir():
        return []
    names = set()
    for p in out.iterdir():
        if not p.name.startswith(SHARD_PREFIX):
            continue
        if p.name.endswith(".h5"):
            names.add(p.name)
        elif p.name.endswith(".h5.partial"):
            names.add(p.name[: -len(".partial")])
    return [out / n for n in sorted(names)]


def _recover(out: Path, single: bool, pipelines, store_options) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Finish what an interrupted run left partial; return {source_hash: (key, shard)} done."""
    from medload.store import Store, open as open_store

    notes: list[str] = []
    shards = _shard_paths(out, single)
    for shard in shards:
        try:
            store = Store.create(shard, pipeline=pipelines, resume=True, **store_options)
        except StoreError as exc:
            if "another pipeline" in str(exc):
                stored = _stored_pipeline(shard)
                if stored is not None:
                    raise StoreError(_pipeline_mismatch(out, shard, stored, pipelines)) from None
            raise StoreError(f"{exc} (found while resuming {out}; --overwrite starts over)") from None
        notes.extend(store.problems)
        store.close()
    if not shards:
        return {}, notes
    reader = open_store(out)
    done = {rec.source_hash: (rec.key, rec.shard) for rec in reader.volumes}
    reader.close()
    return done, notes


def _stored_pipeline(shard: Path) -> Any:
    """The pipeline configuration a shard was written with, or None if it cannot be read."""
    try:
        from medload.store import open as open_store

        reader = open_store(shard)
        try:
            return reader.pipeline
        finally:
            reader.close()
    except Exception:  # only used to explain a refusal; the store's own error stands otherwise
        return None


def _steps_by_modality(config: Any) -> tuple[dict[str, list], dict[str, Any]]:
    """``({modality or "*": steps}, {other top-level option: value})`` of a converter config."""
    if not isinstance(config, Mapping):
        return {"*": []}, {"pipeline": config}
    extras = {k: v for k, v in config.items()
              if k not in ("by_modality", "other", "steps", "medload_pipeline", "medload_pipelines")}
    if "by_modality" in config:
        steps = {str(m): list(c.get("steps", [])) for m, c in config["by_modality"].items()}
        steps["other"] = list((config.get("other") or {}).get("steps", []))
        return steps, extras
    return {"*": list(config.get("steps", []))}, extras


def _config_diff(stored: Any, wanted: Any, *, limit: int = 6) -> list[str]:
    """Short lines saying how ``wanted`` differs from ``stored``: step by step, parameter by parameter.

    Examples
    --------
    >>> a = {"steps": [{"name": "window", "params": {"center": 40.0, "width": 400.0}}]}
    >>> b = {"steps": [{"name": "window", "params": {"center": 40.0, "width": 80.0}}]}
    >>> _config_diff(a, b)
    ['step 1 window: width 400.0 in the store, 80.0 now']
    """
    a, a_extra = _steps_by_modality(stored)
    b, b_extra = _steps_by_modality(wanted)
    # One pipeline for every modality against per-modality ones: compare it with each of them.
    if set(a) == {"*"} and set(b) != {"*"}:
        a = {m: a["*"] for m in b}
    if set(b) == {"*"} and set(a) != {"*"}:
        b = {m: b["*"] for m in a}
    lines: list[str] = []
    for key in sorted(set(a_extra) | set(b_extra)):
        if a_extra.get(key) != b_extra.get(key):
            lines.append(f"{key}: {json.dumps(a_extra.get(key))} in the store, {json.dumps(b_extra.get(key))} now")
    # The same difference in several modalities is said once: "CT, MR step 2 ...".
    by_body: dict[str, list[str]] = {}
    for modality in sorted(set(a) | set(b), key=lambda m: (m == "other", m)):
        old, new = a.get(modality, []), b.get(modality, [])
        if modality not in a or modality not in b:
            by_body.setdefault(f"pipeline: {'in the store only' if modality in a else 'new now'}", []).append(modality)
            continue
        for i in range(max(len(old), len(new))):
            s_old = old[i] if i < len(old) else None
            s_new = new[i] if i < len(new) else None
            name_old = s_old.get("name") if s_old else None
            name_new = s_new.get("name") if s_new else None
            if name_old != name_new:
                body = f"step {i + 1}: {name_old or '(none)'} in the store, {name_new or '(none)'} now"
                by_body.setdefault(body, []).append(modality)
                continue
            p_old, p_new = s_old.get("params", {}), s_new.get("params", {})
            changed = [
                f"{k} {json.dumps(p_old.get(k))} in the store, {json.dumps(p_new.get(k))} now"
                for k in sorted(set(p_old) | set(p_new)) if p_old.get(k) != p_new.get(k)
            ]
            if changed:
                by_body.setdefault(f"step {i + 1} {name_new}: " + ", ".join(changed), []).append(modality)
    for body, modalities in by_body.items():
        where = "" if modalities == ["*"] else ", ".join(modalities) + " "
        lines.append(where + body)
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more differences"]
    return lines


def _pipeline_mismatch(out: Path, shard: Path, stored: Any, wanted: Any) -> str:
    diff = _config_diff(stored, wanted) or ["(same steps; the stored configuration differs in form)"]
    return (
        f"{out}: {shard.name} was written with another pipeline, so resuming would mix two kinds of "
        f"volumes. Differences: {'; '.join(diff)}. To continue it, run with the store's settings; to "
        "start over, pass --overwrite (convert(..., overwrite=True)); or write to a new output path."
    )


def _write_report(report: ConversionReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar over series and slices (or nothing, when not wanted)."""

    def __init__(self, enabled: bool, n_series: int, n_slices: int) -> None:
        self.bar = None
        if not enabled or n_series == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.series = self.bar.add_task("series", total=n_series)
        self.slices = self.bar.add_task("slices", total=max(n_slices, 1))
        self.bar.start()

    def advance(self, slices: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.series, 1)
            self.bar.advance(self.slices, slices)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --------------------------------------------------------------------------- the job
def convert(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    pipeline: Any = None,
    size: int | Sequence[int] | None = None,
    resize_mode: str = "resize",
    dtype: str | None = None,
    compression: str | None = None,
    workers: int | None = None,
    dask: str | None = None,
    labels: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    keep_phi: bool = False,
    keep_descriptions: bool = False,
    phi_key: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert scanner exports (DICOM series, NIfTI files) into one medload store.

    Parameters
    ----------
    sources : path or list of paths
        Folders (walked recursively) or files.
    out : path
        A folder (sharded store, ``report.json`` inside) or a ``.h5`` file (one worker).
    pipeline : None, preset name, ``.json``/``.toml`` file, Pipeline, config, or {modality: ...}
        See :func:`resolve_pipelines`; ``None`` chooses by modality (module doc).
    size : int or (int, int), optional
        Bring every slice to this size (``resize_mode``: ``"resize"`` or ``"pad-crop"``).
    dtype, compression : str, optional
        Store encoding (default: :meth:`medload.Store.create`'s, chosen in ``docs/hdf5-schema.md``).
    workers : int, optional
        Local worker processes (default: all cores; ``0`` runs in this process). With
        ``dask="local"``: the LocalCluster's workers.
    dask : str, optional
        ``"local"`` or a Dask scheduler address; one task per series, each its own shard.
        The workers must see ``sources`` and ``out`` at the same paths.
    labels : path, optional
        CSV with a ``label`` column and a ``series_key``/``study_key``/``patient_key`` (or
        ``key``) column holding the pseudonyms ``medload scan`` shows. Class names become
        0..n-1 in sorted order (the report lists them).
    masks : path, optional
        Folder of NIfTI label masks. A mask is matched to a series by file name (the
        series_key, the NIfTI source's name, or the sanitized description), else by being the
        only mask with the shape of the only series of that shape (and then used only if its
        affine matches too).
    keep_phi : bool
        Keep identifying header fields (``meta["phi"]``); off by default. Implies
        ``keep_descriptions``.
    keep_descriptions : bool
        Write series descriptions, protocol names and body parts (NIfTI: the file's name) to the
        store's meta and the report: PS3.15's "Clean Descriptors" option, for exports whose
        descriptions you checked hold no names. Off by default (the basic profile removes them).
    phi_key : str, optional
        Secret of the pseudonyms (default ``$MEDLOAD_PHI_KEY``).
    overwrite : bool
        Delete this output's shards and report first, instead of resuming.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    ConversionReport

    Raises
    ------
    MedloadError
        Only for what stops the whole batch before it starts (missing source, bad option,
        an output written with another pipeline); a bad series is a report entry instead.

    Examples
    --------
    >>> import tempfile, os, pydicom, medload
    >>> src = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    >>> report = medload.convert(src, tempfile.mkdtemp() + "/out", workers=0, progress=False)
    >>> report.counts["converted"], report.ok
    (1, True)
    """
    started = time.perf_counter()
    from medload.io import scan

    source_list = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not source_list:
        raise MedloadError("no sources given; expected one or more folders or files to convert")
    roots = []
    for src in source_list:
        if not os.path.exists(src):
            raise ReadError(f"source {src} does not exist; expected a folder of DICOM/NIfTI files or a file")
        roots.append(os.path.abspath(src) if os.path.isdir(src) else os.path.dirname(os.path.abspath(src)))
    # Every spelling of the sources (as given, absolute, real), for making message paths relative.
    message_roots = _source_roots(source_list)
    keep_descriptions = bool(keep_descriptions or keep_phi)
    if workers is not None and workers < 0:
        raise MedloadError(f"workers must be >= 0 (0 = in this process), found {workers}")
    out_path = Path(out)
    single = _layout(out_path, workers, dask)
    pipelines = resolve_pipelines(pipeline, size=size, resize_mode=resize_mode)
    if keep_phi:
        # Part of the store's identity: a re-run without --keep-phi (or with it, on a
        # de-identified store) is refused instead of mixing identified and de-identified volumes.
        pipelines = dict(pipelines, keep_phi=True)
    elif keep_descriptions:
        # Likewise: volumes with and without descriptions never share a store.
        pipelines = dict(pipelines, keep_descriptions=True)
    store_options = {k: v for k, v in (("dtype", dtype), ("compression", compression)) if v is not None}
    from medload.store import _format as store_format  # validate before scanning a big export

    store_format.check_dtype(dtype)
    store_format.parse_compression(compression)

    if overwrite:
        for p in _our_files(out_path, single):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not single:
        out_path.mkdir(parents=True, exist_ok=True)
    done, resume_notes = _recover(out_path, single, pipelines, store_options)

    # --- scan every source
    found: list[Any] = []
    seen: dict[str, str] = {}
    files: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    n_files = 0
    duplicates: list[dict[str, Any]] = []
    for src, root in zip(source_list, roots):
        result = scan(src, phi_key=phi_key)
        n_files += getattr(result, "n_files", 0)
        skipped.update(getattr(result, "skipped", {}))
        for problem in getattr(result, "errors", []):
            files.append({"path": _relative(os.path.abspath(problem.path), [root]), "status": "unreadable",
                          "reason": _relative(problem.message, message_roots)})
        for s in result:
            if s.source_hash in seen:
                entry = _summary(s, keep_descriptions)
                entry.update(source_hash=s.source_hash, status="duplicate",
                             reason=f"same instances and file sizes as series {seen[s.source_hash]} of this batch; "
                                    "converted once")
                duplicates.append(entry)
                continue
            seen[s.source_hash] = s.series_key
            found.append(s)

    if masks:
        # A masks folder inside a source is scanned too; its files are masks, not images.
        mask_root = os.path.realpath(masks) + os.sep
        is_mask = [all(os.path.realpath(f).startswith(mask_root) for f in s.files) for s in found]
        found = [s for s, m in zip(found, is_mask) if not m]
    label_of, labels_info = _read_labels(labels, found) if labels else ({}, None)
    mask_of = _match_masks(found, _mask_candidates(masks)) if masks else {}

    entries: dict[str, dict[str, Any]] = {}
    hidden_of: dict[str, list[str]] = {}
    tasks = []
    for s in found:
        entry = _summary(s, keep_descriptions)
        entry["source_hash"] = s.source_hash
        entry["problems"] = [_relative(p, message_roots) for p in entry.get("problems", [])]
        entries[s.source_hash] = entry
        hidden_of[s.source_hash] = [] if keep_descriptions else _hidden_texts(s)
        if s.source_hash in done:
            key, shard = done[s.source_hash]
            entry.update(status="already converted", key=key, shard=shard)
            continue
        task = {"series": s, "label": label_of.get(s.source_hash)}
        if s.source_hash in mask_of:
            task["mask"], task["mask_by_grid"] = mask_of[s.source_hash]
        tasks.append((s.source_hash, task))

    # Largest first: a big series started last would leave the other workers idle at the end.
    tasks.sort(key=lambda t: -int(np.prod(t[1]["series"].shape or (0,), dtype=np.int64)))
    job = _Job(out=str(out_path), single_file=single, pipelines=pipelines, store_options=store_options,
               keep_phi=keep_phi, roots=message_roots, keep_descriptions=keep_descriptions)
    from medload.parallel import run_tasks

    bar = _Progress(progress, len(tasks), sum(t["series"].n_slices for _, t in tasks))

    def on_outcome(outcome) -> None:
        entry = entries[outcome.task_id]
        if outcome.ok:
            entry.update(outcome.value)
        else:
            entry.update(status="failed", stage="worker", error=(outcome.error or "").split(":")[0],
                         reason=_relative(outcome.error or "unknown error", message_roots))
        bar.advance(entry.get("slices", 0) if entry.get("status") == "converted" else 0)

    interrupted = False
    try:
        summary = run_tasks(job, tasks, workers=1 if single and workers is None else workers, dask=dask,
                            on_outcome=on_outcome)
        interrupted = summary.interrupted
        backend = summary.backend
    except KeyboardInterrupt:
        interrupted, backend = True, "interrupted"
    finally:
        bar.stop()
    for entry in entries.values():
        if "status" not in entry:
            entry.update(status="not run", reason="the run was interrupted before this series started; run again to convert it")

    for source_hash, entry in entries.items():
        # Messages can quote a description (a library's error, a crashed worker): hidden too.
        entries[source_hash] = _hide(entry, hidden_of.get(source_hash, []))
    statuses = Counter(e["status"] for e in entries.values())
    report_path = _report_path(out_path, single)
    shards = [p.name for p in _shard_paths(out_path, single)]
    report = ConversionReport(
        medload_report=1,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        sources=[os.fspath(s) for s in source_list],
        output=str(out_path),
        report_path=str(report_path),
        shards=shards,
        pipeline=pipelines,
        options={"size": size, "resize_mode": resize_mode, "dtype": dtype, "compression": compression,
                 "workers": workers, "dask": dask, "keep_phi": keep_phi,
                 "keep_descriptions": keep_descriptions, "backend": backend,
                 "labels": labels_info, "masks": bool(masks)},
        counts={
            "files": n_files,
            "series": len(entries),
            "converted": statuses["converted"],
            "already_converted": statuses["already converted"],
            "failed": statuses["failed"],
            "not_run": statuses["not run"],
            "duplicate_series": len(duplicates),
            "skipped_files": sum(skipped.values()),
            "unreadable_files": len(files),
            "slices_written": sum(e.get("slices", 0) for e in entries.values() if e["status"] == "converted"),
        },
        skipped_files=dict(skipped),
        series=list(entries.values()) + duplicates,
        files=files,
        resume_notes=resume_notes,
        interrupted=interrupted,
        elapsed_s=round(time.perf_counter() - started, 2),
    )
    _write_report(report, report_path)
    return report
