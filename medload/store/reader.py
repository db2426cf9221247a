"""``open``: read a store (one file or a folder of shards) lazily, from any number of processes.

Opening reads only attributes (one pass over the volume groups of each shard) and closes the
files again; pixels are read on demand by :meth:`StoreReader.read_slices`, which keeps the
h5py ``Dataset`` of each volume it has touched. The reader pickles as its path and metadata;
h5py handles are opened per process and dropped when the process id changes (after ``fork``),
so a reader made in a parent works in DataLoader workers started by fork or spawn.

Slices stored one per chunk are read without HDF5's per-call cost where possible
(:mod:`medload.store.chunks`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import ConfigError, StoreError
from medload.limits import check_volume_size
from medload.store import _format as fmt
from medload.store.chunks import ChunkTable, scratch_array
from medload.store.layout import store_files
from medload.store.records import VolumeRecord, check_dataset, class_names, open_file, records_of
from medload.volume import Volume

if TYPE_CHECKING:
    import h5py

__all__ = ["open", "StoreReader", "VolumeRecord"]


class StoreReader:
    """Read-only view of a medload store: one file or a folder of shard files.

    Use :func:`open`. Picklable; safe to use from many processes at once.

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> path = tempfile.mkdtemp() + "/s.h5"
    >>> with medload.Store.create(path, dtype="float32") as store:
    ...     _ = store.add(medload.Volume(np.arange(8.0).reshape(2, 2, 2), np.eye(4), meta={"patient_key": "p1"}))
    >>> reader = medload.open(path)
    >>> len(reader), reader.patient_keys
    (2, ['p1'])
    >>> reader.read_slices(0, 1, 2)
    array([[[4., 5.],
            [6., 7.]]], dtype=float32)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        h5py = fmt.load_h5py()
        shards = store_files(self.path)
        records: list[VolumeRecord] = []
        attrs: dict[str, Any] | None = None
        for shard in shards:
            shard_attrs, shard_records = records_of(h5py, shard)
            if attrs is None:
                attrs = shard_attrs
            elif shard_attrs.get("pipeline_hash") != attrs.get("pipeline_hash"):
                raise StoreError(
                    f"{self.path}: shard {shard.name} was written with another pipeline than {shards[0].name} "
                    f"({shard_attrs.get('pipeline')} vs {attrs.get('pipeline')}); a folder store holds one "
                    "pipeline's output. Move or delete the stale shards and convert again."
                )
            elif shard_attrs.get("phi_key_fingerprint") != attrs.get("phi_key_fingerprint"):
                # One patient would have two keys: patient-level splits would put it on both sides.
                raise StoreError(
                    f"{self.path}: shard {shard.name} was written with pseudonym key "
                    f"{shard_attrs.get('phi_key_fingerprint') or '(none recorded)'}, {shards[0].name} with "
                    f"{attrs.get('phi_key_fingerprint') or '(none recorded)'}; their patient keys do not "
                    "match. Convert every source again into a new folder with one key."
                )
            records.extend(shard_records)
        self.shards = tuple(str(s) for s in shards)
        self._attrs = attrs or {}
        self._records = tuple(records)  # read-only: `volumes` hands it out without a copy
        self._direct = True
        self._build_index()
        self._reset_handles()

    def _build_index(self) -> None:
        self._patient_keys = sorted({r.patient_key for r in self._records})
        patient_of = {k: i for i, k in enumerate(self._patient_keys)}
        counts = np.array([r.n_slices for r in self._records], dtype=np.int64)
        index = np.zeros(int(counts.sum()), dtype=fmt.INDEX_DTYPE)
        index["volume"] = np.repeat(np.arange(len(counts)), counts)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        index["slice"] = np.arange(len(index)) - starts
        index["patient"] = np.repeat([patient_of[r.patient_key] for r in self._records], counts).astype(np.int32)
        index["label"] = np.repeat([-1 if r.label is None else r.label for r in self._records], counts)
        index.setflags(write=False)
        self._index = index

    # ---------------------------------------------------------------- process-local handles
    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._files: dict[str, Any] = {}
        self._images: dict[int, Any] = {}
        self._masks: dict[int, Any] = {}
        # (volume, "image"|"mask") -> ChunkTable, or None where only h5py can read the dataset.
        self._chunk_tables: dict[tuple[int, str], ChunkTable | None] = {}
        #: Read calls per path in this process ("direct" or "h5py"); tests check which was taken.
        self._read_paths: dict[str, int] = {"direct": 0, "h5py": 0}
        # Volumes whose size was checked against the per-volume limit in this process.
        self._sized: set[tuple[int, str]] = set()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            # Inherited through fork: the parent's HDF5 handles must not be used (or closed) here.
            self._reset_handles()

    def _file(self, shard: str) -> h5py.File:
        f = self._files.get(shard)
        if f is None:
            f = open_file(fmt.load_h5py(), Path(shard))
            self._files[shard] = f
        return f

    def _dataset(self, volume: int, name: str) -> h5py.Dataset:
        cache = self._images if name == "image" else self._masks
        ds = cache.get(volume)
        if ds is None:
            rec = self.record(volume)
            f = self._file(rec.shard)
            try:
                ds = f["volumes"][rec.key][name]
            except (KeyError, TypeError, ValueError, OSError, RuntimeError):
                raise StoreError(
                    f"{rec.shard}: volume {rec.key} has no readable {name} dataset; the file is damaged, write it again."
                ) from None
            try:
                check_dataset(ds, rec, name, f.filename)
            except (OSError, RuntimeError, ValueError, TypeError) as exc:  # HDF5's checks of a damaged index
                raise StoreError(
                    f"{rec.shard}: volume {rec.key}'s {name} could not be read ({type(exc).__name__}: {exc}); "
                    "the file is damaged, write it again."
                ) from exc
            cache[volume] = ds
        return ds

    def _check_size(self, volume: int, rec: VolumeRecord, name: str = "image") -> None:
        """Refuse a volume whose decoded image (float32) or mask would be over the per-volume limit.

        Once per volume, dataset and process, before its first read allocates anything: a
        catalog may declare any shape whose chunks compress to nothing (a volume of zeros), and
        a read sizes its arrays from it. The limit is the readers'
        (:func:`medload.limits.max_volume_bytes`, ``$MEDLOAD_MAX_VOLUME_BYTES``).
        """
        if name == "image":
            shape, itemsize = rec.shape, 4
        else:  # integer labels on the spatial grid, in their stored type (opening a dataset reads no pixels)
            shape, itemsize = (rec.shape[0], *rec.shape[-2:]), self._dataset(volume, name).dtype.itemsize
        what = f"{rec.shard}: volume {rec.key}" + ("" if name == "image" else "'s mask")
        check_volume_size(what, shape, itemsize, claimed_by="its catalog", error=StoreError)
        self._sized.add((volume, name))

    def _table(self, volume: int, name: str) -> ChunkTable | None:
        """The dataset's :class:`ChunkTable` in this process (built on first use), or ``None``."""
        key = (volume, name)
        try:
            return self._chunk_tables[key]
        except KeyError:
            rec = self.record(volume)
            table = self._chunk_tables[key] = ChunkTable.of(
                self._dataset(volume, name), f"{rec.shard}: volume {rec.key}'s {name}"
            )
            return table

    def _read_stored(self, volume: int, name: str, start: int, stop: int) -> np.ndarray:
        """Stored values of slices ``start:stop`` in a new array: direct chunk reads where possible, else h5py."""
        table = self._table(volume, name) if self._direct else None
        if table is not None:
            stored = table.read(start, stop)
            if stored is not None:
                self._read_paths["direct"] += 1
                return stored
        self._read_paths["h5py"] += 1
        return _read(self._dataset(volume, name), start, stop, self.record(volume))

    def _read_stored_into(self, volume: int, name: str, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Stored values of slices ``start:stop`` written into ``out`` (the stored dtype and shape) and returned."""
        table = self._table(volume, name) if self._direct else None
        if table is not None and table.read_into(start, stop, out):
            self._read_paths["direct"] += 1
            return out
        self._read_paths["h5py"] += 1
        out[...] = _read(self._dataset(volume, name), start, stop, self.record(volume))
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shards": self.shards, "attrs": self._attrs, "records": self._records}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.shards = state["shards"]
        self._attrs = state["attrs"]
        self._records = state["records"]
        self._direct = True
        self._build_index()
        self._reset_handles()

    def close(self) -> None:
        """Close the h5py files this process opened (the reader stays usable and reopens them)."""
        if self._pid == os.getpid():
            for f in self._files.values():
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
        self._reset_handles()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- metadata
    @property
    def volumes(self) -> tuple[VolumeRecord, ...]:
        """Every complete volume, in shard order then key order (one tuple, not a new list per access)."""
        return self._records

    def record(self, volume: int) -> VolumeRecord:
        """The :class:`VolumeRecord` at position ``volume`` (with a clear error when out of range).

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     _ = store.add(medload.Volume(np.zeros((2, 3, 4)), np.eye(4), meta={"series_key": "s1"}), label=2)
        >>> medload.open(path).record(0).label, medload.open(path).record(0).slice_shape
        (2, (3, 4))
        """
        try:
            if volume < 0:
                raise IndexError
            return self._records[volume]
        except (IndexError, TypeError):
            raise StoreError(
                f"{self.path}: volume {volume!r} does not exist; the store holds {len(self._records)} volumes (0..{len(self._records) - 1})."
            ) from None

    @property
    def index(self) -> np.ndarray:
        """One row per slice: ``volume`` (position in :attr:`volumes`), ``slice``, ``patient`` (into :attr:`patient_keys`), ``label`` (-1 if none). Read-only."""
        return self._index

    @property
    def patient_keys(self) -> list[str]:
        """Sorted pseudonymous patient keys; ``index['patient']`` points into this list."""
        return list(self._patient_keys)

    @property
    def classes(self) -> list[str] | None:
        """Class names by label (``classes[i]`` names label ``i``), or ``None`` if no volume's label has a name.

        A name is ``meta["class_name"]`` of a labelled volume (class folders, a label CSV of
        names); labels without a name, between named ones, are listed as their number.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     for i, name in enumerate(["normal", "pneumonia"]):
        ...         vol = medload.Volume(np.full((1, 3, 4), i), np.eye(4), meta={"series_key": f"s{i}", "class_name": name})
        ...         _ = store.add(vol, label=i)
        >>> medload.open(path).classes
        ['normal', 'pneumonia']
        """
        return class_names(self._records, self.path)

    @property
    def pipeline(self) -> Any:
        """The pipeline configuration the store was written with (``None`` if none)."""
        text = self._attrs.get("pipeline", "null")
        try:
            return json.loads(text)
        except (TypeError, ValueError, RecursionError):
            raise StoreError(
                f"{self.path}: its 'pipeline' attribute is not JSON ({str(text)[:60]!r}); the file is damaged, write it again."
            ) from None

    @property
    def key_fingerprint(self) -> str | None:
        """Fingerprint of the pseudonym key the store was written with (``None`` if not recorded).

        Compare it with ``medload.deid.resolve_key().fingerprint`` to know whether your keys
        (``medload scan``, a labels file) match the store's; the key itself is never stored.
        """
        value = self._attrs.get("phi_key_fingerprint")
        return None if value is None else str(value)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes of the (first) shard: schema, version, created, pipeline, dtype, compression."""
        return dict(self._attrs)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"StoreReader({str(self.path)!r}, shards={len(self.shards)}, volumes={len(self._records)}, slices={len(self)})"

    # ---------------------------------------------------------------- pixels
    def _range(self, rec: VolumeRecord, start: int, stop: int) -> tuple[int, int]:
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= rec.n_slices:
            raise StoreError(f"{rec.shard}: slices {start}:{stop} are outside volume {rec.key}, which has {rec.n_slices} slices.")
        return start, stop

    def read_slices(self, volume: int, start: int, stop: int, *, raw: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Slices ``start:stop`` of one volume, decoded to float32 ``(n, H, W)`` or ``(n, C, H, W)``.

        Parameters
        ----------
        volume : int
            Position in :attr:`volumes`.
        start, stop : int
            Slice range, ``0 <= start <= stop <= n_slices``.
        raw : bool
            Return the stored dtype (float16, uint8, ...) without applying scale and offset.
        out : numpy.ndarray, optional
            Write the slices into this array (shape ``(n, ...)``; float32, or the stored dtype
            with ``raw=True``) instead of a new one, and return it: a batch loader fills one
            preallocated batch this way. The values are the same bits as without ``out``.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path, dtype="uint8", value_range=(0, 1)) as store:
        ...     _ = store.add(medload.Volume(np.full((3, 2, 2), 0.5), np.eye(4)))
        >>> r = medload.open(path)
        >>> r.read_slices(0, 0, 1, raw=True)[0, 0, 0], round(float(r.read_slices(0, 0, 1)[0, 0, 0]), 3)
        (np.uint8(128), 0.502)
        >>> batch = np.zeros((2, 2, 2), np.float32)
        >>> r.read_slices(0, 1, 2, out=batch[1:]) is not None, bool((batch[1] == r.read_slices(0, 1, 2)[0]).all())
        (True, True)
        """
        self._check_pid()
        rec = self.record(volume)
        if (volume, "image") not in self._sized:
            self._check_size(volume, rec)
        start, stop = self._range(rec, start, stop)
        return self._read_image(volume, rec, start, stop, out, raw=raw)

    def read_batch(self, volumes: Any, slices: Any, out: np.ndarray, *, raw: bool = False) -> np.ndarray:
        """Slice ``slices[i]`` of volume ``volumes[i]`` into ``out[i]`` for every ``i``: a whole batch in one call.

        Each row holds what ``read_slices(volumes[i], slices[i], slices[i] + 1, raw=raw)[0]``
        holds, bit for bit. Runs of consecutive slices of one volume are read in one call, and
        the runs in file order (volume, then slice), whatever their order in the batch.

        Parameters
        ----------
        volumes, slices : sequence of int
            Positions in :attr:`volumes` and slice numbers, one pair per row of ``out``.
        out : numpy.ndarray
            ``(n, ...)``, C-contiguous, float32 (the stored dtype with ``raw=True``); a row
            holds as many values as a slice of its volume (``(C, H, W)`` rows take ``(H, W)``
            slices of one channel: what a batch of channel-first items is).
        raw : bool
            The stored values, without scale and offset (as ``read_slices``).

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path, dtype="uint8", value_range=(0, 5)) as store:
        ...     _ = store.add(medload.Volume(np.arange(6.0)[:, None, None] * np.ones((6, 2, 2)), np.eye(4)))
        >>> batch = np.empty((3, 1, 2, 2), np.uint8)
        >>> medload.open(path).read_batch([0, 0, 0], [4, 1, 2], batch, raw=True)[:, 0, 0, 0].tolist()
        [204, 51, 102]
        """
        self._check_pid()
        vols = np.asarray(volumes, dtype=np.int64).reshape(-1)
        where = np.asarray(slices, dtype=np.int64).reshape(-1)
        n = int(vols.size)
        if where.size != n or out.shape[:1] != (n,) or not out.flags.c_contiguous:
            raise ConfigError(
                f"read_batch: {n} volumes, {where.size} slices and out of shape {out.shape} "
                f"({'' if out.flags.c_contiguous else 'not '}C-contiguous); pass one row of a C-contiguous out per slice."
            )
        if n == 0:
            return out
        breaks = (np.flatnonzero((vols[1:] != vols[:-1]) | (where[1:] != where[:-1] + 1)) + 1).tolist()
        vol_list, slice_list = vols.tolist(), where.tolist()
        runs = sorted(zip([0, *breaks], [*breaks, n]), key=lambda run: (vol_list[run[0]], slice_list[run[0]]))
        row_shape, row_size = out.shape[1:], math.prod(out.shape[1:])
        row_bytes = out.reshape(n, -1).view(np.uint8)  # each row's bytes, for one-slice runs
        # Per volume of the batch, once: its record, slice shape, and the chunk table where the
        # rows can be filled straight from the file (stored values wanted, in out's dtype).
        plans: dict[int, tuple[VolumeRecord, tuple[int, ...], ChunkTable | None]] = {}
        for a, b in runs:
            volume, start = vol_list[a], slice_list[a]
            plan = plans.get(volume)
            if plan is None:
                rec = self.record(volume)
                if (volume, "image") not in self._sized:
                    self._check_size(volume, rec)
                if math.prod(rec.slice_shape) != row_size:
                    raise ConfigError(
                        f"read_batch: volume {rec.key} has slices of shape {rec.slice_shape}, out rows {row_shape}; "
                        "a batch holds slices of one size."
                    )
                as_stored = raw or np.dtype(rec.dtype) == np.float32
                table = self._table(volume, "image") if self._direct and as_stored else None
                if table is not None and table.dtype != out.dtype:
                    table = None  # _read_image says what out must be
                plan = plans[volume] = (rec, rec.slice_shape, table)
            rec, shape, table = plan
            stop = start + b - a
            if start < 0 or stop > rec.n_slices:
                self._range(rec, start, stop)  # raises, naming the volume
            if table is not None:
                if b - a == 1 and table.read_one_into(start, row_bytes[a]):
                    self._read_paths["direct"] += 1
                    continue
                rows = out[a:b] if shape == row_shape else out[a:b].reshape(b - a, *shape)
                if b - a > 1 and table.read_into(start, stop, rows):
                    self._read_paths["direct"] += 1
                    continue
            self._read_image(volume, rec, start, stop, out[a:b].reshape(b - a, *shape), raw=raw)
        return out

    def _read_image(
        self, volume: int, rec: VolumeRecord, start: int, stop: int, out: np.ndarray | None, *, raw: bool
    ) -> np.ndarray:
        """``read_slices`` after its checks of ``volume``, ``start`` and ``stop``."""
        stored_dtype = np.dtype(rec.dtype)
        shape = (stop - start, *rec.slice_shape)
        as_stored = raw or stored_dtype == np.float32
        if out is not None:
            want = stored_dtype if raw else np.dtype(np.float32)
            if out.shape != shape or out.dtype != want:
                raise ConfigError(
                    f"reading volume {rec.key} into out: out must be {want} {shape}, found {out.dtype} {out.shape}."
                )
            if as_stored and out.flags.c_contiguous:
                # Straight into the caller's array (a row of a batch): decompressed there, no copy.
                return self._read_stored_into(volume, "image", start, stop, out)
        elif as_stored:
            return self._read_stored(volume, "image", start, stop)  # a new array the caller may change
        if as_stored:
            stored = self._read_stored(volume, "image", start, stop)
        elif stored_dtype == np.float16:
            stored = fmt.float16_to_float32(self._read_stored(volume, "image", start, stop))
            if out is None:
                return stored
        else:
            stored = self._read_stored_into(volume, "image", start, stop, scratch_array(shape, stored_dtype))
        return _decode_into(stored, rec, np.empty(shape, np.float32) if out is None else out)

    def read_mask(self, volume: int, start: int, stop: int) -> np.ndarray:
        """Mask slices ``start:stop`` of one volume, integer ``(n, H, W)`` in the stored type.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     _ = store.add(medload.Volume(np.zeros((2, 2, 2)), np.eye(4)), mask=np.ones((2, 2, 2), np.uint8))
        >>> medload.open(path).read_mask(0, 0, 2).sum()
        np.uint64(8)
        """
        self._check_pid()
        rec = self.record(volume)
        if not rec.has_mask:
            raise StoreError(f"{rec.shard}: volume {rec.key} has no mask; check VolumeRecord.has_mask first.")
        start, stop = self._range(rec, start, stop)
        if (volume, "mask") not in self._sized:
            self._check_size(volume, rec, "mask")
        return self._read_stored(volume, "mask", start, stop)  # a new array the caller may change

    def mask_dtype(self, volume: int) -> np.dtype | None:
        """The stored integer type of a volume's mask (``None`` when it has none).

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     _ = store.add(medload.Volume(np.zeros((2, 2, 2)), np.eye(4)), mask=np.ones((2, 2, 2), np.uint8))
        >>> medload.open(path).mask_dtype(0)
        dtype('uint8')
        """
        self._check_pid()
        if not self.record(volume).has_mask:
            return None
        return np.dtype(self._dataset(volume, "mask").dtype)

    def read_volume(self, volume: int, *, mask: bool = False) -> Volume | tuple[Volume, Volume | None]:
        """The whole volume as a :class:`~medload.Volume` (float32, original axis order).

        With ``mask=True`` returns ``(image, mask)``, the mask a Volume on the same grid or
        ``None`` when the volume has none.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     _ = store.add(medload.Volume(np.zeros((2, 3, 4)), np.diag([3, 1, 1, 1.0]), modality="CT"))
        >>> medload.open(path).read_volume(0)
        Volume(CT, shape=(2, 3, 4), dtype=float32, spacing=3x1x1 mm, orientation=RAS, steps=0)
        """
        rec = self.record(volume)
        array = self.read_slices(volume, 0, rec.n_slices)
        if array.ndim == 4:
            array = np.ascontiguousarray(array.transpose(1, 0, 2, 3))
        meta = dict(rec.meta)
        for name in fmt.META_ATTRS:
            if name == "channels":
                continue  # a list in meta, set below
            value = getattr(rec, name)
            if value:
                meta[name] = value
        if rec.channels is not None:
            meta["channels"] = list(rec.channels)
        image = Volume(array, rec.affine, modality=rec.modality, meta=meta, history=rec.history)
        if not mask:
            return image
        mask_volume = None
        if rec.has_mask:
            mask_volume = Volume(
                self.read_mask(volume, 0, rec.n_slices), rec.affine, modality=rec.modality, meta={"intensity": "labels"}
            )
        return image, mask_volume


def _decode_into(stored: np.ndarray, rec: VolumeRecord, out: np.ndarray) -> np.ndarray:
    """``read_slices``' decoding of stored values into float32 ``out``: ``stored * scale + offset``.

    ``stored`` is float32 (copied), float32 widened from float16 (copied) or integers: cast into
    ``out`` exactly, then scaled there in place (two passes over ``out`` measured faster than
    numpy's mixed-type multiply, ~14 against ~17 us per 256x256 slice; the same float32 product).
    """
    out[...] = stored
    if stored.dtype.kind in "iu":
        if rec.scale != 1.0:
            np.multiply(out, np.float32(rec.scale), out=out)
        if rec.offset != 0.0:
            np.add(out, np.float32(rec.offset), out=out)
    return out


def _read(ds: h5py.Dataset, start: int, stop: int, rec: VolumeRecord) -> np.ndarray:
    # Plain slicing takes h5py's compiled fast path for simple selections, which measured
    # faster than read_direct or a hand-built low-level read (bench/store.py).
    try:
        return ds[start:stop]
    except OSError as exc:
        raise StoreError(
            f"{rec.shard}: reading slices {start}:{stop} of volume {rec.key} failed ({exc}); the file may be "
            "damaged or a compression plugin missing (pip install hdf5plugin)."
        ) from exc


def open(path: str | os.PathLike[str]) -> StoreReader:  # noqa: A001 - medload.open, by design
    """Open a medload store (one ``.h5`` file or a folder of shard files) for reading.

    Cheap: reads attributes only. Raises :class:`~medload.StoreError` naming what was found
    when ``path`` is not a medload store (plain HDF5, another file type, truncated, newer schema).

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(2):
    ...     with medload.Store.create(f"{folder}/shard-{i:04d}.h5") as s:
    ...         _ = s.add(medload.Volume(np.zeros((3, 2, 2)), np.eye(4), meta={"source_hash": str(i)}))
    >>> len(medload.open(folder))
    6
    """
    return StoreReader(path)
