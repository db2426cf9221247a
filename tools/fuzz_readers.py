"""A hostile-input campaign against every reader: DICOM, NIfTI and 2D images, through scan, load and convert.

Run: ``python tools/fuzz_readers.py [--seed 7] [--cases 300]``; ``--long`` runs 5,000 cases;
``--only N --keep DIR`` runs one case in this process and keeps its file;
``--json out.json`` writes every finding.

Where ``tools/fuzz.py`` mutates bytes of a few DICOM files and one synthetic NIfTI, this
campaign starts from every small file an attacker's corpus would hold: all of pydicom's bundled
test files (compressed, big endian, multi-frame, DICOMDIR, RT, SR), real scanner files from
``../shared/data``, nibabel's test NIfTI files (NIfTI-2, 4D, CIFTI), and PNG/TIFF/JPEG made
with Pillow and tifffile. Mutations are structure-aware per format:

* DICOM: header values set through pydicom to lies (Rows, Columns, BitsAllocated,
  NumberOfFrames, SamplesPerPixel, PixelRepresentation, PlanarConfiguration, Rescale*,
  PixelSpacing, ImageOrientationPatient: NaN, huge, zero, negative, wrong VR and VM), the
  preamble and file meta (magic, group length, transfer syntax), the encapsulated pixel data
  (basic offset table, fragment lengths, delimiters), an undefined length on a plain
  element, deep sequence nesting, truncation and bit flips (``fixtures/hostile.py``);
* NIfTI: dim, pixdim, vox_offset, datatype, bitpix, scl_slope/inter, qform/sform, sizeof_hdr,
  magic, truncation, a truncated gzip stream;
* series: a real multi-file series (pydicom's MR700, small series of ``../shared/data``) with
  one or two of its files mutated as above, or a middle file dropped, or a file copied
  (drawn with its own generator, so a seed's single-file cases stay the same);
* images: PNG IHDR size bombs (with a valid CRC), chunk lengths, TIFF ImageWidth/Length,
  strip offsets/counts, BitsPerSample, SamplesPerPixel, an IFD chain that loops, JPEG SOF
  dimensions, truncation and bit flips;
* structure (``tools/fuzz_structures.py``): enhanced multi-frame functional groups that lie,
  JPEG/JPEG-LS/JPEG 2000/RLE codestreams against their header, contradictory bit layouts,
  real decompression bombs (PNG, TIFF pages and tiles, APNG/GIF frames, gzip NIfTI).

Each case is written to its own folder and run through the reader's entry point on each file
(``read_header``, ``scan_nifti``, ``scan_image``: scan's safety net would hide a library's
exception), ``medload.scan``, ``medload.load`` of
every series found (or of the file when scan finds none) and ``medload.convert`` (in-process,
``workers=0``), in a worker process under an ``RLIMIT_AS`` cap and a per-case alarm. Outcomes:

* ``ok`` / ``medload_error``: good (a convert whose report lists the file or series as failed
  with a MedloadError class counts as ``medload_error``);
* ``other``: another exception escaped, or convert's report holds a failure whose class is
  not a MedloadError (a bug);
* ``wrong``: a plain one-image DICOM file (one frame, one sample, MONOCHROME2, no LUT) loaded,
  but its voxels differ from pydicom's ``pixel_array`` rescaled (a silently
  wrong volume; :func:`pixel_oracle`);
* ``hang``: past ``--timeout``; ``memory``: MemoryError under the cap; ``crash``: the worker
  died (segfault). A crashed case is re-run through ``convert(workers=1)`` in a fresh process
  to check that the pool contains it (``crash_contained`` in the findings).
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import struct
import sys
import tempfile
import traceback
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

try:
    from tools import fuzz_structures, sandbox
except ImportError:  # run as a script: python tools/fuzz_readers.py
    import fuzz_structures  # type: ignore[no-redef]
    import sandbox  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BAD = ("other", "wrong", "hang", "memory", "crash", "harness")

SHARED_BASES = [
    "dcm_qa_nih/In/20180918GE/mr_0004/axial_epi_fmri_interleaved_i_to_s-00003.dcm",
    "dcm_qa_nih/In/20180918Si/mr_0003/epi_pe_ap-00001.dcm",
    "dcm_qa_enh/In/Siemens/XA10/6_1.dcm",
]
#: Shares of the three kinds of base file.
KIND_SHARE = {"dicom": 0.6, "nifti": 0.2, "image": 0.2}
MAX_BASE_BYTES = 400_000


# --- the corpus ------------------------------------------------------------------------------


def _dicom_bases() -> list[tuple[str, bytes]]:
    import pydicom

    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    out = []
    for path in sorted(test_files.rglob("*")):
        if not path.is_file() or path.suffix in (".txt", ".json", ".dump", ".icc", ".gz", ".md") or path.name == "README":
            continue
        if path.stat().st_size <= MAX_BASE_BYTES:
            out.append((path.relative_to(test_files).as_posix(), path.read_bytes()))
    for rel in SHARED_BASES:
        path = SHARED / rel
        if path.exists():
            out.append((rel.rsplit("/", 1)[-1], path.read_bytes()))
    return out


def _nifti_bases() -> list[tuple[str, bytes]]:
    import gzip

    import nibabel

    data = Path(nibabel.__file__).parent / "tests" / "data"
    out = []
    for path in sorted(glob.glob(str(data / "*.nii")) + glob.glob(str(data / "*.nii.gz"))):
        raw = Path(path).read_bytes()
        if path.endswith(".gz"):
            raw = gzip.decompress(raw)
        if len(raw) <= 4 * MAX_BASE_BYTES:
            out.append((Path(path).name.replace(".gz", ""), raw))
    sys.path.insert(0, str(ROOT))
    from fixtures.hostile import nifti_bytes

    out.append(("synthetic.nii", nifti_bytes((6, 5, 4), seed=3)))
    return out


def _image_bases() -> list[tuple[str, bytes]]:
    import numpy as np
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []

    def pil(mode: str, fmt: str, array: Any, **kw: Any) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).convert(mode).save(buf, format=fmt, **kw) if mode != "I;16" else Image.fromarray(array).save(
            buf, format=fmt, **kw
        )
        return buf.getvalue()

    g8 = rng.integers(0, 255, (24, 32), dtype=np.uint8)
    g16 = rng.integers(0, 4000, (24, 32), dtype=np.uint16)
    rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    out.append(("grey8.png", pil("L", "PNG", g8)))
    out.append(("grey16.png", pil("I;16", "PNG", g16)))
    out.append(("rgb.png", pil("RGB", "PNG", rgb)))
    out.append(("palette.png", pil("P", "PNG", rgb)))
    out.append(("bilevel.png", pil("1", "PNG", g8)))
    out.append(("grey.jpg", pil("L", "JPEG", g8, quality=90)))
    out.append(("rgb.jpg", pil("RGB", "JPEG", rgb, quality=90)))
    for name, array, kw in (
        ("grey16.tif", g16, {}),
        ("rgb.tif", rgb, {"photometric": "rgb"}),
        ("float.tif", g16.astype(np.float32) / 7, {}),
        ("pages.tif", np.stack([g16, g16[::-1]]), {}),
        ("deflate.tif", g16, {"compression": "zlib"}),
    ):
        buf = io.BytesIO()
        tifffile.imwrite(buf, array, **kw)
        out.append((name, buf.getvalue()))
    return out


#: Small real series (folders), one file of which a series case mutates.
SERIES_BASES = [
    "dicom2nifti/generic/anatomical/002_non_isotropic",
    "dicom2nifti/generic/rgb/001",
    "dicom2nifti/generic/compressed/001",
    "dicom2nifti/generic/compressed_rle/001",
    "dicom2nifti/hitachi/anatomical/001",
    "dicom2nifti/anatomical/001_implicit",
    "dcm_qa_nih/In/20180918Si/mr_0003",
]


def _series_bases() -> list[tuple[str, list[tuple[str, bytes]]]]:
    import pydicom

    out = []
    mr700 = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892003" / "MR700"
    for folder in [mr700] + [SHARED / rel for rel in SERIES_BASES]:
        files = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.endswith((".nii.gz", ".json", ".txt")))
        if len(files) >= 2:
            out.append(
                (folder.name if folder == mr700 else str(folder.relative_to(SHARED)), [(p.name, p.read_bytes()) for p in files])
            )
    return out


def bases(*, only_structure: bool = False) -> dict[str, Any]:
    """The base files by kind (``dicom``, ``nifti``, ``image``; ``series``: folders), read or made once per process.

    ``only_structure`` marks a campaign whose cases all come from ``tools/fuzz_structures.py``."""
    return {
        "dicom": _dicom_bases(),
        "nifti": _nifti_bases(),
        "image": _image_bases(),
        "series": _series_bases(),
        "only_structure": only_structure,
    }


# --- DICOM mutators -------------------------------------------------------------------------

_HEADER_LIES: dict[str, list[Any]] = {
    "Rows": [0, 1, 2, 65535, "nan", -5, 70000],
    "Columns": [0, 3, 65535, -1, 4096],
    "BitsAllocated": [0, 1, 7, 12, 24, 32, 64, 65535],
    "BitsStored": [0, 1, 17, 64, 65535],
    "HighBit": [0, 31, 65535],
    "NumberOfFrames": ["0", "-1", "2", "3", "1000000", "99999999999", "nan", "1.5", "abc", ""],
    "SamplesPerPixel": [0, 2, 3, 4, 200, 65535],
    "PixelRepresentation": [1, 2, 65535],
    "PlanarConfiguration": [0, 1, 2, 65535],
    "PhotometricInterpretation": ["RGB", "MONOCHROME1", "PALETTE COLOR", "YBR_FULL_422", "YBR_RCT", "XYZ", ""],
    "RescaleSlope": ["0", "nan", "inf", "-inf", "1e308", "-2", "1e-320", "abc", ""],
    "RescaleIntercept": ["nan", "-1e308", "-1024", "inf", ""],
    "PixelSpacing": [["-0.5", "0.5"], ["nan", "1"], ["0", "0"], ["1"], ["1e308", "1e308"], ["1", "1", "1"], ["inf", "1"]],
    "ImageOrientationPatient": [
        ["2", "0", "0", "0", "1", "0"],
        ["1", "0", "0", "1", "0", "0"],
        ["nan", "0", "0", "0", "1", "0"],
        ["0", "0", "0", "0", "0", "0"],
        ["1", "0", "0", "0", "1"],
        ["1e308", "0", "0", "0", "1", "0"],
    ],
    "ImagePositionPatient": [["nan", "0", "0"], ["inf", "1", "1"], ["1", "2"], ["1e308", "-1e308", "0"]],
    "SliceThickness": ["0", "-3", "nan", "1e308"],
    "SpacingBetweenSlices": ["0", "-3", "nan"],
    "WindowCenter": ["nan", "1e308"],
    "WindowWidth": ["0", "-1", "nan"],
    "LargestImagePixelValue": [-1, 70000],
}
_WRONG_VRS = ["DS", "IS", "US", "UL", "SS", "FD", "FL", "LO", "OB", "SQ", "UN", "AT"]


def _dataset(data: bytes):
    import pydicom

    return pydicom.dcmread(io.BytesIO(data), force=True)


def _save(ds) -> bytes:
    import pydicom

    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _pick(rng, seq):
    return seq[int(rng.integers(0, len(seq)))]


def _d_header_value(data: bytes, rng) -> bytes:
    """One header value set to a lie (NaN, huge, zero, negative, wrong multiplicity)."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import DataElement
    from pydicom.tag import Tag

    ds = _dataset(data)
    for _ in range(int(rng.choice([1, 1, 2, 3]))):
        name = _pick(rng, sorted(_HEADER_LIES))
        value = _pick(rng, _HEADER_LIES[name])
        tag = Tag(name)
        vr = dictionary_VR(tag)
        if vr in ("US", "SS", "UL") and isinstance(value, str):
            vr = "DS"  # a number where a binary integer belongs: a wrong VR as well
        if vr == "US" and isinstance(value, int) and not 0 <= value <= 65535:
            vr = "SL"
        ds[tag] = DataElement(tag, vr, value)
    return _save(ds)


