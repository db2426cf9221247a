"""Schema v1 constants, dtype encodings and compression filters shared by writer and reader.

Everything that decides what bytes land in the file lives here, so that the writer, the
reader and ``docs/hdf5-schema.md`` agree on one definition.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medload._optional import require
from medload.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import h5py
    import numpy.typing as npt

    from medload.volume import Volume

SCHEMA_VERSION = 1

#: Defaults chosen by ``python bench/store.py`` on windowed CT (see docs/hdf5-schema.md).
DEFAULT_DTYPE = "uint8"
DEFAULT_COMPRESSION = "lz4"

DTYPES = ("float32", "float16", "uint8", "int16")
FILTERS = ("none", "gzip", "lzf", "lz4", "zstd", "blosc2", "blosc2-zstd")

#: The suffix of a store file while it is being written; renamed away when the store is whole.
PARTIAL_SUFFIX = ".partial"

#: Volume.meta keys stored as their own volume attributes; every other meta key goes into the
#: ``meta`` JSON attribute. The writer splits meta by this list and the reader joins it back.
META_ATTRS = ("source", "source_key", "patient_key", "study_key", "series_key", "intensity", "source_hash", "channels")

INDEX_DTYPE = np.dtype([("volume", "<i4"), ("slice", "<i4"), ("patient", "<i4"), ("label", "<i8")])

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def load_h5py() -> Any:
    """h5py, with hdf5plugin's filters registered (imported here, on first use, so that
    ``import medload`` stays light)."""
    require("hdf5plugin", "the HDF5 store (compressed filters)")
    return require("h5py", "the HDF5 store")


def canonical_json(value: Any, *, field: str = "the pipeline configuration", remedy: str = "") -> str:
    """JSON with sorted keys and no spaces: equal configurations give equal text.

    Non-ASCII text is written as ``\\uXXXX`` escapes (``ensure_ascii``), so every ``str`` is
    stored faithfully, a NUL character or an unpaired surrogate included.

    Parameters
    ----------
    value : Any
        Plain values (dict, list, str, numbers, bool, None).
    field, remedy : str
        What ``value`` is and what to do, for the :class:`~medload.errors.ConfigError` raised when
        it is not JSON-able (a set, an object, NaN).

    Examples
    --------
    >>> print(canonical_json({"b": 1, "a": [1.0, "x\\x00"]}))
    {"a":[1.0,"x\\u0000"],"b":1}
    >>> canonical_json([float("nan")], field="volume v: its history")
    Traceback (most recent call last):
    ...
    medload.errors.ConfigError: volume v: its history must be JSON-able to be recorded in the store, ...
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{field} must be JSON-able to be recorded in the store, found "
            f"{type(value).__name__} ({exc}); " + (remedy or "pass pipeline.to_config() or a dict of plain values.")
        ) from exc


def check_texts(attrs: Mapping[str, Any], what: str) -> None:
    """Refuse a ``str`` attribute that an HDF5 text attribute cannot hold as it is.

    h5py stores text as variable-length UTF-8 C strings: a NUL character cannot be stored
    (``ValueError`` from inside h5py) and an unpaired surrogate (the mark of bytes that were not
    UTF-8: a file name or a header decoded with ``surrogateescape``) cannot be encoded
    (``UnicodeEncodeError``). Every other text is stored as it is; JSON attributes
    (:func:`canonical_json`) escape both and need no check.

    Raises
    ------
    ConfigError
        Naming ``what``, the attribute and the character's position (not the text: it may
        hold a name), and what to do.

    Examples
    --------
    >>> check_texts({"series_key": "ser-1", "intensity": "HU µ"}, "volume v")
    >>> check_texts({"series_key": "ser\\x001"}, "volume v")
    Traceback (most recent call last):
    ...
    medload.errors.ConfigError: volume v: the text of 'series_key' (volume.meta['series_key']) holds a NUL character ...
    """
    for name, value in attrs.items():
        if not isinstance(value, str) or (value.isascii() and "\x00" not in value):
            continue
        if "\x00" in value:
            at, found = value.index("\x00"), "a NUL character (U+0000)"
        else:
            try:
                value.encode("utf-8")
                continue
            except UnicodeEncodeError as exc:
                at = exc.start
                found = f"an unpaired surrogate (U+{ord(value[at]):04X}: bytes that were not UTF-8, decoded with surrogateescape)"
        source = f" (volume.meta[{name!r}])" if name in META_ATTRS else ""
        raise ConfigError(
            f"{what}: the text of {name!r}{source} holds {found} at character {at}, which an HDF5 "
            "text attribute cannot store; remove or replace it before writing (e.g. "
            "text.replace('\\x00', '') for a NUL, os.fsencode(text).decode('utf-8', 'replace') for a "
            "surrogate), or put the value in meta under another key, which is stored as JSON."
        )


