"""``medload.convert``: plan -> run -> report (the promises are in :mod:`medload.batch`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medload.batch.pipelines import resolve_pipelines
from medload.batch.plan import Plan, check_layout, check_source_map, check_sources, make_plan, report_path, write_source_map
from medload.batch.report import ConversionReport, Progress, make_report, write_report
from medload.batch.runlock import run_lock
from medload.batch.worker import Job
from medload.cores import resolve_workers
from medload.deid import PhiKey, resolve_key, scrub
from medload.errors import ConfigError

if TYPE_CHECKING:
    from medload.parallel import Outcome

__all__ = ["convert"]


def convert(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    pipeline: Any = None,
    size: int | Sequence[int] | None = None,
    resize_mode: str = "resize",
    orientation: str = "radiological",
    dtype: str | None = None,
    compression: str | None = None,
    workers: int | None = None,
    dask: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    keep_phi: bool = False,
    keep_descriptions: bool = False,
    phi_key: str | bytes | PhiKey | None = None,
    overwrite: bool = False,
    progress: bool = True,
    patient_pattern: str | None = None,
    patients: str | os.PathLike[str] | None = None,
    grayscale: bool = False,
    image_modality: str | None = None,
    allow_burned_in: bool = False,
    source_map: str | os.PathLike[str] | None = None,
    modality: str | None = None,
    force: bool = False,
    on_gap: str = "error",
    require_masks: bool = False,
) -> ConversionReport:
    """Convert scanner exports (DICOM series, NIfTI files, folders of PNG/JPEG/TIFF/BMP images) into one medload store.

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
    orientation : {"radiological", "acquisition"}
        ``"radiological"`` (default): store every volume's slices in the display convention of
        their plane (:class:`~medload.transforms.CanonicalSlices`, a recorded step; DICOM and
        NIfTI of one scan store the same slices). ``"acquisition"``: as the source has them.
    dtype, compression : str, optional
        Store encoding (default: :meth:`medload.Store.create`'s, chosen in ``docs/hdf5-schema.md``).
    workers : int, optional
        Local worker processes (default: all cores; ``0`` runs in this process). With
        ``dask="local"``: the LocalCluster's workers.
    dask : str, optional
        ``"local"`` or a Dask scheduler address; one task per series, each its own shard.
        The workers must see ``sources`` and ``out`` at the same paths.
    labels : path or "folders", optional
        CSV with a ``label`` column and a ``series_key``/``study_key``/``patient_key`` (or
        ``key``) column holding the pseudonyms ``medload scan`` shows, or, for 2D images, a
        ``file`` column (path below the source folder, or file name). Class names become
        0..n-1 in sorted order, stored with the labels (``medload info`` and the datasets'
        ``classes`` show them). ``"folders"``: ImageFolder's layout, each image's first folder
        below its source is its class, the folder names stored as class names. Without ``labels``,
        2D images in two or more folders are labelled so too, but the class names stored are
        keyed pseudonyms (``class-`` + 16 hex, mapped back by ``source_map``): a folder per
        patient (``DOE^JOHN/``) looks the same, and no output may hold a patient's name.
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
    phi_key : str, bytes or PhiKey, optional
        Secret of the pseudonyms (default ``$MEDLOAD_PHI_KEY``, else your key file, made on first
        use: :func:`medload.deid.resolve_key`). The store records its fingerprint; resuming
        with another key is refused.
    overwrite : bool
        Delete this output's shards and report first, instead of resuming.
    progress : bool
        Show a progress bar on stderr.
    patient_pattern : str, optional
        2D images: a regular expression searched in each image's path below its source; what it
        finds is the patient (its ``patient`` group, else its first group), e.g.
        ``r"(?P<patient>\\d+)_"`` for ``00012_003.png``. Without it (or ``patients``) each image
        is a patient of its own, and splits by patient are splits by image: images of one
        patient can land in both train and test.
    patients : path, optional
        2D images: a CSV with a ``file`` and a ``patient_id`` column giving each image's patient.
    grayscale : bool
        Store colour images as one grey channel (ITU-R BT.601 luma), a recorded step.
    image_modality : str, optional
        The modality recorded for 2D image files (``"CR"``, ``"DX"``, ``"US"``, ...); default
        ``"OT"``, whose default preset ``image`` scales the stored 8/16-bit range to [0, 1].
    allow_burned_in : bool
        Convert series whose BurnedInAnnotation is YES (text such as names in the pixels);
        refused by default (a ``failed`` entry with ``BurnedInAnnotationError``).
    source_map : path, optional
        Write a JSON file mapping every pseudonym of the report (series, files, folders) to
        its source path. It identifies patients, so it is refused inside the output folder.
        Without ``keep_phi`` the output folder holds no path, file or folder name of the sources.
    modality : str, optional
        The modality of sources whose headers do not say (NIfTI without a BIDS sidecar, 2D
        image files): ``"CT"`` lets the CT presets window a NIfTI CT. DICOM keeps its own.
    force : bool
        Apply steps that refuse a volume of another modality anyway (``force=True`` on CT
        windows); prefer ``modality=`` where the source does not say.
    on_gap : {"error", "interpolate"}
        DICOM series with missing or unevenly spaced slices: refuse them (default) or
        resample them linearly onto an even grid (recorded in the volume's meta).
    require_masks : bool
        Refuse the batch (before converting) when an image that should have a mask has none
        (every image when ``masks`` is given; nnU-Net training cases) or a mask file matches
        no image. Without it both are counted in the report (``masks_without_image``,
        ``images_without_mask``).

    Returns
    -------
    ConversionReport

    Raises
    ------
    MedloadError
        Only for what stops the whole batch before it starts (missing source, bad option,
        an output written with another pipeline); a bad series is a report entry instead.

    Notes
    -----
    An nnU-Net / Medical Segmentation Decathlon dataset folder (``dataset.json``, ``imagesTr``,
    ``labelsTr``) given as a source converts one volume per case, its channels stacked
    (``meta["channels"]`` from ``dataset.json``), its ``labelsTr`` label map as the mask, the
    label names in ``meta["label_names"]``, one patient per case unless ``patients=`` (a CSV whose
    ``file`` column holds case ids) maps cases to patients; see :mod:`medload.io.nnunet`.

    Examples
    --------
    >>> import tempfile, os, pydicom, medload
    >>> src = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    >>> report = medload.convert(src, tempfile.mkdtemp() + "/out", workers=0, progress=False)
    >>> report.counts["converted"], report.ok
    (1, True)
    """
    given = dict(locals())  # the call's arguments as given, recorded in the report's options
    started = time.perf_counter()
    source_list = check_sources(sources)
    keep_descriptions = bool(keep_descriptions or keep_phi)
    resolve_workers(workers)  # checked before scanning a big export
    modality = _checked_read_options(modality, on_gap)
    pipelines = _store_pipelines(
        resolve_pipelines(
            pipeline, size=size, resize_mode=resize_mode, grayscale=grayscale, orientation=orientation, force=force
        ),
        keep_phi,
        keep_descriptions,
    )
    store_options = _store_options(dtype, compression)
    single = check_layout(Path(out), workers, dask)  # a usage error is said before a key file is made
    if source_map is not None:
        check_source_map(source_map, out)
    key = resolve_key(phi_key)
    # Resuming (or appending to) a store made with another key is refused by the store.
    store_options["key_fingerprint"] = key.fingerprint
    store_options["keep_phi"] = True  # the worker de-identifies meta as this run asks (names by pseudonym): kept as given
    with run_lock(Path(out), single):  # one convert per output, refused at once (issue 11)
        plan = make_plan(
            source_list,
            out,
            pipelines=pipelines,
            store_options=store_options,
            workers=workers,
            dask=dask,
            labels=labels,
            masks=masks,
            keep_phi=keep_phi,
            keep_descriptions=keep_descriptions,
            phi_key=key,
            overwrite=overwrite,
            patient_pattern=patient_pattern,
            patients=patients,
            allow_burned_in=allow_burned_in,
            require_masks=require_masks,
        )
        if source_map is not None:
            write_source_map(plan, source_map)
        plan.read_options = {"modality": modality, "on_gap": on_gap}
        run_workers = 1 if plan.single and workers is None else workers
        interrupted, backend = _run(plan, workers=run_workers, dask=dask, progress=progress, image_modality=image_modality)
        options = _report_options(given, plan, backend=backend, modality=modality)
        report = make_report(plan, options=options, interrupted=interrupted, started=started)
        write_report(report, report_path(plan.out, plan.single))
    return report


def _report_options(given: dict[str, Any], plan: Any, *, backend: str, modality: str | None) -> dict[str, Any]:
    """The options a report records: the call's arguments (``given``), the modality as checked,
    the backend that ran, and what the plan made of the label and patient tables."""
    copied = "size resize_mode orientation dtype compression workers on_gap keep_phi patient_pattern grayscale"
    copied += " image_modality allow_burned_in"
    options = {name: given[name] for name in copied.split()}
    options.update(
        modality=modality,
        # A scheduler's address names a machine (which can name the hospital): not recorded.
        dask=given["dask"] if given["dask"] in (None, "local") else "scheduler",
        force=bool(given["force"]),
        require_masks=bool(given["require_masks"]),
        keep_descriptions=bool(given["keep_descriptions"] or given["keep_phi"]),
        backend=backend,
        labels=plan.labels_info,
        masks=bool(given["masks"]),
        patients=plan.patients_info,
        source_map=given["source_map"] is not None,
    )
    return options


def _checked_read_options(modality: str | None, on_gap: str) -> str | None:
    """``modality`` in capitals; refuses an unknown modality or ``on_gap`` before any work."""
    from medload.batch.pipelines import KNOWN_MODALITIES
    from medload.io.dicom import ON_GAP

    if on_gap not in ON_GAP:
        raise ConfigError(f"on_gap must be one of {list(ON_GAP)}, found {on_gap!r}.")
    if modality is None:
        return None
    modality = str(modality).strip().upper()
    if modality not in KNOWN_MODALITIES:
        raise ConfigError(f"modality {modality!r} is not one medload knows ({', '.join(sorted(KNOWN_MODALITIES))}).")
    return modality


def _store_pipelines(pipelines: dict[str, Any], keep_phi: bool, keep_descriptions: bool) -> dict[str, Any]:
    """The pipeline spec the store records, with what else is part of its identity."""
    if keep_phi:
        # Part of the store's identity: a re-run without --keep-phi (or with it, on a
        # de-identified store) is refused instead of mixing identified and de-identified volumes.
        return dict(pipelines, keep_phi=True)
    if keep_descriptions:
        # Likewise: volumes with and without descriptions never share a store.
        return dict(pipelines, keep_descriptions=True)
    return pipelines


def _store_options(dtype: str | None, compression: str | None) -> dict[str, Any]:
    """The store's encoding options, checked before scanning a big export."""
    from medload.store import check_dtype, parse_compression

    check_dtype(dtype)
    parse_compression(compression)
    return {k: v for k, v in (("dtype", dtype), ("compression", compression)) if v is not None}


def _run(
    plan: Plan, *, workers: int | None, dask: str | None, progress: bool, image_modality: str | None = None
) -> tuple[bool, str]:
    """Run every task of ``plan``, filling its entries; return ``(interrupted, backend)``."""
    from medload.parallel import run_tasks

    job = Job(
        out=str(plan.out),
        single_file=plan.single,
        pipelines=plan.pipelines,
        store_options=plan.store_options,
        keep_phi=plan.keep_phi,
        roots=plan.message_roots,
        keep_descriptions=plan.keep_descriptions,
        image_modality=image_modality,
        key=plan.key,
        allow_burned_in=plan.allow_burned_in,
        **plan.read_options,
    )
    bar = Progress(progress, len(plan.tasks), sum(t.series.n_slices for t in plan.tasks))

    def on_outcome(outcome: Outcome) -> None:
        entry = plan.entries[outcome.task_id]
        if outcome.ok:
            entry.update(outcome.value)
        else:
            # The report keeps the class and the message apart: ``reason`` never repeats ``error``.
            names = plan.names_of(outcome.task_id)
            entry.update(status="failed", stage="worker", error=outcome.error_type, reason=scrub(outcome.error_message, names))
            if outcome.error_traceback:
                entry.update(internal=True, traceback=scrub(outcome.error_traceback, names))
        bar.advance(entry.get("slices", 0) if entry.get("status") == "converted" else 0)

    try:
        summary = run_tasks(job, [(t.source_hash, t) for t in plan.tasks], workers=workers, dask=dask, on_outcome=on_outcome)
        return summary.interrupted, summary.backend
    except KeyboardInterrupt:
        return True, "interrupted"
    finally:
        bar.stop()