def _d_wrong_vr(data: bytes, rng) -> bytes:
    """A size or geometry element written with another VR (a float in Rows, a string in BitsAllocated)."""
    from pydicom.dataelem import DataElement
    from pydicom.tag import Tag

    ds = _dataset(data)
    name = _pick(
        rng,
        [
            "Rows",
            "Columns",
            "BitsAllocated",
            "SamplesPerPixel",
            "NumberOfFrames",
            "PixelSpacing",
            "RescaleSlope",
            "PixelRepresentation",
        ],
    )
    vr = _pick(rng, _WRONG_VRS)
    raw = {
        "DS": "12.5",
        "IS": "7",
        "US": 7,
        "UL": 4294967295,
        "SS": -7,
        "FD": float("nan"),
        "FL": 1e30,
        "LO": "wide",
        "OB": b"\xff" * 6,
        "SQ": [],
        "UN": b"\x01\x02\x03",
        "AT": 0x00280010,
    }[vr]
    tag = Tag(name)
    ds[tag] = DataElement(tag, vr, raw)
    return _save(ds)


def _d_preamble(data: bytes, rng) -> bytes:
    """The preamble, magic, meta group length or transfer syntax made wrong."""
    choice = int(rng.integers(0, 5))
    buf = bytearray(data)
    if choice == 0 and data[128:132] == b"DICM":
        buf[128:132] = _pick(rng, [b"DICN", b"\x00\x00\x00\x00", b"DIC\xff"])
        return bytes(buf)
    if choice == 1:
        at = data.find(b"\x02\x00\x00\x00UL\x04\x00")
        if at >= 0:
            buf[at + 8 : at + 12] = struct.pack("<I", _pick(rng, [0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 3]))
        return bytes(buf)
    if choice == 2:
        ds = _dataset(data)
        if not hasattr(ds, "file_meta"):
            return data[:-1]
        ds.file_meta.TransferSyntaxUID = _pick(
            rng,
            [
                "1.2.840.10008.1.2.2",  # big endian
                "1.2.840.10008.1.2",  # implicit
                "1.2.840.10008.1.2.1.99",  # deflated
                "1.2.840.10008.1.2.4.50",  # JPEG baseline
                "1.2.840.10008.1.2.5",  # RLE
                "1.2.840.10008.1.2.4.90",  # JPEG 2000
                "1.2.3.4.5",  # unknown
                "",
            ],
        )
        out = io.BytesIO()
        import pydicom

        pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
        # keep the dataset encoded as it was; only the meta lies
        ds.save_as(out, enforce_file_format=False, implicit_vr=ds.original_encoding[0], little_endian=ds.original_encoding[1])
        return out.getvalue()
    if choice == 3:
        return bytes(rng.integers(0, 256, 128, dtype="uint8")) + data[128:]
    return data[132:] if data[128:132] == b"DICM" else b"\x00" * 128 + b"DICM" + data


