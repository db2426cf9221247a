"""The ``medload`` command: ``scan``, ``convert``, ``info``, ``preview``, ``qc``; a thin layer over the API.

Exit status: 0 all went well; 1 a data error (the conversion finished but some series or files
failed, the report lists them; or a store or file that cannot be read), printed as one line;
2 a usage error (wrong flag, missing folder, bad option: :class:`~medload.errors.ConfigError`, a
missing package, an output written with other settings), printed as one line; 3 an internal
error (a bug in medload), printed with its traceback to report (``convert``: a series failed
that way, its traceback is in the report); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from medload.errors import ConfigError, MedloadError, MissingDependencyError, PipelineMismatchError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and no traceback), as for every other error."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


_FORMAT = argparse.RawDescriptionHelpFormatter

_PHI_KEY_HELP = ("secret of the pseudonyms (default $MEDLOAD_PHI_KEY, else your key file "
                 "~/.config/medload/phi.key, made at random on first use; see docs/deidentification.md)")

SCAN_HELP = """\
List the series found under a folder (headers only, nothing written): pseudonymous patient and
study keys, description, modality, size, slices, spacing, and the problems seen in headers.
--json output leaves descriptions out (they can hold names; DICOM PS3.15's basic profile
removes them) unless --keep-descriptions is given; the table on screen shows them.

example:
  medload scan /data/export
  medload scan /data/export --json > series.json
"""

CONVERT_HELP = """\
Convert DICOM series, NIfTI files and 2D image folders (PNG, JPEG, TIFF, BMP) into one store
of normalized 2D slices (HDF5): scan,
load, preprocess, write, in parallel; a report of every series converted or skipped (and
why) is written as report.json beside the output. Re-running resumes; Ctrl-C stops cleanly.

Output: -o DIR gives a folder of shards (one per worker) that medload.open(DIR) reads as one
store; -o FILE.h5 gives one file written by one worker.

Preprocessing: by modality unless told (CT: ct-abdomen, MR: mr-body, CR/DX/MG: xray, OT (image
files): image, the 8/16-bit range to [0,1]; other modalities as read). --preset NAME / --config FILE apply to every series; MOD=NAME or
MOD=FILE (repeatable) choose per modality, e.g. --preset CT=ct-brain --config MR=mr.toml.
The name 'none' means no intensity step.

