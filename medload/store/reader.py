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

import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import ChecksumError, ConfigError, StoreError
from medload.limits import check_volume_size
from medload.store import _format as fmt
from medload.store.batchread import fill_rows
from medload.store.chunks import ChunkTable, FileMap, scratch_array
from medload.store.integrity import Checksums, Damage, VerifyReport, damage_error, mismatched
from medload.store.catalog import StoreCatalog
from medload.store.records import VolumeRecord, check_dataset, open_file
from medload.volume import Volume

if TYPE_CHECKING:
    import h5py

__all__ = ["open", "StoreReader", "VolumeRecord"]


class StoreReader(StoreCatalog):
    """Read-only view of a medload store: one file or a folder of shard files.

    Use :func:`open`. Picklable; safe to use from many processes at once. What the store
    holds (:attr:`volumes`, :attr:`index`, :attr:`classes`, ...) is :class:`StoreCatalog`'s;
    the pixels are read here.

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

    def __init__(self, path: str | os.PathLike[str], *, verify_slices: bool = False) -> None:
        #: Check every slice read against its checksum (:func:`open`'s ``verify_slices``).
        self.verify_slices = bool(verify_slices)
        super().__init__(path)
        self._direct = True
        self._reset_handles()

    # ---------------------------------------------------------------- process-local handles
    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._files: dict[str, Any] = {}
        self._images: dict[int, Any] = {}
        self._masks: dict[int, Any] = {}
        # (volume, "image"|"mask") -> ChunkTable, or None where only h5py can read the dataset.
        self._chunk_tables: dict[tuple[int, str], ChunkTable | None] = {}
        # HDF5's file descriptor -> that file mapped read-only (FileMap), shared by its LZ4 tables.
        self._file_maps: dict[int, FileMap | None] = {}
        # read_batch's plan per (volume, raw, out dtype, row shape, direct): record, shape, table.
        self._batch_plans: dict[tuple[Any, ...], Any] = {}
        #: Read calls per path in this process ("direct" or "h5py"); tests check which was taken.
        self._read_paths: dict[str, int] = {"direct": 0, "h5py": 0}
        # Volumes whose size was checked against the per-volume limit in this process.
        self._sized: set[tuple[int, str]] = set()
        self._checksums = Checksums(self._group, str(self.path))

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

    def _group(self, rec: VolumeRecord, name: str = "image") -> h5py.Group:
        try:
            return self._file(rec.shard)["volumes"][rec.key]
        except (KeyError, TypeError, ValueError, OSError, RuntimeError):
            raise StoreError(
                f"{rec.shard}: volume {rec.key} has no readable {name} dataset; the file is damaged, write it again."
            ) from None

    def _dataset(self, volume: int, name: str) -> h5py.Dataset:
        cache = self._images if name == "image" else self._masks
        ds = cache.get(volume)
        if ds is None:
            rec = self.record(volume)
            group = self._group(rec, name)
            try:
                ds = group[name]
            except (KeyError, TypeError, ValueError, OSError, RuntimeError):
                raise StoreError(
                    f"{rec.shard}: volume {rec.key} has no readable {name} dataset; the file is damaged, write it again."
                ) from None
            try:
                check_dataset(ds, rec, name, self._file(rec.shard).filename)
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
                self._dataset(volume, name), f"{rec.shard}: volume {rec.key}'s {name}", self._file_maps
            )
            return table

    def _read_stored(self, volume: int, name: str, start: int, stop: int, *, verify: bool | None = None) -> np.ndarray:
        """Stored values of slices ``start:stop`` in a new array: direct chunk reads where possible, else h5py.

        Checked against their checksums when ``verify`` (default :attr:`verify_slices`) says so.
        """
        table = self._table(volume, name) if self._direct else None
        stored = table.read(start, stop) if table is not None else None
        self._read_paths["h5py" if stored is None else "direct"] += 1
        if stored is None:
            stored = _read(self._dataset(volume, name), start, stop, self.record(volume))
        if self.verify_slices if verify is None else verify:
            self._checksums.check_slices(self.record(volume), name, start, stored)
        return stored

    def _read_stored_into(
        self, volume: int, name: str, start: int, stop: int, out: np.ndarray, *, verify: bool | None = None
    ) -> np.ndarray:
        """Stored values of slices ``start:stop`` written into ``out`` (the stored dtype and shape) and returned."""
        table = self._table(volume, name) if self._direct else None
        if table is not None and table.read_into(start, stop, out):
            self._read_paths["direct"] += 1
        else:
            self._read_paths["h5py"] += 1
            out[...] = _read(self._dataset(volume, name), start, stop, self.record(volume))
        if self.verify_slices if verify is None else verify:
            self._checksums.check_slices(self.record(volume), name, start, out)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "shards": self.shards,
            "attrs": self._attrs,
            "records": self._records,
            "verify_slices": self.verify_slices,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.verify_slices = state.get("verify_slices", False)
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

    # ---------------------------------------------------------------- pixels
    def _range(self, rec: VolumeRecord, start: int, stop: int) -> tuple[int, int]:
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= rec.n_slices:
            raise StoreError(f"{rec.shard}: slices {start}:{stop} are outside volume {rec.key}, which has {rec.n_slices} slices.")
        return start, stop

    def read_slices(
        self, volume: int, start: int, stop: int, *, raw: bool = False, out: np.ndarray | None = None, verify: bool | None = None
    ) -> np.ndarray:
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
        verify : bool, optional
            Check the slices against their checksums (a :class:`~medload.errors.ChecksumError`
            naming the damaged ones); ``None``: as :attr:`verify_slices` says.

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
        return self._read_image(volume, rec, start, stop, out, raw=raw, verify=verify)

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
        return self._batch(volumes, slices, out, raw=raw, name="image")

    def read_mask_batch(self, volumes: Any, slices: Any, out: np.ndarray) -> np.ndarray:
        """Mask slice ``slices[i]`` of volume ``volumes[i]`` into ``out[i]`` for every ``i`` (:meth:`read_batch` for masks).

        Each row holds ``read_mask(volumes[i], slices[i], slices[i] + 1)[0]``, cast to ``out``'s
        integer type (straight from the file where it is the stored type, :meth:`mask_dtype`).
        A volume without a mask is a StoreError.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     _ = store.add(medload.Volume(np.zeros((3, 2, 2)), np.eye(4)), mask=np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
        >>> medload.open(path).read_mask_batch([0, 0], [2, 0], np.empty((2, 1, 2, 2), np.int64))[:, 0, 0].tolist()
        [[8, 9], [0, 1]]
        """
        return self._batch(volumes, slices, out, raw=True, name="mask")

    def _batch(self, volumes: Any, slices: Any, out: np.ndarray, *, raw: bool, name: str) -> np.ndarray:
        self._check_pid()
        vols = np.asarray(volumes, dtype=np.int64).reshape(-1)
        where = np.asarray(slices, dtype=np.int64).reshape(-1)
        n = int(vols.size)
        if where.size != n or out.shape[:1] != (n,) or not out.flags.c_contiguous:
            call = "read_batch" if name == "image" else "read_mask_batch"
            raise ConfigError(
                f"{call}: {n} volumes, {where.size} slices and out of shape {out.shape} "
                f"({'' if out.flags.c_contiguous else 'not '}C-contiguous); pass one row of a C-contiguous out per slice."
            )
        if n == 0:
            return out
        return fill_rows(self, vols, where, out, raw=raw, name=name)

    def _read_image(
        self,
        volume: int,
        rec: VolumeRecord,
        start: int,
        stop: int,
        out: np.ndarray | None,
        *,
        raw: bool,
        verify: bool | None = None,
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
                return self._read_stored_into(volume, "image", start, stop, out, verify=verify)
        elif as_stored:
            return self._read_stored(volume, "image", start, stop, verify=verify)  # a new array the caller may change
        if as_stored:
            stored = self._read_stored(volume, "image", start, stop, verify=verify)
        elif stored_dtype == np.float16:
            stored = fmt.float16_to_float32(self._read_stored(volume, "image", start, stop, verify=verify))
            if out is None:
                return stored
        else:
            stored = self._read_stored_into(volume, "image", start, stop, scratch_array(shape, stored_dtype), verify=verify)
        return fmt.decode_into(stored, rec.scale, rec.offset, np.empty(shape, np.float32) if out is None else out)

    def read_mask(self, volume: int, start: int, stop: int, *, verify: bool | None = None) -> np.ndarray:
        """Mask slices ``start:stop`` of one volume, integer ``(n, H, W)`` in the stored type.

        Checked against their checksums when ``verify`` (default :attr:`verify_slices`) says so.

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
        return self._read_stored(volume, "mask", start, stop, verify=verify)  # a new array the caller may change

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
        stored = self.read_slices(volume, 0, rec.n_slices, raw=True)  # a new array, in the stored dtype
        labels = self.read_mask(volume, 0, rec.n_slices) if rec.has_mask and mask else None
        labels = self._check_whole(volume, rec, stored, labels)
        if stored.dtype == np.float16:
            array = fmt.float16_to_float32(stored)
        elif stored.dtype != np.float32:
            array = fmt.decode_into(stored, rec.scale, rec.offset, np.empty(stored.shape, np.float32))
        else:
            array = stored
        if array.ndim == 4:
            array = np.ascontiguousarray(array.transpose(1, 0, 2, 3))
        image = Volume(array, rec.affine, modality=rec.modality, meta=rec.volume_meta(), history=rec.history)
        if not mask:
            return image
        mask_volume = None
        if labels is not None:
            mask_volume = Volume(labels, rec.affine, modality=rec.modality, meta={"intensity": "labels"})
        return image, mask_volume

    def _check_whole(self, volume: int, rec: VolumeRecord, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
        """``read_volume``'s check of a whole volume read (``mask`` when read); returns the mask, read here for an older store."""
        kind = self._checksums.kind(rec)
        if kind == "slice" and not self.verify_slices:  # verify_slices checked them on the way
            self._checksums.check_slices(rec, "image", 0, image)
            if mask is not None:
                self._checksums.check_slices(rec, "mask", 0, mask)
        elif kind == "volume":  # one checksum of the image's bytes then the mask's: both are needed
            if rec.has_mask and mask is None:
                mask = self.read_mask(volume, 0, rec.n_slices)
            self._checksums.check_volume(rec, image, mask)
        return mask

    def verify_volume(self, volume: int) -> str:
        """Read one volume (image and mask) and compare it with its checksums; how it was checked.

        Reads 32 slices at a time (memory stays small whatever the volume's size) and goes
        through every slice before it raises, so the error lists every damaged one.

        Returns
        -------
        str
            ``"slice"`` (each slice against its checksum), ``"volume"`` (a store written before
            slice checksums: the volume's one checksum) or ``"none"`` (no checksum: only read).

        Raises
        ------
        ChecksumError
            A :class:`~medload.errors.StoreError` naming the file, the volume and the damaged
            slices; other StoreErrors where the volume cannot be read at all.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     _ = store.add(medload.Volume(np.zeros((2, 3, 4)), np.eye(4)))
        >>> medload.open(path).verify_volume(0)
        'slice'
        """
        self._check_pid()
        rec = self.record(volume)
        kind = self._checksums.kind(rec)
        bad: set[int] = set()
        damaged: list[str] = []
        crc = 0  # of the image's bytes then the mask's, in file order: a volume checksum
        for name in ("image", "mask") if rec.has_mask else ("image",):
            if (volume, name) not in self._sized:
                self._check_size(volume, rec, name)
            expected = self._checksums.of_slices(rec, name) if kind == "slice" else None
            found = []
            for z0 in range(0, rec.n_slices, 32):
                stored = self._read_stored(volume, name, z0, min(rec.n_slices, z0 + 32), verify=False)
                if expected is not None:
                    found += mismatched(stored, expected, z0)
                elif kind == "volume":
                    crc = zlib.crc32(np.ascontiguousarray(stored).data, crc)
            if found:
                bad.update(found)
                damaged.append(name)
        if damaged:
            raise damage_error(rec, " and ".join(damaged), sorted(bad), str(self.path))
        if kind == "volume":
            self._checksums.compare_volume(rec, crc)
        return kind

    def verify(self) -> VerifyReport:
        """Read every volume and compare it with its checksums; every damaged volume is reported, none stops it.

        What ``medload verify STORE`` runs. Costs one read of the whole store.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> with medload.Store.create(path) as store:
        ...     _ = store.add(medload.Volume(np.zeros((2, 3, 4)), np.eye(4)))
        >>> report = medload.open(path).verify()
        >>> report.ok, report.volumes, report.by_slice
        (True, 1, 1)
        """
        kinds: dict[str, list[str]] = {"slice": [], "volume": [], "none": []}
        damaged = []
        for volume, rec in enumerate(self._records):
            try:
                kinds[self.verify_volume(volume)].append(rec.key)
            except StoreError as exc:
                slices = exc.slices if isinstance(exc, ChecksumError) else ()
                damaged.append(Damage(key=rec.key, shard=rec.shard, slices=slices, message=str(exc)))
                if isinstance(exc, ChecksumError):  # compared, and found to differ
                    kinds["slice" if slices else "volume"].append(rec.key)
        return VerifyReport(
            path=str(self.path),
            volumes=len(self._records),
            by_slice=len(kinds["slice"]),
            by_volume=len(kinds["volume"]),
            unchecked=tuple(kinds["none"]),
            damaged=tuple(damaged),
        )


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


def open(path: str | os.PathLike[str], *, verify_slices: bool = False) -> StoreReader:  # noqa: A001 - medload.open, by design
    """Open a medload store (one ``.h5`` file or a folder of shard files) for reading.

    Cheap: reads attributes only. Raises :class:`~medload.StoreError` naming what was found
    when ``path`` is not a medload store (plain HDF5, another file type, truncated, newer schema).

    ``read_volume`` always checks the volume it read against its checksums; with
    ``verify_slices=True`` every slice read is checked too (``read_slices``, ``read_batch``,
    ``read_mask``, and so the datasets' items and batches: pass this reader to them), at a cost
    on the slice loader measured in docs/benchmarks.md. A damaged slice raises
    :class:`~medload.errors.ChecksumError` naming the file, the volume and the slice. Stores
    written before slice checksums are read as before (their slices cannot be checked).

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
    return StoreReader(path, verify_slices=verify_slices)