def _d_fragments(data: bytes, rng) -> bytes:
    """The encapsulated pixel data's offset table and fragment lengths made wrong."""
    found = fuzz_structures.pixel_item_offsets(data)
    if not found or not found[1]:
        return _d_undefined_length(data, rng)
    start, items = found
    buf = bytearray(data)
    choice = int(rng.integers(0, 7))
    if choice == 0:  # offset table: a huge, a decreasing or an out-of-file offset
        pos, length = items[0]
        n = max(1, length // 4)
        table = [int(v) for v in rng.choice([0, 4, 0x7FFFFFFF, 0xFFFFFFFF, len(data) * 2], n)]
        body = struct.pack(f"<{n}I", *table)
        return bytes(buf[:pos]) + struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body + bytes(buf[pos + 8 + length :])
    if choice == 1:  # a fragment's length past the end
        pos, _ = _pick(rng, items)
        struct.pack_into("<I", buf, pos + 4, _pick(rng, [0xFFFFFFFF, 0xFFFFFFF0, len(data), 0x7FFFFFFF]))
        return bytes(buf)
    if choice == 2:  # an odd fragment length, shifting everything after
        pos, length = _pick(rng, items)
        struct.pack_into("<I", buf, pos + 4, max(0, length + int(rng.choice([-3, -1, 1, 5]))))
        return bytes(buf)
    if choice == 3:  # no sequence delimiter, file ends after the last fragment
        end = items[-1][0] + 8 + items[-1][1]
        return bytes(buf[:end])
    if choice == 4:  # many empty fragments (a frame count lie for the fragment parser)
        end = items[-1][0] + 8 + items[-1][1]
        return bytes(buf[:end]) + struct.pack("<HHI", 0xFFFE, 0xE000, 0) * int(rng.choice([10, 5000])) + bytes(buf[end:])
    if choice == 5:  # an offset table claiming many frames
        pos, length = items[0]
        n = int(rng.choice([2, 100, 20000]))
        body = struct.pack(f"<{n}I", *range(0, 8 * n, 8))
        return bytes(buf[:pos]) + struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body + bytes(buf[pos + 8 + length :])
    # a fragment's bytes garbled (the codec's own parser meets it)
    pos, length = _pick(rng, items[1:] or items)
    for _ in range(int(rng.integers(1, 12))):
        if length:
            i = pos + 8 + int(rng.integers(0, length))
            buf[i] = int(rng.integers(0, 256))
    return bytes(buf)


def _d_undefined_length(data: bytes, rng) -> bytes:
    """A plain (non-sequence) element given an undefined or huge length."""
    from fixtures.hostile import elements, set_length

    els = [e for e in elements(data) if e.length_size == 4 and e.tag >> 16 != 0x0002]
    if not els:
        els = [e for e in elements(data) if e.tag >> 16 != 0x0002]
    e = _pick(rng, els)
    value = _pick(rng, [0xFFFFFFFF, 0xFFFFFFFE, 0x80000000, len(data) + 10])
    if e.length_size == 2:
        value &= 0xFFFF
    return set_length(data, e.tag, value)


def _d_nesting(data: bytes, rng) -> bytes:
    from fixtures.hostile import nested_sequences

    return nested_sequences(data, int(rng.choice([50, 900, 3000, 20000])))


def _d_truncate(data: bytes, rng) -> bytes:
    cut = int(rng.choice([1, 2, 64, 131, 140, int(rng.integers(132, len(data))), len(data) - 1, len(data) - 7]))
    return data[: max(1, min(cut, len(data) - 1))]


def _d_bytes(data: bytes, rng) -> bytes:
    from fixtures.hostile import MUTATORS

    name = _pick(rng, ["bit_flip", "header_bit_flip", "length", "vr_swap", "reorder", "private", "truncate", "set_value"])
    return MUTATORS[name](data, rng)


DICOM_MUTATORS = {
    "header_value": _d_header_value,
    "wrong_vr": _d_wrong_vr,
    "preamble": _d_preamble,
    "fragments": _d_fragments,
    "undefined_length": _d_undefined_length,
    "nesting": _d_nesting,
    "truncate": _d_truncate,
    "bytes": _d_bytes,
}


# --- NIfTI mutators -------------------------------------------------------------------------


def _nifti2(data: bytes) -> bool:
    return struct.unpack_from("<i", data, 0)[0] == 540


def _n_set(data: bytes, field: str, value: Any) -> bytes:
    """``data`` with NIfTI-1 or NIfTI-2 header ``field`` set (little endian)."""
    n1 = {"dim": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"), "pixdim": (76, "8f"), "vox_offset": (108, "f"),
          "scl_slope": (112, "f"), "scl_inter": (116, "f"), "qform_code": (252, "h"), "sform_code": (254, "h"),
          "quatern": (256, "6f"), "srow": (280, "12f"), "sizeof_hdr": (0, "i"), "magic": (344, "4s")}  # fmt: skip
    n2 = {"dim": (16, "8q"), "datatype": (12, "h"), "bitpix": (14, "h"), "pixdim": (104, "8d"), "vox_offset": (168, "q"),
          "scl_slope": (176, "d"), "scl_inter": (184, "d"), "qform_code": (344, "i"), "sform_code": (348, "i"),
          "quatern": (352, "6d"), "srow": (400, "12d"), "sizeof_hdr": (0, "i"), "magic": (4, "8s")}  # fmt: skip
    offset, fmt = (n2 if _nifti2(data) else n1)[field]
    buf = bytearray(data)
    values = value if isinstance(value, (list, tuple)) else [value]
    if "q" in fmt or "h" in fmt or "i" in fmt:
        lo, hi = {"q": (-(2**63), 2**63 - 1), "h": (-32768, 32767), "i": (-(2**31), 2**31 - 1)}[fmt[-1]]
        values = [max(lo, min(hi, int(v))) for v in values]
    struct.pack_into("<" + fmt, buf, offset, *values)
    return bytes(buf)


def _n_get(data: bytes, field: str) -> tuple:
    offset, fmt = (
        ((16, "8q") if _nifti2(data) else (40, "8h")) if field == "dim" else ((104, "8d") if _nifti2(data) else (76, "8f"))
    )
    return struct.unpack_from("<" + fmt, data, offset)


def _n_dim(data: bytes, rng) -> bytes:
    dim = list(_n_get(data, "dim"))
    i = int(rng.integers(0, 8))
    dim[i] = int(rng.choice([0, -1, 1, 2, 7, 8, 9, 32767, 65535, 2**31 - 1, 2**40]))
    if rng.random() < 0.3:
        dim[0] = int(rng.choice([0, 1, 5, 7, 8, -3]))
    return _n_set(data, "dim", dim)


def _n_pixdim(data: bytes, rng) -> bytes:
    pix = list(_n_get(data, "pixdim"))
    i = int(rng.integers(0, 8))
    pix[i] = float(rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-30, 3.4e38]))
    return _n_set(data, "pixdim", pix)


