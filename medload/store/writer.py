"""``Store``: write Volumes into an HDF5 store, atomically, resumably, one volume at a time.

A store ``out.h5`` is written as ``out.h5.partial`` and renamed to ``out.h5`` by :meth:`Store.close`
once it is whole, so ``out.h5`` is never half-written. Inside the partial file each volume
counts only once its ``complete`` attribute is set, which is done after its pixels and
metadata are flushed. What a crash (SIGKILL, power cut) leaves behind is handled on the next
``Store.create`` of the same path:

- a ``.partial`` file that opens: its complete volumes whose CRC-32 still matches are copied
  into a fresh partial file (HDF5 metadata written between two flushes cannot be trusted, so
  the old file is never written into again) and writing continues from there;
- a ``.partial`` file that does not open at all (killed before its first flush): it is
  deleted and the store starts over (the lost volumes are written again);
- a finished ``out.h5`` to which volumes are added: it is copied to ``out.h5.partial`` first,
  so readers of ``out.h5`` never see a file that is being written.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medload.deid import sanitize_key
from medload.errors import PipelineMismatchError, StoreError
from medload.problems import Problem, ProblemKind
from medload.store import _format as fmt
from medload.store import inputs, layout, records
from medload.store.integrity import CRC_SUFFIX, slice_crc32s
from medload.store.writefail import printable, unwritable, write_failed
from medload.volume import Volume

__all__ = ["Store"]

log = logging.getLogger(__name__)

#: Slices encoded and written per call: bounds the extra memory of a write to a few slices.
BLOCK_SLICES = 32


class Store:
    """Writer of a medload HDF5 store (schema v1). Use :meth:`Store.create`.

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> path = tempfile.mkdtemp() + "/out.h5"
    >>> vol = medload.Volume(np.ones((2, 4, 4), np.float32), np.eye(4), meta={"source_hash": "a"})
    >>> with medload.Store.create(path) as store:
    ...     key = store.add(vol, label=1)
    ...     store.add(vol) == key          # same source_hash: skipped
    True
    >>> medload.open(path).volumes[0].label
    1
    """

    def __init__(self, *_: Any, **__: Any) -> None:
        raise StoreError("create a store writer with medload.Store.create(path, ...), not Store(...)")

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: str | None = None,
        compression: str | None = None,
        pipeline: Any = None,
        resume: bool = True,
        overwrite: bool = False,
        value_range: tuple[float, float] | None = None,
        key_fingerprint: str | None = None,
        keep_phi: bool = False,
        keep_descriptions: bool = False,
    ) -> Store:
        """Open a store for writing: new, or continuing one written with the same pipeline.

        Parameters
        ----------
        path : path-like
            The store file, e.g. ``out.h5``, or one shard of a folder store, ``out/shard-0001.h5``.
        dtype : {"float16", "float32", "uint8", "int16"}, optional
            Stored type of image voxels; default uint8 (chosen by ``bench/store.py``): it maps
            ``value_range`` (default each volume's min..max) onto 0..255 and records the scale,
            so the error is at most (max - min) / 510, 0.002 for data in [0, 1]. float16 keeps
            about 3 significant digits of any value; int16 stores whole numbers (raw HU) as they are.
        compression : str, optional
            ``"none"``, ``"gzip[:level]"``, ``"lzf"``, ``"lz4"``, ``"zstd[:level]"``, ``"blosc2[:level]"``
            (lz4), ``"blosc2-zstd[:level]"``; ``+shuffle`` adds HDF5's byte shuffle to gzip/lzf/lz4/zstd.
            Default ``"lz4"`` (chosen by ``bench/store.py``).
        pipeline : mapping or object with ``.to_config()``, optional
            The preprocessing that produced the volumes. Its canonical JSON is recorded; adding
            to a store made with another pipeline is refused (no stale caches).
        resume : bool
            Continue an existing store or a crashed partial one (default). ``False`` refuses
            to touch an existing store.
        overwrite : bool
            Delete an existing store (and partial file) at ``path`` and start empty.
        value_range : (float, float), optional
            For ``dtype="uint8"``: the values mapped to 0 and 255 (e.g. ``(0, 1)`` for windowed
            data). Default: each volume's own min and max.
        key_fingerprint : str, optional
            :func:`medload.deid.fingerprint` of the key the volumes' pseudonyms were made with
            (``medload.convert`` passes it). Recorded as the root attribute
            ``phi_key_fingerprint``; continuing a store recorded with another fingerprint (or
            none) is refused, since its patient keys would not match the new ones.
        keep_phi : bool
            Store each volume's meta as given. Default: what ``medload.convert`` stores
            (:func:`~medload.store.inputs.stored_meta`: no identifying field, no description such as
            the NIfTI file name :func:`medload.load` gives; a key of the caller's is named in a warning).
        keep_descriptions : bool
            Keep descriptions (SeriesDescription, a file's name) in the de-identified meta.

        Returns
        -------
        Store
            A context manager; :meth:`close` finalizes and renames the file into place.

        Examples
        --------
        >>> import tempfile, medload
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> medload.Store.create(path, pipeline={"steps": []}).close()
        >>> medload.Store.create(path, pipeline={"steps": [1]})
        Traceback (most recent call last):
        ...
        medload.errors.PipelineMismatchError: ...
        """
        self = object.__new__(cls)
        rules = (bool(keep_phi), bool(keep_descriptions))
        self._init(
            Path(path), fmt.check_dtype(dtype), compression, pipeline, resume, overwrite, value_range, key_fingerprint, rules
        )
        return self

    def _init(
        self,
        path: Path,
        dtype: str,
        compression: str | None,
        pipeline: Any,
        resume: bool,
        overwrite: bool,
        value_range: tuple[float, float] | None,
        key_fingerprint: str | None = None,
        meta_rules: tuple[bool, bool] = (False, False),
    ) -> None:
        self.compression, self._filter_kwargs = fmt.parse_compression(compression, itemsize=np.dtype(dtype).itemsize)
        self.pipeline = fmt.pipeline_config(pipeline)
        self._h5py = fmt.load_h5py()
        self.path = path
        self.partial_path = layout.partial_path(path)
        self.dtype = dtype
        self.pipeline_hash = fmt.pipeline_hash(self.pipeline)
        self.value_range = None if value_range is None else inputs.check_value_range(value_range)
        self.key_fingerprint = None if key_fingerprint is None else str(key_fingerprint)
        self.keep_phi, self.keep_descriptions = meta_rules  # what Store.add stores of meta (Store.create)
        self._warned: set[str] = set()  # meta keys a MetaNotStoredWarning named
        self._file: Any = None  # the h5py.File being written, once opened (h5py ships no types)
        self._hashes: dict[str, str] = {}  # source_hash -> key
        self._keys: set[str] = set()
        # key -> catalog entry of every complete volume (see _format.catalog_entry); written as
        # /catalog on close so that readers need not read every group's attributes.
        self._catalog: dict[str, dict[str, Any]] = {}
        self._added = 0
        self._closed = False
        #: What was found and done on opening (crash recovery): kinds ``store_started_over`` and
        #: ``store_resumed`` (:class:`~medload.problems.Problem`).
        self.problems: list[Problem] = []

        if path.is_dir():
            raise StoreError(f"{path} is a folder; a store writer writes one file, e.g. {path / 'shard-0001.h5'}.")
        try:
            if not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = layout.WriterLock(layout.lock_path(path))
        except OSError as exc:
            raise unwritable(path, exc) from exc
        try:
            self._open(path, resume, overwrite)
        except OSError as exc:
            self._lock.release()
            raise unwritable(path, exc) from exc
        except BaseException:
            self._lock.release()
            raise

    def _open(self, path: Path, resume: bool, overwrite: bool) -> None:
        exists = path.exists() or self.partial_path.exists()
        if overwrite:
            for p in (path, self.partial_path, layout.salvage_path(path)):
                if p.exists():
                    p.unlink()
        elif exists and not resume:
            raise StoreError(
                f"{path} already exists (or a partial {self.partial_path.name} from an interrupted run); "
                "pass resume=True to continue it, or overwrite=True (--overwrite) to start over."
            )
        if self.partial_path.exists():
            self._salvage()
        if self.partial_path.exists():
            self._open_partial()
        elif path.exists():
            self._read_existing(path)  # copied to a partial file on the first add()
        else:
            self._new_partial()

    def _root_attrs(self) -> dict[str, Any]:
        import medload

        attrs = {
            "medload_schema": fmt.SCHEMA_VERSION,
            "medload_version": medload.__version__,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "pipeline": fmt.canonical_json(self.pipeline),
            "pipeline_hash": self.pipeline_hash,
            "dtype": self.dtype,
            "compression": self.compression,
            **({"phi_key_fingerprint": self.key_fingerprint} if self.key_fingerprint else {}),
        }
        fmt.check_texts(attrs, f"the store {self.path}")
        return attrs

    def _new_partial(self) -> None:
        attrs = self._root_attrs()  # checked before the file is made
        f = self._h5py.File(self.partial_path, "w", rdcc_nbytes=0)
        f.attrs.update(attrs)
        f.create_group("volumes")
        f.flush()
        self._file = f

    def _check_root(self, attrs: Mapping[str, Any], where: Path) -> None:
        schema = attrs.get("medload_schema")
        if schema is None:
            raise StoreError(
                f"{where} is an HDF5 file but not a medload store (no 'medload_schema' attribute); "
                "choose another output path, or overwrite=True to replace it."
            )
        if (version := records.schema_version(schema, where)) != fmt.SCHEMA_VERSION:
            raise StoreError(
                f"{where} is a medload store of schema {version}, this medload writes schema "
                f"{fmt.SCHEMA_VERSION}; write to a new path, or overwrite=True to replace it."
            )
        if attrs.get("pipeline_hash") != self.pipeline_hash:
            raise PipelineMismatchError(
                f"{where} was written with another pipeline ({attrs.get('pipeline')}) than this one "
                f"({fmt.canonical_json(self.pipeline)}); its volumes would be stale. Delete it, "
                "pass overwrite=True (medload convert --overwrite), or write to a new path.",
                path=str(where),
                stored=inputs.stored_config(attrs),
                wanted=self.pipeline,
            )
        stored_key = attrs.get("phi_key_fingerprint")
        stored_key = None if stored_key is None else str(stored_key)
        if self.key_fingerprint is not None and stored_key != self.key_fingerprint:
            raise StoreError(
                f"{where} was written with pseudonym key {stored_key or '(none recorded)'}, this run uses "
                f"key {self.key_fingerprint}: its patient/study/series keys would not match the new ones. "
                "Continue it with the key it was written with (--phi-key / $MEDLOAD_PHI_KEY, or that "
                "user's key file), or write to a new output path (or overwrite=True / --overwrite)."
            )
        if attrs.get("dtype") != self.dtype:
            raise StoreError(
                f"{where} stores dtype {attrs.get('dtype')}, this writer was asked for {self.dtype}; "
                f"pass dtype={attrs.get('dtype')!r} to continue it, or overwrite=True to start over."
            )

    def _register(self, entry: dict[str, Any]) -> None:
        key = entry["key"]
        self._catalog[key] = entry
        self._keys.add(key)
        source_hash = entry["attrs"].get("source_hash")
        if source_hash is not None:
            self._hashes[str(source_hash)] = key

    def _read_existing(self, path: Path) -> None:
        try:
            f = self._h5py.File(path, "r")
        except OSError as exc:
            raise StoreError(f"{path} exists but does not open as HDF5 ({exc}); delete it or pass overwrite=True.") from exc
        with f:
            self._check_root(f.attrs, path)
        # Every volume's metadata checked as a reader checks it: a damaged store is refused here (StoreError).
        for entry in records.read_shard(self._h5py, path)[1]:
            self._register(entry)

    def _open_partial(self) -> None:
        try:
            f = self._h5py.File(self.partial_path, "r+", rdcc_nbytes=0)
        except OSError as exc:
            if layout.is_lock_error(exc):
                raise StoreError(
                    f"{self.partial_path} is being written by another process; each parallel writer "
                    "needs its own shard file (e.g. out/shard-0001.h5, out/shard-0002.h5)."
                ) from exc
            raise
        self._file = f

    def _salvage(self) -> None:
        """Rebuild a crashed partial file from its verified complete volumes (see module doc)."""
        h5py = self._h5py
        partial = self.partial_path
        try:
            src = h5py.File(partial, "r")
        except OSError as exc:
            if layout.is_lock_error(exc):
                raise StoreError(
                    f"{partial} is being written by another process; each parallel writer "
                    "needs its own shard file (e.g. out/shard-0001.h5, out/shard-0002.h5)."
                ) from exc
            self._start_over(partial, f"did not open as HDF5 ({exc})")
            return
        kept, dropped = [], []
        tmp = layout.salvage_path(self.path)
        with src:
            if "medload_schema" not in src.attrs or "volumes" not in src:
                self._start_over(partial, "held no complete header")
                return
            self._check_root(src.attrs, partial)
            with h5py.File(tmp, "w", rdcc_nbytes=0) as dst:
                dst.attrs.update({k: v for k, v in src.attrs.items()})
                volumes = dst.create_group("volumes")
                try:
                    names = list(src["volumes"].keys())
                except Exception:  # noqa: BLE001 - a damaged group index: nothing to keep
                    names = []
                for key in names:
                    try:
                        group = src["volumes"][key]
                        if not group.attrs.get("complete", False):
                            dropped.append(key)
                            continue
                        if not inputs.verify_group(group):
                            dropped.append(key)
                            continue
                        entry = fmt.entry_of_group(key, group)
                        src.copy(group, volumes, name=key)
                        kept.append(key)
                        self._register(entry)
                    except Exception:  # noqa: BLE001 - any damage: drop this volume, write it again
                        dropped.append(key)
        os.replace(tmp, partial)
        self.problems.append(
            Problem(
                ProblemKind.STORE_RESUMED,
                f"resumed {partial.name} from an interrupted run: kept {len(kept)} complete volume(s)"
                + (f", dropped {len(dropped)} incomplete or damaged ({', '.join(dropped[:5])})" if dropped else "")
                + ".",
            )
        )
        log.info(self.problems[-1].message)

    def _start_over(self, partial: Path, why: str) -> None:
        """Delete a partial file of an interrupted run that cannot be resumed, and say why."""
        # Beside a finished store (an append was interrupted), the run goes on from that store.
        after = f"the finished {self.path.name} is kept and continued" if self.path.exists() else "the store started over"
        message = f"{partial.name} from an interrupted run {why}; it was deleted and {after}."
        self.problems.append(Problem(ProblemKind.STORE_STARTED_OVER, message))
        log.warning(message)
        partial.unlink()

    # ------------------------------------------------------------------ writing
    def has(self, source_hash: str) -> bool:
        """Whether a complete volume with this ``source_hash`` is already in the store.

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> store = medload.Store.create(tempfile.mkdtemp() + "/s.h5")
        >>> store.has("abc")
        False
        >>> store.close()
        """
        return str(source_hash) in self._hashes

    @property
    def keys(self) -> list[str]:
        """Keys of the complete volumes written so far (this run and before), sorted."""
        return sorted(self._keys)

    def _writable(self) -> Any:  # the h5py.File being written (h5py ships no types)
        if self._closed:
            raise StoreError(f"the store writer of {self.path} is closed; open it again with Store.create(...).")
        if self._file is None:
            # Appending to a finished store: work on a copy so its readers never see a write.
            shutil.copyfile(self.path, self.partial_path)
            self._open_partial()
        return self._file

    def _unique_key(self, volume: Volume, key: str | None) -> str:
        meta = volume.meta
        base = sanitize_key(str(key or meta.get("series_key") or meta.get("source_key") or "volume"))
        candidate, n = base, 1
        while candidate in self._keys or (self._file is not None and candidate in self._file["volumes"]):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _encoding(self, array: np.ndarray, encoded: tuple[float, float] | None, what: str) -> tuple[float, float]:
        """(scale, offset) of ``array`` in the store's dtype, or those given with stored values."""
        if encoded is None:
            return fmt.encoding(array, self.dtype, value_range=self.value_range, what=what)
        if array.dtype != np.dtype(self.dtype):
            raise StoreError(f"{what}: encoded=(scale, offset) needs the stored type {self.dtype}, found {array.dtype}.")
        return float(encoded[0]), float(encoded[1])

    def _write_mask(self, group: Any, mask: np.ndarray, crc: int) -> int:
        """Write a volume's mask (integer labels, its stored type) and its slice checksums; ``crc`` carried on over its bytes."""
        z, h, w = mask.shape
        mds = group.create_dataset("mask", shape=(z, h, w), dtype=mask.dtype, chunks=(1, h, w), **self._filter_kwargs)
        for z0 in range(0, z, BLOCK_SLICES):
            block = mask[z0 : z0 + BLOCK_SLICES]
            mds[z0 : z0 + len(block)] = block
            crc = fmt.crc32(block, crc)
        group.create_dataset("mask" + CRC_SUFFIX, data=slice_crc32s(mask))
        return crc

    def add(
        self,
        volume: Volume,
        *,
        mask: Volume | np.ndarray | None = None,
        label: int | None = None,
        key: str | None = None,
        encoded: tuple[float, float] | None = None,
    ) -> str:
        """Write one volume (and its mask and label); skip it if already complete here.

        Parameters
        ----------
        volume : Volume
            ``(Z, Y, X)``, or ``(C, Z, Y, X)`` stored as ``(Z, C, Y, X)`` (channels of one slice
            together, ``meta['channels']`` recorded).
        mask : Volume or ndarray, optional
            Integer labels on the same ``(Z, Y, X)`` grid.
        label : int, optional
            A per-volume class label.
        key : str, optional
            Group name; default ``meta['series_key']`` or ``meta['source_key']``, sanitized and
            made unique with ``-2``, ``-3``, ...
        encoded : (scale, offset), optional
            ``volume.array`` holds stored values already, in the store's dtype, meaning
            ``stored * scale + offset``: written as they are. For a converter that quantized in
            one pass (``medload.batch.fused``: a CT window as a lookup table to uint8).

        Returns
        -------
        str
            The volume's key (the existing one when skipped).

        Examples
        --------
        >>> import tempfile, numpy as np, medload
        >>> vol = medload.Volume(np.zeros((2, 3, 3)), np.eye(4), meta={"series_key": "ser/1"})
        >>> with medload.Store.create(tempfile.mkdtemp() + "/s.h5") as store:
        ...     store.add(vol, mask=np.ones((2, 3, 3), np.uint8))
        'ser_1'
        """
        if not isinstance(volume, Volume):
            raise StoreError(
                f"Store.add takes a medload.Volume, found {type(volume).__name__}; wrap arrays with medload.Volume(array, affine)."
            )
        meta = volume.meta if self.keep_phi else inputs.stored_meta(volume.meta, keep=self.keep_descriptions, warned=self._warned)
        source_hash = str(meta.get("source_hash") or inputs.content_hash(volume))
        if source_hash in self._hashes:
            return self._hashes[source_hash]
        what = "volume " + printable(str(meta.get("series_key") or meta.get("source_key") or key or "(no key)"))
        array = volume.array
        four_d = array.ndim == 4
        z, h, w = volume.spatial_shape
        mask_array = inputs.checked_mask(mask, volume, what)
        label = inputs.checked_label(label, what)
        scale, offset = self._encoding(array, encoded, what)
        mdtype = fmt.mask_dtype(mask_array, what) if mask_array is not None else None
        channels = inputs.checked_channels(meta.get("channels"), array, what)
        # Every text and JSON attribute is made (and checked) before a byte is written; the
        # checksum is filled in once the pixels are.
        attrs = fmt.volume_attrs(volume, source_hash=source_hash, crc=0, channels=channels, label=label, what=what, meta=meta)

        f = self._writable()
        key = self._unique_key(volume, key)
        group = f["volumes"].create_group(key)
        try:
            stored_shape = (z, array.shape[0], h, w) if four_d else (z, h, w)
            image = group.create_dataset(
                "image", shape=stored_shape, dtype=self.dtype, chunks=(1,) + stored_shape[1:], **self._filter_kwargs
            )
            fmt.write_new_attrs(image, {"scale": scale, "offset": offset})
            slice_crcs = np.empty(z, np.uint32)
            crc = 0
            for z0 in range(0, z, BLOCK_SLICES):
                z1 = min(z, z0 + BLOCK_SLICES)
                block = array[:, z0:z1].transpose(1, 0, 2, 3) if four_d else array[z0:z1]
                block = fmt.encode(block, self.dtype, scale, offset) if encoded is None else np.ascontiguousarray(block)
                image[z0:z1] = block
                crc = fmt.crc32(block, crc)
                slice_crcs[z0:z1] = slice_crc32s(block)
            group.create_dataset("image" + CRC_SUFFIX, data=slice_crcs)
            if mask_array is not None:
                crc = self._write_mask(group, np.ascontiguousarray(mask_array, dtype=mdtype), crc)
            attrs["crc32"] = np.uint32(crc)
            fmt.write_new_attrs(group, attrs)
            f.flush()
            # The flag that makes the volume count: written only once everything above is on disk.
            fmt.write_new_attrs(group, {"complete": True})
            f.flush()
        except BaseException as exc:
            try:
                del f["volumes"][key]
                f.flush()
            except Exception:  # noqa: BLE001 - the salvage on the next run drops it anyway
                pass
            if isinstance(exc, OSError):  # disk full, I/O error: the store's, said as such
                raise write_failed(self.partial_path, exc, f"writing volume {key}") from exc
            raise
        self._register(
            fmt.catalog_entry(
                key,
                {**attrs, "complete": True},
                shape=stored_shape,
                dtype=self.dtype,
                scale=scale,
                offset=offset,
                has_mask=mask_array is not None,
            )
        )
        self._added += 1
        return key

    # ------------------------------------------------------------------ finishing
    def close(self) -> None:
        """Write the ``/index``, flush, and rename the partial file into place.

        Examples
        --------
        >>> import tempfile, medload, os
        >>> path = tempfile.mkdtemp() + "/s.h5"
        >>> medload.Store.create(path).close()
        >>> os.path.exists(path)
        True
        """
        if self._closed:
            return
        self._closed = True
        f = self._file
        self._file = None
        try:
            if f is None:  # nothing was added to an existing finished store
                return
            try:
                try:
                    inputs.write_index(f, self._catalog)
                    f.flush()
                finally:
                    f.close()
                with open(self.partial_path, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(self.partial_path, self.path)
            except OSError as exc:
                # The partial file stays: the next run salvages every complete volume in it.
                raise write_failed(self.partial_path, exc, "finishing the store (its index)") from exc
        finally:
            self._lock.release()

    def abandon(self) -> None:
        """Close without finalizing: the partial file stays, and the next run resumes it."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._file is not None:
                try:
                    self._file.flush()
                finally:
                    self._file.close()
                    self._file = None
        finally:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # On an error the store is not whole: keep it as a partial file that the next run resumes.
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, dtype={self.dtype}, compression={self.compression}, volumes={len(self._keys)})"
