"""The batch job's plan: check the options, resume the output, scan, pair masks and labels.

:func:`make_plan` does everything :func:`medload.convert` does before the first series is
converted, and returns a :class:`Plan`: the :class:`~medload.batch.worker.Task` of every series
still to convert, the report entries of every series found, and what the scan skipped.
Everything that stops the whole batch (a missing source, a bad option, an output written with
another pipeline) is raised here, before any work.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medload.batch.labelcsv import class_folder_labels, patients_from_csv, read_labels
from medload.batch.worker import Task
from medload.deid import (
    PhiKey,
    SourceNames,
    file_key,
    hidden_texts,
    is_keyed_source_hash,
    keyed_form,
    named_files,
    pseudonym,
    report_summary,
    resolve_key,
    scrub,
    source_roots,
)
from medload.errors import ConfigError, PipelineMismatchError, StoreError
from medload.problems import Problem, ProblemKind

__all__ = [
    "Plan",
    "make_plan",
    "check_sources",
    "check_layout",
    "report_path",
    "REPORT_NAME",
    "check_source_map",
    "write_source_map",
]

REPORT_NAME = "report.json"


@dataclass
class Plan:
    """What :func:`make_plan` found: the tasks to run and the report's entries so far."""

    sources: list[str | os.PathLike[str]]
    message_roots: list[str]
    out: Path
    single: bool
    pipelines: dict[str, Any]
    store_options: dict[str, Any]
    keep_phi: bool
    keep_descriptions: bool
    tasks: list[Task] = field(default_factory=list)
    #: source_hash -> report entry of every series found (converted ones get ``status`` now).
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: source_hash -> the texts of that series a report must not show.
    hidden: dict[str, list[str]] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    #: The Series of those duplicates (another copy of a series found first).
    duplicate_series: list[Any] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    #: Mask files that match no image (a --masks folder's, nnU-Net's labelsTr files without a case).
    unmatched_masks: list[str] = field(default_factory=list)
    #: Series that should have had a mask (a --masks folder given, nnU-Net training cases) and have none.
    images_without_mask: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    n_files: int = 0
    #: What resuming the store found and did (kinds ``store_started_over``, ``store_resumed``).
    resume_notes: list[Problem] = field(default_factory=list)
    #: How workers read: modality for sources that do not say, on_gap, allow_burned_in.
    read_options: dict[str, Any] = field(default_factory=dict)
    labels_info: dict[str, Any] | None = None
    patients_info: dict[str, Any] | None = None
    key: PhiKey | None = None
    allow_burned_in: bool = False
    #: source_hash -> the names of that series' files and folders (what scrub replaces).
    names: dict[str, SourceNames] = field(default_factory=dict)
    #: What ``--source-map`` writes: pseudonym -> source path, and each series' files.
    source_map: dict[str, Any] = field(default_factory=lambda: {"series": {}, "names": {}})

    def names_for(self, files: Sequence[str], hidden: Sequence[str] = ()) -> SourceNames:
        """The :class:`~medload.deid.SourceNames` of ``files`` (kept as paths with ``keep_phi``)."""
        if self.keep_phi:
            return SourceNames.kept(self.message_roots)
        names = SourceNames.of(files, roots=self.message_roots, key=self.key, hidden=() if self.keep_descriptions else hidden)
        self.source_map["names"].update(names.mapping)
        return names

    def names_of(self, source_hash: str) -> SourceNames:
        """The names of the series ``source_hash`` (its files, mask and description)."""
        if source_hash not in self.names:
            self.names[source_hash] = self.names_for([])
        return self.names[source_hash]


def report_path(out: Path, single: bool) -> Path:
    """Where the report of output ``out`` is written (``x.h5`` -> ``x.report.json``)."""
    return out.with_name(out.stem + ".report.json") if single else out / REPORT_NAME