def _n_value(data: bytes, rng) -> bytes:
    field, values = _pick(
        rng,
        [
            ("vox_offset", [0, 4, 100, 347, 349, 2**31, -352, float("nan"), 1e30]),
            ("datatype", [0, 1, 3, 5, 6, 7, 32, 128, 255, 511, 1024, 1536, 1792, 2048, 2304, 9999, -1]),
            ("bitpix", [0, 1, 3, 24, 128, -8]),
            ("scl_slope", [0.0, float("nan"), float("inf"), -1e38, 1e38, 1e-40]),
            ("scl_inter", [float("nan"), float("inf"), 1e38]),
            ("qform_code", [0, 1, 5, -1, 999]),
            ("sform_code", [0, 1, 5, -1, 999]),
            ("sizeof_hdr", [0, 347, 349, 540, 0x5C010000, -1]),
            ("magic", [b"ni1\x00", b"n+2\x00", b"\x00\x00\x00\x00", b"n+1\x00"]),
        ],
    )
    value = _pick(rng, values)
    if field == "vox_offset" and _nifti2(data) and isinstance(value, float):
        value = 2**40
    if field == "magic" and _nifti2(data):
        value = value + b"\r\n\x1a\n"
    return _n_set(data, field, value)


def _n_orientation(data: bytes, rng) -> bytes:
    bad = _pick(rng, [float("nan"), float("inf"), 0.0, 1e30, -1e30])
    if rng.random() < 0.5:
        srow = [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0]
        srow[int(rng.integers(0, 12))] = bad
        if rng.random() < 0.3:
            srow = [0.0] * 12  # singular
        out = _n_set(data, "srow", srow)
        return _n_set(out, "sform_code", 1)
    quat = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    quat[int(rng.integers(0, 6))] = bad if rng.random() < 0.7 else 2.0  # b^2+c^2+d^2 > 1
    out = _n_set(data, "quatern", quat)
    return _n_set(_n_set(out, "qform_code", 1), "sform_code", 0)


