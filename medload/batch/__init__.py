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
- **De-identified by default** (``docs/deidentification.md``). Volumes carry only pseudonymous
  keys made with the operator's key (``--phi-key``, ``$MEDLOAD_PHI_KEY``, else the key file
  made on first use; the store records its fingerprint and refuses another); no field of DICOM
  PS3.15's basic profile is written, and meta is an allow-list. Nothing written to the output
  folder names a source path, file or folder: :func:`medload.deid.scrub` turns them into
  ``file-``/``dir-`` pseudonyms (``source_map=`` writes the mapping elsewhere). Series with
  BurnedInAnnotation YES fail with ``BurnedInAnnotationError`` unless ``allow_burned_in=True``.
  ``keep_phi=True`` keeps the identifying fields on purpose, under ``meta["phi"]``, and paths.
  Descriptions (SeriesDescription, ProtocolName, BodyPartExamined, a NIfTI file's name: see
  :data:`medload.deid.DESCRIPTOR_KEYS`) are free text that can hold names; the basic profile removes them,
  so they are written to neither the store nor the report unless ``keep_descriptions=True``
  (PS3.15's "Retain ... Clean Descriptors" option: the user judged them clean), which
  ``keep_phi=True`` implies.
- **Preprocessing.** ``pipeline=None`` picks a preset by modality (``medload.transforms.
  default_preset``: CT -> ``ct-abdomen``, MR -> ``mr-body``, CR/DX/MG -> ``xray``, OT (2D image
  files) -> ``image``, the stored 8/16-bit range to [0, 1]; any other modality is stored as
  read, with no intensity step).
- **2D image folders.** PNG, JPEG, TIFF and BMP files are sources too; class folders
  (torchvision's ImageFolder layout) give labels and class names, stored with the volumes;
  a file-name pattern or a CSV gives each image's patient (:mod:`medload.io.images`). ``size`` appends
  ``ResizeSlices(size, mode="resize")`` (interpolated; the affine records the new spacing).

Modules: :mod:`~medload.batch.plan` (check options, resume the output, scan, pair masks and
labels into :class:`~medload.batch.worker.Task` records), :mod:`~medload.batch.worker` (load,
de-identify, preprocess, write one series), :mod:`~medload.batch.report` (the report and its
file), :mod:`~medload.batch.pipelines` (the ``pipeline`` argument), :mod:`~medload.batch.job`
(:func:`convert`: plan -> run -> report).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medload.batch.job import convert
    from medload.batch.pipelines import resolve_pipelines
    from medload.batch.plan import REPORT_NAME
    from medload.batch.report import ConversionReport

# name -> module that defines it, imported on first use (PEP 562): a worker process unpickles
# medload.batch.worker's Job, which runs this file; the planning side (job, plan, labelcsv,
# report, runlock) is then never imported there (about 0.1 CPU s per worker process).
_LAZY = {
    "convert": "medload.batch.job",
    "resolve_pipelines": "medload.batch.pipelines",
    "REPORT_NAME": "medload.batch.plan",
    "ConversionReport": "medload.batch.report",
}

__all__ = ["convert", "ConversionReport", "resolve_pipelines", "REPORT_NAME"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medload.batch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
