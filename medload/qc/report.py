"""``medload qc OUT``: a static HTML page to check a whole conversion, from stored slices only.

The page (``OUT/qc/index.html``, or ``x.qc/index.html`` beside a single-file store ``x.h5``)
opens from disk in any browser: no server, no network, every style and script inline, the
thumbnails PNG files in ``thumbs/`` beside it (``loading="lazy"``, so a page over thousands
of volumes opens at once and draws what is scrolled to). It holds:

- a summary: counts, modalities, slice shapes, histograms of spacing and of stored intensity
  (one per intensity meaning: a CT window in [0, 1] and an MR z-score are not one axis);
- per volume: axial, coronal and sagittal planes through the mask's centroid (else the centre),
  in colour for an RGB image and one row per channel (the first four) for a multi-channel
  volume such as stacked MR sequences or CT windows, with edge letters read from the stored affine (:mod:`medload.qc.views`), the mask blended
  in colour with a legend of its labels, the stored value range and what it means, the
  history (every pipeline step with its parameters) and problems (the converter's, as the
  store holds them, and what the page itself finds: a constant image or channel, non-finite
  values in any channel, an empty mask), each shown with its kind (:class:`medload.problems.ProblemKind`), and the
  summary counts the volumes of each kind;
- every series the converter did not write (failed, duplicate, not run) with its reason, and
  the unreadable files, from the ``report.json`` the converter wrote beside the store;
- filters and sorting (modality, problems, failed) in plain JavaScript; without JavaScript
  everything is still shown. The address can set them: ``index.html#modality=MR&problems``,
  ``#sort=problems``, ``#nofailed``; ``#all`` loads every thumbnail at once.

Privacy: the page shows what the store and ``report.json`` already hold under the converter's
rule (:mod:`medload.deid`: file and folder names as pseudonyms, reasons scrubbed by
``deid.scrub``): pseudonymous keys, geometry, pipeline, the report's reasons. Source folders,
file paths and descriptions are shown only for a store written with ``--keep-phi``
(descriptions also with ``--keep-descriptions``, which wrote them into the store on purpose).
Nothing is scrubbed here a second time: the page copies no text the report does not hold.

Thumbnails are drawn with numpy and Pillow, several volumes per task, in worker processes
(``workers``); nothing is read from the sources.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.cores import available_cores
from medload.errors import ConfigError, ReadError, StoreError
from medload.problems import Problem, ProblemKind, read_problems
from medload.qc import page, views
from medload.qc.page import counter_table, escape, histogram_svg, number
from medload.qc.place import check_replaceable, move_into_place

if TYPE_CHECKING:
    from medload.store.reader import StoreReader

__all__ = ["qc_folder", "write_qc"]

#: Pixels of a thumbnail's longer side.
THUMB_SIZE = 160
#: Voxels per volume kept for the store-wide intensity histogram.
_SAMPLES = 2048
#: Volumes per task handed to a worker process.
_CHUNK = 16
#: Below this many volumes the page is drawn in this process (starting workers costs more).
_INLINE_BELOW = 48


def qc_folder(store: str | os.PathLike[str]) -> Path:
    """Where the page of ``store`` goes: ``OUT/qc`` for a folder, ``x.qc`` beside a file ``x.h5``.

    Examples
    --------
    >>> qc_folder("/data/out.h5").as_posix()
    '/data/out.qc'
    """
    path = Path(store)
    return path.with_name(path.stem + ".qc") if path.suffix in (".h5", ".hdf5") else path / "qc"


def _report_path(store: Path) -> Path:
    return store.with_name(store.stem + ".report.json") if store.suffix in (".h5", ".hdf5") else store / "report.json"


# --------------------------------------------------------------------------- per volume (workers)
_READERS: dict[str, StoreReader] = {}


def _reader(path: str) -> StoreReader:
    from medload.store import open as open_store

    if path not in _READERS:
        _READERS[path] = open_store(path)
    return _READERS[path]


def _volume_facts(store: str, volume: int, thumbs: str, size: int) -> dict[str, Any]:
    """Thumbnails (written as PNG files) and numbers of one stored volume."""
    reader = _reader(store)
    record = reader.record(volume)
    # An integer store (the default uint8) is drawn from its stored values, the window mapped
    # through scale and offset: no float copy of the volume (measured ~2 ms of ~10 per volume).
    integer = np.issubdtype(np.dtype(record.dtype), np.integer)
    image = reader.read_slices(volume, 0, record.n_slices, raw=integer)  # (Z, H, W) or (Z, C, H, W)
    mask = reader.read_mask(volume, 0, record.n_slices) if record.has_mask else None
    if integer:  # integers are finite
        n_bad, values = 0, image.ravel()
    else:
        finite = np.isfinite(image)
        n_bad = int(image.size - np.count_nonzero(finite))
        values = image[finite] if n_bad else image.ravel()

    def decoded(x: Any) -> Any:
        return x * record.scale + record.offset if integer else x

    stored_window = views.display_range(values)
    window = tuple(float(decoded(w)) for w in stored_window)
    low, high = (float(decoded(values.min())), float(decoded(values.max()))) if values.size else (math.nan, math.nan)
    problems: list[Problem] = []
    if n_bad:
        problems.append(Problem(ProblemKind.NONFINITE_VALUES, f"{n_bad} stored values are NaN or infinite"))
    if values.size and low == high:
        problems.append(Problem(ProblemKind.CONSTANT_IMAGE, f"constant image: every stored value is {low:.6g}"))
    elif image.ndim == 4:
        problems += _constant_channels(image, record, decoded)
    labels: dict[int, int] = {}
    if mask is not None:
        counts = np.bincount(mask.ravel().astype(np.intp, copy=False)) if mask.size else np.zeros(1, np.intp)
        labels = {int(k): int(c) for k, c in enumerate(counts) if k != 0 and c}
        if not labels:
            problems.append(Problem(ProblemKind.EMPTY_MASK, "the mask is empty (no labelled voxel)"))
    shown = []
    for suffix, channel, drawn in _drawn_channels(image, record):
        drawn_window = stored_window if channel in (None, _COLOUR) else views.display_range(_finite(drawn))
        shown += _thumbnails(drawn, drawn_window, record, mask, volume, thumbs, size, suffix=suffix, channel=channel)
    step = max(1, values.size // _SAMPLES)
    return {
        "volume": volume,
        "range": [low, high],
        "window": list(window),
        "labels": labels,
        "problems": problems,
        "views": shown,
        "sample": decoded(np.asarray(values[::step][:_SAMPLES], np.float32)),
    }


#: The channel names of a colour image, drawn in colour.
_COLOUR = "RGB"
#: At most this many channels of a multi-channel volume get thumbnails of their own.
MAX_DRAWN_CHANNELS = 4


def _channel_names(record: Any, n: int) -> list[str]:
    names = list(record.channels or ())
    return names if len(names) == n else [f"channel {c}" for c in range(n)]


def _drawn_channels(image: np.ndarray, record: Any) -> list[tuple[str, str | None, np.ndarray]]:
    """What the thumbnails draw: ``(file-name suffix, channel caption, array)`` per picture row.

    A 3D volume is one grey row; an RGB image (channels ``R, G, B``) one colour row, its array
    ``(3, Z, H, W)``; any other multi-channel volume one grey row per channel (``(Z, H, W)``
    each), the first :data:`MAX_DRAWN_CHANNELS` of them: a second MR sequence or a second CT
    window is checked by eye like the first.

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> [(s, c, a.shape) for s, c, a in _drawn_channels(np.zeros((2, 2, 4, 4)), R(channels=("T2", "ADC")))]
    [('_c0', 'T2', (2, 4, 4)), ('_c1', 'ADC', (2, 4, 4))]
    >>> [(s, c, a.shape) for s, c, a in _drawn_channels(np.zeros((1, 3, 4, 4)), R(channels=("R", "G", "B")))]
    [('', 'RGB', (3, 1, 4, 4))]
    """
    if image.ndim == 3:
        return [("", None, image)]
    if tuple(record.channels or ()) == ("R", "G", "B"):
        return [("", _COLOUR, np.moveaxis(image, 1, 0))]
    names = _channel_names(record, image.shape[1])
    return [(f"_c{c}", names[c], image[:, c]) for c in range(min(image.shape[1], MAX_DRAWN_CHANNELS))]


def _finite(array: np.ndarray) -> np.ndarray:
    return array if np.issubdtype(array.dtype, np.integer) else array[np.isfinite(array)]


def _constant_channels(image: np.ndarray, record: Any, decoded: Callable[[Any], Any]) -> list[Problem]:
    """One ``constant_image`` problem per channel of a ``(Z, C, H, W)`` volume whose finite values are all one."""
    problems = []
    for c, name in enumerate(_channel_names(record, image.shape[1])):
        values = _finite(image[:, c])
        if values.size and values.min() == values.max():
            value = float(decoded(values.min()))
            problems.append(Problem(ProblemKind.CONSTANT_IMAGE, f"channel {name} is constant: every stored value is {value:.6g}"))
    return problems


def _thumbnails(
    image: np.ndarray,
    stored_window: tuple[float, float],
    record: Any,
    mask: np.ndarray | None,
    volume: int,
    thumbs: str,
    size: int,
    *,
    suffix: str = "",
    channel: str | None = None,
) -> list[dict[str, Any]]:
    """Draw the three planes of ``image`` (grey ``(Z, H, W)`` or colour ``(3, Z, H, W)``) into ``thumbs``."""
    shown = []
    planes = views.orthogonal_views(image, record.affine, mask)
    if record.n_slices == 1:
        # A radiograph or a single slice: the other two planes would be one-pixel lines.
        planes = [v for v in planes if min(v.image.shape[:2]) > 1] or planes[:1]
    for view in planes:
        gray = views.to_uint8(view.image, *stored_window)
        if view.mask is not None and view.mask.any():
            # label colours drawn exactly: PNG; no mask: JPEG (encodes 5-10x faster, smaller)
            picture = views.fit(views.overlay(gray, view.mask), view.pixel_mm, size)
            name, data = f"{volume:06d}_{view.plane}{suffix}.png", views.png_bytes(picture)
        else:
            picture = views.fit(gray, view.pixel_mm, size)
            name, data = f"{volume:06d}_{view.plane}{suffix}.jpg", views.jpeg_bytes(picture)
        with open(os.path.join(thumbs, name), "wb") as handle:
            handle.write(data)
        shown.append(
            {
                "plane": view.plane,
                "file": name,
                "index": view.index,
                "n": view.n,
                "labels": view.labels,
                "width": int(picture.shape[1]),
                "height": int(picture.shape[0]),
                "channel": channel,
            }
        )
    return shown


def _unreadable(volume: int, why: str) -> dict[str, Any]:
    return {
        "volume": volume,
        "range": [math.nan, math.nan],
        "window": [math.nan, math.nan],
        "labels": {},
        "problems": [Problem(ProblemKind.NO_THUMBNAILS, f"no thumbnails: {why}")],
        "views": [],
        "sample": np.zeros(0, np.float32),
    }


def _facts_of_chunk(store: str, volumes: list[int], thumbs: str, size: int) -> tuple[list[dict[str, Any]], float]:
    """Facts of ``volumes`` and the CPU seconds this process spent on them.

    A volume that cannot be read (a damaged chunk) is a problem on its card, not the end of the page.
    """
    started = time.process_time()
    facts = []
    for v in volumes:
        try:
            facts.append(_volume_facts(store, v, thumbs, size))
        except Exception as exc:  # noqa: BLE001 - reported on the page, as the converter reports a bad series
            facts.append(_unreadable(v, f"reading it from the store failed ({type(exc).__name__}: {exc})"))
    return facts, time.process_time() - started


class _Drawer:
    """A :func:`medload.parallel.run_tasks` worker: draws chunks of volumes of one store."""

    def __init__(self, slot: str, *, store: str, thumbs: str, size: int) -> None:
        self.store, self.thumbs, self.size = store, thumbs, size

    def __call__(self, task: Any) -> Any:
        """``task``: the volume positions of one chunk; returns their facts and the CPU seconds."""
        return _facts_of_chunk(self.store, task, self.thumbs, self.size)

    def close(self) -> None:
        reader = _READERS.pop(self.store, None)
        if reader is not None:
            reader.close()


def _all_facts(store: Path, n: int, thumbs: Path, size: int, workers: int | None) -> tuple[list[dict[str, Any]], float]:
    """Facts of every volume, in order, and the CPU seconds spent drawing them (workers included).

    Through :func:`medload.parallel.run_tasks`, the converter's runner: worker processes never
    forked, a script without a main guard run in this process, Ctrl-C stops cleanly.
    """
    from medload.parallel import run_tasks

    chunks = {f"{i:08d}": list(range(i, min(i + _CHUNK, n))) for i in range(0, n, _CHUNK)}
    if workers is None:
        workers = 0 if n < _INLINE_BELOW else min(available_cores(), len(chunks))
    factory = functools.partial(_Drawer, store=str(store), thumbs=str(thumbs), size=size)
    summary = run_tasks(factory, list(chunks.items()), workers=workers)
    if summary.interrupted:
        raise KeyboardInterrupt
    by_id = {o.task_id: o for o in summary.outcomes}
    facts: list[dict[str, Any]] = []
    cpu = 0.0
    for task_id, volumes in chunks.items():
        outcome = by_id.get(task_id)
        if outcome is not None and outcome.ok:
            facts += outcome.value[0]
            cpu += outcome.value[1]
        else:  # the worker process died (out of memory, a crash in a library)
            why = outcome.error if outcome is not None else "not run"
            facts += [_unreadable(v, f"the worker drawing it failed ({why})") for v in volumes]
    return facts, cpu


# --------------------------------------------------------------------------- page
def _history_html(history: tuple[tuple[str, dict[str, Any]], ...]) -> str:
    if not history:
        return "<li>(as read: no step)</li>"
    return "".join(
        f"<li><b>{escape(name)}</b> {escape(json.dumps(params, default=str, sort_keys=True))}</li>" for name, params in history
    )


def _view_html(view: dict[str, Any]) -> str:
    letters = view["labels"]
    return (
        f"<figure class='view'><div class='frame'>"
        f"<span class='lt top'>{letters['top']}</span><span class='lt left'>{letters['left']}</span>"
        f"<img src='thumbs/{view['file']}' width='{view['width']}' height='{view['height']}' loading='lazy' "
        f"alt='{view['plane']}' data-plane='{view['plane']}' data-labels='{escape(json.dumps(letters))}'>"
        f"<span class='lt right'>{letters['right']}</span><span class='lt bottom'>{letters['bottom']}</span>"
        f"</div><figcaption>{view['plane']} {view['index'] + 1}/{view['n']}"
        + (f" {escape(view['channel'])}" if view.get("channel") else "")
        + "</figcaption></figure>"
    )


def _legend(labels: dict[int, int]) -> str:
    items = []
    for label, count in sorted(labels.items()):
        r, g, b = views.LABEL_COLOURS[(label - 1) % len(views.LABEL_COLOURS)]
        items.append(f"<span class='swatch' style='background:rgb({r},{g},{b})'></span>label {label}: {count} voxels")
    return "mask: " + ("; ".join(items) if items else "empty")


def _card_problems(record: Any, facts: dict[str, Any], entry: dict[str, Any]) -> list[Problem]:
    """The converter's problems (from the store; from the report for a store without them) and the page's."""
    converted = record.problems or read_problems(entry.get("problems"))
    return list(converted) + list(facts["problems"])


def _problem_items(problems: Any) -> str:
    """``<li>`` per problem: its kind (also as ``data-problem``, for scripts) and its message."""
    return "".join(
        f"<li data-problem='{escape(p.kind.value)}'><code>{escape(p.kind.value)}</code> {escape(p.message)}</li>"
        for p in read_problems(problems)
    )


def _volume_card(record: Any, facts: dict[str, Any], problems: list[Problem], show_text: bool) -> str:
    spacing = " x ".join(f"{s:.3g}" for s in record.spacing)
    lines = [
        f"<div>{'x'.join(map(str, record.shape))} ({record.dtype}), spacing {spacing} mm</div>",
        (
            f"<div>stored values {number(facts['range'][0])} to {number(facts['range'][1])}; shown "
            f"{number(facts['window'][0])} to {number(facts['window'][1])}</div>"
        ),
        f"<div>intensity: {escape(record.intensity or '-')}</div>",
        f"<div>patient {escape(record.patient_key)}, study {escape(record.study_key)}"
        + (f", label {record.label}" if record.label is not None else "")
        + "</div>",
    ]
    if show_text and record.meta.get("description"):
        lines.append(f"<div>description: {escape(record.meta['description'])}</div>")
    if record.has_mask:
        lines.append(f"<div>{_legend(facts['labels'])}</div>")
    problem_html = f"<ul class='problems'>{_problem_items(problems)}</ul>" if problems else ""
    return (
        f"<article class='card{' bad' if problems else ''}' data-kind='volume' data-modality='{escape(record.modality)}' "
        f"data-problems='{len(problems)}' data-slices='{record.n_slices}' data-order='{facts['volume']}' "
        f"data-key='{escape(record.key)}'>"
        f"<h3>#{facts['volume']} {escape(record.modality)} <code>{escape(record.key)}</code></h3>"
        f"<div class='views'>{''.join(_view_html(v) for v in facts['views'])}</div>"
        f"{''.join(lines)}{problem_html}"
        f"<details><summary>history ({len(record.history)} steps)</summary><ol>{_history_html(record.history)}</ol>"
        f"</details></article>"
    )


#: From this ``report.json`` version on, a failed series' ``reason`` never repeats its ``error``.
_REASON_APART_SINCE = 2


def _shown_reason(entry: dict[str, Any], version: int) -> str:
    """``"ErrorClass: reason"`` of a report entry, from the report's facts, never by its text.

    Reports of version 1 wrote a crashed or failed worker's reason (``stage`` ``"worker"``) as
    ``"ErrorClass: message"`` already, and every other reason without the class.

    Examples
    --------
    >>> _shown_reason({"stage": "worker", "error": "WorkerDied", "reason": "exit code 9"}, 2)
    'WorkerDied: exit code 9'
    >>> _shown_reason({"stage": "worker", "error": "WorkerDied", "reason": "WorkerDied: exit code 9"}, 1)
    'WorkerDied: exit code 9'
    """
    reason = str(entry.get("reason", ""))
    if not entry.get("error") or (version < _REASON_APART_SINCE and entry.get("stage") == "worker"):
        return reason
    return f"{entry['error']}: {reason}"


def _failed_rows(report: dict[str, Any], show_text: bool) -> tuple[str, int]:
    rows = []
    for entry in report.get("series", []):
        if entry.get("status") in ("converted", "already converted"):
            continue
        reason = _shown_reason(entry, report.get("medload_report", 1))
        description = f"<br><i>{escape(entry['description'])}</i>" if show_text and entry.get("description") else ""
        problems = _problem_items(entry.get("problems"))
        rows.append(
            f"<tr class='failed' data-kind='failed' data-modality='{escape(entry.get('modality', ''))}' "
            f"data-status='{escape(entry.get('status', ''))}'>"
            f"<td>{escape(entry.get('status', ''))}</td><td><code>{escape(entry.get('series_key', ''))}</code>{description}</td>"
            f"<td>{escape(entry.get('modality', ''))}</td><td>{escape('x'.join(map(str, entry.get('shape') or [])))}</td>"
            f"<td>{escape(entry.get('stage', ''))}</td><td class='reason'>{escape(reason)}"
            f"{'<ul>' + problems + '</ul>' if problems else ''}</td></tr>"
        )
    for entry in report.get("files", []):
        # A report written by medload.deid's rule names files by pseudonym ("file") with its
        # reason scrubbed; paths ("path") are there only with --keep-phi (or in an older report).
        name = entry.get("path") if show_text else entry.get("file")
        if show_text or "file" in entry:
            what = escape(entry.get("reason", ""))
        else:
            what = "a file that could not be read (see report.json)"
        where = f"<code>{escape(name)}</code>: " if name else ""
        rows.append(
            f"<tr class='failed' data-kind='failed' data-modality='' data-status='unreadable'>"
            f"<td>unreadable file</td><td></td><td></td><td></td><td>scan</td><td class='reason'>{where}{what}</td></tr>"
        )
    return "".join(rows), len(rows)


def write_qc(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    thumb_size: int = THUMB_SIZE,
) -> dict[str, Any]:
    """Write the QC page of ``store`` (and its thumbnails) into ``out`` (default :func:`qc_folder`).

    The folder is built beside and moved into place when whole; an older page there is
    replaced, a folder holding anything else refused (:mod:`medload.qc.place`).

    Parameters
    ----------
    store : path
        A medload store (folder of shards or one file); its ``report.json`` is read if present.
    out : path, optional
        Folder of the page; default ``OUT/qc`` (``x.qc`` beside a file ``x.h5``).
    workers : int, optional
        Worker processes drawing thumbnails (:func:`medload.cores.resolve_workers`: ``0`` is
        this process); default every core for stores of more than a few dozen volumes, this
        process below that.
    thumb_size : int
        Pixels of a thumbnail's longer side.

    Returns
    -------
    dict
        ``path`` (index.html), ``volumes``, ``thumbnails``, ``failed`` (series and files not
        converted), ``problems`` (volumes with one), ``seconds`` (wall) and
        ``thumbnail_cpu_seconds`` (reading and drawing, summed over the worker processes).

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> folder = tempfile.mkdtemp()
    >>> with medload.Store.create(folder + "/s.h5") as st:
    ...     _ = st.add(medload.Volume(np.random.default_rng(0).random((6, 32, 32)), np.eye(4), modality="MR"))
    >>> info = write_qc(folder + "/s.h5")
    >>> info["volumes"], info["thumbnails"], info["path"].endswith("s.qc/index.html")
    (1, 3, True)
    """
    from medload.store import open as open_store

    started = time.perf_counter()
    store_path = Path(store)
    if thumb_size < 16:
        raise ConfigError(f"qc thumbnails need at least 16 pixels, found thumb_size={thumb_size}")
    report_file = _report_path(store_path)
    report: dict[str, Any] = {}
    if report_file.is_file():
        try:
            report = json.loads(report_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ReadError(
                f"{report_file} is not valid JSON ({exc}); convert again to rewrite it, "
                "or move it away to draw the page from the store alone"
            ) from exc
    try:
        with open_store(store_path) as reader:  # closed when a field fails to read too
            records, pipeline = list(reader.volumes), reader.pipeline
    except StoreError:
        if not report:  # no store and no report: nothing to show
            raise
        records, pipeline = [], None  # every series failed: the page lists why
    options = report.get("options", {}) if isinstance(report.get("options"), dict) else {}
    keep_phi = bool((isinstance(pipeline, dict) and pipeline.get("keep_phi")) or options.get("keep_phi"))
    keep_descriptions = keep_phi or bool(
        (isinstance(pipeline, dict) and pipeline.get("keep_descriptions")) or options.get("keep_descriptions")
    )

    final = Path(os.path.abspath(out)) if out is not None else qc_folder(store_path)
    check_replaceable(final)  # before any work: a folder of the user's is refused, never deleted
    building = final.with_name(final.name + f".partial-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    (building / "thumbs").mkdir(parents=True)
    try:
        facts, cpu_seconds = _all_facts(store_path, len(records), building / "thumbs", thumb_size, workers)
        by_key = {e["key"]: e for e in report.get("series", []) if e.get("key")}
        problems = [_card_problems(r, f, by_key.get(r.key, {})) for r, f in zip(records, facts)]
        cards = "".join(_volume_card(r, f, p, keep_descriptions) for r, f, p in zip(records, facts, problems))
        failed_html, n_failed = _failed_rows(report, keep_phi)
        n_problems = sum(1 for p in problems if p)
        summary = _summary_html(records, facts, report, n_failed, problems)
        modalities = sorted({r.modality for r in records} | {e.get("modality", "") for e in report.get("series", [])} - {""})
        controls = page.controls(modalities)
        notes = page.notes(report.get("sources", []) if keep_phi else None)
        title = f"medload QC: {store_path.name}" if keep_phi else "medload QC"
        (building / "index.html").write_text(
            page.page(title, summary, controls, cards, failed_html, n_failed, notes, thumb_size), encoding="utf-8"
        )
        move_into_place(building, final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return {
        "path": str(final / "index.html"),
        "volumes": len(records),
        "thumbnails": 3 * len(records),
        "failed": n_failed,
        "problems": n_problems,
        "seconds": round(time.perf_counter() - started, 3),
        "thumbnail_cpu_seconds": round(cpu_seconds, 3),
    }


def _summary_html(
    records: list[Any], facts: list[dict[str, Any]], report: dict[str, Any], n_failed: int, problems: list[list[Problem]]
) -> str:
    counts = report.get("counts", {})
    rows = [
        ("volumes", len(records)),
        ("slices", sum(r.n_slices for r in records)),
        ("patients", len({r.patient_key for r in records})),
        ("studies", len({r.study_key for r in records})),
        ("with mask", sum(r.has_mask for r in records)),
        ("volumes with problems", sum(1 for p in problems if p)),
        ("series not converted", n_failed),
    ]
    rows += [
        (f"report: {k.replace('_', ' ')}", v)
        for k, v in counts.items()
        if k
        in (
            "series",
            "converted",
            "already_converted",
            "failed",
            "duplicate_series",
            "not_run",
            "unreadable_files",
            "skipped_files",
        )
    ]
    table = (
        "<table class='small' id='counts'>" + "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )
    parts = [
        table,
        counter_table(Counter(r.modality for r in records), "modality"),
        counter_table(Counter("x".join(map(str, r.slice_shape)) for r in records), "slice shape"),
    ]
    if any(problems):
        parts.append(counter_table(Counter(k for p in problems for k in sorted({q.kind.value for q in p})), "problem kind"))
    parts.append(histogram_svg([r.spacing[0] for r in records], "slice spacing (mm)"))
    parts.append(histogram_svg([s for r in records for s in r.spacing[1:]], "in-plane spacing (mm)"))
    by_meaning: dict[str, list[np.ndarray]] = {}
    for r, f in zip(records, facts):
        by_meaning.setdefault(r.intensity or r.modality, []).append(f["sample"])
    for meaning, samples in sorted(by_meaning.items()):
        parts.append(histogram_svg(np.concatenate(samples) if samples else [], f"stored values: {meaning}"))
    return "".join(parts)