def pipeline_config(pipeline: Any) -> Any:
    """Turn ``None``, a mapping, or an object with ``.to_config()`` into a JSON-able value.

    Examples
    --------
    >>> pipeline_config({"steps": []})
    {'steps': []}
    >>> pipeline_config(None) is None
    True
    """
    if pipeline is None:
        return None
    if hasattr(pipeline, "to_config"):
        pipeline = pipeline.to_config()
    if not isinstance(pipeline, (Mapping, list)):
        raise ConfigError(
            f"pipeline must be None, a JSON-able mapping, or an object with .to_config(); found {type(pipeline).__name__}."
        )
    return json.loads(canonical_json(pipeline))


def pipeline_hash(config: Any) -> str:
    """SHA-256 of the canonical JSON of a pipeline configuration (``None`` included).

    Examples
    --------
    >>> pipeline_hash({"a": 1, "b": 2}) == pipeline_hash({"b": 2, "a": 1})
    True
    >>> pipeline_hash(None)[:12]
    '74234e98afe7'
    """
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def check_dtype(dtype: str | None) -> str:
    """Return the stored dtype name, or raise naming the allowed ones.

    Examples
    --------
    >>> check_dtype(None)
    'uint8'
    >>> check_dtype("float16")
    'float16'
    """
    if dtype is None:
        return DEFAULT_DTYPE
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, found {dtype!r}.")
    return name


def parse_compression(spec: str | None, *, itemsize: int = 2) -> tuple[str, dict[str, Any]]:
    """Parse ``"name[:level][+shuffle]"`` into a canonical spec and ``create_dataset`` keywords.

    ``none``, ``gzip[:1-9]``, ``lzf``, ``lz4`` (hdf5plugin.LZ4), ``zstd[:level]``
    (hdf5plugin.Zstd), ``blosc2[:level]`` (hdf5plugin.Blosc2, lz4), ``blosc2-zstd[:level]``
    (Blosc2, zstd); blosc2 byte-shuffles values of more than one byte (``itemsize``).
    ``+shuffle`` adds HDF5's byte shuffle before gzip, lzf, lz4 or zstd.

    Examples
    --------
    >>> parse_compression("gzip:4")[0]
    'gzip:4'
    >>> parse_compression(None)[0]
    'lz4'
    >>> parse_compression("none")[1]
    {}
    """
    spec = DEFAULT_COMPRESSION if spec is None else str(spec).strip().lower()
    base, shuffle = (spec[: -len("+shuffle")], True) if spec.endswith("+shuffle") else (spec, False)
    name, _, level_text = base.partition(":")
    if name not in FILTERS:
        raise ConfigError(f"compression must be one of {FILTERS} (optionally ':level', '+shuffle'), found {spec!r}.")
    try:
        level = int(level_text) if level_text else None
    except ValueError:
        raise ConfigError(f"compression level in {spec!r} must be an integer.") from None
    kwargs: dict[str, Any]
    if name == "none":
        kwargs, level = {}, None
    elif name == "gzip":
        level = 4 if level is None else level
        kwargs = {"compression": "gzip", "compression_opts": level}
    elif name == "lzf":
        kwargs, level = {"compression": "lzf"}, None
    else:
        import hdf5plugin

        if name == "lz4":
            kwargs, level = dict(hdf5plugin.LZ4()), None
        elif name == "zstd":
            level = 1 if level is None else level
            kwargs = dict(hdf5plugin.Zstd(clevel=level))
        else:
            level = 5 if level is None else level
            cname: Literal["zstd", "lz4"] = "zstd" if name == "blosc2-zstd" else "lz4"
            # Shuffling 1-byte values changes nothing but measured 2x slower reads (bench/store.py).
            shuffle_filter = hdf5plugin.Blosc2.SHUFFLE if itemsize > 1 else hdf5plugin.Blosc2.NOFILTER
            kwargs = dict(hdf5plugin.Blosc2(cname=cname, clevel=level, filters=shuffle_filter))
            shuffle = False  # blosc2 shuffles itself
    if shuffle and name != "none":
        kwargs["shuffle"] = True
    canonical = name + (f":{level}" if level is not None else "") + ("+shuffle" if shuffle and name != "none" else "")
    return canonical, kwargs


