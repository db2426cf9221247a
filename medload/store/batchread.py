"""The loop of :meth:`StoreReader.read_batch`: a batch's slices into the rows of one array.

Kept apart from ``reader.py`` (one job: which way each row of a batch is read). The rows of
volumes whose chunks are LZ4 blocks in a mapped file (:class:`~medload.store.chunks.FileMap`,
the default store) are decoded for the whole batch at once, straight from the page cache into
their rows; every other row is read as before, runs of consecutive slices of one volume in one
call (direct chunk reads, else h5py), and so is any row the mapped decoding leaves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from medload.store.chunks import ChunkTable, FileMap
    from medload.store.reader import StoreReader
    from medload.store.records import VolumeRecord

__all__ = ["fill_rows"]

#: Per volume of a batch: its record, slice shape, and the chunk table to read its rows with (or None).
Plan = tuple["VolumeRecord", tuple[int, ...], "ChunkTable | None"]
#: The rows of a batch whose chunks lie in one mapped file: chunk offsets, chunk sizes, row numbers.
_Rows = tuple[list[int], list[int], list[int]]


def fill_rows(
    reader: StoreReader, vols: np.ndarray, where: np.ndarray, out: np.ndarray, *, raw: bool, name: str = "image"
) -> np.ndarray:
    """Slice ``where[i]`` of volume ``vols[i]``'s ``name`` (image or mask) into ``out[i]`` (checked
    by the caller: same lengths, C-contiguous, not empty).

    Raises what ``read_batch`` documents: a slice outside its volume (StoreError, naming the
    run), a volume of another slice size (ConfigError), a damaged chunk (StoreError), a volume
    without a mask (StoreError).
    """
    n = int(vols.size)
    vol_list, slice_list = vols.tolist(), where.tolist()
    row_shape = out.shape[1:]
    row_bytes = out.reshape(n, -1).view(np.uint8)  # each row's bytes
    cache = reader._batch_plans
    plans: dict[int, Plan] = {}
    for volume in set(vol_list):  # per volume of the batch, once (and once per process and out type)
        key = (volume, name, raw, out.dtype, row_shape, reader._direct)
        plan = cache.get(key)
        if plan is None:
            plan = cache[key] = _plan(reader, volume, row_shape, out.dtype, raw=raw, name=name)
        plans[volume] = plan
    # Rows of volumes whose chunks can be decoded from a mapped file, grouped by file; the rest
    # read by runs. A slice outside its volume: every run checked as before, naming the run.
    by_file: dict[FileMap, _Rows] = {}
    per_volume: dict[int, tuple[int, _Rows | None, list[tuple[int, int]]]] = {}
    for volume, (rec, _, table) in plans.items():
        if table is not None and table.file_map is not None:
            per_volume[volume] = (rec.n_slices, by_file.setdefault(table.file_map, ([], [], [])), table._where)
        else:
            per_volume[volume] = (rec.n_slices, None, [])
    rest: list[int] = []
    for i, (volume, z) in enumerate(zip(vol_list, slice_list)):
        n_slices, group, chunk_at = per_volume[volume]
        if not 0 <= z < n_slices:
            for a, b in _runs(range(n), vol_list, slice_list):
                reader._range(plans[vol_list[a]][0], slice_list[a], slice_list[a] + b - a)
        if group is None:
            rest.append(i)
            continue
        offset, size = chunk_at[z]
        group[0].append(offset)
        group[1].append(size)
        group[2].append(i)
    for file_map, (offsets, sizes, rows) in by_file.items():
        if not rows:
            continue
        left = file_map.decode_rows(offsets, sizes, rows, row_bytes)
        reader._read_paths["direct"] += len(rows) - len(left)
        if reader.verify_slices:
            undone = set(left)
            for i in rows:
                if i not in undone:
                    reader._checksums.check_slices(plans[vol_list[i]][0], name, slice_list[i], row_bytes[i : i + 1])
        rest.extend(left)
    if rest:
        _read_runs(reader, _runs(sorted(rest), vol_list, slice_list), plans, vol_list, slice_list, out, raw=raw, name=name)
    return out


def _runs(rows: Any, vol_list: list[int], slice_list: list[int]) -> list[tuple[int, int]]:
    """Runs ``(a, b)`` of ``rows`` (ascending): rows side by side holding consecutive slices of one
    volume, in file order (volume, then slice) whatever their order in the batch."""
    runs: list[list[int]] = []
    for i in rows:
        if runs and runs[-1][1] == i and vol_list[i] == vol_list[i - 1] and slice_list[i] == slice_list[i - 1] + 1:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return sorted(((a, b) for a, b in runs), key=lambda run: (vol_list[run[0]], slice_list[run[0]]))


def _read_runs(
    reader: StoreReader,
    runs: list[tuple[int, int]],
    plans: dict[int, Plan],
    vol_list: list[int],
    slice_list: list[int],
    out: np.ndarray,
    *,
    raw: bool,
    name: str,
) -> None:
    """Each run in one call: direct chunk reads where the volume's table serves it, else h5py."""
    row_shape = out.shape[1:]
    row_bytes = out.reshape(len(out), -1).view(np.uint8)
    for a, b in runs:
        volume, start, stop = vol_list[a], slice_list[a], slice_list[a] + b - a
        rec, shape, table = plans[volume]
        if table is not None:
            if b - a == 1 and table.read_one_into(start, row_bytes[a]):
                reader._read_paths["direct"] += 1
                if reader.verify_slices:
                    reader._checksums.check_slices(rec, name, start, row_bytes[a : a + 1])
                continue
            rows = out[a:b] if shape == row_shape else out[a:b].reshape(b - a, *shape)
            if b - a > 1 and table.read_into(start, stop, rows):
                reader._read_paths["direct"] += 1
                if reader.verify_slices:
                    reader._checksums.check_slices(rec, name, start, rows)
                continue
        if name == "image":
            reader._read_image(volume, rec, start, stop, out[a:b].reshape(b - a, *shape), raw=raw)
        else:  # cast to out's integer type on assignment; checked against the checksums as read
            out[a:b].reshape(b - a, *shape)[...] = reader._read_stored(volume, "mask", start, stop)


def _plan(reader: StoreReader, volume: int, row_shape: tuple[int, ...], dtype: np.dtype, *, raw: bool, name: str) -> Plan:
    """Volume ``volume``'s record, slice shape and chunk table where rows can be filled straight
    from the file (stored values wanted, in ``out``'s dtype); refuses another slice size."""
    rec = reader.record(volume)
    if name == "mask" and not rec.has_mask:
        raise StoreError(f"{rec.shard}: volume {rec.key} has no mask; check VolumeRecord.has_mask first.")
    if (volume, name) not in reader._sized:
        reader._check_size(volume, rec, name)
    shape = rec.slice_shape if name == "image" else tuple(rec.shape[-2:])  # a mask is (Z, H, W)
    if math.prod(shape) != math.prod(row_shape):
        raise ConfigError(
            f"read_batch: volume {rec.key} has {name} slices of shape {shape}, out rows {row_shape}; "
            "a batch holds slices of one size."
        )
    as_stored = raw or np.dtype(rec.dtype) == np.float32
    table = reader._table(volume, name) if reader._direct and as_stored else None
    if table is not None and table.dtype != dtype:
        table = None  # _read_image says what out must be; a mask is cast as it is assigned
    return rec, shape, table
