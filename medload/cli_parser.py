"""The ``medload`` command's arguments: the parser, each subcommand's help and examples."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

__all__ = ["build_parser", "UsageError"]


class UsageError(Exception):
    """A command line argparse refuses (printed as one line, exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and no traceback), as for every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


_FORMAT = argparse.RawDescriptionHelpFormatter

_PHI_KEY_HELP = (
    "secret of the pseudonyms (default $MEDLOAD_PHI_KEY, else your key file "
    "~/.config/medload/phi.key, made at random on first use; see docs/deidentification.md)"
)

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
  medload convert chest_xray/ -o xr/ --size 224 --grayscale --patient-pattern '(?P<patient>\\d+)_' --labels folders
  medload convert /data/export -o out/ --qc     # then open out/qc/index.html in a browser

2D images: class folders (ImageFolder's layout, chest_xray/NORMAL/*.png, chest_xray/PNEUMONIA/*.png)
give labels unless --labels names a CSV (a 'file' column for images); their names are stored as
class names with --labels folders (else as class- pseudonyms: a folder per patient looks the same).
--patient-pattern (or --patients CSV with file,patient_id) gives each image's patient so that
splits keep patients apart; without one every image counts as its own patient.
"""

INFO_HELP = """\
Describe a store: volumes, slices, modalities, patients, labels, masks, pipeline, size on disk.

example:
  medload info out/
  medload info out/ --json
"""

VERIFY_HELP = """\
Read every volume of a store and compare its stored bytes with the checksums written with them
(CRC-32 per slice; one per volume in stores written before slice checksums). Lists every
damaged volume by key and goes on past each; exits 1 if any is damaged, 0 if none.
Run it after copying a store to another disk or share, and before training on an old one.

example:
  medload verify out/
  medload verify out.h5 --json
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
    parser = _Parser(
        prog="medload",
        formatter_class=_FORMAT,
        description="Medical scanner exports (DICOM, NIfTI) to normalized 2D slices in HDF5.",
        epilog="example:\n  medload scan /data/export\n  medload convert /data/export -o out/ --size 256\n"
        "  medload info out/\n  medload preview out/ --out montage.png\n  medload qc out/",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_scan(sub)
    _add_convert(sub)
    _add_info(sub)
    _add_verify(sub)
    _add_preview(sub)
    _add_qc(sub)
    return parser


def _add_scan(sub: Any) -> None:
    p = sub.add_parser("scan", help="list the series found under a folder", description=SCAN_HELP, formatter_class=_FORMAT)
    p.add_argument("source", metavar="SRC", help="folder or file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--keep-descriptions", action="store_true", help="put series descriptions in the --json output (left out by default)"
    )
    p.add_argument("--phi-key", help=_PHI_KEY_HELP)
    p.add_argument(
        "--patient-pattern", metavar="REGEX", help="images: regular expression finding the patient in each file's path"
    )
    p.add_argument("--workers", type=int, metavar="N", help="processes reading headers (default: all cores; 0: this one)")


def _add_convert(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert exports into a store", description=CONVERT_HELP, formatter_class=_FORMAT)
    p.add_argument("sources", metavar="SRC", nargs="+", help="folders or files")
    p.add_argument("-o", "--out", required=True, help="output folder (shards) or FILE.h5")
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="[MOD=]NAME",
        help="preset for every series, or MOD=NAME for one modality (repeatable)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="[MOD=]FILE",
        help="pipeline .toml/.json for every series, or MOD=FILE (repeatable)",
    )
    _add_convert_preprocessing(p.add_argument_group("preprocessing"))
    _add_convert_inputs(p.add_argument_group("inputs, labels and masks"))
    _add_convert_privacy_and_run(p.add_argument_group("privacy and the run"))


def _add_convert_preprocessing(p: Any) -> None:
    p.add_argument("--size", type=_size, metavar="N or HxW", help="bring every slice to this size")
    p.add_argument(
        "--resize-mode",
        choices=["resize", "pad-crop"],
        default="resize",
        help="how slices reach --size (default: resize, spacing updated)",
    )
    p.add_argument(
        "--orientation",
        choices=["radiological", "acquisition"],
        default="radiological",
        help="stored slice orientation: one per plane, the radiological display convention "
        "(default; DICOM and NIfTI of a scan store the same slices), or the source's own",
    )
    p.add_argument("--dtype", help="stored type: uint8, float16, float32, int16 (default: the store's, see docs/hdf5-schema.md)")
    p.add_argument(
        "--compression",
        help="lz4, zstd[:level], none, gzip[:level], lzf, blosc2, ... (default: the store's, see docs/hdf5-schema.md)",
    )
    p.add_argument(
        "--modality",
        metavar="MOD",
        help="modality of sources whose headers do not say (NIfTI without a BIDS sidecar, image "
        "files), e.g. CT so the CT presets window a NIfTI CT; DICOM keeps its own",
    )
    p.add_argument(
        "--force", action="store_true", help="apply CT windows even to volumes whose modality is not CT (prefer --modality)"
    )
    p.add_argument(
        "--on-gap",
        choices=["error", "interpolate"],
        default="error",
        help="DICOM series with missing or uneven slices: refuse (default) or resample them evenly",
    )


def _add_convert_inputs(p: Any) -> None:
    p.add_argument(
        "--labels",
        metavar="CSV",
        help="labels.csv: label + series_key/study_key/patient_key "
        "(images: file); 'folders': class folders, their names stored as class names (default for images in 2+ "
        "folders, the names then as class- pseudonyms)",
    )
    p.add_argument(
        "--patient-pattern",
        metavar="REGEX",
        help="images: regular expression finding the patient in each file's path, e.g. '(?P<patient>\\d+)_'",
    )
    p.add_argument("--patients", metavar="CSV", help="images: CSV with file and patient_id columns")
    p.add_argument("--grayscale", action="store_true", help="store colour images as grey (ITU-R BT.601 luma)")
    p.add_argument("--image-modality", metavar="MOD", help="modality recorded for image files (default OT)")
    p.add_argument("--masks", metavar="DIR", help="folder of NIfTI label masks matched to series")
    p.add_argument(
        "--require-masks",
        action="store_true",
        help="refuse the batch when an image lacks its mask or a mask matches no image (with --masks, "
        "or an nnU-Net dataset); counted in the report otherwise",
    )


def _add_convert_privacy_and_run(p: Any) -> None:
    p.add_argument(
        "--keep-phi", action="store_true", help="keep identifying header fields (off by default); implies --keep-descriptions"
    )
    p.add_argument(
        "--keep-descriptions",
        action="store_true",
        help="write series descriptions / protocol names / NIfTI file names (off by default)",
    )
    p.add_argument("--phi-key", help=_PHI_KEY_HELP)
    p.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="convert series whose BurnedInAnnotation is YES (text in the pixels; refused by default)",
    )
    p.add_argument(
        "--source-map", metavar="FILE", help="write pseudonym -> source path (identifies patients; refused inside the output)"
    )
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: all cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="'local' or a Dask scheduler address (tcp://host:8786)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar, no summary table; still one line per failed series on stderr"
    )
    p.add_argument("--qc", action="store_true", help="then write the QC page (OUT/qc/index.html, as 'medload qc OUT' does)")


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a store", description=INFO_HELP, formatter_class=_FORMAT)
    p.add_argument("store", metavar="OUT", help="store file or folder of shards")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _add_verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify", help="check a store's pixels against their checksums", description=VERIFY_HELP, formatter_class=_FORMAT
    )
    p.add_argument("store", metavar="OUT", help="store file or folder of shards")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_preview(sub: Any) -> None:
    p = sub.add_parser("preview", help="montage of stored slices as a PNG", description=PREVIEW_HELP, formatter_class=_FORMAT)
    p.add_argument("store", metavar="OUT", help="store file or folder of shards")
    p.add_argument("--out", required=True, metavar="PNG", help="the PNG to write")
    p.add_argument("--n", type=int, default=16, help="slices shown (default 16)")
    p.add_argument("--tile", type=int, default=128, help="tile size in pixels (default 128)")
    p.add_argument("--columns", type=int, help="tiles per row")
    p.add_argument(
        "--window",
        type=_window,
        metavar="LOW,HIGH",
        help="stored values drawn black and white (default: each slice's 0.5-99.5 percentiles)",
    )
    p.add_argument("--no-mask", action="store_true", help="do not draw masks")
    p.add_argument("--before-after", action="store_true", help="show each source slice beside the stored one")
    p.add_argument(
        "--source",
        action="append",
        metavar="SRC",
        help="where the sources are (default: from report.json, which names them only after --keep-phi)",
    )
    p.add_argument("--phi-key", help="the pseudonym key used at conversion (to match series); " + _PHI_KEY_HELP)


def _add_qc(sub: Any) -> None:
    p = sub.add_parser("qc", help="static HTML page to check a store", description=QC_HELP, formatter_class=_FORMAT)
    p.add_argument("store", metavar="OUT", help="store file or folder of shards")
    p.add_argument("--out", metavar="DIR", help="folder of the page (default OUT/qc, or x.qc beside x.h5)")
    p.add_argument("--workers", type=int, metavar="N", help="processes drawing thumbnails (default: all cores for large stores)")
    p.add_argument("--thumb", type=int, default=160, metavar="PX", help="thumbnail size in pixels (default 160)")


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