def encoding(array: np.ndarray, dtype: str, *, value_range: tuple[float, float] | None, what: str) -> tuple[float, float]:
    """Check ``array`` fits ``dtype`` and return ``(scale, offset)``: value = stored * scale + offset.

    ``uint8`` maps ``value_range`` (default: the volume's min and max) onto 0..255, so the
    quantization error is at most ``scale / 2``. ``int16`` stores whole numbers (raw HU) as they
    are. Float types store values as they are (scale 1, offset 0).

    Examples
    --------
    >>> encoding(np.array([0.0, 1.0]), "uint8", value_range=None, what="test")
    (0.00392156862745098, 0.0)
    >>> encoding(np.array([-1000, 3000]), "int16", value_range=None, what="test")
    (1.0, 0.0)
    """
    if dtype == "float32":
        return 1.0, 0.0
    if dtype == "float16":
        finite = np.isfinite(array)
        if finite.all():
            peak = float(np.abs(array).max()) if array.size else 0.0
        else:
            peak = float(np.abs(array[finite]).max()) if finite.any() else 0.0
        if peak > _FLOAT16_MAX:
            raise StoreError(
                f"{what}: values up to {peak:g} do not fit float16 (max {_FLOAT16_MAX:g}); "
                "store it as dtype='float32', or window/normalize it first."
            )
        return 1.0, 0.0
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    # min and max carry any NaN or infinity, so the boolean volume of isfinite (a pass and an
    # allocation per volume written) is made only to count them for the message.
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise StoreError(
            f"{what}: {int((~np.isfinite(array)).sum())} voxels are NaN or infinite, which {dtype} cannot hold; "
            "replace them (numpy.nan_to_num) or store as dtype='float32'/'float16'."
        )
    if dtype == "int16":
        info = np.iinfo(np.int16)
        # Integer arrays are whole already: no rounded copy of the volume (one per check before).
        whole = array.dtype.kind in "biu" or np.array_equal(array, np.round(array))
        if lo < info.min or hi > info.max or not whole:
            raise StoreError(
                f"{what}: int16 stores whole numbers in [{info.min}, {info.max}] as they are (raw HU), "
                f"found values in [{lo:g}, {hi:g}]{'' if whole else ' with fractions'}; "
                "use dtype='float16' or 'uint8' (scaled) for normalized data."
            )
        return 1.0, 0.0
    # uint8
    if value_range is not None:
        low, high = (float(value_range[0]), float(value_range[1]))
        if high <= low:
            raise StoreError(f"value_range must be (low, high) with high > low, found {value_range}.")
        slack = 1e-6 * (high - low)
        if array.size and (lo < low - slack or hi > high + slack):
            # Clipping silently would store a different image than the one given.
            raise StoreError(
                f"{what}: values span [{lo:g}, {hi:g}], outside value_range ({low:g}, {high:g}) that uint8 "
                "maps onto 0..255; clip or window the volume first, or widen value_range."
            )
        lo, hi = low, high
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    return scale, lo


def encode(block: np.ndarray, dtype: str, scale: float, offset: float) -> np.ndarray:
    """Convert values to their stored form (see :func:`encoding`).

    Examples
    --------
    >>> encode(np.array([0.0, 0.5, 1.0]), "uint8", 1 / 255, 0.0)
    array([  0, 128, 255], dtype=uint8)
    """
    if dtype == "uint8":
        # In place in float32: half the passes of a float64 round trip (encoding dominated writes).
        # The cast fused with the first operation (one pass and one allocation fewer; the same
        # float32 operations, so the same bytes).
        if offset:
            q = np.subtract(block, np.float32(offset), dtype=np.float32)
            q *= np.float32(1.0 / scale)
        else:
            q = np.multiply(block, np.float32(1.0 / scale), dtype=np.float32)
        np.rint(q, out=q)
        np.clip(q, 0, 255, out=q)
        return q.astype(np.uint8)
    if dtype == "int16":
        return np.asarray(block).astype(np.int16)
    return np.asarray(block, dtype=dtype)


def mask_dtype(mask: np.ndarray, what: str) -> np.dtype:
    """Smallest unsigned/signed integer type holding every label of ``mask``.

    Examples
    --------
    >>> mask_dtype(np.array([0, 1, 2]), "m")
    dtype('uint8')
    """
    if mask.dtype.kind == "b":
        return np.dtype(np.uint8)
    if mask.dtype.kind == "f":
        if not np.array_equal(mask, np.round(mask)):
            raise StoreError(f"{what}: a mask holds integer labels, found fractional values; round or threshold it first.")
    if mask.dtype.kind not in "iuf":
        raise StoreError(f"{what}: a mask holds integer labels, found dtype {mask.dtype}.")
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    for candidate in (np.uint8, np.uint16, np.int16, np.int32, np.int64):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    raise StoreError(f"{what}: labels in [{lo}, {hi}] do not fit int64.")