def check_layout(out: Path, workers: int | None, dask: str | None) -> bool:
    """True for a single-file output; refuses combinations that cannot work."""
    from medload.store.layout import is_single_file

    single = is_single_file(out)
    if single and ((workers or 1) > 1 or dask):
        raise ConfigError(
            f"{out} is one file, written by one process; for {'Dask' if dask else f'{workers} workers'} "
            f"give a folder (-o {out.with_suffix('')}/), which gets one shard per worker"
        )
    if single and out.is_dir():
        raise ConfigError(f"{out} is a folder; a single-file output must be a file path")
    if not single and out.is_file():
        raise ConfigError(f"{out} is a file; give a folder for a sharded store, or a path ending in .h5 for one file")
    return single


def check_sources(sources: Any) -> list[Any]:
    """``sources`` as a list of existing paths; refuses none and missing ones."""
    source_list = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not source_list:
        raise ConfigError("no sources given; expected one or more folders or files to convert")
    for src in source_list:
        if not os.path.exists(src):
            raise ConfigError(f"source {src} does not exist; expected a folder of DICOM/NIfTI files or a file")
    return source_list


def _remove_output(out: Path, single: bool) -> None:
    from medload.store.layout import written_files

    report = report_path(out, single)
    for p in written_files(out, single) + ([report] if report.exists() else []):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _resume(
    out: Path, single: bool, pipelines: Any, store_options: dict[str, Any]
) -> tuple[dict[str, tuple[str, str]], list[Problem]]:
    """:func:`medload.store.layout.resume_shards`, with a refusal that says what differs."""
    from medload.store.layout import PARTIAL_SUFFIX, resume_shards

    try:
        done, notes = resume_shards(out, single, pipelines, store_options)
    except PipelineMismatchError as exc:
        if exc.stored is None:
            raise StoreError(f"{exc} (found while resuming {out}; --overwrite starts over)") from None
        name = Path(exc.path).name.removesuffix(PARTIAL_SUFFIX)
        raise PipelineMismatchError(
            _pipeline_mismatch(out, name, exc.stored, pipelines), path=exc.path, stored=exc.stored, wanted=pipelines
        ) from None
    except StoreError as exc:
        raise StoreError(f"{exc} (found while resuming {out}; --overwrite starts over)") from None
    _refuse_header_only_hashes(out, done)
    return done, notes


def _refuse_header_only_hashes(out: Path, done: dict[str, tuple[str, str]]) -> None:
    """A store whose NIfTI volumes are recorded by header and size only cannot be continued:
    every file would look new (a second copy of each volume), and two files of one header
    looked like one."""
    from medload.io.nifti import is_header_only_hash

    old = sorted(key for source_hash, (key, _) in done.items() if is_header_only_hash(source_hash))
    if old:
        raise StoreError(
            f"{out} holds {len(old)} NIfTI volume(s) ({', '.join(old[:3])}{' ...' if len(old) > 3 else ''}) recorded "
            "by an earlier medload by header and file size only, which cannot tell two images with one header "
            "apart (a template-registered set); continuing it would store each again. Convert into a new output, "
            "or --overwrite to start over."
        )