def _n_truncate(data: bytes, rng) -> bytes:
    cut = int(rng.choice([10, 200, 347, 348, 352, 500, int(rng.integers(352, len(data))), len(data) - 1]))
    return data[: max(1, min(cut, len(data) - 1))]


def _n_bit_flip(data: bytes, rng) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(0, min(len(buf), 352)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


NIFTI_MUTATORS = {
    "dim": _n_dim,
    "pixdim": _n_pixdim,
    "value": _n_value,
    "orientation": _n_orientation,
    "truncate": _n_truncate,
    "bit_flip": _n_bit_flip,
}


# --- image mutators -------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each PNG chunk."""
    pos, out = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((pos, data[pos + 4 : pos + 8], length))
        pos += 12 + length
    return out


def _i_png(data: bytes, rng) -> bytes:
    chunks = _png_chunks(data)
    buf = bytearray(data)
    if rng.random() < 0.6:  # IHDR dimensions (CRC recomputed, so the decoder believes it)
        pos = chunks[0][0]
        w, h = struct.unpack_from(">II", data, pos + 8)
        sizes = [0, 1, 65535, 100000, 2**31 - 1, 2**32 - 1]
        if rng.random() < 0.5:
            w = int(_pick(rng, sizes))
        else:
            h = int(_pick(rng, sizes))
        struct.pack_into(">II", buf, pos + 8, w, h)
        if rng.random() < 0.3:
            buf[pos + 16] = int(_pick(rng, [1, 2, 4, 8, 16, 3, 32]))  # bit depth
            buf[pos + 17] = int(_pick(rng, [0, 2, 3, 4, 6, 1, 7]))  # colour type
        struct.pack_into(">I", buf, pos + 21, zlib.crc32(bytes(buf[pos + 4 : pos + 21])))
        return bytes(buf)
    pos, _, _ = _pick(rng, chunks)
    struct.pack_into(">I", buf, pos, _pick(rng, [0, 0x7FFFFFFF, 0xFFFFFFFF, 13]))
    return bytes(buf)


def _tiff_tags(data: bytes) -> tuple[str, list[tuple[int, int, int, int]]]:
    """(byte order, [(entry offset, tag, type, count)]) of the first IFD of a classic TIFF."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (n,) = struct.unpack_from(order + "H", data, ifd)
    out = []
    for k in range(n):
        at = ifd + 2 + 12 * k
        tag, typ, count = struct.unpack_from(order + "HHI", data, at)
        out.append((at, tag, typ, count))
    return order, out


def _i_tiff(data: bytes, rng) -> bytes:
    order, tags = _tiff_tags(data)
    buf = bytearray(data)
    choice = int(rng.integers(0, 3))
    if choice == 0:  # a size, layout or offset tag set to a lie
        wanted = {256: "ImageWidth", 257: "ImageLength", 258: "BitsPerSample", 277: "SamplesPerPixel", 273: "StripOffsets",
                  279: "StripByteCounts", 278: "RowsPerStrip", 259: "Compression", 262: "Photometric", 339: "SampleFormat"}  # fmt: skip
        present = [t for t in tags if t[1] in wanted]
        at, tag, typ, count = _pick(rng, present)
        value = int(_pick(rng, [0, 1, 3, 7, 65535, 0x7FFFFFFF, 0xFFFFFFFF, len(data) * 4]))
        if typ == 3:  # SHORT
            struct.pack_into(order + "HHIH", buf, at, tag, 3, 1, value & 0xFFFF)
        else:
            struct.pack_into(order + "HHII", buf, at, tag, 4, 1, value & 0xFFFFFFFF)
        return bytes(buf)
    if choice == 1:  # the IFD chain loops back to itself or points past the end
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (n,) = struct.unpack_from(order + "H", data, ifd)
        nxt = ifd + 2 + 12 * n
        struct.pack_into(order + "I", buf, nxt, _pick(rng, [ifd, 8, len(data) + 100, 0xFFFFFFFF]))
        return bytes(buf)
    at, tag, typ, count = _pick(rng, tags)  # a tag's count made huge
    struct.pack_into(order + "I", buf, at + 4, _pick(rng, [0, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20]))
    return bytes(buf)


def _i_jpeg(data: bytes, rng) -> bytes:
    buf = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            h = int(_pick(rng, [0, 1, 65535, 30000]))
            w = int(_pick(rng, [0, 1, 65535, 30000]))
            struct.pack_into(">HH", buf, at + 5, h, w)
            if rng.random() < 0.3:
                buf[at + 9] = int(_pick(rng, [0, 2, 5, 255]))  # component count
            return bytes(buf)
    return _i_bytes(data, rng)


def _i_size(data: bytes, rng) -> bytes:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _i_png(data, rng)
    if data[:2] in (b"II", b"MM"):
        return _i_tiff(data, rng)
    return _i_jpeg(data, rng)


def _i_bytes(data: bytes, rng) -> bytes:
    buf = bytearray(data)
    if rng.random() < 0.4:
        return bytes(buf[: int(rng.integers(1, len(buf)))])
    for _ in range(int(rng.integers(1, 8))):
        i = int(rng.integers(0, len(buf)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


IMAGE_MUTATORS = {"size": _i_size, "bytes": _i_bytes}
MUTATORS = {"dicom": DICOM_MUTATORS, "nifti": NIFTI_MUTATORS, "image": IMAGE_MUTATORS}


# --- cases ----------------------------------------------------------------------------------


#: Share of cases that mutate one file of a real multi-file series (drawn apart, so that the
#: single-file cases of a seed stay what they were).
SERIES_SHARE = 0.2
#: Share of the other cases drawn from ``tools/fuzz_structures.py`` (enhanced multi-frame
#: groups, codestreams against their header, bit layouts, image and NIfTI bombs), with a
#: generator of their own as well.
STRUCTURE_SHARE = 0.25


def _series_case(rng, corpus) -> tuple[str, str, list[tuple[str, bytes]]]:
    """A real series with one or two files mutated, or one file dropped or copied."""
    base_name, files = corpus["series"][int(rng.integers(0, len(corpus["series"])))]
    files = list(files)
    choice = float(rng.random())
    if choice < 0.1 and len(files) > 2:
        k = int(rng.integers(1, len(files) - 1))
        return base_name, "drop_middle", files[:k] + files[k + 1 :]
    if choice < 0.2:
        name, data = files[int(rng.integers(0, len(files)))]
        return base_name, "copy", files + [("copy_" + name, data)]
    names = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        k = int(rng.integers(0, len(files)))
        mutator = str(rng.choice(["header_value", "header_value", "wrong_vr", "truncate", "bytes", "fragments"]))
        try:
            files[k] = (files[k][0], DICOM_MUTATORS[mutator](files[k][1], rng))
        except Exception:  # noqa: BLE001 - a mutator that does not fit: flip bytes instead
            mutator += "->bytes"
            files[k] = (files[k][0], _i_bytes(files[k][1], rng))
        names.append(mutator)
    return base_name, "+".join(names), files


def make_case(seed: int, index: int, corpus: dict[str, list]) -> tuple[str, str, list[tuple[str, bytes]]]:
    """(kind, "base:mutator", [(file name, bytes)]) of case ``index`` of campaign ``seed`` (deterministic)."""
    import numpy as np

    series_rng = np.random.default_rng([seed, index, 1])
    only = corpus.get("only_structure")
    if corpus.get("series") and not only and series_rng.random() < SERIES_SHARE:
        base_name, name, files = _series_case(series_rng, corpus)
        return "series", f"{base_name}:{name}", files
    structure_rng = np.random.default_rng([seed, index, 2])
    if only or structure_rng.random() < STRUCTURE_SHARE:
        name, files = fuzz_structures.structure_case(structure_rng, corpus)
        return "structure", name, files
    rng = np.random.default_rng([seed, index])
    kinds = sorted(KIND_SHARE)
    kind = str(rng.choice(kinds, p=[KIND_SHARE[k] for k in kinds]))
    base_name, data = corpus[kind][int(rng.integers(0, len(corpus[kind])))]
    mutators = MUTATORS[kind]
    name = str(rng.choice(sorted(mutators)))
    try:
        out = mutators[name](data, rng)
    except Exception:  # noqa: BLE001 - a mutator that does not fit this base: flip bytes instead
        name += "->bytes"
        out = _i_bytes(data, rng)
    if kind == "nifti":
        suffix = ".nii"
        if rng.random() < 0.3:
            import gzip

            out = gzip.compress(out, compresslevel=1)
            if rng.random() < 0.3:
                out = out[: int(rng.integers(20, len(out)))]  # a truncated gzip stream
            suffix = ".nii.gz"
        file_name = "case" + suffix
    elif kind == "image":
        file_name = "case" + Path(base_name).suffix
    else:
        file_name = "case.dcm"
    return kind, f"{base_name}:{name}", [(file_name, out)]


def write_case(folder: str | os.PathLike[str], kind: str, files: list[tuple[str, bytes]]) -> str:
    """Write a case's files into ``folder``; the path to give the readers (the folder for a series)."""
    os.makedirs(folder, exist_ok=True)
    for name, data in files:
        Path(folder, name).write_bytes(data)
    return str(folder) if kind == "series" else os.path.join(folder, files[0][0])


def pixel_oracle(series: Any, volume: Any) -> str | None:
    """Where a volume loaded from one plain DICOM image differs from pydicom's reading of it, why; else None.

    The oracle is pydicom's ``pixel_array`` times RescaleSlope plus RescaleIntercept: one file, one frame, one
    sample, MONOCHROME2, no LUT (the cases where medload's reading must equal it voxel for
    voxel). A file pydicom cannot decode is no evidence either way.
    """
    import numpy as np
    import pydicom

    if series.kind != "dicom" or len(series.files) != 1 or volume.array.ndim != 3 or volume.array.shape[0] != 1:
        return None
    try:
        ds = pydicom.dcmread(series.files[0], force=True)
        if (
            int(ds.get("NumberOfFrames", 1) or 1) != 1
            or int(ds.get("SamplesPerPixel", 1)) != 1
            or str(ds.get("PhotometricInterpretation", "")) != "MONOCHROME2"
            or "ModalityLUTSequence" in ds
            or "PerFrameFunctionalGroupsSequence" in ds
            or "DoseGridScaling" in ds  # RT Dose: medload applies it too
        ):
            return None
        # Slope and intercept each on its own (default 1 and 0), as dcm2niix, medload's
        # reference, reads them; pydicom's apply_rescale ignores a slope without an intercept.
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        # A sample's value is its BitsStored bits for every codec (medload.io.codecs.stored_bits,
        # pydicom's correct_unused_bits, which pydicom skips for JPEG 2000 and JPEG-LS).
        from medload.io.codecs import stored_bits

        stored = stored_bits(
            np.array(ds.pixel_array), int(ds.get("BitsStored", 0) or 0), int(ds.get("PixelRepresentation", 0) or 0) == 1
        )
        expected = np.asarray(stored, dtype=np.float64) * slope + intercept
    except Exception:  # noqa: BLE001 - pydicom cannot decode it: no oracle
        return None
    got = np.asarray(volume.array[0], dtype=np.float64)
    if got.shape != expected.shape:
        return f"load: shape {got.shape}, pydicom {expected.shape}"
    if not np.allclose(got, expected, rtol=1e-6, atol=1e-3, equal_nan=True):
        k = np.unravel_index(int(np.argmax(np.abs(got - expected))), got.shape)
        return f"load: voxel {tuple(int(i) for i in k)} is {got[k]:g}, pydicom {expected[k]:g}"
    return None


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))


