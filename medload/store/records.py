"""What a store knows about its volumes, read from each shard's attributes without touching pixels.

:class:`VolumeRecord` is one volume's metadata; :func:`records_of` reads a shard's records
(from its ``/catalog`` when present, else from each complete volume group), and
:func:`open_file` opens a shard for reading with errors that say what the file is instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import StoreError
from medload.problems import Problem, problems_json, read_problems
from medload.store import _format as fmt
from medload.store.layout import hdf5_says_truncated, not_hdf5_head

if TYPE_CHECKING:
    import h5py

__all__ = ["VolumeRecord", "open_file", "records_of"]


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
    with open_file(h5py, path) as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        schema = attrs.get("medload_schema")
        if schema is None:
            found = ", ".join(list(f.keys())[:5]) or "nothing"
            raise StoreError(
                f"{path} is an HDF5 file but not a medload store: no 'medload_schema' attribute "
                f"(top level holds: {found}). Write stores with medload.Store.create or medload convert."
            )
        if int(schema) > fmt.SCHEMA_VERSION:
            raise StoreError(
                f"{path} is a medload store of schema {int(schema)}, newer than this medload "
                f"(reads schema {fmt.SCHEMA_VERSION}); upgrade medload (pip install -U medload)."
            )
        if int(schema) < 1 or "volumes" not in f:
            raise StoreError(f"{path}: medload_schema={schema!r} but no /volumes group; the file is damaged, write it again.")
        try:
            # /catalog: one dataset instead of every group's attributes (measured ~5 ms per
            # volume on a loaded machine: 50 s to open a 10,000-volume store without it).
            entries = fmt.read_catalog(f)
            if entries is None:
                entries = [
                    fmt.entry_of_group(key, group) for key, group in f["volumes"].items() if group.attrs.get("complete", False)
                ]
            records = [_record(entry, str(path)) for entry in entries]
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise StoreError(
                f"{path}: a volume's metadata could not be read ({exc}); the file is damaged, write it again."
            ) from exc
    return attrs, records


def _record(entry: dict[str, Any], shard: str) -> VolumeRecord:
    a = entry["attrs"]
    channels = json.loads(a["channels"]) if "channels" in a else None
    meta = json.loads(a.get("meta", "{}"))
    if "problems" in meta:
        meta["problems"] = problems_json(meta["problems"])  # older stores: plain sentences
    return VolumeRecord(
        key=entry["key"],
        shard=shard,
        shape=tuple(int(s) for s in entry["shape"]),
        dtype=entry["dtype"],
        affine=np.asarray(a["affine"], dtype=np.float64),
        spacing=_spacing3(a["spacing"]),
        modality=str(a.get("modality", "unknown")),
        patient_key=str(a.get("patient_key", "none")),
        study_key=str(a.get("study_key", "")),
        series_key=str(a.get("series_key", "")),
        source_key=str(a.get("source_key", "")),
        source=str(a.get("source", "")),
        source_hash=str(a.get("source_hash", "")),
        label=int(a["label"]) if "label" in a else None,
        history=tuple((str(n), dict(p)) for n, p in json.loads(a.get("history", "[]"))),
        intensity=str(a.get("intensity", "")),
        channels=tuple(channels) if channels is not None else None,
        has_mask=bool(entry["has_mask"]),
        meta=meta,
        scale=float(entry["scale"]),
        offset=float(entry["offset"]),
    )


def _spacing3(values: Any) -> tuple[float, float, float]:
    z, y, x = (float(s) for s in values)
    return z, y, x