def _keyed_done(plan: Plan, done: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """``done`` by the source hash this run computes: a store of an earlier medload records the
    readers' unkeyed digests, of which this run's hashes are the keyed form
    (:func:`medload.deid.keyed_form`), so its volumes are not converted again. Said in the report."""
    old = sum(not is_keyed_source_hash(h) for h in done)
    if old:
        plan.resume_notes.append(
            Problem(
                ProblemKind.UNKEYED_SOURCE_HASHES,
                f"{old} volume(s) of this store carry an unkeyed source_hash (an earlier medload's digest of the "
                "source files, which whoever holds them can recompute to find the volume): they were matched by "
                "it and not converted again, and their hashes are kept as they are. To have every hash keyed, "
                "convert into a new output or pass --overwrite.",
            )
        )
    return {keyed_form(h, plan.key): entry for h, entry in done.items()}


#: Series kinds whose keys are made from where their files lie (medload.io.sources), not from headers.
PATH_KEYED_KINDS = ("nifti", "image", "nnunet")


def _refuse_rekeyed(out: Path, found: Sequence[Any], done: dict[str, tuple[str, str]], key: PhiKey | None) -> None:
    """Refuse to continue a store whose NIfTI / image volumes (matched by ``source_hash``) carry
    other keys than this run makes for them: new volumes would not link with the stored ones
    (one patient, two keys). A store written before keys named their source folder
    (:mod:`medload.io.sources`), or resumed with other sources, pattern or patients CSV."""
    again: dict[str, set[tuple[str, str, str]]] = {}
    for s in found:  # a copy in another source is the same series: either copy's keys may be stored
        if s.kind in PATH_KEYED_KINDS and s.source_hash in done:
            again.setdefault(s.source_hash, set()).add((s.patient_key, s.study_key, s.series_key))
    if not again:
        return
    from medload.store.reader import open as open_store

    reader = open_store(out)
    try:
        stored = [(rec, keyed_form(rec.source_hash, key)) for rec in reader.volumes]
    finally:
        reader.close()
    differ = sorted(
        rec.key for rec, h in stored if h in again and (rec.patient_key, rec.study_key, rec.series_key) not in again[h]
    )
    if differ:
        raise StoreError(
            f"{out} holds {len(differ)} NIfTI or 2D-image volume(s) ({', '.join(differ[:3])}"
            f"{' ...' if len(differ) > 3 else ''}) whose patient, study or series keys differ from the keys this "
            "run makes for the same files: the store was written by an earlier medload, whose keys of such files "
            "did not name their source folder, or its sources were given from other folders, or with another "
            "patient pattern or patients CSV. Continuing it would give one patient two keys. Resume with the "
            "sources and options it was made with, convert into a new output, or --overwrite to start over."
        )


def _pipeline_mismatch(out: Path, shard: str, stored: Any, wanted: Any) -> str:
    from medload.transforms.pipeline import config_diff

    diff = config_diff(stored, wanted) or ["(same steps; the stored configuration differs in form)"]
    return (
        f"{out}: {shard} was written with another pipeline, so resuming would mix two kinds of "
        f"volumes. Differences: {'; '.join(diff)}. To continue it, run with the store's settings; to "
        "start over, pass --overwrite (convert(..., overwrite=True)); or write to a new output path."
    )


def _scan_all(plan: Plan, patient_pattern: str | None = None, workers: int | None = None) -> list[Any]:
    """Scan every source into ``plan`` (files, duplicates); return the distinct series found.

    ``workers`` processes read the headers (:func:`medload.io.scan`), as many as convert the series.
    """
    from medload.io import scan
    from medload.io.sources import source_names, source_root

    found: list[Any] = []
    seen: dict[str, str] = {}
    # Path-derived keys name their source; two sources of one name are told apart here.
    name_of = source_names(plan.sources)
    for src in plan.sources:
        root = os.path.abspath(src) if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
        result = scan(
            src, phi_key=plan.key, patient_pattern=patient_pattern, workers=workers, source_name=name_of[source_root(src)]
        )
        plan.n_files += result.n_files
        plan.skipped.update(result.skipped)
        plan.unmatched_masks.extend(result.unmatched_masks)
        for problem in result.errors:
            names = plan.names_for([problem.path])
            entry = {
                "file": file_key(problem.path, plan.key),
                "status": "unreadable",
                "error": problem.error,  # what to decide by; the reason is for people
                "reason": scrub(problem.message, names),
                **({"internal": True} if problem.internal else {}),
            }
            if plan.keep_phi:
                entry["path"] = scrub(os.path.abspath(problem.path), SourceNames.kept([root]))
            plan.unreadable.append(entry)
        for s in result:
            if s.source_hash in seen:
                entry = scrub(report_summary(s, plan.keep_descriptions), plan.names_for(named_files(s), hidden_texts(s)))
                entry.update(
                    source_hash=s.source_hash,
                    status="duplicate",
                    reason=f"same instances and file sizes as series {seen[s.source_hash]} of this batch; converted once",
                )
                plan.duplicates.append(entry)
                plan.duplicate_series.append(s)
                _map_series(plan, s)
                continue
            seen[s.source_hash] = s.series_key
            found.append(s)
    return found


def _map_series(plan: Plan, series: Any, mask: str | None = None) -> None:
    entry = {
        "patient_key": series.patient_key,
        "study_key": series.study_key,
        "kind": series.kind,
        "description": series.description,
        "files": [os.path.abspath(f) for f in series.files],
    }
    if mask:
        entry["mask"] = os.path.abspath(mask)
    plan.source_map["series"].setdefault(series.series_key, entry)


def _add_tasks(
    plan: Plan,
    found: Sequence[Any],
    done: dict[str, tuple[str, str]],
    label_of: dict[str, int],
    mask_of: dict[str, tuple[str, bool]],
    classes: Sequence[str] | None = None,
) -> None:
    for s in found:
        mask, by_grid = mask_of.get(s.source_hash, (None, False))
        if mask is None and s.info.get("label_file"):
            mask = s.info["label_file"]  # a layout that pairs them (nnU-Net's labelsTr)
        plan.hidden[s.source_hash] = [] if plan.keep_descriptions else hidden_texts(s)
        names = plan.names_for(named_files(s) + ([mask] if mask else []), plan.hidden[s.source_hash])
        plan.names[s.source_hash] = names
        _map_series(plan, s, mask)
        entry = scrub(report_summary(s, plan.keep_descriptions), names)
        entry["source_hash"] = s.source_hash
        plan.entries[s.source_hash] = entry
        if s.source_hash in done:
            key, shard = done[s.source_hash]
            entry.update(status="already converted", key=key, shard=shard)
            continue
        label = label_of.get(s.source_hash)
        name = classes[label] if classes and label is not None and 0 <= label < len(classes) else None
        plan.tasks.append(Task(s.source_hash, s, label, mask, by_grid, class_name=name, names=names))
    # Largest first: a big series started last would leave the other workers idle at the end.
    plan.tasks.sort(key=lambda t: -int(np.prod(t.series.shape or (0,), dtype=np.int64)))


def make_plan(
    sources: Any,
    out: str | os.PathLike[str],
    *,
    pipelines: dict[str, Any],
    store_options: dict[str, Any],
    workers: int | None,
    dask: str | None,
    labels: Any,
    masks: Any,
    keep_phi: bool,
    keep_descriptions: bool,
    phi_key: Any,
    overwrite: bool,
    patient_pattern: str | None = None,
    patients: Any = None,
    allow_burned_in: bool = False,
    require_masks: bool = False,
) -> Plan:
    """Check, resume, scan and pair: everything before the first series is converted."""
    source_list = list(sources)
    out_path = Path(out)
    single = check_layout(out_path, workers, dask)
    if overwrite:
        _remove_output(out_path, single)
    if not single:
        out_path.mkdir(parents=True, exist_ok=True)
    done, resume_notes = _resume(out_path, single, pipelines, store_options)
    # Every spelling of the sources (as given, absolute, real), for making message paths relative.
    plan = Plan(
        source_list,
        source_roots(source_list),
        out_path,
        single,
        pipelines,
        store_options,
        keep_phi,
        keep_descriptions,
        resume_notes=resume_notes,
        key=resolve_key(phi_key),
        allow_burned_in=allow_burned_in,
    )
    # Headers are read on local processes: as many as convert (on Dask: this machine's cores).
    done = _keyed_done(plan, done)
    found = _scan_all(plan, patient_pattern, None if dask and dask != "local" else workers)
    if patients:
        found, plan.patients_info = patients_from_csv(patients, found, plan.message_roots, plan.key)
    _refuse_rekeyed(out_path, [*found, *plan.duplicate_series], done, plan.key)
    if masks:
        mask_root = os.path.realpath(masks) + os.sep
        holding = [src for src in source_list if (os.path.realpath(src) + os.sep).startswith(mask_root)]
        if holding:
            # Every image under it would be taken for a mask (and none converted).
            raise ConfigError(
                f"masks folder {masks} holds the source {holding[0]}: every image there would be taken for a "
                "mask. Give the folder that holds the masks only (e.g. export/labels)."
            )
        # A masks folder inside a source is scanned too; its files are masks, not images.
        found = [s for s in found if not all(os.path.realpath(f).startswith(mask_root) for f in s.files)]
    label_of: dict[str, int] = {}
    n_class_folders = len(
        {s.info.get("class_folder") for s in found if getattr(s, "kind", "") == "image" and s.info.get("class_folder")}
    )
    if labels == "folders" or (labels is None and n_class_folders >= 2):
        # ImageFolder's layout: given by default when the images sit in two or more class folders;
        # then the folders are a guess (a folder per patient looks the same) and their names are
        # written as pseudonyms, unless asked for (--labels folders) or --keep-phi.
        named = labels == "folders" or plan.keep_phi
        label_of, plan.labels_info = class_folder_labels(found, None if named else plan.key)
        if not named:  # --source-map says which folder each class- pseudonym stands for
            folders = {s.info["class_folder"] for s in found if getattr(s, "kind", "") == "image" and s.info.get("class_folder")}
            plan.source_map["names"].update({pseudonym(f, prefix="class-", secret=plan.key): f for f in folders})
    elif labels:
        label_of, plan.labels_info = read_labels(labels, found, plan.message_roots)
    mask_of = _pair_masks(plan, found, masks, require_masks)
    _add_tasks(plan, found, done, label_of, mask_of, (plan.labels_info or {}).get("classes"))
    return plan


def _pair_masks(plan: Plan, found: list[Any], masks: Any, require_masks: bool) -> dict[str, Any]:
    """Each series' mask file from the ``masks`` folder, by source hash; what matched nothing is
    counted on ``plan`` (refused with ``require_masks``)."""
    from medload.io.masks import mask_files, match_masks

    candidates = mask_files(masks) if masks else []
    mask_of = match_masks(found, candidates) if masks else {}
    used = {os.path.realpath(m) for m, _ in mask_of.values()}
    plan.unmatched_masks.extend(m.path for m in candidates if os.path.realpath(m.path) not in used)
    # Which images should have a mask: all of them when a masks folder is given, else the
    # training cases of a layout that pairs them (nnU-Net's imagesTr).
    expected = [s for s in found if masks or (s.kind == "nnunet" and s.info.get("split") == "Tr")]
    plan.images_without_mask = sum(1 for s in expected if s.source_hash not in mask_of and not s.info.get("label_file"))
    if require_masks and (plan.unmatched_masks or plan.images_without_mask):
        unmatched = [file_key(m, plan.key) if not plan.keep_phi else m for m in plan.unmatched_masks[:5]]
        raise ConfigError(
            f"require_masks: {plan.images_without_mask} image(s) have no mask and {len(plan.unmatched_masks)} mask "
            f"file(s) match no image{(' (' + ', '.join(unmatched) + ')') if unmatched else ''}; pair them "
            "(masks are matched by file name: the series key, the NIfTI file's name or the description; "
            "nnU-Net: labelsTr/CASE.nii.gz for imagesTr/CASE_0000.nii.gz), or convert without require_masks."
        )
    return mask_of


def check_source_map(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Refuse a source map inside the output folder (it names the patients' files)."""
    out_path = Path(out)
    folder = out_path.parent if out_path.suffix in (".h5", ".hdf5") else out_path
    target = os.path.realpath(os.fspath(path))
    inside = os.path.realpath(os.fspath(folder))
    if target == inside or target.startswith(inside.rstrip(os.sep) + os.sep):
        raise ConfigError(
            f"--source-map {path} is inside the output folder {folder}: the map names the source "
            "files (often the patients' names), and the output folder is what leaves the hospital. "
            "Write it somewhere kept with the source data, e.g. beside the export."
        )


def write_source_map(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write ``plan.source_map`` as JSON at ``path`` (mode 0600, atomically)."""
    path = Path(path)
    payload = {
        "medload_source_map": 1,
        "warning": "This file maps medload's pseudonyms to source paths: it identifies patients. "
        "Keep it with the source data; never put it in the output that is shared.",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "phi_key_fingerprint": plan.key.fingerprint if plan.key else None,
        "sources": [os.path.abspath(s) for s in plan.sources],
        "output": os.path.abspath(plan.out),
        "series": plan.source_map["series"],
        "names": dict(sorted(plan.source_map["names"].items())),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)