def crc32(buffer: np.ndarray, value: int = 0) -> int:
    """Running CRC-32 of an array's bytes (C order), to verify volumes after a crash.

    Examples
    --------
    >>> crc32(np.zeros(4, np.uint8))
    558161692
    """
    return zlib.crc32(np.ascontiguousarray(buffer).data, value)


def decode_into(stored: np.ndarray, scale: float, offset: float, out: np.ndarray) -> np.ndarray:
    """Decode stored values into float32 ``out``: ``stored * scale + offset`` (see :func:`encoding`); returns ``out``.

    ``stored`` is float32 (copied), float32 widened from float16 (copied) or integers: cast into
    ``out`` exactly, then scaled there in place (two passes over ``out`` measured faster than
    numpy's mixed-type multiply, ~14 against ~17 us per 256x256 slice; the same float32 product).

    Examples
    --------
    >>> decode_into(np.array([0, 128, 255], np.uint8), 1 / 255, 0.0, np.empty(3, np.float32)).round(3)
    array([0.   , 0.502, 1.   ], dtype=float32)
    """
    out[...] = stored
    if stored.dtype.kind in "iu":
        if scale != 1.0:
            np.multiply(out, np.float32(scale), out=out)
        if offset != 0.0:
            np.add(out, np.float32(offset), out=out)
    return out


_F16_EXP_MASK = np.uint32(0x7C00 << 13)


def float16_to_float32(stored: np.ndarray) -> np.ndarray:
    """Widen float16 to float32 exactly, several times faster than ``ndarray.astype``.

    numpy's own float16 conversion is scalar code (measured ~200 us per 256x256 slice, the
    slowest step of a read); this does it with whole-array integer operations: move the 15
    exponent+mantissa bits into float32 position and multiply by 2**112 to re-bias the
    exponent (which also handles subnormals), then restore inf/NaN and the sign.

    Examples
    --------
    >>> x = np.array([0.0, -0.0, 1.5, -2.0, 6e-8, 65504.0, np.inf, -np.inf], np.float16)
    >>> np.array_equal(float16_to_float32(x), x.astype(np.float32))
    True
    """
    bits = np.ascontiguousarray(stored).view(np.uint16)
    word = bits.astype(np.uint32)
    sign = word & np.uint32(0x8000)
    word &= np.uint32(0x7FFF)
    special = word >= np.uint32(0x7C00)  # inf or NaN: exponent all ones
    word <<= np.uint32(13)
    out = word.view(np.float32)
    out *= np.float32(2.0**112)
    if special.any():
        word[special] |= np.uint32(0x7F800000)
    sign <<= np.uint32(16)
    word |= sign
    return out


def catalog_entry(
    key: str, attrs: Mapping[str, Any], *, shape: Sequence[int], dtype: npt.DTypeLike, scale: float, offset: float, has_mask: bool
) -> dict[str, Any]:
    """One volume's line of ``/catalog``: its group attributes (JSON-able) and image facts.

    Examples
    --------
    >>> e = catalog_entry("k", {"affine": np.eye(2), "label": np.int64(3)}, shape=(2, 4, 4),
    ...                   dtype="uint8", scale=0.5, offset=0.0, has_mask=False)
    >>> e["attrs"]["affine"], e["attrs"]["label"], e["shape"]
    ([[1.0, 0.0], [0.0, 1.0]], 3, [2, 4, 4])
    """

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, bytes):
            return value.decode()
        return value

    return {
        "key": key,
        "shape": [int(n) for n in shape],
        "dtype": str(np.dtype(dtype).name),
        "scale": float(scale),
        "offset": float(offset),
        "has_mask": bool(has_mask),
        "attrs": {name: plain(value) for name, value in attrs.items() if name != "crc32"},
    }


def entry_of_group(key: str, group: h5py.Group) -> dict[str, Any]:
    """:func:`catalog_entry` read from a volume group (the slow path: every attribute)."""
    image = group["image"]
    image_attrs = dict(image.attrs.items())
    return catalog_entry(
        key,
        dict(group.attrs.items()),
        shape=image.shape,
        dtype=image.dtype,
        scale=float(image_attrs.get("scale", 1.0)),
        offset=float(image_attrs.get("offset", 0.0)),
        has_mask="mask" in group,
    )


