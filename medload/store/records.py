"""What a store knows about its volumes, read from each shard's attributes without touching pixels.

:class:`VolumeRecord` is one volume's metadata; :func:`records_of` reads a shard's records
(from its ``/catalog`` when present, else from each complete volume group), and
:func:`open_file` opens a shard for reading with errors that say what the file is instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import MedloadError, StoreError
from medload.geometry import MAX_ORIGIN_MM, MAX_SPACING_MM, MIN_SPACING_MM, grid_fault, spacing_in_bounds, voxel_sizes
from medload.problems import Problem, problems_json, read_problems
from medload.store import _format as fmt
from medload.store.layout import hdf5_says_truncated, not_hdf5_head

if TYPE_CHECKING:
    import h5py

__all__ = ["VolumeRecord", "open_file", "records_of", "read_shard", "check_dataset", "class_names", "MAX_CLASSES"]


@dataclass(frozen=True)
class VolumeRecord:
    """What a store knows about one volume, read without touching its pixels.

    ``shape`` and ``dtype`` are those of the stored image dataset: ``(Z, H, W)`` or
    ``(Z, C, H, W)``; ``n_slices`` is ``shape[0]``. Decoded value = stored * ``scale`` + ``offset``.
    ``meta["problems"]`` holds problem records (``{"kind", "message"}``) whatever the store's
    age: the plain sentences of stores written before kinds existed read as kind ``"unclassified"``.
    """

    key: str
    shard: str
    shape: tuple[int, ...]
    dtype: str
    affine: np.ndarray = field(repr=False)
    spacing: tuple[float, float, float]
    modality: str
    patient_key: str
    study_key: str
    series_key: str
    source_key: str
    source: str
    source_hash: str
    label: int | None
    history: tuple[tuple[str, dict[str, Any]], ...] = field(repr=False)
    intensity: str
    channels: tuple[str, ...] | None
    has_mask: bool
    meta: dict[str, Any] = field(repr=False)
    scale: float = 1.0
    offset: float = 0.0

    @property
    def problems(self) -> tuple[Problem, ...]:
        """What the reader found and did when this volume was converted; decide by ``kind``."""
        return read_problems(self.meta.get("problems"))

    @property
    def n_slices(self) -> int:
        """Number of slices (axis 0 of the stored image)."""
        return self.shape[0]

    @property
    def slice_shape(self) -> tuple[int, ...]:
        """Shape of one decoded slice: ``(H, W)`` or ``(C, H, W)``."""
        return self.shape[1:]

    def volume_meta(self) -> dict[str, Any]:
        """The ``meta`` of the :class:`~medload.Volume` this record was written from (its own attributes joined back)."""
        meta = dict(self.meta)
        for name in fmt.META_ATTRS:
            if name == "channels":
                continue  # a list in meta, set below
            value = getattr(self, name)
            if value:
                meta[name] = value
        if self.channels is not None:
            meta["channels"] = list(self.channels)
        return meta


def open_file(h5py: ModuleType, path: Path) -> h5py.File:
    try:
        # Default file locking (a shared lock), so that the same file can also be opened with
        # plain h5py in this process; HDF5 refuses to open one file with two locking modes.
        # No chunk cache: a slice is one chunk, read once; a cache would only grow memory.
        return h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as exc:
        head = not_hdf5_head(path)
        if head is not None:
            found = f"not an HDF5 file (it starts with {head!r})"
        elif hdf5_says_truncated(exc):
            found = f"a truncated HDF5 file ({path.stat().st_size} bytes; was it copied or written completely?)"
        else:
            found = f"a file HDF5 cannot open ({exc})"
        raise StoreError(f"{path} is {found}; expected a medload HDF5 store (schema {fmt.SCHEMA_VERSION}).") from exc


def records_of(h5py: ModuleType, path: Path) -> tuple[dict[str, Any], list[VolumeRecord]]:
    """A shard's root attributes and the records of its complete volumes, each checked (:func:`_record`).

    Raises :class:`~medload.StoreError` naming the file (and volume) when anything read is not
    what medload writes: a store made by someone else or damaged is refused here, once, and
    never read as a wrong image later.
    """
    attrs, _, records = read_shard(h5py, path)
    return attrs, records


def read_shard(h5py: ModuleType, path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[VolumeRecord]]:
    """:func:`records_of` with the catalog entries the records were made from (the writer keeps those)."""
    with open_file(h5py, path) as f:
        try:
            attrs, entries = _read_entries(f, path)
        except (KeyError, OSError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
            # RuntimeError: h5py's for HDF5's integrity checks of damaged metadata (and RecursionError's base).
            raise StoreError(
                f"{path}: its metadata could not be read ({type(exc).__name__}: {exc}); the file is damaged, write it again."
            ) from exc
    records = [_record(entry, str(path)) for entry in entries]
    seen: set[str] = set()
    for rec in records:
        if rec.key in seen:
            raise StoreError(f"{path}: volume {rec.key!r} is listed twice in its /catalog; the file is damaged, write it again.")
        seen.add(rec.key)
    # Every slice of a complete volume is stored (at least a byte of it): a catalog listing more
    # slices than the file has bytes describes datasets that were never written, and would size
    # the reader's index (24 bytes a slice) from the file.
    n_slices, size = sum(rec.n_slices for rec in records), path.stat().st_size
    if n_slices > size:
        raise StoreError(
            f"{path}: its volumes list {n_slices:,} slices, more than its {size:,} bytes can hold; "
            "the file is damaged or was changed after it was written. Convert the sources again."
        )
    return attrs, entries, records


def _read_entries(f: h5py.File, path: Path) -> tuple[dict[str, Any], list[Any]]:
    """Root attributes and the complete volumes' catalog entries of an open shard (schema checked)."""
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    schema = attrs.get("medload_schema")
    if schema is None:
        found = ", ".join(list(f.keys())[:5]) or "nothing"
        raise StoreError(
            f"{path} is an HDF5 file but not a medload store: no 'medload_schema' attribute "
            f"(top level holds: {found}). Write stores with medload.Store.create or medload convert."
        )
    version = schema_version(schema, path)
    if version > fmt.SCHEMA_VERSION:
        raise StoreError(
            f"{path} is a medload store of schema {version}, newer than this medload "
            f"(reads schema {fmt.SCHEMA_VERSION}); upgrade medload (pip install -U medload)."
        )
    if version < 1 or "volumes" not in f:
        raise StoreError(f"{path}: medload_schema={schema!r} but no /volumes group; the file is damaged, write it again.")
    # /catalog: one dataset instead of every group's attributes (measured ~5 ms per
    # volume on a loaded machine: 50 s to open a 10,000-volume store without it).
    entries = fmt.read_catalog(f)
    if entries is None:
        entries = [fmt.entry_of_group(key, group) for key, group in f["volumes"].items() if group.attrs.get("complete", False)]
    return attrs, entries


