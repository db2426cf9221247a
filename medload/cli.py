"""The ``medload`` command: ``scan``, ``convert``, ``info``, ``verify``, ``preview``, ``qc``; a thin layer over the API.

Exit status: 0 all went well; 1 a data error (the conversion finished but some series or files
failed, the report lists them; or a store or file that cannot be read), printed as one line;
2 a usage error (wrong flag, missing folder, bad option: :class:`~medload.errors.ConfigError`, a
missing package, an output written with other settings), printed as one line; 3 an internal
error (a bug in medload), printed with its traceback to report (``convert``: a series failed
that way, its traceback is in the report); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
import argparse
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medload.cli_parser import UsageError, build_parser
from medload.errors import ConfigError, MedloadError, MissingDependencyError, PipelineMismatchError

if TYPE_CHECKING:  # imported where used: `medload --help` stays fast
    from rich.console import Console

    from medload.batch.report import ConversionReport

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _pipeline_arg(presets: list[str], configs: list[str]) -> Any:
    """--preset/--config values -> the ``pipeline`` argument of medload.convert."""
    specs: dict[str, str] = {}
    for value, kind in [(v, "preset") for v in presets] + [(v, "config") for v in configs]:
        modality, _, name = value.rpartition("=")
        modality = modality.strip().upper() or "*"
        if kind == "config" and not os.path.isfile(name):
            raise ConfigError(f"--config {value}: pipeline file {name} does not exist")
        if modality in specs:
            raise ConfigError(
                f"--{kind} {value}: a pipeline for {'every series' if modality == '*' else modality} was already given"
            )
        specs[modality] = name
    if not specs:
        return None
    if list(specs) == ["*"]:
        return specs["*"]
    return specs


def _console() -> Console:
    from rich.console import Console

    return Console()


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None: JSON has no NaN, and scripts must parse our output.

    Examples
    --------
    >>> _json_safe({"spacing": [float("nan"), 1.0]})
    {'spacing': [None, 1.0]}
    """
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _scan_payload(result: Any, source: str, key: Any, keep_descriptions: bool) -> dict[str, Any]:
    """``medload scan --json``'s object: what ``report.json`` says of the same series and files.

    JSON is saved and shared, so the converter's rules hold (docs/deidentification.md): files
    and folders by their pseudonyms (``file-``, ``dir-``), descriptions only when kept. The
    table on screen names the paths: it is the operator's own terminal.
    """
    from medload.deid import SourceNames, file_key, hidden_texts, named_files, report_summary, scrub, source_roots

    roots = source_roots([source])

    def names(files: Any, hidden: Any = ()) -> SourceNames:
        return SourceNames.of(files, roots=roots, key=key, hidden=() if keep_descriptions else hidden)

    unreadable = [
        {
            "file": file_key(e.path, key),
            "error": e.error,
            "reason": scrub(e.message, names([e.path])),
            **({"internal": True} if e.internal else {}),
        }
        for e in result.errors
    ]
    return {
        "series": [scrub(report_summary(s, keep_descriptions), names(named_files(s), hidden_texts(s))) for s in result],
        "files": result.n_files,
        "skipped": dict(result.skipped),
        "unreadable": unreadable,
    }


