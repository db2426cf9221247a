"""The batch job's report: :class:`ConversionReport`, its file, and the progress bar."""

from __future__ import annotations

import datetime
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medload.batch.plan import Plan, report_path
from medload.deid import hide

__all__ = ["REPORT_VERSION", "ConversionReport", "Progress", "make_report", "write_report"]

#: ``report.json``'s ``medload_report`` (see :attr:`ConversionReport.medload_report`).
REPORT_VERSION = 2


@dataclass
class ConversionReport:
    """What :func:`convert` did; :meth:`to_json` is what ``report.json`` holds.

    Fields: ``counts`` (series found, converted, already converted, failed, not run; files
    skipped and unreadable; slices written), ``series`` (one entry per series: keys,
    modality, shape, ``status`` and ``reason``, ``key``/``shard`` in the store),
    ``files`` (files that could not be read: their pseudonym ``file`` and why), ``n_sources``,
    ``shards``, ``phi_key_fingerprint``, ``pipeline``, ``options``, ``interrupted``,
    ``elapsed_s``. De-identified like the store: series and files are named by pseudonyms and
    counts, never by path, file name or description; ``keep_phi`` adds ``sources``, ``output``,
    ``report_path`` and each file's ``path``. The paths stay available in memory:
    :attr:`paths` (not written). ``report["counts"]`` reads a field as the JSON file has it.

    Examples
    --------
    >>> r = ConversionReport(counts={"failed": 0}, interrupted=False)
    >>> r.ok, r["counts"]
    (True, {'failed': 0})
    """

    #: The file's version. 2: a failed series' ``reason`` never starts with its ``error`` class
    #: (version 1 wrote a failed worker's reason as ``"ErrorClass: message"``).
    medload_report: int = REPORT_VERSION
    created: str = ""
    #: Written only with ``keep_phi`` (paths can hold names).
    sources: list[str] | None = None
    output: str | None = None
    report_path: str | None = None
    n_sources: int = 0
    phi_key_fingerprint: str | None = None
    shards: list[str] = field(default_factory=list)
    pipeline: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped_files: dict[str, int] = field(default_factory=dict)
    series: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    #: What resuming the store found and did: problem records ``{"kind", "message"}``.
    resume_notes: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False
    elapsed_s: float = 0.0
    #: Where things are, for this process only (the terminal may show paths; the file never
    #: holds them unless ``keep_phi``): ``sources``, ``output``, ``report_path``, and ``names``
    #: (pseudonym -> source path).
    paths: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when nothing failed and the run was not interrupted."""
        return not self.interrupted and self.counts.get("failed", 0) == 0 and self.counts.get("unreadable_files", 0) == 0

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The entries of series that failed."""
        return [s for s in self.series if s.get("status") == "failed"]

    def to_json(self) -> dict[str, Any]:
        """The report as ``report.json`` holds it (no :attr:`paths`; the path fields only when set)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "paths"}
        return {k: v for k, v in out.items() if v is not None or k not in _PATH_FIELDS}

    def __getitem__(self, key: str) -> Any:
        """A field of :meth:`to_json` by name, as in the file (``report["counts"]["failed"]``)."""
        return self.to_json()[key]


_PATH_FIELDS = ("sources", "output", "report_path")


class Progress:
    """A rich progress bar over series and slices (or nothing, when not wanted)."""

    def __init__(self, enabled: bool, n_series: int, n_slices: int) -> None:
        self.bar = None
        if not enabled or n_series == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
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


def write_report(report: ConversionReport, path: Path) -> Path:
    """Write ``report`` as JSON at ``path``, atomically (a reader never sees half a report).

    When ``path`` cannot be written (the output's disk is full), no ``.tmp`` is left behind
    and the report goes to the temporary folder instead, with a line on stderr saying where;
    the path written is returned.
    """
    text = json.dumps(report.to_json(), indent=1, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        import sys
        import tempfile

        fallback = Path(tempfile.gettempdir()) / f"medload-report-{os.getpid()}-{int(time.time())}.json"
        fallback.write_text(text, encoding="utf-8")
        print(f"medload: cannot write {path} ({exc.strerror or exc}); the report is at {fallback}", file=sys.stderr)
        return fallback


def make_report(plan: Plan, *, options: dict[str, Any], interrupted: bool, started: float) -> ConversionReport:
    """The report of a run: every entry of ``plan`` (now with its outcome), counts and options."""
    from medload.store.layout import shard_paths

    entries = plan.entries
    for entry in entries.values():
        if "status" not in entry:
            entry.update(status="not run", reason="the run was interrupted before this series started; run again to convert it")
    for source_hash, entry in entries.items():
        # Messages can quote a description (a library's error, a crashed worker): hidden too.
        entries[source_hash] = hide(entry, plan.hidden.get(source_hash, []))
    statuses = Counter(e["status"] for e in entries.values())
    where: dict[str, Any] = {
        "sources": [os.fspath(s) for s in plan.sources],
        "output": str(plan.out),
        "report_path": str(report_path(plan.out, plan.single)),
    }
    report = ConversionReport(
        medload_report=REPORT_VERSION,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(where if plan.keep_phi else {}),
        n_sources=len(plan.sources),
        phi_key_fingerprint=plan.key.fingerprint if plan.key is not None else None,
        shards=[p.name for p in shard_paths(plan.out, plan.single)],
        pipeline=plan.pipelines,
        options=options,
        counts={
            "files": plan.n_files,
            "series": len(entries),
            "converted": statuses["converted"],
            "already_converted": statuses["already converted"],
            "failed": statuses["failed"],
            "not_run": statuses["not run"],
            "duplicate_series": len(plan.duplicates),
            "skipped_files": sum(plan.skipped.values()),
            "unreadable_files": len(plan.unreadable),
            "masks_without_image": len(plan.unmatched_masks),
            "images_without_mask": plan.images_without_mask,
            "slices_written": sum(e.get("slices", 0) for e in entries.values() if e["status"] == "converted"),
        },
        skipped_files=dict(plan.skipped),
        series=list(entries.values()) + plan.duplicates,
        files=plan.unreadable,
        resume_notes=[p.to_json() for p in plan.resume_notes],
        interrupted=interrupted,
        elapsed_s=round(time.perf_counter() - started, 2),
    )
    report.paths = dict(where, names=dict(plan.source_map["names"]))
    return report
