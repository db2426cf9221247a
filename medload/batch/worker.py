"""The batch job's worker side: one :class:`Task` per series, run by a :class:`Worker` into its shard.

A :class:`Job` is everything a worker process needs (picklable, sent once per process or Dask
task); ``job(slot)`` makes the :class:`Worker` of that slot, which loads, de-identifies,
preprocesses and writes one series after another into its own shard, and turns each outcome
into the series' report entry.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medload.batch.fused import StoredTables, run_for_store
from medload.batch.pipelines import pipeline_for
from medload.deid import PhiKey, SourceNames, deidentified_meta, file_key, hidden_texts, named_files, scrub
from medload.errors import MedloadError
from medload.io.stored import LookedUp
from medload.volume import Volume

__all__ = ["Task", "Job", "Worker"]


@dataclass
class Task:
    """One series to convert, with what the plan paired with it.

    Attributes
    ----------
    source_hash : str
        The series' identity (also the task id).
    series : Series
        What :func:`medload.scan` found.
    label : int or None
        Its class from the labels CSV.
    mask : str or None
        Path of its NIfTI mask.
    mask_by_grid : bool
        The mask was paired by grid alone (so it is skipped, not refused, when it does not fit).
    class_name : str or None
        The name of ``label`` (a class folder, a class named in the CSV), stored as
        ``meta["class_name"]`` so that the store knows its classes.
    names : SourceNames or None
        What :func:`medload.deid.scrub` replaces in this task's messages and meta, as the plan
        made it for the report (:meth:`Job.names`); None: the worker makes it.
    """

    source_hash: str
    series: Any
    label: int | None = None
    mask: str | None = None
    mask_by_grid: bool = False
    class_name: str | None = None
    names: SourceNames | None = None


@dataclass
class Job:
    """Everything a worker needs, picklable (sent once per worker process or Dask task)."""

    out: str
    single_file: bool
    pipelines: dict[str, Any]
    store_options: dict[str, Any]
    keep_phi: bool
    roots: list[str] = field(default_factory=list)
    keep_descriptions: bool = False
    #: Modality recorded for 2D image files (PNG, JPEG, TIFF, BMP), which name none; None: "OT".
    image_modality: str | None = None
    #: The pseudonym key (file and folder pseudonyms in messages are keyed with it).
    key: PhiKey | None = None
    allow_burned_in: bool = False
    #: Modality of NIfTI files whose header and sidecar do not say (and of images without image_modality).
    modality: str | None = None
    on_gap: str = "error"

    def names(self, task: Task) -> SourceNames:
        """What :func:`medload.deid.scrub` replaces in this task's messages and meta.

        The plan's (``task.names``) when it came with the task: the same files, mask, roots and
        key give the same names, and making them is a pseudonym and a few path spellings per
        file (about 0.1 CPU s for 2,900 files), done once in the plan, not again here.
        """
        if task.names is not None:
            return task.names
        if self.keep_phi:
            return SourceNames.kept(self.roots)
        files = named_files(task.series) + ([task.mask] if task.mask else [])
        hidden = [] if self.keep_descriptions else hidden_texts(task.series)
        return SourceNames.of(files, roots=self.roots, key=self.key, hidden=hidden)

    def __call__(self, slot: str) -> Worker:
        return Worker(self, slot)


class Worker:
    """One writer: converts series one after another into its own shard."""

    def __init__(self, job: Job, slot: str) -> None:
        self.job = job
        self.slot = slot
        self.store: Any = None
        self.pipes: dict[str, Any] = {}

    @property
    def shard_path(self) -> Path:
        from medload.store.layout import shard_path

        if self.job.single_file:
            return Path(self.job.out)
        return shard_path(Path(self.job.out), self.slot)

    def _store(self) -> Any:
        if self.store is None:
            from medload.store import Store

            self.store = Store.create(self.shard_path, pipeline=self.job.pipelines, resume=True, **self.job.store_options)
        return self.store

    def _pipeline(self, modality: str) -> Any:
        from medload.transforms import Pipeline

        config = pipeline_for(self.job.pipelines, modality)
        name = json.dumps(config, sort_keys=True)
        if name not in self.pipes:
            self.pipes[name] = Pipeline.from_config(config)
        return self.pipes[name]

    def _read(self, task: Task, names: SourceNames) -> Volume | LookedUp:
        from medload.io import load, load_stored

        series = task.series
        kind = getattr(series, "kind", "")
        if kind == "image":
            modality = self.job.image_modality or self.job.modality
        elif kind == "nifti" and str(series.modality or "unknown").lower() == "unknown":
            modality = self.job.modality
        else:
            modality = None  # DICOM says its own
        options: dict[str, Any] = {
            "keep_phi": self.job.keep_phi,
            "on_gap": self.job.on_gap,
            "allow_burned_in": self.job.allow_burned_in,
        }
        scanned = str(series.modality or "unknown")
        tables = self._tables(scanned) if kind == "dicom" and not task.mask else None
        volume: Volume | LookedUp
        if tables is not None:
            # Its pipeline ends in a window into uint8: looked up from the stored codes as read (fused.py).
            volume = load_stored(series, tables, **options)
            if isinstance(volume, LookedUp) and self._pipeline(volume.volume.modality) is not self._pipeline(scanned):
                volume = load(series, **options)  # the headers say another modality than scan found
        else:
            volume = load(series, modality=modality, **options)
        meta = deidentified_meta(volume.meta, self.job.roots, self.job.keep_phi, self.job.keep_descriptions, names=names)
        meta.setdefault("source_hash", series.source_hash)
        if task.class_name is not None:
            meta["class_name"] = task.class_name
        if isinstance(volume, LookedUp):
            looked = volume.volume
            return replace(volume, volume=Volume(looked.array, looked.affine, modality=looked.modality, meta=meta))
        return Volume(volume.array, volume.affine, modality=volume.modality, meta=meta, history=volume.history)

    def _tables(self, modality: str) -> StoredTables | None:
        """The stored tables of ``modality``'s pipeline into this job's store, where it runs on stored codes (fused.py)."""
        from medload.store import check_dtype

        options = self.job.store_options
        return StoredTables.of(self._pipeline(modality), check_dtype(options.get("dtype")), options.get("value_range"))

    def __call__(self, task: Task) -> dict[str, Any]:
        started = time.perf_counter()
        entry: dict[str, Any] = {"slot": self.slot}
        stage = "read"
        names = self.job.names(task)
        try:
            volume = self._read(task, names)
            entry["problems"] = [p.to_json() for p in _problems(volume)]
            mask = None
            if task.mask:
                from medload.io.masks import load_mask  # nibabel: imported where a mask is read

                assert isinstance(volume, Volume)  # never looked up where a mask comes (_read)

                stage = "mask"
                mask, unused = load_mask(task.mask, volume, by_grid=task.mask_by_grid)
                if mask is None:
                    entry["mask"] = None
                else:
                    entry["mask"] = os.path.basename(task.mask) if self.job.keep_phi else file_key(task.mask, self.job.key)
                if unused is not None:  # a problem of the volume (stored, reported, on the QC page), by kind
                    problems = [*volume.meta.get("problems", []), scrub(unused.to_json(), names)]
                    volume = volume.with_array(volume.array, meta={**volume.meta, "problems": problems})
                    entry["problems"] = [p.to_json() for p in volume.problems]
            stage = "write"
            store = self._store()
            stage = "preprocess"
            pipe = self._pipeline(_modality(volume))
            # A final CT window into a uint8 store runs as one lookup-table pass (same bytes).
            out, mask, encoded = run_for_store(pipe, volume, mask, store)
            stage = "write"
            key = store.add(out, mask=mask, label=task.label, encoded=encoded)
        except MedloadError as exc:
            entry.update(status="failed", stage=stage, error=type(exc).__name__, reason=scrub(str(exc), names))
        except Exception as exc:  # a bug (ours or a library's) on one series must not stop the batch
            entry.update(
                status="failed",
                stage=stage,
                error=type(exc).__name__,
                internal=True,
                reason=scrub(
                    f"unexpected {type(exc).__name__} while {stage}ing: {exc} (an internal "
                    "error, not a damaged file: please report it with the traceback)",
                    names,
                ),
                traceback=scrub(traceback.format_exc(limit=6), names),
            )
        else:
            entry.update(
                status="converted",
                key=key,
                modality=out.modality,
                shard=self.shard_path.name,
                stored_shape=list(out.shape),
                slices=int(out.spatial_shape[0]),
                intensity=out.meta.get("intensity", ""),
                label=task.label,
                **({"class_name": task.class_name} if task.class_name else {}),
            )
        entry["seconds"] = round(time.perf_counter() - started, 3)
        return entry

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _problems(volume: Volume | LookedUp) -> tuple[Any, ...]:
    return (volume.volume if isinstance(volume, LookedUp) else volume).problems


def _modality(volume: Volume | LookedUp) -> str:
    return (volume.volume if isinstance(volume, LookedUp) else volume).modality
