"""Structure-aware mutators for what the byte- and value-level mutators of ``tools/fuzz_readers.py`` miss.

``fuzz_readers`` draws a ``structure`` case from these (with its own generator, so the other
cases of a seed stay what they were). Each mutator takes ``(rng, corpus)`` and returns
``(mutator name, [(file name, bytes)])``:

* ``enhanced``: an enhanced multi-frame object (``fixtures.special.enhanced_asl``, and
  ``../shared/data``'s Siemens XA10 one when present) whose NumberOfFrames, per-frame and shared
  functional groups lie: items dropped, duplicated, emptied, thousands of them, a plane position
  or pixel measures sequence empty, DimensionIndexValues of the wrong count or size, the
  per-frame sequence replaced by bytes, sequences of undefined length with up to 3,000 extra
  items (NumberOfFrames sometimes raised to match);
* ``codestream``: JPEG 2000, JPEG-LS, JPEG lossless and RLE files (pydicom's test files, and
  CT_small.dcm compressed with gdcmconv/dcmcjpls where installed) whose header contradicts
  the codestream (Rows, Columns, BitsAllocated/Stored, HighBit, PixelRepresentation,
  SamplesPerPixel, NumberOfFrames, PhotometricInterpretation), or whose codestream claims a
  huge size (J2K SIZ, JPEG SOF) or lies in its RLE header, offset table or extended offset table;
* ``bit_layout``: uncompressed images whose BitsAllocated, BitsStored, HighBit,
  PixelRepresentation, SamplesPerPixel, PlanarConfiguration and NumberOfFrames contradict each
  other or the pixel bytes (each set of values coherent enough to pass a single-field check);
* ``image_bomb``: PNG decompression bombs (real deflate streams of 20000 x 20000 zero rows, of
  a 16-bit colour 9000 x 9000 image, of a zTXt/iCCP chunk), 200,000 empty IDAT chunks, APNG and
  GIF with 1,000 frames, TIFF with 2,000 or 5,000 pages, tiled and compressed TIFF claiming 60000 x 60000 or
  a tile size of 2**30, a BigTIFF whose IFD chain loops, a JPEG whose SOF claims 9000 x 9000;
* ``tiff_odd_page``: a multi-page TIFF whose pages agree but one (size, type, samples, sample
  format, orientation, compression, planar layout), 12 to 2,100 pages;
* ``nifti_structure``: NIfTI-1/2 extensions whose esize runs past the file or is negative,
  dims negative or 2**40 (NIfTI-2), datatype against bitpix, a gzip stream that inflates to
  1 GiB of zeros under a header of 1024**3 voxels, or 200 MB more than its header claims.

Everything is made in code (no file of the corpus is needed but pydicom's and nibabel's own),
deterministically from the generator.
"""

from __future__ import annotations

import copy
import functools
import io
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _pick(rng: Any, seq: Any) -> Any:
    return seq[int(rng.integers(0, len(seq)))]


def _read(data: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(data), force=True)


def _save(ds: Any) -> bytes:
    import pydicom

    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


# --- bases, made once per process ----------------------------------------------------------------


@functools.cache
def enhanced_bases() -> tuple[tuple[str, bytes], ...]:
    import sys

    sys.path.insert(0, str(ROOT))
    from fixtures.special import enhanced_asl

    folder = Path(tempfile.mkdtemp(prefix="medload-fuzz-enh-"))
    try:
        made = enhanced_asl(folder, n_slices=3, n_frames=2, size=6)
        out = [("enhanced_asl", Path(made["files"][0]).read_bytes())]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    xa10 = SHARED / "dcm_qa_enh/In/Siemens/XA10/6_1.dcm"
    if xa10.exists():
        out.append(("XA10/6_1.dcm", xa10.read_bytes()))
    return tuple(out)


_PYDICOM_COMPRESSED = (
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPEG-LL.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_RLE.dcm",
)
_TOOLS = (("gdcmconv", "--j2k"), ("gdcmconv", "--rle"), ("dcmcjpls", ""))


