"""The HDF5 slice store, schema v1: :class:`Store` writes, :func:`open` reads.

The layout is documented in ``docs/hdf5-schema.md`` so that a file can be read with plain
h5py (after ``import hdf5plugin`` for the zstd and blosc2 filters). h5py and hdf5plugin are
imported here only, so ``import medload`` stays light.

Examples
--------
>>> import tempfile, numpy as np, medload
>>> path = tempfile.mkdtemp() + "/out.h5"
>>> with medload.Store.create(path) as store:
...     key = store.add(medload.Volume(np.zeros((4, 8, 8), np.float32), np.eye(4), meta={"series_key": "s1"}))
>>> reader = medload.open(path)
>>> reader.volumes[0].key, len(reader)
('s1', 4)
"""

from medload.store._format import (
    DEFAULT_COMPRESSION,
    DEFAULT_DTYPE,
    DTYPES,
    FILTERS,
    SCHEMA_VERSION,
    check_dtype,
    encode,
    encoding,
    parse_compression,
)
from medload.store.inputs import MetaNotStoredWarning
from medload.store.reader import StoreReader, VolumeRecord, open
from medload.store.writer import Store

__all__ = [
    "Store",
    "StoreReader",
    "VolumeRecord",
    "MetaNotStoredWarning",
    "open",
    "SCHEMA_VERSION",
    "DEFAULT_DTYPE",
    "DEFAULT_COMPRESSION",
    "DTYPES",
    "FILTERS",
    "check_dtype",
    "encode",
    "encoding",
    "parse_compression",
]