De-identified by default (docs/deidentification.md): keys are pseudonyms keyed with your
secret (--phi-key, $MEDLOAD_PHI_KEY, else ~/.config/medload/phi.key, made on first use: back
it up); no name, ID, date, institution or physician is written; --keep-phi keeps them on
purpose. Descriptions (series description, protocol name, body part; a NIfTI file's name)
are free text that can hold names: written to neither store nor report unless
--keep-descriptions (you checked they are clean) or --keep-phi. Nothing in the output folder
names a source path, file or folder (the report says file-/dir-/ser- pseudonyms; this
screen shows paths); --source-map FILE writes pseudonym -> path outside the output. Series
with BurnedInAnnotation YES (text in the pixels) are refused unless --allow-burned-in.

examples:
  medload convert /data/export -o out/ --preset ct-brain --size 256
  medload convert /data/ct /data/mr -o out/ --preset CT=ct-lung --config MR=mr.toml --workers 8
  medload convert /data/export -o out/ --dask tcp://scheduler:8786 --labels labels.csv
  medload convert /data/export -o one.h5 --workers 1 --dtype float16 --compression gzip
  medload convert chest_xray/ -o xr/ --size 224 --grayscale --patient-pattern '(?P<patient>\\d+)_'
  medload convert /data/export -o out/ --qc     # then open out/qc/index.html in a browser

2D images: class folders (ImageFolder's layout, chest_xray/NORMAL/*.png, chest_xray/PNEUMONIA/*.png)
give labels and class names unless --labels names a CSV (a 'file' column for images).
--patient-pattern (or --patients CSV with file,patient_id) gives each image's patient so that
splits keep patients apart; without one every image counts as its own patient.
"""

INFO_HELP = """\
Describe a store: volumes, slices, modalities, patients, labels, masks, pipeline, size on disk.

example:
  medload info out/
  medload info out/ --json
"""

PREVIEW_HELP = """\
Draw a montage of stored slices as a PNG, in order (volume by volume, slices in stored order),
each as stored with its edges lettered from the affine (R/L, A/P, S/I) and the mask in colour;
optionally each beside the same slice read from the source (found through the report.json
written by convert, or --source).

example:
  medload preview out/ --out montage.png
  medload preview out/ --out montage.png --window 0,1 --n 24
  medload preview out/ --out before_after.png --before-after --n 8
"""

QC_HELP = """\
Write a static HTML page to check a conversion (OUT/qc/index.html; x.qc/ beside a file x.h5):
counts, modalities, shapes, spacing and intensity histograms; per volume three planes with
orientation letters from the affine, the mask in colour, value range, history and problems;
every series not converted with its reason (from report.json). Opens offline in any browser;
drawn from the stored slices only. No names, paths or descriptions unless the store holds them
(--keep-phi / --keep-descriptions at conversion).

example:
  medload qc out/
  medload qc out/ --workers 8 --thumb 192
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medload`` command (every subcommand's help has an example).

    Examples
    --------
    >>> build_parser().parse_args(["scan", "export", "--json"]).json
    True
    """
    parser = _Parser(prog="medload", formatter_class=_FORMAT,
                     description="Medical scanner exports (DICOM, NIfTI) to normalized 2D slices in HDF5.",
                     epilog="example:\n  medload scan /data/export\n  medload convert /data/export -o out/ --size 256\n"
                            "  medload info out/\n  medload preview out/ --out montage.png\n  medload qc out/")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("scan", help="list the series found under a folder", description=SCAN_HELP,
                       formatter_class=_FORMAT)
    p.add_argument("source", metavar="SRC", help="folder or file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--keep-descriptions", action="store_true",
                   help="put series descriptions in the --json output (left out by default)")
    p.add_argument("--phi-key", help=_PHI_KEY_HELP)
    p.add_argument("--patient-pattern", metavar="REGEX",
                   help="images: regular expression finding the patient in each file's path")

    p = sub.add_parser("convert", help="convert exports into a store", description=CONVERT_HELP,
                       formatter_class=_FORMAT)
    p.add_argument("sources", metavar="SRC", nargs="+", help="folders or files")
    p.add_argument("-o", "--out", required=True, help="output folder (shards) or FILE.h5")
    p.add_argument("--preset", action="append", default=[], metavar="[MOD=]NAME",
                   help="preset for every series, or MOD=NAME for one modality (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="[MOD=]FILE",
                   help="pipeline .toml/.json for every series, or MOD=FILE (repeatable)")
    p.add_argument("--size", type=_size, metavar="N or HxW", help="bring every slice to this size")
    p.add_argument("--resize-mode", choices=["resize", "pad-crop"], default="resize",
                   help="how slices reach --size (default: resize, spacing updated)")
    p.add_argument("--orientation", choices=["radiological", "acquisition"], default="radiological",
                   help="stored slice orientation: one per plane, the radiological display convention "
                        "(default; DICOM and NIfTI of a scan store the same slices), or the source's own")
    p.add_argument("--dtype", help="stored type: uint8, float16, float32, int16 (default: the store's, "
                                   "see docs/hdf5-schema.md)")
    p.add_argument("--compression", help="lz4, zstd[:level], none, gzip[:level], lzf, blosc2, ... (default: the "
                                         "store's, see docs/hdf5-schema.md)")
    p.add_argument("--modality", metavar="MOD",
                   help="modality of sources whose headers do not say (NIfTI without a BIDS sidecar, image "
                        "files), e.g. CT so the CT presets window a NIfTI CT; DICOM keeps its own")
    p.add_argument("--force", action="store_true",
                   help="apply CT windows even to volumes whose modality is not CT (prefer --modality)")
    p.add_argument("--on-gap", choices=["error", "interpolate"], default="error",
                   help="DICOM series with missing or uneven slices: refuse (default) or resample them evenly")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: all cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="'local' or a Dask scheduler address (tcp://host:8786)")
    p.add_argument("--labels", metavar="CSV", help="labels.csv: label + series_key/study_key/patient_key "
                                                  "(images: file); 'folders': class folders (default for images in 2+ folders)")
    p.add_argument("--patient-pattern", metavar="REGEX",
                   help="images: regular expression finding the patient in each file's path, e.g. '(?P<patient>\\d+)_'")
    p.add_argument("--patients", metavar="CSV", help="images: CSV with file and patient_id columns")
    p.add_argument("--grayscale", action="store_true", help="store colour images as grey (ITU-R BT.601 luma)")
    p.add_argument("--image-modality", metavar="MOD", help="modality recorded for image files (default OT)")
    p.add_argument("--masks", metavar="DIR", help="folder of NIfTI label masks matched to series")
    p.add_argument("--require-masks", action="store_true",
                   help="refuse the batch when an image lacks its mask or a mask matches no image (with --masks, "
                        "or an nnU-Net dataset); counted in the report otherwise")
    p.add_argument("--keep-phi", action="store_true",
                   help="keep identifying header fields (off by default); implies --keep-descriptions")
    p.add_argument("--keep-descriptions", action="store_true",
                   help="write series descriptions / protocol names / NIfTI file names (off by default)")
    p.add_argument("--phi-key", help=_PHI_KEY_HELP)
    p.add_argument("--allow-burned-in", action="store_true",
                   help="convert series whose BurnedInAnnotation is YES (text in the pixels; refused by default)")
    p.add_argument("--source-map", metavar="FILE",
                   help="write pseudonym -> source path (identifies patients; refused inside the output)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, no summary table; still one line per failed series on stderr")
    p.add_argument("--qc", action="store_true",
                   help="then write the QC page (OUT/qc/index.html, as 'medload qc OUT' does)")

    p = sub.add_parser("info", help="describe a store", description=INFO_HELP, formatter_class=_FORMAT)
    p.add_argument("store", metavar="OUT", help="store file or folder of shards")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")

    p = sub.add_parser("preview", help="montage of stored slices as a PNG", description=PREVIEW_HELP,
                       formatter_class=_FORMAT)
    p.add_argument("store", metavar="OUT", help="store file or folder of shards")
    p.add_argument("--out", required=True, metavar="PNG", help="the PNG to write")
    p.add_argument("--n", type=int, default=16, help="slices shown (default 16)")
    p.add_argument("--tile", type=int, default=128, help="tile size in pixels (default 128)")
    p.add_argument("--columns", type=int, help="tiles per row")
    p.add_argument("--window", type=_window, metavar="LOW,HIGH",
                   help="stored values drawn black and white (default: each slice's 0.5-99.5 percentiles)")
    p.add_argument("--no-mask", action="store_true", help="do not draw masks")
    p.add_argument("--before-after", action="store_true", help="show each source slice beside the stored one")
    p.add_argument("--source", action="append", metavar="SRC", help="where the sources are (default: from report.json, which names them only after --keep-phi)")
    p.add_argument("--phi-key", help="the pseudonym key used at conversion (to match series); " + _PHI_KEY_HELP)

    p = sub.add_parser("qc", help="static HTML page to check a store", description=QC_HELP, formatter_class=_FORMAT)
    p.add_argument("store", metavar="OUT", help="store file or folder of shards")
    p.add_argument("--out", metavar="DIR", help="folder of the page (default OUT/qc, or x.qc beside x.h5)")
    p.add_argument("--workers", type=int, metavar="N", help="processes drawing thumbnails (default: all cores "
                                                            "for large stores)")
    p.add_argument("--thumb", type=int, default=160, metavar="PX", help="thumbnail size in pixels (default 160)")
    return parser


def _version() -> str:
    import medload

    return f"medload {medload.__version__}"


def _size(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 256 or 256x192), found {text!r}") from None


def _window(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in stored values (e.g. 0,1 or -1.5,2), found {text!r}") from None
    if not high > low:
        raise argparse.ArgumentTypeError(f"expected LOW < HIGH, found {text!r}")
    return low, high


def _pipeline_arg(presets: list[str], configs: list[str]) -> Any:
    """--preset/--config values -> the ``pipeline`` argument of medload.convert."""
    specs: dict[str, str] = {}
    for value, kind in [(v, "preset") for v in presets] + [(v, "config") for v in configs]:
        modality, _, name = value.rpartition("=")
        modality = modality.strip().upper() or "*"
        if kind == "config" and not os.path.isfile(name):
            raise ConfigError(f"--config {value}: pipeline file {name} does not exist")
        if modality in specs:
            raise ConfigError(f"--{kind} {value}: a pipeline for {'every series' if modality == '*' else modality} "
                               "was already given")
        specs[modality] = name
    if not specs:
        return None
    if list(specs) == ["*"]:
        return specs["*"]
    return specs


def _console():
    from rich.console import Console

    return Console()


def _json_safe(value):
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


def _cmd_scan(args) -> int:
    from medload.io import scan

    if not os.path.exists(args.source):
        raise ConfigError(f"{args.source} does not exist; expected a folder of DICOM/NIfTI files or a file")
    result = scan(args.source, phi_key=args.phi_key, patient_pattern=args.patient_pattern)
    rows = [s.summary() for s in result]
    if args.json:
        from medload.deid import report_summary

        # Output for scripts is written somewhere: the converter's rule for descriptions.
        series = [report_summary(s, args.keep_descriptions) for s in result]
        payload = {"series": series, "files": result.n_files,
                   "skipped": dict(result.skipped),
                   "unreadable": [{"path": e.path, "reason": e.message} for e in result.errors]}
        print(json.dumps(_json_safe(payload), indent=1, allow_nan=False))
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"{len(rows)} series in {result.n_files} files under {args.source}")
    # Keys shortened on screen (12 characters tell series apart in any real export; --json has
    # them whole). Problems are sentences: listed under the table, where they have the width.
    table.add_column("#", justify="right", no_wrap=True)
    for col in ("patient", "mod", "Z x Y x X", "mm"):
        table.add_column(col, no_wrap=True)
    table.add_column("!", justify="right", no_wrap=True)  # number of problems, listed below
    table.add_column("description", overflow="fold", min_width=10)
    notes = []
    for i, r in enumerate(rows):
        size = "x".join(str(v) for v in r["shape"][-3:])
        if r["frames"] > 1:
            size = f"{r['frames']}x" + size
        spacing = "x".join(f"{v:.3g}" for v in r["spacing"]) if r["spacing"] else "-"
        table.add_row(str(i), r["patient_key"][:12], r["modality"], size, spacing,
                      str(len(r["problems"])) if r["problems"] else "", r["description"])
        notes += [f"[{i}] {problem}" for problem in r["problems"]]
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


def _cmd_convert(args) -> int:
    from medload.batch import convert

    missing = [s for s in args.sources if not os.path.exists(s)]
    if missing:
        raise ConfigError(f"source {missing[0]} does not exist; expected a folder of DICOM/NIfTI files or a file")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, found {args.workers}")
    interactive = sys.stderr.isatty() and not args.quiet
    report = convert(
        args.sources, args.out, pipeline=_pipeline_arg(args.preset, args.config), size=args.size,
        resize_mode=args.resize_mode, orientation=args.orientation, modality=args.modality, force=args.force,
        on_gap=args.on_gap, require_masks=args.require_masks, dtype=args.dtype, compression=args.compression, workers=args.workers,
        dask=args.dask, labels=args.labels, masks=args.masks, keep_phi=args.keep_phi,
        keep_descriptions=args.keep_descriptions, phi_key=args.phi_key,
        overwrite=args.overwrite, progress=interactive, patient_pattern=args.patient_pattern,
        patients=args.patients, grayscale=args.grayscale, image_modality=args.image_modality,
        allow_burned_in=args.allow_burned_in, source_map=args.source_map,
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


def _print_summary(report) -> None:
    from rich.table import Table

    console = _console()
    c = report.counts
    paths = report.paths
    table = Table(title="medload convert", caption=f"{paths.get('output', report.output or '')}, {report.elapsed_s} s")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, key in [("series found", "series"), ("converted now", "converted"),
                       ("already converted", "already_converted"), ("failed", "failed"),
                       ("not run (interrupted)", "not_run"), ("duplicates", "duplicate_series"),
                       ("files skipped (not images)", "skipped_files"), ("files unreadable", "unreadable_files"),
                       ("masks matching no image", "masks_without_image"),
                       ("images without their mask", "images_without_mask"),
                       ("slices written", "slices_written")]:
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

    reader = open_store(path)
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
        # Which key made the pseudonyms (compare with your key's: docs/deidentification.md).
        "phi_key_fingerprint": reader.key_fingerprint,
    }
    reader.close()
    return info


def _class_name(classes: list[str] | None, label: int) -> str:
    """``"pneumonia (1)"`` when the label has a name, else ``"1"``."""
    if classes and 0 <= label < len(classes) and classes[label] != str(label):
        return f"{classes[label]} ({label})"
    return str(label)


def _describe_pipeline(config: Any) -> list[str]:
    if not isinstance(config, dict):
        return [str(config)]

    def steps(cfg: dict) -> str:
        names = [f"{s['name']}({', '.join(f'{k}={v}' for k, v in s.get('params', {}).items())})"
                 for s in cfg.get("steps", [])]
        return " -> ".join(names) or "(as read)"

    if "by_modality" in config:
        lines = [f"{mod}: {steps(cfg)}" for mod, cfg in config["by_modality"].items()]
        return lines + [f"other: {steps(config.get('other', {}))}"]
    return [steps(config)]


def _cmd_info(args) -> int:
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
        ("volumes", info["volumes"]), ("slices", info["slices"]), ("patients", info["patients"]),
        ("studies", info["studies"]),
        ("modalities", ", ".join(f"{k} {v}" for k, v in info["modalities"].items())),
        ("slice shapes", ", ".join(f"{k} ({v} vol)" for k, v in info["slice_shapes"].items())),
        ("labels", ", ".join(f"{_class_name(info['classes'], k)}: {v}" for k, v in info["labels"].items()) or "-"),
        ("classes", ", ".join(f"{i} {name}" for i, name in enumerate(info["classes"] or [])) or "-"),
        ("volumes with mask", info["with_mask"]), ("stored as", f"{info['dtype']}, {info['compression']}"),
        ("on disk", f"{size / 1e6:.1f} MB in {info['shards']} file(s)"),
        ("intensity", "; ".join(f"{k} ({v})" for k, v in info["intensity"].items())),
        ("pipeline", "\n".join(_describe_pipeline(info["pipeline"]))),
        ("pseudonym key", info["phi_key_fingerprint"] or "(not recorded)"),
    ]:
        table.add_row(field, str(value))
    _console().print(table)
    return EXIT_OK


def _cmd_preview(args) -> int:
    from medload.preview import montage

    _existing_store(args.store)
    result = montage(args.store, args.out, n=args.n, columns=args.columns, tile=args.tile, window=args.window,
                     masks=not args.no_mask, before_after=args.before_after, sources=args.source,
                     phi_key=args.phi_key)
    print(f"wrote {result['path']} ({result['width']}x{result['height']} px, {result['tiles']} tiles)")
    return EXIT_OK


def _cmd_qc(args) -> int:
    from medload.qc.report import write_qc

    _existing_store(args.store)
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, found {args.workers}")
    result = write_qc(args.store, args.out, workers=args.workers, thumb_size=args.thumb)
    print(f"wrote {result['path']} ({result['volumes']} volumes, {result['problems']} with problems, "
          f"{result['failed']} series or files not converted; {result['seconds']} s)")
    return EXIT_OK


def _existing_store(path: str) -> None:
    """A store path given on the command line that does not exist is a usage error (exit 2)."""
    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist; expected a medload store (folder of shards or FILE.h5)")


_COMMANDS = {"scan": _cmd_scan, "convert": _cmd_convert, "info": _cmd_info, "preview": _cmd_preview, "qc": _cmd_qc}


def _failure_line(entry: dict[str, Any]) -> str:
    """One line for a failed series: key, modality, (description if kept), reason."""
    description = f" {entry['description']!r}" if entry.get("description") else ""
    return (f"failed: {entry['series_key']} {entry.get('modality', '')}{description}: "
            f"{_one_line(entry.get('reason', ''))[:300]}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def _announce_new_key():
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
    except _UsageError as exc:
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
        print(f"medload: internal error (a bug in medload; please report it with this traceback): "
              f"{type(exc).__name__}: {_one_line(str(exc))}\n{traceback.format_exc()}", file=sys.stderr, end="")
        return EXIT_INTERNAL


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