@functools.cache
def compressed_bases() -> tuple[tuple[str, bytes], ...]:
    """pydicom's compressed test files, and CT_small.dcm compressed by each installed tool."""
    from pydicom.data import get_testdata_file

    out = []
    for name in _PYDICOM_COMPRESSED:
        path = get_testdata_file(name, download=False)
        if path:
            out.append((name, Path(path).read_bytes()))
    source = get_testdata_file("CT_small.dcm", download=False)
    folder = Path(tempfile.mkdtemp(prefix="medload-fuzz-codec-"))
    try:
        for tool, option in _TOOLS:
            if source and shutil.which(tool):
                dst = folder / f"{tool}{option}.dcm"
                args = [tool, *([option] if option else []), source, str(dst)]
                if subprocess.run(args, capture_output=True, timeout=60).returncode == 0:
                    out.append((f"CT_small {tool} {option}".strip(), dst.read_bytes()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return tuple(out)


# --- enhanced multi-frame ------------------------------------------------------------------------


def _enhanced(rng: Any, corpus: Any) -> tuple[str, list[tuple[str, bytes]]]:
    from pydicom.sequence import Sequence

    base_name, data = _pick(rng, enhanced_bases())
    ds = _read(data)
    per = ds.PerFrameFunctionalGroupsSequence
    n = len(per)
    choice = int(rng.integers(0, 11))
    if choice == 10:
        # sequences of undefined length (as scanners write them: pydicom parses every item to
        # find the end) with items beyond NumberOfFrames, or NumberOfFrames raised to match
        extra = int(_pick(rng, [1, 100, 3000]))
        ds.PerFrameFunctionalGroupsSequence = Sequence(list(per) + [per[0]] * extra)
        if rng.random() < 0.3:
            ds.NumberOfFrames = n + extra
        for elem in ds.iterall():
            if elem.VR == "SQ":
                elem.is_undefined_length = True
        return f"{base_name}:enhanced:undefined_length_items", [("case.dcm", _save(ds))]
    if choice == 0:
        ds.NumberOfFrames = int(_pick(rng, [0, 1, n - 1, n + 1, 2 * n, 10**6]))
        name = "number_of_frames"
    elif choice == 1:
        keep = int(rng.integers(0, n))
        ds.PerFrameFunctionalGroupsSequence = Sequence([per[i] for i in range(keep)])
        name = "per_frame_dropped"
    elif choice == 2:
        extra = int(_pick(rng, [1, n, 3000]))
        ds.PerFrameFunctionalGroupsSequence = Sequence(list(per) + [per[0]] * extra)
        name = "per_frame_extra"
    elif choice == 3:
        k = int(rng.integers(0, n))
        for key in list(per[k].keys()):
            del per[k][key]
        name = "per_frame_item_empty"
    elif choice == 4:
        k = int(rng.integers(0, n))
        seq = _pick(rng, ["PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence", "FrameContentSequence"])
        setattr(per[k], seq, Sequence([]))
        name = f"empty_{seq}"
    elif choice == 5:
        for item in ds.SharedFunctionalGroupsSequence:
            for seq in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
                if seq in item and rng.random() < 0.6:
                    setattr(item, seq, Sequence([]))
        ds.SharedFunctionalGroupsSequence.append(copy.deepcopy(ds.SharedFunctionalGroupsSequence[0]))
        name = "shared_groups"
    elif choice == 6:
        for i, item in enumerate(per):
            content = item.get("FrameContentSequence")
            if content:
                content[0].DimensionIndexValues = _pick(rng, [[], [1], [2**31 - 1, 1, 1, 1], [1, 2, 3, 4, 5, 6], [i % 2] * 4])
        name = "dimension_index"
    elif choice == 7:
        del ds.PerFrameFunctionalGroupsSequence
        ds.add_new(0x52009230, "OB", bytes(64))
        name = "per_frame_not_a_sequence"
    elif choice == 8:
        k = int(rng.integers(0, n))
        pos = per[k].get("PlanePositionSequence")
        if pos:
            pos[0].ImagePositionPatient = _pick(
                rng, [["nan", "0", "0"], ["1", "2"], ["1e308", "0", "0"], per[0].PlanePositionSequence[0].ImagePositionPatient]
            )
        name = "frame_position"
    else:
        del ds.PerFrameFunctionalGroupsSequence
        name = "no_per_frame"
    return f"{base_name}:enhanced:{name}", [("case.dcm", _save(ds))]


# --- compressed pixel data -----------------------------------------------------------------------

_CODEC_LIES: dict[str, list[Any]] = {
    "Rows": [1, 64, 127, 256, 65535],
    "Columns": [1, 63, 127, 256, 65535],
    "BitsAllocated": [1, 8, 32],
    "BitsStored": [1, 4, 8, 12, 17],
    "HighBit": [0, 3, 11, 16],
    "PixelRepresentation": [0, 1],
    "SamplesPerPixel": [1, 3, 4],
    "NumberOfFrames": [1, 2, 3, 1000],
    "PhotometricInterpretation": ["MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"],
}


def pixel_item_offsets(data: bytes) -> tuple[int, list[tuple[int, int]]] | None:
    """(start of the PixelData items, [(item header offset, length)]) of encapsulated data."""
    at = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")
    skip = 12
    if at < 0:
        at = data.rfind(b"\xe0\x7f\x10\x00\xff\xff\xff\xff")
        skip = 8
    if at < 0:
        return None
    pos = at + skip
    items = []
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        if (group, elem) != (0xFFFE, 0xE000):
            break
        items.append((pos, length))
        pos += 8 + length
    return at + skip, items


def _codestream_bytes(data: bytes, rng: Any) -> tuple[str, bytes]:
    """A lie inside the first fragment: a huge J2K SIZ or JPEG SOF size, an RLE header's segment count or offsets."""
    found = pixel_item_offsets(data)
    if not found or len(found[1]) < 2:
        return "bit_flip", _flip(data, rng)
    pos, length = found[1][1]
    start = pos + 8
    buf = bytearray(data)
    frag = bytes(data[start : start + length])
    size = int(_pick(rng, [0, 1, 9000, 60000, 65535]))
    if frag[:4] == b"\xff\x4f\xff\x51":  # J2K: SOC, SIZ; Xsiz, Ysiz at +8
        struct.pack_into(">II", buf, start + 8, size, int(_pick(rng, [size, 1, 65535])))
        if rng.random() < 0.3:
            struct.pack_into(">H", buf, start + 40, int(_pick(rng, [0, 3, 16384])))  # Csiz
        return "j2k_siz", bytes(buf)
    sof = next((frag.find(m) for m in (b"\xff\xc3", b"\xff\xc0", b"\xff\xc1", b"\xff\xf7") if frag.find(m) >= 0), -1)
    if frag[:2] == b"\xff\xd8" and sof >= 0:
        struct.pack_into(">HH", buf, start + sof + 5, size, int(_pick(rng, [size, 1, 65535])))
        if rng.random() < 0.3:
            buf[start + sof + 4] = int(_pick(rng, [2, 8, 16, 255]))  # precision
        return "jpeg_sof", bytes(buf)
    # RLE: 16 little-endian words, the segment count then the segment offsets
    if rng.random() < 0.5:
        struct.pack_into("<I", buf, start, int(_pick(rng, [0, 2, 3, 15, 16, 0xFFFFFFFF])))
    else:
        k = int(rng.integers(1, 16))
        struct.pack_into("<I", buf, start + 4 * k, int(_pick(rng, [0, 64, length, length * 4, 0xFFFFFFF0])))
    return "rle_header", bytes(buf)


def _offset_tables(data: bytes, rng: Any) -> tuple[str, bytes]:
    ds = _read(data)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if rng.random() < 0.5:
        big = int(_pick(rng, [2**62, 2**32, 0, len(data) * 2]))
        ds.ExtendedOffsetTable = struct.pack(f"<{n}Q", *([0] * (n - 1) + [big]))
        ds.ExtendedOffsetTableLengths = struct.pack(f"<{n}Q", *([big] * n))
        return "extended_offsets", _save(ds)
    found = pixel_item_offsets(data)
    if not found:
        return "bit_flip", _flip(data, rng)
    pos, length = found[1][0]
    count = int(_pick(rng, [n + 1, 1000, 200000]))
    body = struct.pack(f"<{count}I", *([0] * count))
    return "offset_table", data[:pos] + struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body + data[pos + 8 + length :]


def _codestream(rng: Any, corpus: Any) -> tuple[str, list[tuple[str, bytes]]]:
    bases = compressed_bases()
    base_name, data = _pick(rng, bases)
    choice = float(rng.random())
    if choice < 0.55:
        ds = _read(data)
        names = []
        for _ in range(int(_pick(rng, [1, 1, 2, 3]))):
            keyword = _pick(rng, sorted(_CODEC_LIES))
            setattr(ds, keyword, _pick(rng, _CODEC_LIES[keyword]))
            names.append(keyword)
        return f"{base_name}:codestream:header:{'+'.join(names)}", [("case.dcm", _save(ds))]
    if choice < 0.85:
        name, out = _codestream_bytes(data, rng)
    else:
        name, out = _offset_tables(data, rng)
    return f"{base_name}:codestream:{name}", [("case.dcm", out)]


def _flip(data: bytes, rng: Any) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        i = int(rng.integers(132, len(buf)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


# --- uncompressed bit layout ---------------------------------------------------------------------

# fmt: off
_LAYOUTS: list[dict[str, Any]] = [
    {"HighBit": 4}, {"HighBit": 16}, {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1},
    {"BitsStored": 1, "HighBit": 0}, {"BitsAllocated": 1, "BitsStored": 1, "HighBit": 0},
    {"BitsAllocated": 8}, {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7, "Columns": 256},
    {"SamplesPerPixel": 3}, {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 1},
    {"PlanarConfiguration": 1}, {"NumberOfFrames": 2, "Rows": 64}, {"NumberOfFrames": 4, "Rows": 32},
    {"Rows": 65535, "Columns": 65535, "NumberOfFrames": 2**31 - 1}, {"PhotometricInterpretation": "YBR_FULL_422"},
    {"BitsAllocated": 32, "BitsStored": 32, "HighBit": 31, "Rows": 64}, {"BitsAllocated": 64, "Rows": 32},
    {"SamplesPerPixel": 2}, {"PixelRepresentation": 1, "BitsStored": 8, "HighBit": 7},
]
# fmt: on


def _bit_layout(rng: Any, corpus: Any) -> tuple[str, list[tuple[str, bytes]]]:
    from pydicom.data import get_testdata_file

    name = _pick(rng, ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "rtdose.dcm", "OBXXXX1A.dcm"])
    path = get_testdata_file(name, download=False)
    if path is None:
        name, path = "CT_small.dcm", get_testdata_file("CT_small.dcm", download=False)
    ds = _read(Path(path).read_bytes())
    layout = _pick(rng, _LAYOUTS)
    for keyword, value in layout.items():
        setattr(ds, keyword, value)
    label = "+".join(f"{k}={v}" for k, v in layout.items())
    return f"{name}:bit_layout:{label}", [("case.dcm", _save(ds))]


# --- 2D image bombs ------------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.cache
def _png(width: int, height: int, *, bits: int = 8, colour: int = 0, rows: int | None = None, extra: bytes = b"") -> bytes:
    """A PNG whose deflate stream really holds ``rows`` (default ``height``) zero rows: a bomb if
    large (made once per process: a 20000 x 20000 one deflates 400 MB)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4, 3: 1}[colour]
    row = b"\x00" * ((width * bits * channels + 7) // 8 + 1)
    comp = zlib.compressobj(1)
    n = height if rows is None else rows
    parts = [comp.compress(row * 256) for _ in range(n // 256)] + [comp.compress(row * (n % 256)), comp.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b"")
    )


@functools.cache
def _deflated_zeros(n_bytes: int) -> bytes:
    comp = zlib.compressobj(1)
    block = bytes(1 << 22)
    return b"".join([comp.compress(block) for _ in range(n_bytes >> 22)] + [comp.flush()])


def _tiff(array: Any, **kw: Any) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kw)
    return buf.getvalue()


def _tiff_set(data: bytes, tag: int, value: int) -> bytes:
    """``data`` (a classic little-endian TIFF) with ``tag`` of its first IFD set to ``value`` (LONG)."""
    buf = bytearray(data)
    (ifd,) = struct.unpack_from("<I", buf, 4)
    (n,) = struct.unpack_from("<H", buf, ifd)
    for k in range(n):
        at = ifd + 2 + 12 * k
        if struct.unpack_from("<H", buf, at)[0] == tag:
            struct.pack_into("<HHII", buf, at, tag, 4, 1, value)
    return bytes(buf)


@functools.cache
def _animation(fmt: str) -> bytes:
    import numpy as np
    from PIL import Image

    frames = [Image.fromarray(np.full((8, 8), i % 256, np.uint8)) for i in range(1000)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


@functools.cache
def _tiff_pages(n: int, mixed: bool) -> bytes:
    import numpy as np
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        for i in range(n):
            tw.write(np.full((4 + (i % 3 if mixed else 0), 4), i, np.uint16), contiguous=False)
    return buf.getvalue()


def _image_bomb(rng: Any, corpus: Any) -> tuple[str, list[tuple[str, bytes]]]:
    import numpy as np

    choice = int(rng.integers(0, 12))
    if choice == 0:
        return "png:bomb_20000", [("case.png", _png(20000, 20000))]
    if choice == 1:
        # colour: 486 or 648 MB decoded, under Pillow's pixel limit, over a worker's volume limit
        return "png:16bit_9000", [("case.png", _png(9000, 9000, bits=16, colour=int(_pick(rng, [2, 6]))))]
    if choice == 2:
        return "png:rows_missing", [("case.png", _png(9000, 9000, rows=10))]
    if choice == 3:
        empty = _png_chunk(b"IDAT", b"")
        base = _png(32, 32)
        return "png:empty_idat", [("case.png", base[:33] + empty * 200000 + base[33:])]
    if choice == 4:
        kind, head = _pick(rng, [(b"zTXt", b"Comment\x00\x00"), (b"iCCP", b"icc\x00\x00")])
        body = head + _deflated_zeros(256 << 20)
        return f"png:{kind.decode()}_bomb", [("case.png", _png(32, 32, extra=_png_chunk(kind, body)))]
    if choice in (5, 6):
        fmt = "PNG" if choice == 5 else "GIF"
        return f"{fmt.lower()}:1000_frames", [("case." + fmt.lower(), _animation(fmt))]
    if choice == 7:
        return "tiff:pages", [("case.tif", _tiff_pages(int(_pick(rng, [2000, 5000])), bool(rng.random() < 0.3)))]
    if choice == 8:
        data = _tiff(np.zeros((64, 64), np.uint16), tile=(16, 16), compression="zlib")
        size = int(_pick(rng, [60000, 65535, 2**20]))
        return "tiff:tiled_claim", [("case.tif", _tiff_set(_tiff_set(data, 256, size), 257, size))]
    if choice == 9:
        data = _tiff(np.zeros((64, 64), np.uint16), tile=(16, 16), compression="zlib")
        return "tiff:tile_size", [("case.tif", _tiff_set(data, int(_pick(rng, [322, 323])), int(_pick(rng, [0, 1, 2**30]))))]
    if choice == 10:
        data = bytearray(_tiff(np.zeros((16, 16), np.uint8), bigtiff=True))
        (ifd,) = struct.unpack_from("<Q", data, 8)
        (n,) = struct.unpack_from("<Q", data, ifd)
        struct.pack_into("<Q", data, ifd + 8 + 20 * n, ifd)
        return "tiff:bigtiff_loop", [("case.tif", bytes(data))]
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    at = data.find(b"\xff\xc0")
    size = int(_pick(rng, [9000, 20000, 65500]))
    struct.pack_into(">HH", data, at + 5, size, size)
    return "jpeg:sof", [("case.jpg", bytes(data))]


# --- NIfTI structure -----------------------------------------------------------------------------


def _nifti_structure(rng: Any, corpus: Any) -> tuple[str, list[tuple[str, bytes]]]:
    import gzip

    import nibabel as nib
    import numpy as np

    two = rng.random() < 0.3
    cls = nib.Nifti2Image if two else nib.Nifti1Image
    buf = bytearray(cls(np.arange(120, dtype=np.int16).reshape(6, 5, 4), np.eye(4)).to_bytes())
    head = 540 if two else 348
    choice = int(rng.integers(0, 6))
    if choice == 0:  # an extension whose esize runs past the file, is negative or not a multiple of 16
        esize = int(_pick(rng, [2**31 - 8, -16, 7, 0, 24]))
        buf = buf[: head + 4] + bytearray(struct.pack("<ii", esize, 4)) + buf[head + 4 :]
        struct.pack_into("<4B", buf, head, 1, 0, 0, 0)
        if not two and rng.random() < 0.5:
            struct.pack_into("<f", buf, 108, float(head + 4 + 8 + 8))
        return "nifti:extension", [("case.nii", bytes(buf))]
    if choice == 1 and two:
        dims = _pick(rng, [(3, 2**40, 2**40, 2**40), (3, 2**62, 4, 4), (3, -6, -5, 4), (4, 6, 5, 4, -1)])
        struct.pack_into(f"<{len(dims)}q", buf, 16, *dims)
        return "nifti:dims", [("case.nii", bytes(buf))]
    if choice == 1:
        dims = _pick(rng, [(3, -6, 5, 4), (-1, 6, 5, 4), (3, 32767, 32767, 32767), (7, 6, 5, 4, 1, 0, 1, 1)])
        struct.pack_into(f"<{len(dims)}h", buf, 40, *dims)
        return "nifti:dims", [("case.nii", bytes(buf))]
    if choice == 2:  # datatype against bitpix
        at = 12 if two else 70
        code, bitpix = _pick(rng, [(16, 16), (128, 24), (32, 64), (1, 1), (1536, 128), (2048, 256), (2304, 32), (4, 8)])
        struct.pack_into("<2h", buf, at, code, bitpix)
        return "nifti:datatype", [("case.nii", bytes(buf))]
    if choice in (3, 4):
        return _gzip_case("bomb" if choice == 3 else "trailing", bytes(buf))
    scale = _pick(rng, [(float("nan"), 0.0), (0.0, 0.0), (float("inf"), 1.0), (1.0, float("-inf")), (1e-45, 0.0)])
    struct.pack_into("<2d" if two else "<2f", buf, 176 if two else 112, *scale)
    if rng.random() < 0.5:
        return "nifti:scale", [("case.nii.gz", gzip.compress(bytes(buf), compresslevel=1))]
    return "nifti:scale", [("case.nii", bytes(buf))]


@functools.cache
def _gzip_case(kind: str, image: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """A gzip stream of 1 GiB of zeros under a header of 1024**3 uint8 voxels (``bomb``), or
    ``image`` followed by 256 MiB its header does not claim (``trailing``); made once per process."""
    import nibabel as nib
    import numpy as np

    if kind == "bomb":
        hdr = nib.Nifti1Header()
        hdr.set_data_shape((1024, 1024, 1024))
        hdr.set_data_dtype(np.uint8)
        image, n_bytes = hdr.binaryblock + bytes(4), 1 << 30
    else:
        n_bytes = 256 << 20
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = bytes(1 << 22)
    data = b"".join([comp.compress(image)] + [comp.compress(block) for _ in range(n_bytes >> 22)] + [comp.flush()])
    return f"nifti:gzip_{kind}", [("case.nii.gz", data)]


def _tiff_odd_page(rng: Any, corpus: Any) -> tuple[str, list[tuple[str, bytes]]]:
    """A multi-page TIFF whose pages agree but one (another size, type, sample count, sample
    format, orientation, compression or planar layout): tifffile finds a stack from a sample of
    four pages and decodes the rest with the first page's layout."""
    import numpy as np
    import tifffile

    n = int(_pick(rng, [12, 100, 2100]))
    odd_page = int(rng.integers(2, n - 1))
    odd = str(_pick(rng, ["shape", "dtype", "samples", "float", "orientation", "compression", "planar", "signed"]))
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf, bigtiff=bool(rng.random() < 0.3)) as tw:
        for i in range(n):
            page, kw = np.full((8, 6), i % 65536, np.uint16), {}
            if i == odd_page:
                page = {
                    "shape": np.full((6, 8), i, np.uint16),
                    "dtype": np.full((8, 6), i % 256, np.uint8),
                    "samples": np.full((8, 6, 3), i, np.uint16),
                    "float": np.full((8, 6), i, np.float32),
                    "planar": np.full((3, 8, 6), i, np.uint16),
                    "signed": np.full((8, 6), -i, np.int16),
                }.get(odd, page)
                kw = {
                    "orientation": {"extratags": [(274, 3, 1, int(_pick(rng, [3, 6, 9])), False)]},
                    "compression": {"compression": "zlib"},
                    "planar": {"photometric": "rgb", "planarconfig": "separate"},
                }.get(odd, {})
            tw.write(page, metadata=None, contiguous=False, **kw)
    return f"tiff:odd_page:{odd}:{odd_page}_of_{n}", [("case.tif", buf.getvalue())]


STRUCTURE_MUTATORS = {
    "tiff_odd_page": _tiff_odd_page,
    "enhanced": _enhanced,
    "codestream": _codestream,
    "bit_layout": _bit_layout,
    "image_bomb": _image_bomb,
    "nifti_structure": _nifti_structure,
}


def structure_case(rng: Any, corpus: Any) -> tuple[str, list[tuple[str, bytes]]]:
    """One structure case: ``("base:mutator:detail", [(file name, bytes)])``."""
    name = str(rng.choice(sorted(STRUCTURE_MUTATORS)))
    return STRUCTURE_MUTATORS[name](rng, corpus)