def _cmd_scan(args: argparse.Namespace) -> int:
    from medload.deid import resolve_key
    from medload.io import scan

    if not os.path.exists(args.source):
        raise ConfigError(f"{args.source} does not exist; expected a folder of DICOM/NIfTI files or a file")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, found {args.workers}")
    key = resolve_key(args.phi_key)
    result = scan(args.source, phi_key=key, patient_pattern=args.patient_pattern, workers=args.workers)
    rows = [s.summary() for s in result]
    if args.json:
        print(json.dumps(_json_safe(_scan_payload(result, args.source, key, args.keep_descriptions)), indent=1, allow_nan=False))
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"{len(rows)} series in {result.n_files} files under {args.source}")
    # Keys shortened on screen (12 characters tell series apart in any real export; --json has
    # them whole). Problems are sentences: listed under the table (kind, then message), where they have the width.
    table.add_column("#", justify="right", no_wrap=True)
    for col in ("patient", "mod", "Z x Y x X", "mm"):
        table.add_column(col, no_wrap=True)
    table.add_column("!", justify="right", no_wrap=True)  # number of problems, listed below
    table.add_column("description", overflow="fold", min_width=10)
    notes = []
    for i, (found, r) in enumerate(zip(result, rows)):
        size = "x".join(str(v) for v in r["shape"][-3:])
        if r["frames"] > 1:
            size = f"{r['frames']}x" + size
        spacing = "x".join(f"{v:.3g}" for v in r["spacing"]) if r["spacing"] else "-"
        table.add_row(
            str(i),
            r["patient_key"][:12],
            r["modality"],
            size,
            spacing,
            str(len(found.problems)) if found.problems else "",
            r["description"],
        )
        notes += [f"[{i}] {problem.kind}: {problem.message}" for problem in found.problems]
    console = _console()
    console.print(table)
    for note in notes:
        console.print(note, markup=False)
    skipped = dict(result.skipped)
    errors = result.errors
    if skipped:
        console.print("skipped files: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
    for e in errors[:20]:
        console.print(f"unreadable: {e.message}", markup=False)
    if len(errors) > 20:
        console.print(f"... and {len(errors) - 20} more unreadable files (use --json for all)")
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from medload.batch import convert

    missing = [s for s in args.sources if not os.path.exists(s)]
    if missing:
        raise ConfigError(f"source {missing[0]} does not exist; expected a folder of DICOM/NIfTI files or a file")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, found {args.workers}")
    interactive = sys.stderr.isatty() and not args.quiet
    report = convert(
        args.sources,
        args.out,
        pipeline=_pipeline_arg(args.preset, args.config),
        size=args.size,
        resize_mode=args.resize_mode,
        orientation=args.orientation,
        modality=args.modality,
        force=args.force,
        on_gap=args.on_gap,
        require_masks=args.require_masks,
        dtype=args.dtype,
        compression=args.compression,
        workers=args.workers,
        dask=args.dask,
        labels=args.labels,
        masks=args.masks,
        keep_phi=args.keep_phi,
        keep_descriptions=args.keep_descriptions,
        phi_key=args.phi_key,
        overwrite=args.overwrite,
        progress=interactive,
        patient_pattern=args.patient_pattern,
        patients=args.patients,
        grayscale=args.grayscale,
        image_modality=args.image_modality,
        allow_burned_in=args.allow_burned_in,
        source_map=args.source_map,
    )
    if not args.quiet:
        _print_summary(report)
    else:
        # Quiet is for scripts and cron: no table, but a failure is never silent.
        for entry in report.failed:
            print(_on_screen(_failure_line(entry), report.paths), file=sys.stderr)
    if report.interrupted:
        return EXIT_INTERRUPTED
    if args.qc:  # failures are what the page is for: written whatever the outcome
        from medload.qc.report import write_qc

        page = write_qc(args.out, workers=args.workers)
        if not args.quiet:
            print(f"qc page: {page['path']}")
    if any(entry.get("internal") for entry in report.failed):
        return EXIT_INTERNAL  # a bug, not the data: the report holds its traceback
    return EXIT_OK if report.ok else EXIT_FAILED


def _print_summary(report: ConversionReport) -> None:
    from rich.table import Table

    console = _console()
    c = report.counts
    paths = report.paths
    table = Table(title="medload convert", caption=f"{paths.get('output', report.output or '')}, {report.elapsed_s} s")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, key in [
        ("series found", "series"),
        ("converted now", "converted"),
        ("already converted", "already_converted"),
        ("failed", "failed"),
        ("not run (interrupted)", "not_run"),
        ("duplicates", "duplicate_series"),
        ("files skipped (not images)", "skipped_files"),
        ("files unreadable", "unreadable_files"),
        ("masks matching no image", "masks_without_image"),
        ("images without their mask", "images_without_mask"),
        ("slices written", "slices_written"),
    ]:
        if c.get(key) or key in ("series", "converted", "failed"):
            table.add_row(label, str(c.get(key, 0)))
    console.print(table)
    failed = report.failed
    for entry in failed[:15]:
        console.print(_on_screen(_failure_line(entry), paths), markup=False, highlight=False)
    if len(failed) > 15:
        console.print(f"... {len(failed) - 15} more failures", markup=False)
    for f in report.files[:5]:
        where = f.get("path") or f.get("file", "")
        console.print(_on_screen(f"unreadable file: {where}: {f['reason'][:200]}", paths), markup=False, highlight=False)
    if report.interrupted:
        console.print("interrupted: everything written so far is kept; run the same command again to finish")
    console.print(f"report: {paths.get('report_path', report.report_path or '')}", markup=False, highlight=False)


def _on_screen(text: str, paths: dict[str, Any]) -> str:
    """``text`` with the report's file and folder pseudonyms shown as their paths.

    The operator's own terminal may show paths (the report file never does): they say which
    file to look at.
    """
    import re

    names = paths.get("names") or {}
    return re.sub(r"\b(?:file|dir)-[0-9a-f]{16}\b", lambda m: names.get(m.group(0), m.group(0)), text)


def _store_info(path: str) -> dict[str, Any]:
    from medload.store import open as open_store

    with open_store(path) as reader:  # closed when a field fails to read too
        return _reader_info(reader, path)


def _reader_info(reader: Any, path: str) -> dict[str, Any]:
    """The facts ``medload info`` shows, of an open store reader."""
    records = reader.volumes
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in (".h5", ".hdf5"))
    else:
        files = [root]
    attrs = reader.attrs
    info = {
        "store": str(path),
        "volumes": len(records),
        "slices": int(sum(r.n_slices for r in records)),
        "patients": len({r.patient_key for r in records}),
        "studies": len({r.study_key for r in records}),
        "modalities": dict(Counter(r.modality for r in records)),
        "slice_shapes": dict(Counter("x".join(map(str, r.slice_shape)) for r in records)),
        "labels": dict(sorted(Counter(r.label for r in records if r.label is not None).items())),
        "classes": reader.classes,
        "with_mask": sum(bool(r.has_mask) for r in records),
        "dtype": attrs.get("dtype"),
        "compression": attrs.get("compression"),
        "schema": attrs.get("medload_schema"),
        "shards": len(files),
        "bytes_on_disk": int(sum(p.stat().st_size for p in files)),
        "pipeline": reader.pipeline,
        "intensity": dict(Counter(r.intensity for r in records)),
        # Volumes with each kind of problem (medload.problems.ProblemKind), most common first.
        "problems": dict(Counter(kind for r in records for kind in sorted({p.kind.value for p in r.problems})).most_common()),
        # Which key made the pseudonyms (compare with your key's: docs/deidentification.md).
        "phi_key_fingerprint": reader.key_fingerprint,
    }
    return info


