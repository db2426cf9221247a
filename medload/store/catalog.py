"""What a whole store holds, read from its shards' attributes: :class:`StoreCatalog`.

The records of every shard (checked to belong together: one pipeline, one pseudonym key), the
slice index built from them, and the store's names (patients, classes, pipeline). No pixels:
:class:`~medload.store.reader.StoreReader` adds the reads on top.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medload.errors import StoreError
from medload.store import _format as fmt
from medload.store.layout import store_files
from medload.store.records import VolumeRecord, class_names, records_of

__all__ = ["StoreCatalog"]


class StoreCatalog:
    """The records, slice index and names of a store (one file or a folder of shards), without its pixels.

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> path = tempfile.mkdtemp() + "/s.h5"
    >>> with medload.Store.create(path) as store:
    ...     _ = store.add(medload.Volume(np.zeros((2, 3, 4)), np.eye(4), meta={"patient_key": "p1"}))
    >>> catalog = StoreCatalog(path)
    >>> len(catalog), catalog.patient_keys, catalog.volumes[0].shape
    (2, ['p1'], (2, 3, 4))
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
        self._build_index()

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
        return f"{type(self).__name__}({str(self.path)!r}, shards={len(self.shards)}, volumes={len(self._records)}, slices={len(self)})"