def read_catalog(f: h5py.File) -> list[dict[str, Any]] | None:
    """The entries of ``/catalog``, or None when the file has none or it disagrees with /volumes."""
    if "catalog" not in f:
        return None
    try:
        entries = json.loads(f["catalog"][()])
    except (ValueError, TypeError, OSError, RecursionError):
        return None  # the volume groups' own attributes are read instead
    n_volumes = f.attrs.get("n_volumes", -1)
    if not isinstance(entries, list) or not isinstance(n_volumes, (int, np.integer)) or int(n_volumes) != len(entries):
        return None
    return entries


def volume_attrs(
    volume: Volume,
    *,
    source_hash: str,
    crc: int,
    channels: Any = None,
    label: int | None = None,
    what: str = "volume",
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The attributes of a volume's group (docs/hdf5-schema.md), except ``complete``.

    Every text is checked (:func:`check_texts`) and every JSON attribute made here, before a
    byte is written: a :class:`~medload.errors.ConfigError` names ``what`` and the field.
    ``meta``: what to store of ``volume.meta`` (default all of it).

    Examples
    --------
    >>> import numpy as np
    >>> from medload.volume import Volume
    >>> attrs = volume_attrs(Volume(np.zeros((2, 3, 4)), np.eye(4), modality="CT"), source_hash="h", crc=7)
    >>> attrs["layout"], attrs["modality"], attrs["patient_key"], int(attrs["crc32"])
    ('ZYX', 'CT', 'none', 7)
    """
    meta = volume.meta if meta is None else meta
    remedy = "record plain numbers, strings, lists and dicts (float(x), str(x), list(s)); NaN and infinity are not JSON."
    attrs = {
        "affine": np.asarray(volume.affine, dtype=np.float64),
        "spacing": np.asarray(volume.spacing, dtype=np.float64),
        "modality": volume.modality,
        "layout": "ZCYX" if volume.array.ndim == 4 else "ZYX",
        "source": str(meta.get("source", "unknown")),
        "source_key": str(meta.get("source_key", "")),
        "patient_key": str(meta.get("patient_key") or "none"),
        "study_key": str(meta.get("study_key", "")),
        "series_key": str(meta.get("series_key", "")),
        "intensity": str(meta.get("intensity", "")),
        "history": canonical_json(
            [[name, params] for name, params in volume.history], field=f"{what}: its history", remedy=remedy
        ),
        "source_hash": source_hash,
        "meta": canonical_json({k: v for k, v in meta.items() if k not in META_ATTRS}, field=f"{what}: its meta", remedy=remedy),
        "crc32": np.uint32(crc),
    }
    if channels is not None:
        attrs["channels"] = canonical_json(list(channels), field=f"{what}: its channels", remedy=remedy)
    if label is not None:
        attrs["label"] = np.int64(label)
    check_texts(attrs, what)
    return attrs


def write_new_attrs(obj: Any, attrs: Mapping[str, Any]) -> None:
    """Create attributes on an HDF5 object that has none of these names yet, stored as ``obj.attrs[name] = value`` stores them.

    h5py's ``attrs[name] = value`` costs about 0.15 ms an attribute here (an existence check, the
    type guessed in Python, two type objects built); a volume has about 18, so for folders of
    small images these were the writer's largest cost. Here: one HDF5 type per value, no
    existence check (the object is new), h5py's own type mapping (``py_create``): the same
    stored types and values (tests/test_store_attrs.py compares them). str, bool, numbers and
    numeric arrays go this way; anything else through ``obj.attrs``.

    Examples
    --------
    >>> import tempfile, h5py, numpy as np
    >>> with h5py.File(tempfile.mkdtemp() + "/a.h5", "w") as f:
    ...     write_new_attrs(f.create_group("g"), {"name": "CT", "affine": np.eye(4), "complete": True})
    ...     f["g"].attrs["name"], f["g"].attrs["affine"].shape, bool(f["g"].attrs["complete"])
    ('CT', (4, 4), True)
    """
    h5py = load_h5py()
    from h5py import h5a, h5s, h5t

    for name, value in attrs.items():
        if isinstance(value, str):
            data = np.array(value, dtype=h5py.string_dtype())
        else:
            data = np.asarray(value, order="C")  # HDF5 writes C order (an affine may come transposed)
            if data.dtype.kind not in "biuf":
                obj.attrs[name] = value
                continue
        attr = h5a.create(obj.id, name.encode(), h5t.py_create(data.dtype, logical=True), h5s.create_simple(data.shape))
        try:
            attr.write(data)
        finally:
            attr.close()