def run_case(path: str, out_dir: str) -> tuple[str, str]:
    """(outcome, detail) of scanning, loading and converting ``path``."""
    import medload
    from medload import errors

    medload_names = {
        n for n in dir(errors) if isinstance(getattr(errors, n), type) and issubclass(getattr(errors, n), errors.MedloadError)
    }
    outcome = "ok"
    stage = "reader"
    try:
        # The reader's own entry point first: scan turns any exception of one file into a
        # FileProblem (a safety net), which would hide a reader that lets a library's
        # exception through.
        from medload.io.headers import read_header
        from medload.io.images import is_image, scan_image
        from medload.io.nifti import is_nifti, scan_nifti

        for file in sorted(Path(path).iterdir()) if os.path.isdir(path) else [Path(path)]:
            try:
                if is_nifti(file, check_magic=False):
                    scan_nifti(file)
                elif is_image(file, check_magic=False):
                    scan_image(file)
                else:
                    read_header(str(file))
            except errors.MedloadError:
                outcome = "medload_error"
        stage = "scan"
        found = medload.scan(path)
        stage = "load"
        for series in found:
            try:
                volume = medload.load(series)
            except errors.MedloadError:
                outcome = "medload_error"
                continue
            wrong = pixel_oracle(series, volume)
            if wrong:
                return "wrong", wrong
        if not len(found):
            try:
                medload.load(path)
            except errors.MedloadError:
                outcome = "medload_error"
        stage = "convert"
        try:
            report = medload.convert(path, os.path.join(out_dir, "out.h5"), workers=0, progress=False)
        except errors.MedloadError:
            return "medload_error", ""
        for entry in report.failed:
            if entry.get("internal") or entry.get("error") not in medload_names:
                tb = str(entry.get("traceback", "")).strip().splitlines()[-3:]
                return "other", f"convert report: {entry.get('error')}: {str(entry.get('reason'))[:200]} {' | '.join(tb)}"
            outcome = "medload_error"
        if not report.ok:
            outcome = "medload_error"
    except errors.MedloadError:
        return "medload_error", stage
    except MemoryError:
        return "memory", stage
    except sandbox.Alarm:
        return "hang", stage
    except RecursionError as exc:
        return "other", f"{stage}: RecursionError: {str(exc)[:120]}"
    except Exception as exc:  # noqa: BLE001 - what the campaign looks for
        return "other", f"{stage}: {type(exc).__name__}: {str(exc)[:200]} at {_where(exc)}"
    return outcome, ""