def _class_name(classes: list[str] | None, label: int) -> str:
    """``"pneumonia (1)"`` when the label has a name, else ``"1"``."""
    if classes and 0 <= label < len(classes) and classes[label] != str(label):
        return f"{classes[label]} ({label})"
    return str(label)


def _describe_pipeline(config: Any) -> list[str]:
    """The store's pipeline, one line per modality; shown as found (a store from elsewhere may hold anything)."""
    if not isinstance(config, dict):
        return [str(config)[:200]]

    def step(s: Any) -> str:
        if not isinstance(s, dict) or not isinstance(s.get("params", {}), dict):
            return str(s)[:80]
        return f"{s.get('name')}({', '.join(f'{k}={v}' for k, v in s.get('params', {}).items())})"

    def steps(cfg: Any) -> str:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("steps", []), list):
            return str(cfg)[:200]
        return " -> ".join(step(s) for s in cfg.get("steps", [])) or "(as read)"

    if isinstance(config.get("by_modality"), dict):
        lines = [f"{mod}: {steps(cfg)}" for mod, cfg in config["by_modality"].items()]
        return lines + [f"other: {steps(config.get('other', {}))}"]
    return [steps(config)]


def _cmd_info(args: argparse.Namespace) -> int:
    _existing_store(args.store)
    info = _store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"medload store {args.store}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    size = info["bytes_on_disk"]
    for field, value in [
        ("volumes", info["volumes"]),
        ("slices", info["slices"]),
        ("patients", info["patients"]),
        ("studies", info["studies"]),
        ("modalities", ", ".join(f"{k} {v}" for k, v in info["modalities"].items())),
        ("slice shapes", ", ".join(f"{k} ({v} vol)" for k, v in info["slice_shapes"].items())),
        ("labels", ", ".join(f"{_class_name(info['classes'], k)}: {v}" for k, v in info["labels"].items()) or "-"),
        ("classes", ", ".join(f"{i} {name}" for i, name in enumerate(info["classes"] or [])) or "-"),
        ("volumes with mask", info["with_mask"]),
        ("stored as", f"{info['dtype']}, {info['compression']}"),
        ("on disk", f"{size / 1e6:.1f} MB in {info['shards']} file(s)"),
        ("intensity", "; ".join(f"{k} ({v})" for k, v in info["intensity"].items())),
        ("problems", ", ".join(f"{k} ({v} vol)" for k, v in info["problems"].items()) or "-"),
        ("pipeline", "\n".join(_describe_pipeline(info["pipeline"]))),
        ("pseudonym key", info["phi_key_fingerprint"] or "(not recorded)"),
    ]:
        table.add_row(field, str(value))
    _console().print(table)
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    """Every damaged volume on its own line (stdout), then a summary; exit 1 when any is damaged."""
    import dataclasses

    from medload.store import open as open_store

    _existing_store(args.store)
    report = open_store(args.store).verify()
    if args.json:
        print(json.dumps({**dataclasses.asdict(report), "ok": report.ok}, indent=1))
    else:
        for damage in report.damaged:
            print(f"damaged: {damage.key}: {_one_line(damage.message)}")
        older = f", {report.by_volume} by their one volume checksum (written before slice checksums)" if report.by_volume else ""
        unchecked = f", {len(report.unchecked)} without checksums (read only)" if report.unchecked else ""
        print(
            f"{args.store}: {report.volumes} volumes read, {report.by_slice} checked slice by slice{older}{unchecked}; "
            + (f"{len(report.damaged)} damaged." if report.damaged else "none damaged.")
        )
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_preview(args: argparse.Namespace) -> int:
    from medload.preview import montage

    _existing_store(args.store)
    result = montage(
        args.store,
        args.out,
        n=args.n,
        columns=args.columns,
        tile=args.tile,
        window=args.window,
        masks=not args.no_mask,
        before_after=args.before_after,
        sources=args.source,
        phi_key=args.phi_key,
    )
    print(f"wrote {result['path']} ({result['width']}x{result['height']} px, {result['tiles']} tiles)")
    return EXIT_OK