def schema_version(value: Any, path: Path) -> int:
    """The ``medload_schema`` attribute as an int, or a StoreError naming the file.

    Examples
    --------
    >>> schema_version(np.int64(1), Path("s.h5"))
    1
    >>> schema_version("x", Path("s.h5"))
    Traceback (most recent call last):
    medload.errors.StoreError: s.h5: medload_schema is 'x', expected a whole number (1); the file is damaged or not a medload store.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise StoreError(
        f"{path}: medload_schema is {value!r:.40}, expected a whole number ({fmt.SCHEMA_VERSION}); the file is damaged or not a medload store."
    )


#: The largest class number a store's ``label`` may hold: the index stores it as int64.
_MAX_LABEL = 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _Bad(Exception):
    """One field of a volume's metadata is not what medload writes (the message says which)."""


def _json(text: Any, what: str) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        raise _Bad(f"{what} is a {type(text).__name__}, expected JSON text")
    try:
        return json.loads(text)
    except RecursionError:
        raise _Bad(f"{what} is JSON nested too deeply") from None
    except ValueError as exc:
        raise _Bad(f"{what} is not JSON ({exc})") from None


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"{what} is {value!r:.40}, expected a whole number in [{low}, {high}]")
    return value


def _finite(values: Any, what: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise _Bad(f"{what} is {values!r:.60}, expected numbers") from None
    if array.shape != shape or not np.isfinite(array).all():
        raise _Bad(
            f"{what} is {values!r:.60}, expected {'x'.join(map(str, shape)) + ' finite numbers' if shape else 'a finite number'}"
        )
    return array


def _grid_sizes(sizes: np.ndarray, what: str) -> np.ndarray:
    if not spacing_in_bounds(sizes):
        raise _Bad(f"{what} gives voxel sizes {sizes.tolist()} mm, expected {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm each")
    return sizes


def _grid(affine: np.ndarray) -> np.ndarray:
    """``affine`` when it is a voxel grid a reader could have made (:func:`medload.geometry.grid_fault`), else _Bad.

    Previews and datasets divide by it; its last row is the store's own check (a reader's
    Volume always has [0, 0, 0, 1]).
    """
    fault = grid_fault(affine)
    if fault == "spacing":
        _grid_sizes(voxel_sizes(affine), "affine")
    if fault == "origin" or np.any(affine[3] != (0.0, 0.0, 0.0, 1.0)):
        raise _Bad(
            f"affine has last row {affine[3].tolist()} and origin {affine[:3, 3].tolist()} mm, expected [0, 0, 0, 1] and at most {MAX_ORIGIN_MM:g} mm"
        )
    if fault == "axes":
        raise _Bad("affine has (nearly) parallel axes")
    return affine


def _json_fields(a: dict[str, Any], shape: tuple[int, ...]) -> tuple[Any, dict[str, Any], list[Any]]:
    """A volume's JSON attributes (channels, meta, history), each checked for what the writer writes."""
    channels = _json(a["channels"], "channels") if "channels" in a else None
    if channels is not None and (
        not isinstance(channels, list)
        or not all(isinstance(c, str) for c in channels)
        or len(shape) != 4
        or len(channels) != shape[1]
    ):
        raise _Bad(f"channels is {str(channels)[:60]!r}, expected one name per channel of shape {shape}")
    meta = _json(a.get("meta", "{}"), "meta")
    if not isinstance(meta, dict):
        raise _Bad(f"meta is a {type(meta).__name__}, expected a JSON object")
    if "problems" in meta:
        try:
            meta["problems"] = problems_json(meta["problems"])  # older stores: plain sentences
        except (MedloadError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise _Bad(f"meta['problems'] is not a list of problems ({exc})") from None
    history = _json(a.get("history", "[]"), "history")
    if not isinstance(history, list) or not all(
        isinstance(step, list) and len(step) == 2 and isinstance(step[0], str) and isinstance(step[1], dict) for step in history
    ):
        raise _Bad(f"history is {str(history)[:60]!r}, expected a list of [name, parameters] pairs")
    return channels, meta, history


def _record(entry: Any, shard: str) -> VolumeRecord:
    """One volume's record from its catalog entry, every field checked against what the writer writes.

    The checks run once per volume when a store opens (no per-slice cost): a shape, dtype,
    scale or offset that is not the writer's would otherwise size allocations from the file,
    read other bytes than the stored slice, or decode values to NaN and infinity.
    """
    key = entry.get("key") if isinstance(entry, dict) else None
    try:
        if not isinstance(entry, dict) or not isinstance(entry.get("attrs"), dict):
            raise _Bad(f"the catalog entry is {str(entry)[:60]!r}, expected an object with 'key', 'shape', 'dtype', 'attrs'")
        if (
            not isinstance(key, str)
            or not key
            or "/" in key
            or key in (".", "..")
            or any(ord(c) < 32 or ord(c) == 127 for c in key)
        ):
            raise _Bad(f"the key {key!r:.60} is not a volume name medload writes")
        a = entry["attrs"]
        shape_in = entry.get("shape")
        if not isinstance(shape_in, list) or len(shape_in) not in (3, 4):
            raise _Bad(f"shape is {shape_in!r:.60}, expected (Z, H, W) or (Z, C, H, W)")
        shape = tuple(_whole(n, "shape", 1, 2**31 - 1) for n in shape_in)
        dtype = entry.get("dtype")
        if dtype not in fmt.DTYPES:
            raise _Bad(f"dtype is {dtype!r:.40}, expected one of {fmt.DTYPES}")
        scale, offset = (float(_finite(entry.get(n), n, ())) for n in ("scale", "offset"))
        # Decoded values are stored * scale + offset in float32: both must keep every stored value finite.
        peak = {"uint8": 255, "int16": 32768}.get(dtype, 1)
        if scale <= 0 or abs(offset) + scale * peak > _FLOAT32_MAX:
            raise _Bad(
                f"scale {scale!r} and offset {offset!r} do not decode {dtype} values to finite float32 (scale must be > 0)"
            )
        has_mask = entry.get("has_mask")
        if not isinstance(has_mask, bool):
            raise _Bad(f"has_mask is {has_mask!r:.40}, expected true or false")
        channels, meta, history = _json_fields(a, shape)
        label = _whole(a["label"], "label", 0, _MAX_LABEL) if "label" in a else None
        return VolumeRecord(
            key=key,
            shard=shard,
            shape=shape,
            dtype=dtype,
            affine=_grid(_finite(a.get("affine"), "affine", (4, 4))),
            spacing=_spacing3(_grid_sizes(_finite(a.get("spacing"), "spacing", (3,)), "spacing")),
            modality=str(a.get("modality", "unknown")),
            patient_key=str(a.get("patient_key", "none")),
            study_key=str(a.get("study_key", "")),
            series_key=str(a.get("series_key", "")),
            source_key=str(a.get("source_key", "")),
            source=str(a.get("source", "")),
            source_hash=str(a.get("source_hash", "")),
            label=label,
            history=tuple((name, params) for name, params in history),
            intensity=str(a.get("intensity", "")),
            channels=tuple(channels) if channels is not None else None,
            has_mask=has_mask,
            meta=meta,
            scale=scale,
            offset=offset,
        )
    except _Bad as exc:
        name = f"volume {key!r:.80}" if isinstance(key, str) else "a volume"
        raise StoreError(
            f"{shard}: {name}: {exc}; the file is damaged or was not written by medload. Convert the sources again."
        ) from None


def check_dataset(ds: Any, rec: VolumeRecord, name: str, filename: str) -> None:
    """Refuse an image or mask dataset that is not what ``rec`` (the store's catalog) says it is.

    Once per dataset and process, when it is first opened: every read after it (the chunk
    table's direct reads included) trusts the record's shape and dtype for the arrays it
    allocates and fills, so a dataset of another shape, dtype or kind (a file made or changed
    by someone else, a damaged catalog) must never reach them.
    """
    h5py = fmt.load_h5py()
    if not isinstance(ds, h5py.Dataset):
        raise StoreError(
            f"{rec.shard}: volume {rec.key}'s {name} is a {type(ds).__name__}, not a dataset; the file is damaged, write it again."
        )
    elsewhere = (
        "external storage"
        if ds.external
        else "a virtual dataset"
        if ds.is_virtual
        else f"a link to {ds.file.filename}"
        if ds.file.filename != filename
        else None
    )
    if elsewhere is not None:
        # Its values would be another file's bytes (any file the reader may open), not the store's.
        raise StoreError(
            f"{rec.shard}: volume {rec.key}'s {name} keeps its values in another file ({elsewhere}), which "
            "medload never writes; refused. Convert the sources again."
        )
    shape, dtype = tuple(ds.shape), ds.dtype
    if name == "image":
        want = f"{np.dtype(rec.dtype)} {rec.shape}"
        ok = shape == rec.shape and dtype == np.dtype(rec.dtype)
    else:  # a mask: integer labels on the spatial grid (Z, H, W)
        spatial = (rec.shape[0], *rec.shape[-2:])
        want = f"native integers {spatial}"
        ok = shape == spatial and dtype.kind in "iu" and dtype.isnative
    if not ok:
        raise StoreError(
            f"{rec.shard}: volume {rec.key}'s {name} is {dtype} {shape}, its catalog says {want}; "
            "the file is damaged or was changed after it was written. Convert the sources again."
        )
    # Every chunk of a complete volume was written; HDF5 reads one never written as zeros.
    if ds.chunks is not None:
        expected = math.prod(-(-n // c) for n, c in zip(shape, ds.chunks))
        stored = ds.id.get_num_chunks()
    else:
        expected, stored = ds.nbytes, ds.id.get_storage_size()
    if stored < expected:
        unit = "chunks" if ds.chunks is not None else "bytes"
        raise StoreError(
            f"{rec.shard}: volume {rec.key}'s {name} has {stored} of its {expected} {unit} stored (the rest would read "
            "as zeros); the file was not written completely or was changed after. Convert the sources again."
        )


#: The longest class list a store's labels may make: ``classes[i]`` names label ``i``, so a
#: label of 2**62 with a name would ask for a list of 2**62 names.
MAX_CLASSES = 1_000_000


def class_names(records: Any, where: Any) -> list[str] | None:
    """Class names by label from the records' ``meta["class_name"]`` (``None`` if no label has a name).

    Labels without a name, between named ones, are listed as their number. Raises
    :class:`~medload.StoreError` when one label has two names, or a named label is beyond
    :data:`MAX_CLASSES`.

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> class_names([R(key="a", label=2, meta={"class_name": "tumor"}), R(key="b", label=0, meta={})], "s.h5")
    ['0', '1', 'tumor']
    """
    names: dict[int, str] = {}
    for rec in records:
        label, name = getattr(rec, "label", None), (getattr(rec, "meta", None) or {}).get("class_name")
        if label is None or int(label) < 0 or name is None:
            continue
        if int(label) >= MAX_CLASSES:
            raise StoreError(
                f"{where}: volume {rec.key!r} has label {label} named {str(name)[:40]!r}; class names are listed by "
                f"label (0, 1, ...), at most {MAX_CLASSES:,} of them. Convert again with labels 0..n-1."
            )
        if names.setdefault(int(label), str(name)) != str(name):
            raise StoreError(
                f"{where}: label {label} is named {names[int(label)]!r} in one volume and {name!r} in "
                f"volume {rec.key!r}; the store mixes conversions with different class lists. Convert again into one store."
            )
    return [names.get(i, str(i)) for i in range(max(names) + 1)] if names else None


def _spacing3(values: Any) -> tuple[float, float, float]:
    z, y, x = (float(s) for s in values)
    return z, y, x