def _worker(conn, indices: list[int], seed: int, timeout: int, memory: int, only_structure: bool = False) -> None:
    sandbox.confine(memory, memory // 8)
    corpus = bases(only_structure=only_structure)
    import medload  # noqa: F401 - imported before the first alarm runs

    work = tempfile.mkdtemp(prefix="medload-fuzzr-")

    def one(index: int) -> tuple:
        try:
            kind, base, files = make_case(seed, index, corpus)
        except Exception as exc:  # noqa: BLE001 - a harness bug is reported, not a crash
            return "?", "?", "harness", f"{type(exc).__name__}: {exc} at {_where(exc)}"
        case_dir = os.path.join(work, f"c{index}")
        path = write_case(case_dir, kind, files)
        out_dir = os.path.join(work, f"o{index}")
        os.makedirs(out_dir)
        outcome, detail = sandbox.guarded(timeout, lambda: run_case(path, out_dir))
        shutil.rmtree(case_dir, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        return kind, base, outcome, detail

    sandbox.serve(conn, indices, one)


def crash_contained(seed: int, index: int, only_structure: bool = False) -> str:
    """Re-run crashed case ``index`` through ``convert(workers=1)`` in a fresh process: does the pool contain it?"""
    import subprocess

    work = tempfile.mkdtemp(prefix="medload-fuzzr-crash-")
    kind, base, files = make_case(seed, index, bases(only_structure=only_structure))
    src = os.path.join(work, "in")
    write_case(src, kind, files)
    code = (
        "import medload,sys; r=medload.convert(sys.argv[1], sys.argv[2], workers=1, progress=False); "
        "print('failed', r['counts'].get('failed', 0), [s.get('error') for s in r.failed])"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, src, os.path.join(work, "out")], capture_output=True, text=True, timeout=300
        )
        return (
            "contained: " + proc.stdout.strip()[-200:]
            if proc.returncode == 0
            else f"convert died: rc {proc.returncode} {proc.stderr[-300:]}"
        )
    except subprocess.TimeoutExpired:
        return "convert hung"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def campaign(
    seed: int,
    cases: int,
    *,
    start: int = 0,
    workers: int = 1,
    timeout: int = 30,
    memory: int = 3 * 1024**3,
    progress: bool = False,
    only_structure: bool = False,
) -> dict:
    """Run cases ``start .. start + cases - 1`` of campaign ``seed`` (with ``only_structure``, every
    case a ``tools/fuzz_structures.py`` one); return counts and findings."""
    todo = list(range(start, start + cases))
    tally = sandbox.Tally(cases, 100 if progress else 0)
    by_kind: dict[str, Counter] = {}
    outcomes: list[tuple[int, str, str, str]] = []  # every case, to compare two trees case by case

    def on_done(fields: tuple) -> None:
        index, kind, base, outcome, detail = fields
        by_kind.setdefault(kind, Counter())[outcome] += 1
        outcomes.append((index, kind, base, outcome))
        bad = outcome in BAD
        tally.add(outcome, {"index": index, "kind": kind, "base": base, "outcome": outcome, "detail": detail} if bad else None)

    def on_crash(index: int, exitcode: int | None) -> None:
        tally.crash(index, exitcode, f"; {crash_contained(seed, index, only_structure)}")

    chunks = [todo[k::workers] for k in range(workers)]
    sandbox.supervise(_worker, chunks, (seed, timeout, memory, only_structure), on_done=on_done, on_crash=on_crash)
    return {
        "seed": seed,
        "start": start,
        "cases": cases,
        "seconds": tally.seconds(),
        "counts": dict(tally.counts),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "findings": sorted(tally.findings, key=lambda f: f["index"]),
        "outcomes": sorted(outcomes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--long", action="store_true", help="5,000 cases (overrides --cases)")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=30, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory", type=float, default=3.0, help="address-space cap of a worker in GiB")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--only-structure", action="store_true", help="draw every case from tools/fuzz_structures.py")
    parser.add_argument("--only", type=int, help="run this one case in this process and keep its file")
    parser.add_argument("--keep", default=".", help="folder for --only's file")
    args = parser.parse_args(argv)
    if args.only is not None:
        sys.path.insert(0, str(ROOT))
        kind, base, files = make_case(args.seed, args.only, bases(only_structure=args.only_structure))
        path = write_case(Path(args.keep) / f"fuzzr-{args.seed}-{args.only}", kind, files)
        print(kind, base, path, *run_case(path, tempfile.mkdtemp()))
        return 0
    cases = 5000 if args.long else args.cases
    result = campaign(
        args.seed,
        cases,
        start=args.start,
        workers=args.workers,
        timeout=args.timeout,
        memory=int(args.memory * 1024**3),
        progress=True,
        only_structure=args.only_structure,
    )
    return sandbox.report(result, args.json, ("seed", "cases", "seconds", "counts", "by_kind"), result["findings"][:40], BAD)


if __name__ == "__main__":
    sys.exit(main())