def _cmd_qc(args: argparse.Namespace) -> int:
    from medload.qc.report import write_qc

    _existing_store(args.store)
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, found {args.workers}")
    result = write_qc(args.store, args.out, workers=args.workers, thumb_size=args.thumb)
    print(
        f"wrote {result['path']} ({result['volumes']} volumes, {result['problems']} with problems, "
        f"{result['failed']} series or files not converted; {result['seconds']} s)"
    )
    return EXIT_OK


def _existing_store(path: str) -> None:
    """A store path given on the command line that does not exist is a usage error (exit 2)."""
    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist; expected a medload store (folder of shards or FILE.h5)")


_COMMANDS = {
    "scan": _cmd_scan,
    "convert": _cmd_convert,
    "info": _cmd_info,
    "verify": _cmd_verify,
    "preview": _cmd_preview,
    "qc": _cmd_qc,
}


def _failure_line(entry: dict[str, Any]) -> str:
    """One line for a failed series: key, modality, (description if kept), reason."""
    description = f" {entry['description']!r}" if entry.get("description") else ""
    return f"failed: {entry['series_key']} {entry.get('modality', '')}{description}: {_one_line(entry.get('reason', ''))[:300]}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def _announce_new_key() -> Iterator[None]:
    """Where the command made the operator's key file, say so once on stderr (not as a warning)."""
    from medload.deid import KeyCreatedWarning, key_created_message, key_file, read_key_file

    path = key_file()
    existed = path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeyCreatedWarning)
        try:
            yield
        finally:
            if not existed and path.exists():
                try:
                    print(key_created_message(read_key_file(path)), file=sys.stderr)
                except MedloadError:
                    pass


def main(argv: list[str] | None = None) -> int:
    """Run the ``medload`` command; returns the exit status (see the module doc).

    Examples
    --------
    >>> main(["scan", "/no/such/folder"])
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        with _announce_new_key():
            return _COMMANDS[args.command](args)
    except UsageError as exc:
        print(_one_line(str(exc)), file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, MissingDependencyError, PipelineMismatchError) as exc:
        print(f"medload: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except MedloadError as exc:  # the data: a file, a series, a store
        print(f"medload: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("medload: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `medload info out --json | head`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug in medload, not the user's input: the traceback is the report
        if os.environ.get("MEDLOAD_DEBUG"):
            raise
        print(
            f"medload: internal error (a bug in medload; please report it with this traceback): "
            f"{type(exc).__name__}: {_one_line(str(exc))}\n{traceback.format_exc()}",
            file=sys.stderr,
            end="",
        )
        return EXIT_INTERNAL


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
